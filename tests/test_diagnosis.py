"""Tests for `pipeline.diagnosis`: one constructed history per pattern the textbook's FAQ
names, and the random-labels control."""

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.config import ModelSpec, SplitConfig, split_sizes
from pipeline.diagnosis import (
    ModelEvidence,
    Suggestion,
    diagnose,
    diagnose_replicates,
    estimated_train_rows,
    label_entropy,
)
from tests.factories import synthetic_config

DATA = synthetic_config(
    kind="classification",
    n_samples=2000,
    n_features=8,
    n_informative=4,
    noise=0.05,
    class_sep=1.0,
    positive_fraction=0.5,
)
RANDOM_LABELS = DATA.model_copy(update={"kind": "random_labels"})
GOOD_AUC = (0.88, 0.93)


@pytest.fixture
def spec(default_params) -> ModelSpec:
    return default_params.model  # learning_rate 0.001, batch 32, 10 epochs, no penalty


def history(
    loss: list[float],
    val_loss: list[float],
    accuracy: list[float] | None = None,
    val_accuracy: list[float] | None = None,
) -> pd.DataFrame:
    epochs = len(loss)
    return pd.DataFrame(
        {
            "epoch": range(1, epochs + 1),
            "loss": loss,
            "accuracy": accuracy or np.linspace(0.6, 0.88, epochs),
            "val_loss": val_loss,
            "val_accuracy": val_accuracy or np.linspace(0.6, 0.86, epochs),
        }
    )


def evidence(
    family: str,
    frame: pd.DataFrame,
    interval: tuple[float, float] = GOOD_AUC,
    stopped_early: bool = False,
) -> ModelEvidence:
    return ModelEvidence(family, frame, sum(interval) / 2, interval, stopped_early)


# The training loss falls and flattens; val_loss reaches its minimum at the end.
CONVERGED = history(
    [0.60, 0.45, 0.38, 0.34, 0.32, 0.31, 0.305, 0.30, 0.30, 0.30],
    [0.55, 0.44, 0.38, 0.35, 0.33, 0.32, 0.315, 0.312, 0.311, 0.311],
)
# val_loss bottoms out at epoch 4 and climbs while the training loss keeps falling.
RISING = history(
    [0.60, 0.50, 0.42, 0.36, 0.31, 0.27, 0.23, 0.20],
    [0.58, 0.50, 0.46, 0.44, 0.45, 0.47, 0.50, 0.55],
)
# Both losses still fall steeply at the last epoch.
STILL_FALLING = history(
    [0.69, 0.66, 0.63, 0.60, 0.57, 0.54, 0.51, 0.48, 0.45, 0.42],
    [0.68, 0.65, 0.62, 0.59, 0.56, 0.53, 0.50, 0.47, 0.44, 0.41],
)
# Stuck at ln 2, the loss of predicting 0.5 for every row.
STUCK = history(
    [0.6950, 0.6936, 0.6932, 0.6932, 0.6931, 0.6931],
    [0.6940, 0.6935, 0.6933, 0.6932, 0.6932, 0.6932],
)


def kinds(findings) -> list[tuple[str, str]]:
    return [(finding.kind, finding.family) for finding in findings]


def test_healthy_training_has_no_findings(spec: ModelSpec):
    models = [evidence("keras", CONVERGED), evidence("sklearn", CONVERGED)]
    assert diagnose(models, spec, DATA, 0.95) == []


@pytest.mark.parametrize("family", ["keras", "sklearn"])
def test_rising_validation_loss_is_overfitting(spec: ModelSpec, family: str):
    (finding,) = diagnose([evidence(family, RISING)], spec, DATA, 0.95)

    assert (finding.kind, finding.family) == ("overfitting", family)
    assert "val_loss rose from 0.4400 (epoch 4, its minimum) to 0.5500 (epoch 8)" in (
        finding.evidence
    )
    assert "training loss fell from 0.3600 to 0.2000" in finding.evidence
    assert finding.param == "model.l2"
    values = {suggestion.param: suggestion.value for suggestion in finding.suggestions}
    assert values["model.l2"] == pytest.approx(1e-4)
    assert values["model.patience"] == 3
    if family == "keras":
        assert values["model.dropout"] == pytest.approx(0.2)
        assert values["model.l1"] == pytest.approx(1e-5)
    else:
        # scikit-learn's MLPClassifier has neither dropout nor an L1 penalty.
        assert "model.dropout" not in values and "model.l1" not in values


