"""The induced training problems of benchmarks/pathologies.py, the healthy controls,
and how a diagnosis of one is scored: named, the right first change, improved."""

from dataclasses import dataclass
from typing import Any, Literal

from pipeline.diagnosis import Finding, FindingKind, Suggestion

Family = Literal["keras", "sklearn", "both"]
Direction = Literal["up", "down", "set"]
# val_roc_auc: ROC AUC on the validation rows; val_log_loss: their cross-entropy
# without any penalty (the history's val_loss includes it, and lowering a penalty
# would lower it by construction); val_balanced_accuracy: the mean recall per class
# at the 0.5 threshold, the metric that exposes a majority-class predictor.
Metric = Literal["val_roc_auc", "val_log_loss", "val_balanced_accuracy"]
LOWER_IS_BETTER = {"val_log_loss"}
# A change smaller than this is noise, not an improvement.
MARGINS = {"val_roc_auc": 0.005, "val_log_loss": 0.005, "val_balanced_accuracy": 0.01}
# Epochs enough that the pathology, not a short training, is the problem.
LONG = {"epochs": 60}
# What a careful practitioner does against over-fitting: more penalty or dropout, early
# stopping, fewer epochs.
OVERFITTING_FIXES = {
    "model.l2": "up",
    "model.dropout": "up",
    "model.l1": "up",
    "model.patience": "up",
    "model.epochs": "down",
}


@dataclass(frozen=True)
class Pathology:
    """A params change that induces one problem, and what a careful practitioner says."""

    name: str
    description: str
    updates: dict[str, dict[str, Any]]
    family: Family  # where the problem shows: "both" for a change to both libraries
    kinds: tuple[FindingKind, ...]  # the finding kinds that name it
    fixes: dict[str, Direction]  # params whose change in that direction is right
    metric: Metric


PATHOLOGIES = {
    pathology.name: pathology
    for pathology in (
        Pathology(
            "l1_keras",
            "Keras-only L1 penalty 0.1",
            {"model": {"l1": 0.1}},
            "keras",
            ("over_regularized",),
            {"model.l1": "down"},
            "val_roc_auc",
        ),
        Pathology(
            "l2_both",
            "L2 penalty 0.1 (both libraries)",
            {"model": {"l2": 0.1}},
            "both",
            ("over_regularized",),
            {"model.l2": "down"},
            "val_roc_auc",
        ),
        Pathology(
            "l1_keras_long",
            "Keras-only L1 penalty 0.1 for 60 epochs: the loss settles at chance",
            {"model": {"l1": 0.1, **LONG}},
            "keras",
            ("over_regularized",),
            {"model.l1": "down"},
            "val_roc_auc",
        ),
        Pathology(
            "dropout_high",
            "Keras-only dropout 0.9",
            {"model": {"dropout": 0.9, **LONG}},
            "keras",
            ("over_regularized",),
            {"model.dropout": "down"},
            "val_roc_auc",
        ),
        Pathology(
            "learning_rate_diverges",
            "SGD at learning rate 20: the loss blows up",
            {"model": {"optimizer": "sgd", "learning_rate": 20.0}},
            "both",
            ("diverged",),
            {"model.learning_rate": "down"},
            "val_roc_auc",
        ),
        Pathology(
            "learning_rate_dead_relu",
            "Adam at learning rate 1: ReLU units die, the loss sits at chance",
            {"model": {"learning_rate": 1.0}},
            "both",
            ("diverged", "plateau", "underfitting"),
            {"model.learning_rate": "down"},
            "val_roc_auc",
        ),
        Pathology(
            "learning_rate_too_low",
            "Adam at learning rate 1e-5: the loss barely moves",
            {"model": {"learning_rate": 1e-5}},
            "both",
            ("not_converged", "plateau", "underfitting"),
            {"model.learning_rate": "up"},
            "val_log_loss",
        ),
        Pathology(
            "learning_rate_too_low_sgd",
            "SGD at learning rate 1e-4: the loss barely moves",
            {"model": {"optimizer": "sgd", "learning_rate": 1e-4}},
            "both",
            ("not_converged", "plateau", "underfitting"),
            {"model.learning_rate": "up"},
            "val_log_loss",
        ),
        Pathology(
            "too_few_epochs",
            "2 epochs at the default learning rate",
            {"model": {"epochs": 2}},
            "both",
            ("not_converged",),
            {"model.epochs": "up"},
            "val_log_loss",
        ),
        Pathology(
            "too_few_epochs_breast_cancer",
            "breast_cancer at 20 epochs of the default steps, as benchmarks/calibration.py "
            "trains it",
            {"dataset": {"source": "breast_cancer"}, "model": {"epochs": 20}},
            "both",
            ("not_converged",),
            {"model.epochs": "up"},
            "val_log_loss",
        ),
        Pathology(
            "batch_too_large",
            "batch size 1024 on 1200 train rows: 2 steps per epoch",
            {"model": {"batch_size": 1024}},
            "both",
            ("not_converged", "plateau", "underfitting"),
            {"model.batch_size": "down"},
            "val_log_loss",
        ),
        Pathology(
            "circles_linear",
            "circles with no hidden layer (a linear model)",
            {"dataset": {"kind": "circles"}, "model": {"hidden_layers": [], **LONG}},
            "both",
            ("underfitting",),
            {"model.hidden_layers": "up"},
            "val_roc_auc",
        ),
        Pathology(
            "xor_linear",
            "xor with no hidden layer (a linear model)",
            {"dataset": {"kind": "xor"}, "model": {"hidden_layers": [], **LONG}},
            "both",
            ("underfitting",),
            {"model.hidden_layers": "up"},
            "val_roc_auc",
        ),
        Pathology(
            "xor_tiny",
            "xor with one hidden layer of 2 units",
            {"dataset": {"kind": "xor"}, "model": {"hidden_layers": [2], **LONG}},
            "both",
            ("underfitting",),
            {"model.hidden_layers": "up"},
            "val_roc_auc",
        ),
        Pathology(
            "overfit_small",
            "200 rows, 20 features, [256, 256] for 200 epochs",
            {
                "dataset": {"n_samples": 200, "n_features": 20, "n_informative": 4},
                "model": {"hidden_layers": [256, 256], "epochs": 200},
            },
            "both",
            ("overfitting",),
            OVERFITTING_FIXES,
            "val_log_loss",
        ),
        Pathology(
            "overfit_long",
            "the defaults at learning rate 0.01 for 60 epochs: val_loss bottoms out by epoch 30",
            {"model": {"learning_rate": 0.01, **LONG}},
            "both",
            ("overfitting",),
            OVERFITTING_FIXES,
            "val_log_loss",
        ),
        Pathology(
            "random_labels",
            "labels drawn independently of the features",
            {"dataset": {"kind": "random_labels"}},
            "both",
            ("no_signal",),
            {"dataset.kind": "set"},
            "val_roc_auc",
        ),
        Pathology(
            "imbalance",
            "5% positives: accuracy hides a majority-class predictor",
            {"dataset": {"positive_fraction": 0.05, "noise": 0.0}},
            "both",
            ("imbalance",),
            {"model.class_weight": "set"},
            "val_balanced_accuracy",
        ),
    )
}

