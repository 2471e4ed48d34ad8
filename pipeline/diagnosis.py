"""The textbook's FAQ, automated: read the training histories and test results, name
what went wrong (over-fitting, under-fitting, slow or failed convergence, or data
without signal), the evidence in numbers, and the params to change."""

import math
from collections import Counter
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.config import DatasetConfig, ModelSpec

FindingKind = Literal[
    "no_signal", "diverged", "overfitting", "underfitting", "not_converged", "plateau"
]

# scikit-learn's default `tol`: an epoch that lowers the training loss by more than
# this is progress (MLPClassifier stops, or warns, when there is none).
TOLERANCE = 1e-4
# Over-fitting: val_loss ends this far (relative) above its minimum, at least
# RISE_EPOCHS epochs after it, while the training loss kept falling ...
RISE = 0.05
RISE_EPOCHS = 2
# ... or train accuracy exceeds validation accuracy by this much at the last epoch.
ACCURACY_GAP = 0.10
# Plateau: over the last PLATEAU_EPOCHS epochs the loss moved less than this, and it
# sits at (at least this share of) the loss of always predicting the base rate.
PLATEAU_EPOCHS = 3
PLATEAU_CHANGE = 1e-3
PLATEAU_CHANCE_SHARE = 0.9
# Divergence: the last training loss exceeds the first by this relative margin, or
# the loss rose (by more than TOLERANCE) in at least this share of the epochs while
# staying near the chance level: the steps overshoot.
DIVERGENCE_RISE = 0.05
UNSTABLE_SHARE = 0.5
# Learning rates above these are unusually high for the optimizer: steps this large
# overshoot, or push ReLU units into never firing again (a flat loss at chance).
HIGH_LEARNING_RATE = {"adam": 0.05, "sgd": 0.5}


@dataclass(frozen=True)
class Suggestion:
    param: str  # the params.yaml key, e.g. "model.l2"
    value: float | int | list[int] | str  # the value to try
    current: float | int | list[int] | str
    note: str = ""

    def override(self) -> str:
        """The `-S` argument of `dvc exp run` that applies this suggestion."""
        if isinstance(self.value, list):
            return f"{self.param}=[{','.join(str(width) for width in self.value)}]"
        return f"{self.param}={format_value(self.value)}"


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    family: str  # "keras", "sklearn", or "both"
    evidence: str  # what the histories and test metrics show, in numbers
    suggestions: tuple[Suggestion, ...]  # first: the param to change first
    # Over K replicates: how many show this finding, of how many, and the first that
    # does (whose numbers `evidence` quotes).
    seen_in: tuple[int, int] = (1, 1)
    replicate: int = 0

    @property
    def param(self) -> str:
        return self.suggestions[0].param

    @property
    def prevalence(self) -> str:
        """ "" for one training run, else e.g. " in 5 of 6 replicates"."""
        seen, count = self.seen_in
        return "" if count == 1 else f" in {seen} of {count} replicates"


@dataclass(frozen=True)
class ModelEvidence:
    """What diagnosis reads about one trained model."""

    family: str
    history: pd.DataFrame  # epoch, loss, accuracy, val_loss, val_accuracy
    test_roc_auc: float
    roc_auc_interval: tuple[float, float]  # bootstrap confidence interval
    stopped_early: bool


def format_value(value: float | int | str) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def label_entropy(positive_fraction: float) -> float:
    """Log-loss of always predicting the base rate: what a network that learnt
    nothing converges to."""
    p = positive_fraction
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def _scaled(value: float, factor: float) -> float:
    return float(f"{value * factor:.3g}")