def test_existing_regularization_is_strengthened(spec: ModelSpec):
    stronger = spec.model_copy(update={"l2": 0.001, "l1": 0.0002, "dropout": 0.4})
    (finding,) = diagnose([evidence("keras", RISING)], stronger, DATA, 0.95)
    values = {suggestion.param: suggestion for suggestion in finding.suggestions}
    assert values["model.l2"].value == pytest.approx(0.01)
    assert values["model.l2"].current == pytest.approx(0.001)
    assert values["model.l1"].value == pytest.approx(0.002)
    assert values["model.dropout"].value == pytest.approx(0.5)
    at_most = stronger.model_copy(update={"dropout": 0.5})
    (finding,) = diagnose([evidence("keras", RISING)], at_most, DATA, 0.95)
    assert "model.dropout" not in [suggestion.param for suggestion in finding.suggestions]


def test_early_stopping_already_handles_a_rising_tail(spec: ModelSpec):
    with_patience = spec.model_copy(update={"patience": 4})
    model = evidence("keras", RISING, stopped_early=True)
    assert diagnose([model], with_patience, DATA, 0.95) == []


def test_train_validation_accuracy_gap_is_overfitting(spec: ModelSpec):
    frame = history(
        CONVERGED["loss"].tolist(),
        CONVERGED["val_loss"].tolist(),
        accuracy=list(np.linspace(0.8, 0.99, 10)),
        val_accuracy=list(np.linspace(0.75, 0.80, 10)),
    )
    (finding,) = diagnose([evidence("sklearn", frame)], spec, DATA, 0.95)
    assert finding.kind == "overfitting"
    assert "train accuracy 0.9900 vs validation accuracy 0.8000 at epoch 10" in finding.evidence
    assert "a gap of 0.190" in finding.evidence


@pytest.mark.parametrize("family", ["keras", "sklearn"])
def test_loss_still_falling_is_not_converged(spec: ModelSpec, family: str):
    (finding,) = diagnose([evidence(family, STILL_FALLING)], spec, DATA, 0.95)

    assert (finding.kind, finding.family) == ("not_converged", family)
    assert "still fell by 0.0300 in the last epoch (0.4500 to 0.4200" in finding.evidence
    assert finding.param == "model.epochs"
    assert finding.suggestions[0].value == 20
    assert finding.suggestions[1].param == "model.learning_rate"
    assert finding.suggestions[1].value == pytest.approx(0.003)
    assert ("ConvergenceWarning" in finding.evidence) == (family == "sklearn")


def test_rising_validation_loss_is_not_called_unconverged(spec: ModelSpec):
    findings = diagnose([evidence("keras", RISING)], spec, DATA, 0.95)
    assert "not_converged" not in [finding.kind for finding in findings]


def test_stuck_at_chance_loss_is_a_plateau(spec: ModelSpec):
    (finding,) = diagnose([evidence("keras", STUCK, interval=(0.44, 0.56))], spec, DATA, 0.95)

    assert finding.kind == "plateau"
    assert "stayed at 0.6931 from epoch 3 to 6" in finding.evidence
    assert f"chance level {math.log(2):.4f}" in finding.evidence
    assert finding.param == "model.learning_rate"
    assert finding.suggestions[0].value == pytest.approx(0.01)
    assert finding.suggestions[1] == Suggestion(
        "model.batch_size", 16, 32, "more, noisier steps per epoch"
    )


def test_a_low_flat_loss_is_convergence_not_a_plateau(spec: ModelSpec):
    frame = history([0.5, 0.3, 0.2, 0.2, 0.2, 0.2], [0.5, 0.3, 0.21, 0.21, 0.21, 0.21])
    assert diagnose([evidence("keras", frame)], spec, DATA, 0.95) == []


def test_nan_loss_diverged(spec: ModelSpec):
    frame = history([0.7, 0.9, math.nan, math.nan], [0.7, 1.2, math.nan, math.nan])

    (finding,) = diagnose([evidence("keras", frame)], spec, DATA, 0.95)

    assert finding.kind == "diverged"
    assert "not a number from epoch 3 on" in finding.evidence
    assert finding.param == "model.learning_rate"
    assert finding.suggestions[0].value == pytest.approx(1e-4)
    assert finding.suggestions[1].param == "model.batch_size"
    assert finding.suggestions[1].value == 64