# Trained to convergence as a careful practitioner would: long enough for the
# defaults; on the small bundled sets, early stopping (the usual guard against
# over-fitting a few hundred rows) and a learning rate that converges in 100 epochs of
# a few steps each.
SETTLED = {"learning_rate": 0.01, "epochs": 100, "patience": 5}
HEALTHY = {
    "defaults_long": {"model": {"epochs": 100}},
    # moons at the default learning rate still improves after 100 epochs (and the
    # diagnosis says so); ten times larger steps converge within 60.
    "moons": {"dataset": {"kind": "moons"}, "model": {"learning_rate": 0.01, **LONG}},
    "breast_cancer": {"dataset": {"source": "breast_cancer"}, "model": SETTLED},
    "wine": {"dataset": {"source": "wine"}, "model": SETTLED},
    "iris": {"dataset": {"source": "iris"}, "model": SETTLED},
}


def families(pathology: Pathology) -> list[str]:
    return ["keras", "sklearn"] if pathology.family == "both" else [pathology.family]


def findings_for(findings: list[Finding], family: str) -> list[Finding]:
    """The findings a reader of `family`'s results sees, in the report's order."""
    return [finding for finding in findings if finding.family in (family, "both")]


def right_change(suggestion: Suggestion, fixes: dict[str, Direction]) -> bool:
    """The suggestion changes one of the right params in the right direction."""
    direction = fixes.get(suggestion.param)
    if direction is None:
        return False
    if direction == "set":
        return suggestion.value != suggestion.current
    if isinstance(suggestion.value, list) and isinstance(suggestion.current, list):
        value, current = sum(suggestion.value), sum(suggestion.current)
    else:
        value, current = float(suggestion.value), float(suggestion.current)
    return value > current if direction == "up" else value < current


def with_suggestion(
    updates: dict[str, dict[str, Any]], suggestion: Suggestion
) -> dict[str, dict[str, Any]]:
    """The pathology's changes plus the suggested one, as `dvc exp run -S` would set it."""
    section, key = suggestion.param.split(".", 1)
    return {**updates, section: {**updates.get(section, {}), key: suggestion.value}}


def improved(before: float, after: float, metric: Metric) -> bool:
    change = before - after if metric in LOWER_IS_BETTER else after - before
    return change > MARGINS[metric]