def _more_regularization(spec: ModelSpec, family: str) -> tuple[Suggestion, ...]:
    suggestions = [
        Suggestion(
            "model.l2",
            1e-4 if spec.l2 == 0 else _scaled(spec.l2, 10),
            spec.l2,
            "a stronger L2 penalty shrinks the weights (both libraries)",
        )
    ]
    if family == "keras":
        if spec.dropout < 0.5:
            suggestions.append(
                Suggestion(
                    "model.dropout",
                    round(min(spec.dropout + 0.2, 0.5), 2),
                    spec.dropout,
                    "dropout after each hidden layer (Keras only)",
                )
            )
        suggestions.append(
            Suggestion(
                "model.l1",
                1e-5 if spec.l1 == 0 else _scaled(spec.l1, 10),
                spec.l1,
                "an L1 penalty drives useless weights to zero (Keras only)",
            )
        )
    if spec.patience == 0:
        suggestions.append(
            Suggestion(
                "model.patience",
                3,
                0,
                "early stopping: stop when val_loss stops falling, keep the best epoch",
            )
        )
    return tuple(suggestions)


def _learning_rate_is_high(spec: ModelSpec) -> bool:
    return spec.learning_rate >= HIGH_LEARNING_RATE[spec.optimizer]


def _learning_rate_change(spec: ModelSpec, larger_note: str) -> Suggestion:
    """Larger steps, unless the learning rate is already high for the optimizer."""
    if _learning_rate_is_high(spec):
        return Suggestion(
            "model.learning_rate",
            _scaled(spec.learning_rate, 0.1),
            spec.learning_rate,
            f"{spec.learning_rate:g} is high for {spec.optimizer}: steps this large "
            "overshoot or leave ReLU units dead",
        )
    return Suggestion(
        "model.learning_rate", _scaled(spec.learning_rate, 10), spec.learning_rate, larger_note
    )


def _wider(hidden_layers: list[int]) -> list[int]:
    return [2 * units for units in hidden_layers] if hidden_layers else [10]


def _diverged(history: pd.DataFrame, family: str, spec: ModelSpec, chance: float) -> Finding | None:
    losses = history[["loss", "val_loss"]].to_numpy(dtype=float)
    bad_rows = np.flatnonzero(~np.isfinite(losses).all(axis=1))
    loss = history["loss"].to_numpy(float)
    rises = int(np.count_nonzero(np.diff(loss) > TOLERANCE))
    if len(bad_rows):
        epoch = int(history["epoch"].iloc[bad_rows[0]])
        evidence = f"the loss is not a number from epoch {epoch} on: the weights blew up"
    elif len(history) >= 2 and loss[-1] > loss[0] * (1 + DIVERGENCE_RISE):
        evidence = (
            f"the training loss rose from {loss[0]:.4f} (epoch 1) to {loss[-1]:.4f} "
            f"(epoch {int(history['epoch'].iloc[-1])}): the steps overshoot"
        )
    elif (
        len(history) >= PLATEAU_EPOCHS + 1
        and rises >= UNSTABLE_SHARE * (len(history) - 1)
        and loss[-1] >= PLATEAU_CHANCE_SHARE * chance
    ):
        evidence = (
            f"the training loss went up in {rises} of {len(history) - 1} epochs and ends at "
            f"{loss[-1]:.4f}, next to the chance level {chance:.4f}: the steps overshoot"
        )
    else:
        return None
    return Finding(
        "diverged",
        family,
        evidence,
        (
            Suggestion(
                "model.learning_rate",
                _scaled(spec.learning_rate, 0.1),
                spec.learning_rate,
                "smaller steps (a learning rate too high diverges)",
            ),
            Suggestion(
                "model.batch_size",
                spec.batch_size * 2,
                spec.batch_size,
                "larger batches give less noisy gradients",
            ),
        ),
    )