def test_rising_training_loss_diverged(spec: ModelSpec):
    frame = history([0.7, 1.5, 3.0, 2.6], [0.8, 1.7, 3.1, 2.9])
    (finding,) = diagnose([evidence("sklearn", frame)], spec, DATA, 0.95)
    assert finding.kind == "diverged"
    assert "rose from 0.7000 (epoch 1) to 2.6000 (epoch 4)" in finding.evidence


def test_chance_result_on_data_with_signal_is_underfitting(spec: ModelSpec):
    frame = history([0.72, 0.70, 0.685, 0.67, 0.66, 0.655], [0.71, 0.70, 0.69, 0.685, 0.68, 0.68])
    model = evidence("sklearn", frame, interval=(0.46, 0.58))

    (finding,) = diagnose([model], spec, DATA, 0.95)

    assert finding.kind == "underfitting"
    assert "test ROC AUC 0.520 (95% CI 0.460 to 0.580) includes 0.5" in finding.evidence
    assert finding.param == "model.hidden_layers"
    assert finding.suggestions[0].value == [20, 20]
    assert [suggestion.param for suggestion in finding.suggestions] == [
        "model.hidden_layers",
        "model.learning_rate",
        "model.epochs",
    ]


def test_underfitting_logistic_regression_gets_a_hidden_layer(spec: ModelSpec):
    linear = spec.model_copy(update={"hidden_layers": []})
    frame = history([0.70, 0.69, 0.685, 0.683], [0.70, 0.69, 0.688, 0.687])
    (finding,) = diagnose([evidence("keras", frame, (0.45, 0.55))], linear, DATA, 0.95)
    assert finding.suggestions[0].override() == "model.hidden_layers=[10]"


def test_random_labels_are_no_learnable_signal_not_a_bad_model(spec: ModelSpec):
    """The control: both at chance, and over-fitting, as memorizing noise does."""
    models = [
        evidence("keras", RISING, interval=(0.44, 0.57)),
        evidence("sklearn", STUCK, interval=(0.45, 0.58)),
    ]

    (finding,) = diagnose(models, spec, RANDOM_LABELS, 0.95)

    assert (finding.kind, finding.family) == ("no_signal", "both")
    assert "dataset.kind = random_labels" in finding.evidence
    assert "no learnable signal" in finding.evidence
    assert "keras 0.505 (95% CI 0.440 to 0.570)" in finding.evidence
    assert finding.param == "dataset.kind"
    assert finding.suggestions[0].override() == "dataset.kind=classification"


def test_random_labels_still_report_a_divergence(spec: ModelSpec):
    frame = history([0.7, math.nan], [0.7, math.nan])
    models = [evidence("keras", frame, (0.4, 0.6)), evidence("sklearn", STUCK, (0.4, 0.6))]
    assert kinds(diagnose(models, spec, RANDOM_LABELS, 0.95)) == [
        ("no_signal", "both"),
        ("diverged", "keras"),
    ]


def test_each_model_is_diagnosed_on_its_own(spec: ModelSpec):
    models = [evidence("keras", RISING), evidence("sklearn", STILL_FALLING)]
    assert kinds(diagnose(models, spec, DATA, 0.95)) == [
        ("overfitting", "keras"),
        ("not_converged", "sklearn"),
    ]


@pytest.mark.parametrize(
    ("suggestion", "override"),
    [
        (Suggestion("model.l2", 0.0001, 0.0), "model.l2=0.0001"),
        (Suggestion("model.learning_rate", 1e-5, 1e-4), "model.learning_rate=1e-05"),
        (Suggestion("model.epochs", 20, 10), "model.epochs=20"),
        (Suggestion("model.hidden_layers", [20, 20], [10, 10]), "model.hidden_layers=[20,20]"),
    ],
)
def test_suggestion_as_a_dvc_override(suggestion: Suggestion, override: str):
    assert suggestion.override() == override


@pytest.mark.parametrize(("fraction", "expected"), [(0.5, math.log(2)), (0.1, 0.3250829733914482)])
def test_label_entropy(fraction: float, expected: float):
    assert label_entropy(fraction) == pytest.approx(expected)


def test_a_plateau_after_a_huge_learning_rate_asks_for_smaller_steps(spec: ModelSpec):
    """Adam at 0.5 kills the ReLU units: the loss sits at chance, and larger steps
    would not help."""
    huge = spec.model_copy(update={"learning_rate": 0.5})
    (finding,) = diagnose([evidence("keras", STUCK, interval=(0.5, 0.5))], huge, DATA, 0.95)
    assert finding.kind == "plateau"
    assert finding.suggestions[0].param == "model.learning_rate"
    assert finding.suggestions[0].value == pytest.approx(0.05)
    assert "0.5 is high for adam" in finding.suggestions[0].note


def test_a_chance_result_after_a_huge_learning_rate_asks_for_smaller_steps(spec: ModelSpec):
    huge = spec.model_copy(update={"learning_rate": 0.5})
    frame = history([0.72, 0.70, 0.685, 0.67, 0.66, 0.655], [0.71, 0.70, 0.69, 0.685, 0.68, 0.68])
    (finding,) = diagnose([evidence("sklearn", frame, (0.46, 0.58))], huge, DATA, 0.95)
    assert finding.kind == "underfitting"
    assert [suggestion.param for suggestion in finding.suggestions] == [
        "model.learning_rate",
        "model.hidden_layers",
        "model.epochs",
    ]
    assert finding.suggestions[0].value == pytest.approx(0.05)


def test_a_loss_that_keeps_bouncing_at_chance_diverged(spec: ModelSpec):
    """scikit-learn at learning rate 0.5: up in half the epochs, never below chance."""
    loss = [0.7499, 0.7043, 0.6964, 0.6973, 0.7046, 0.7034, 0.7067, 0.7192, 0.7131, 0.7157,
            0.6953, 0.7044, 0.6959, 0.6955, 0.6999]  # fmt: skip
    frame = history(loss, [0.69 + 0.01 * (index % 3) for index in range(15)])

    (finding,) = diagnose([evidence("sklearn", frame, (0.5, 0.5))], spec, DATA, 0.95)

    assert finding.kind == "diverged"
    assert "went up in 7 of 14 epochs and ends at 0.6999" in finding.evidence
    assert finding.param == "model.learning_rate"


def test_small_ups_and_downs_at_a_low_loss_are_not_divergence(spec: ModelSpec):
    loss = [0.5, 0.3, 0.25, 0.2502, 0.2498, 0.2503, 0.2497, 0.2501]
    frame = history(loss, [0.5, 0.31, 0.26, 0.26, 0.26, 0.26, 0.26, 0.26])
    assert diagnose([evidence("keras", frame)], spec, DATA, 0.95) == []


# Keras with model.l1 = 0.1 (benchmarks/pathologies.py, replicate 0): the penalty
# dominates the loss, which falls only as the weights shrink, far above ln 2.
L1_DOMINATED = history(
    [5.8401, 5.1743, 4.5565, 3.9841, 3.4561, 2.9677, 2.5213, 2.1295, 1.7855, 1.4883],
    [5.4792, 4.8380, 4.2442, 3.6974, 3.1925, 2.7236, 2.3069, 1.9422, 1.6235, 1.3487],
)
# Keras with dropout 0.9: both losses hover at ln 2, the training loss noisy.
DROPOUT_AT_CHANCE = history(
    [0.7003, 0.7064, 0.6924, 0.6924, 0.6975, 0.6904, 0.6937, 0.6901],
    [0.6918, 0.6918, 0.6920, 0.6921, 0.6922, 0.6920, 0.6919, 0.6918],
)
CHANCE_AUC = (0.44, 0.58)
AT_CHANCE = history([0.72, 0.70, 0.685, 0.67], [0.71, 0.70, 0.69, 0.685])
BLOWN_UP = history([0.7, 0.9, math.nan, math.nan], [0.7, 1.2, math.nan, math.nan])