def _overfitting(
    history: pd.DataFrame, family: str, spec: ModelSpec, stopped_early: bool
) -> Finding | None:
    loss, val_loss = history["loss"].to_numpy(float), history["val_loss"].to_numpy(float)
    epochs = history["epoch"].to_numpy()
    best = int(np.argmin(val_loss))
    last = len(history) - 1
    # With early stopping on, a rising tail is how training ends, and the model kept
    # is the best epoch's: the remedy is already in place.
    rising = (
        spec.patience == 0
        and not stopped_early
        and last - best >= RISE_EPOCHS
        and val_loss[last] > val_loss[best] * (1 + RISE)
        and loss[last] < loss[best]
    )
    gap = float(history["accuracy"].iloc[-1] - history["val_accuracy"].iloc[-1])
    if rising:
        evidence = (
            f"val_loss rose from {val_loss[best]:.4f} (epoch {epochs[best]}, its minimum) "
            f"to {val_loss[last]:.4f} (epoch {epochs[last]}) while the training loss fell "
            f"from {loss[best]:.4f} to {loss[last]:.4f}"
        )
    elif gap >= ACCURACY_GAP:
        evidence = (
            f"train accuracy {history['accuracy'].iloc[-1]:.4f} vs validation accuracy "
            f"{history['val_accuracy'].iloc[-1]:.4f} at epoch {epochs[last]}: a gap of "
            f"{gap:.3f} (>= {ACCURACY_GAP:g})"
        )
    else:
        return None
    return Finding("overfitting", family, evidence, _more_regularization(spec, family))