def test_a_keras_only_penalty_that_outweighs_the_data_is_over_regularized(spec: ModelSpec):
    """The known failure: Keras at chance under L1 0.1 while scikit-learn learns.
    The cause is the penalty, not the network's size."""
    l1 = spec.model_copy(update={"l1": 0.1})
    models = [evidence("keras", L1_DOMINATED, CHANCE_AUC), evidence("sklearn", CONVERGED)]

    (finding,) = diagnose(models, l1, DATA, 0.95)

    assert (finding.kind, finding.family) == ("over_regularized", "keras")
    assert "ends at 1.4883 and val_loss at 1.3487, above the chance level 0.6931" in (
        finding.evidence
    )
    assert "with model.l1 = 0.1" in finding.evidence
    assert "sklearn, which trains without an L1 penalty, reaches val_loss 0.3110" in (
        finding.evidence
    )
    assert finding.suggestions[0].override() == "model.l1=0.01"
    assert [suggestion.param for suggestion in finding.suggestions] == ["model.l1"]


def test_an_l2_penalty_too_strong_is_over_regularized_in_both_libraries(spec: ModelSpec):
    l2 = spec.model_copy(update={"l2": 0.1})
    models = [
        evidence("keras", L1_DOMINATED, CHANCE_AUC),
        evidence("sklearn", L1_DOMINATED, CHANCE_AUC),
    ]

    findings = diagnose(models, l2, DATA, 0.95)

    assert kinds(findings) == [("over_regularized", "keras"), ("over_regularized", "sklearn")]
    assert [finding.suggestions[0].override() for finding in findings] == ["model.l2=0.01"] * 2
    # Both libraries have the L2 penalty: no "which trains without" contrast.
    assert "trains without" not in findings[0].evidence


def test_dropout_that_holds_keras_at_chance_is_over_regularized_not_a_plateau(spec: ModelSpec):
    dropout = spec.model_copy(update={"dropout": 0.9, "l1": 1e-4})

    (finding,) = diagnose([evidence("keras", DROPOUT_AT_CHANCE, CHANCE_AUC)], dropout, DATA, 0.95)

    assert finding.kind == "over_regularized"
    assert "val_loss at 0.6918, next to the chance level 0.6931" in finding.evidence
    # Dropout 0.9 is three times a typical 0.3; L1 1e-4 is typical: dropout goes first.
    assert [suggestion.override() for suggestion in finding.suggestions] == [
        "model.dropout=0.45",
        "model.l1=1e-05",
    ]


def test_a_penalty_on_a_good_fit_is_no_finding(spec: ModelSpec):
    penalized = spec.model_copy(update={"l2": 0.001, "l1": 0.0001, "dropout": 0.2})
    models = [evidence("keras", CONVERGED), evidence("sklearn", CONVERGED)]
    assert diagnose(models, penalized, DATA, 0.95) == []


def test_the_same_chance_result_without_regularization_is_underfitting(spec: ModelSpec):
    (finding,) = diagnose([evidence("keras", DROPOUT_AT_CHANCE, CHANCE_AUC)], spec, DATA, 0.95)
    assert (finding.kind, finding.param) == ("underfitting", "model.hidden_layers")


IMBALANCED = [0.95, 0.05]
MAJORITY_ONLY = history(
    CONVERGED["loss"].tolist(),
    CONVERGED["val_loss"].tolist(),
    accuracy=[0.95] * 10,
    val_accuracy=[0.95] * 10,
)


def test_accuracy_at_the_majority_rate_on_skewed_data_is_an_imbalance(spec: ModelSpec):
    (finding,) = diagnose(
        [evidence("sklearn", MAJORITY_ONLY)], spec, DATA, 0.95, class_fractions=IMBALANCED
    )

    assert (finding.kind, finding.family) == ("imbalance", "sklearn")
    assert "validation accuracy 0.9500 is no better than the majority rate 0.9500" in (
        finding.evidence
    )
    assert "the largest class holds 95% of the rows" in finding.evidence
    assert finding.suggestions[0].override() == "model.class_weight=balanced"


@pytest.mark.parametrize(
    ("class_weight", "fractions", "val_accuracy"),
    [
        ("balanced", IMBALANCED, 0.95),  # already weighed
        ("none", [0.6, 0.4], 0.60),  # no strong imbalance: a chance result is not this
        ("none", IMBALANCED, 0.975),  # better than the majority rate
    ],
)
def test_no_imbalance_finding(spec: ModelSpec, class_weight: str, fractions, val_accuracy):
    weighted = spec.model_copy(update={"class_weight": class_weight})
    frame = MAJORITY_ONLY.assign(val_accuracy=val_accuracy)
    findings = diagnose([evidence("keras", frame)], weighted, DATA, 0.95, fractions)
    assert "imbalance" not in [finding.kind for finding in findings]


def test_batches_too_large_for_the_data_ask_for_smaller_batches_first(spec: ModelSpec):
    large = spec.model_copy(update={"batch_size": 1024})

    (finding,) = diagnose([evidence("keras", STILL_FALLING)], large, DATA, 0.95, train_rows=1200)

    assert finding.kind == "not_converged"
    assert "1200 train rows and model.batch_size = 1024" in finding.evidence
    assert "only 2 steps per epoch, 20 in all" in finding.evidence
    assert [suggestion.override() for suggestion in finding.suggestions] == [
        "model.batch_size=32",
        "model.epochs=20",
        "model.learning_rate=0.003",
    ]
    # Without the number of train rows, the steps are unknown: epochs first.
    (unknown,) = diagnose([evidence("keras", STILL_FALLING)], large, DATA, 0.95)
    assert unknown.param == "model.epochs"


def test_enough_steps_per_epoch_keep_the_usual_advice(spec: ModelSpec):
    (finding,) = diagnose([evidence("keras", STILL_FALLING)], spec, DATA, 0.95, train_rows=1200)
    assert finding.param == "model.epochs"
    assert "steps per epoch" not in finding.evidence


def test_a_linear_model_at_chance_needs_units_not_larger_steps(spec: ModelSpec):
    linear = spec.model_copy(update={"hidden_layers": []})

    (finding,) = diagnose([evidence("keras", STUCK, CHANCE_AUC)], linear, DATA, 0.95)

    assert finding.kind == "underfitting"
    assert finding.suggestions[0].override() == "model.hidden_layers=[10]"


def test_a_tiny_network_with_a_high_training_loss_is_underfitting(spec: ModelSpec):
    """xor with 2 hidden units (benchmarks/pathologies.py): test ROC AUC well above
    chance, but the training loss stays above half of ln 2."""
    tiny = spec.model_copy(update={"hidden_layers": [2]})
    frame = history(
        [0.69, 0.60, 0.53, 0.50, 0.497, 0.496, 0.4955, 0.495],
        [0.69, 0.61, 0.55, 0.532, 0.5305, 0.5302, 0.5301, 0.5300],
    )

    (finding,) = diagnose([evidence("sklearn", frame)], tiny, DATA, 0.95)

    assert finding.kind == "underfitting"
    assert "with hidden layers [2] the training loss ends at 0.4950, 71% of the chance level" in (
        finding.evidence
    )
    assert finding.suggestions[0].override() == "model.hidden_layers=[4]"
    # The same curve from a network of normal width is no finding.
    assert diagnose([evidence("sklearn", frame)], spec, DATA, 0.95) == []


def test_a_tiny_network_still_learning_needs_units_first(spec: ModelSpec):
    tiny = spec.model_copy(update={"hidden_layers": [2]})
    lower = STILL_FALLING.assign(loss=STILL_FALLING["loss"] - 0.15)
    lower["val_loss"] -= 0.15
    (finding,) = diagnose([evidence("sklearn", lower)], tiny, DATA, 0.95)
    assert finding.kind == "not_converged"
    assert finding.suggestions[0].override() == "model.hidden_layers=[4]"
    assert "fits only simple boundaries" in finding.suggestions[0].note


# Adam creeping on after many epochs: 0.2% lower per epoch.
CREEPING = history(
    [0.340, 0.3393, 0.3386, 0.3379, 0.3372, 0.3365],
    [0.2900, 0.2894, 0.2888, 0.2882, 0.2876, 0.2870],
)


def test_a_creeping_loss_is_converged(spec: ModelSpec):
    assert diagnose([evidence("keras", CREEPING)], spec, DATA, 0.95) == []


def test_a_creep_at_a_tiny_learning_rate_asks_for_larger_steps(spec: ModelSpec):
    slow = spec.model_copy(update={"learning_rate": 1e-5})

    (finding,) = diagnose([evidence("keras", CREEPING)], slow, DATA, 0.95)

    assert finding.kind == "not_converged"
    assert "0.2% per epoch lower over the last 3 epochs" in finding.evidence
    assert finding.suggestions[0].override() == "model.learning_rate=0.0001"
    assert "1e-05 is low for adam" in finding.suggestions[0].note