def _plateau(history: pd.DataFrame, family: str, spec: ModelSpec, chance: float) -> Finding | None:
    if len(history) <= PLATEAU_EPOCHS:
        return None
    recent = history["loss"].to_numpy(float)[-(PLATEAU_EPOCHS + 1) :]
    change = float(recent.max() - recent.min())
    if change >= PLATEAU_CHANGE or recent[-1] < PLATEAU_CHANCE_SHARE * chance:
        return None
    first_epoch = int(history["epoch"].iloc[-(PLATEAU_EPOCHS + 1)])
    evidence = (
        f"the training loss stayed at {recent[-1]:.4f} from epoch {first_epoch} to "
        f"{int(history['epoch'].iloc[-1])} (it moved {change:.5f} < {PLATEAU_CHANGE:g}), "
        f"next to the chance level {chance:.4f} of always predicting the base rate: "
        "training is stuck"
    )
    return Finding(
        "plateau",
        family,
        evidence,
        (
            _learning_rate_change(spec, "larger steps to leave the plateau"),
            Suggestion(
                "model.batch_size",
                max(1, spec.batch_size // 2),
                spec.batch_size,
                "more, noisier steps per epoch",
            ),
        ),
    )


def _underfitting(model: ModelEvidence, spec: ModelSpec, confidence: float) -> Finding | None:
    low, high = model.roc_auc_interval
    if not low <= 0.5 <= high:
        return None
    evidence = (
        f"test ROC AUC {model.test_roc_auc:.3f} ({confidence:.0%} CI {low:.3f} to {high:.3f}) "
        f"includes 0.5: no better than chance; the last train accuracy is "
        f"{model.history['accuracy'].iloc[-1]:.4f}. If the data has signal, the network "
        "does not find it"
    )
    return Finding(
        "underfitting",
        model.family,
        evidence,
        _ordered_for_underfitting(spec),
    )


def _ordered_for_underfitting(spec: ModelSpec) -> tuple[Suggestion, ...]:
    capacity = Suggestion(
        "model.hidden_layers", _wider(spec.hidden_layers), spec.hidden_layers, "more capacity"
    )
    steps = _learning_rate_change(spec, "larger steps")
    longer = Suggestion("model.epochs", spec.epochs * 2, spec.epochs, "longer training")
    # A learning rate far too high is the likelier culprit than too small a network.
    if _learning_rate_is_high(spec):
        return (steps, capacity, longer)
    return (capacity, steps, longer)


def _not_converged(
    history: pd.DataFrame, family: str, spec: ModelSpec, stopped_early: bool
) -> Finding | None:
    if stopped_early or len(history) < 2:
        return None
    loss, val_loss = history["loss"].to_numpy(float), history["val_loss"].to_numpy(float)
    drop = float(loss[-2] - loss[-1])
    # More epochs help only while the validation loss still improves too.
    if drop <= TOLERANCE or val_loss[-1] > val_loss.min() + TOLERANCE:
        return None
    evidence = (
        f"the training loss still fell by {drop:.4f} in the last epoch "
        f"({loss[-2]:.4f} to {loss[-1]:.4f}, more than tol = {TOLERANCE:g}) and val_loss "
        f"{val_loss[-1]:.4f} is at its minimum"
    )
    if family == "sklearn":
        evidence += (
            "; scikit-learn's own fit() would raise ConvergenceWarning here (the pipeline "
            "calls partial_fit once per epoch, which never warns)"
        )
    return Finding(
        "not_converged",
        family,
        evidence,
        (
            Suggestion("model.epochs", spec.epochs * 2, spec.epochs, "train longer"),
            Suggestion(
                "model.learning_rate",
                _scaled(spec.learning_rate, 3),
                spec.learning_rate,
                "or take larger steps",
            ),
        ),
    )


def _no_signal(models: list[ModelEvidence], data: DatasetConfig, confidence: float) -> Finding:
    results = ", ".join(
        f"{model.family} {model.test_roc_auc:.3f} ({confidence:.0%} CI "
        f"{model.roc_auc_interval[0]:.3f} to {model.roc_auc_interval[1]:.3f})"
        for model in models
    )
    evidence = (
        f"dataset.kind = {data.kind}: the labels are drawn independently of the "
        f"features, so there is no learnable signal. Test ROC AUC {results}. This is the "
        "control run: no model setting can beat chance here, and a model that seemed to "
        "would point to a leak. Judge the models on data with signal"
    )
    return Finding(
        "no_signal",
        "both",
        evidence,
        (
            Suggestion(
                "dataset.kind",
                "classification",
                data.kind,
                "data with signal, to compare the models on",
            ),
        ),
    )


def class_entropy(class_fractions: list[float]) -> float:
    """Log-loss of always predicting the class frequencies, for any number of classes."""
    return -sum(p * math.log(p) for p in class_fractions if p > 0)


def diagnose(
    models: list[ModelEvidence],
    spec: ModelSpec,
    data: DatasetConfig,
    confidence: float,
    class_fractions: list[float] | None = None,
) -> list[Finding]:
    """Findings for each model, most severe first; none when training looks healthy.

    `class_fractions` (the share of each class in the data) sets the chance-level
    loss; without it, generated data's `positive_fraction` does.
    """
    findings: list[Finding] = []
    no_signal = data.source == "synthetic" and data.kind == "random_labels"
    if no_signal:
        findings.append(_no_signal(models, data, confidence))
    chance = (
        class_entropy(class_fractions)
        if class_fractions is not None
        else label_entropy(data.positive_fraction)
    )
    for model in models:
        history = model.history
        diverged = _diverged(history, model.family, spec, chance)
        if diverged is not None:
            # The rest of a blown-up history says nothing.
            findings.append(diverged)
            continue
        if no_signal:
            # Without signal, over- and under-fitting are what the control shows.
            continue
        plateau = _plateau(history, model.family, spec, chance)
        # A plateau at chance is the more specific reason for a chance result, and
        # the advice for under-fitting already includes more epochs.
        underfitting = None if plateau else _underfitting(model, spec, confidence)
        candidates = [
            plateau,
            underfitting,
            _overfitting(history, model.family, spec, model.stopped_early),
            None
            if plateau or underfitting
            else _not_converged(history, model.family, spec, model.stopped_early),
        ]
        findings.extend(finding for finding in candidates if finding is not None)
    return findings


def diagnose_replicates(
    replicates: list[list[ModelEvidence]],
    spec: ModelSpec,
    data: DatasetConfig,
    confidence: float,
    class_fractions: list[float] | None = None,
) -> list[Finding]:
    """`diagnose` for each replicate (both families' models of replicate r), and one
    finding per family and kind: from the first replicate that shows it, with how
    many of the K replicates do. A finding in one replicate of six is a draw of the
    random numbers; in six of six, a property of the setting."""
    per_replicate = [
        diagnose(models, spec, data, confidence, class_fractions) for models in replicates
    ]
    counts = Counter(
        (finding.family, finding.kind) for findings in per_replicate for finding in findings
    )
    first: dict[tuple[str, str], Finding] = {}
    for replicate, findings in enumerate(per_replicate):
        for finding in findings:
            key = (finding.family, finding.kind)
            if key not in first:
                first[key] = replace(
                    finding, seen_in=(counts[key], len(replicates)), replicate=replicate
                )
    return list(first.values())