def test_a_chance_result_at_a_tiny_learning_rate_asks_for_larger_steps(spec: ModelSpec):
    slow = spec.model_copy(update={"learning_rate": 1e-5})
    frame = history([0.72, 0.71, 0.705, 0.70, 0.69, 0.68], [0.71, 0.70, 0.69, 0.685, 0.68, 0.68])
    (finding,) = diagnose([evidence("sklearn", frame, CHANCE_AUC)], slow, DATA, 0.95)
    assert finding.kind == "underfitting"
    assert finding.suggestions[0].override() == "model.learning_rate=0.0001"


@pytest.mark.parametrize(
    ("n_samples", "test_size", "validation_size"),
    [(2000, 0.2, 0.2), (569, 0.2, 0.2), (150, 0.2, 0.2), (178, 0.25, 0.15), (10_000, 0.1, 0.3)],
)
def test_estimated_train_rows_is_within_a_row_or_two_of_the_split(
    n_samples: int, test_size: float, validation_size: float
):
    split = SplitConfig(test_size=test_size, validation_size=validation_size)
    n_train, _, n_test = split_sizes(n_samples, split)
    assert abs(estimated_train_rows(n_test, split) - n_train) <= 2


def test_a_loss_still_at_chance_after_few_steps_is_barely_trained(spec: ModelSpec):
    """Batch size 1024 on 1200 rows: 20 steps in 10 epochs. The loss creeps (no
    plateau), the test ROC AUC is above chance, and yet the model has barely begun."""
    large = spec.model_copy(update={"batch_size": 1024})
    loss = [0.7300, 0.7290, 0.7280, 0.7270, 0.7260, 0.7250, 0.7240, 0.7230, 0.7220, 0.7210]
    frame = history(loss, [value - 0.01 for value in loss])

    (finding,) = diagnose([evidence("keras", frame)], large, DATA, 0.95, train_rows=1200)

    assert finding.kind == "not_converged"
    assert "ends at 0.7210, 104% of the chance level 0.6931, after 10 epochs" in finding.evidence
    assert finding.evidence.count("steps per epoch") == 1
    assert "only 2 steps per epoch, 20 in all" in finding.evidence
    assert finding.suggestions[0].override() == "model.batch_size=32"
    # With 38 steps per epoch the same creep is left to the other rules: no finding.
    assert diagnose([evidence("keras", frame)], spec, DATA, 0.95, train_rows=1200) == []


def test_replicates_report_each_finding_once_the_commonest_first(spec: ModelSpec):
    """Replicate 0 under-fits, replicates 1 and 2 blow up: the divergence (2 of 3)
    comes first, quoting replicate 1, then the under-fitting (1 of 3): one problem
    showing two ways, in every replicate."""
    replicates = [
        [evidence("keras", AT_CHANCE, CHANCE_AUC)],
        [evidence("keras", BLOWN_UP, CHANCE_AUC)],
        [evidence("keras", BLOWN_UP, CHANCE_AUC)],
    ]

    findings = diagnose_replicates(replicates, spec, DATA, 0.95)

    assert [(finding.kind, finding.seen_in, finding.replicate) for finding in findings] == [
        ("diverged", (2, 3), 1),
        ("underfitting", (1, 3), 0),
    ]
    assert findings[0].prevalence == " in 2 of 3 replicates"


def test_a_family_with_findings_in_fewer_than_half_its_replicates_has_none(spec: ModelSpec):
    """One replicate of three blew up, two trained well: a draw of the random numbers,
    not a property of the setting. Two of three, or one of two, are reported."""
    healthy = [evidence("keras", CONVERGED), evidence("sklearn", CONVERGED)]
    blown = [evidence("keras", BLOWN_UP, CHANCE_AUC), evidence("sklearn", CONVERGED)]
    under = [evidence("keras", AT_CHANCE, CHANCE_AUC), evidence("sklearn", CONVERGED)]

    assert diagnose_replicates([healthy, blown, healthy], spec, DATA, 0.95) == []
    assert kinds(diagnose_replicates([under, blown, healthy], spec, DATA, 0.95)) == [
        ("underfitting", "keras"),
        ("diverged", "keras"),
    ]
    assert kinds(diagnose_replicates([healthy, blown], spec, DATA, 0.95)) == [("diverged", "keras")]
