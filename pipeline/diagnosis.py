"""The textbook's FAQ, automated: read the training histories and test results, name
what went wrong (over-fitting, under-fitting, slow or failed convergence, a setting
that causes it, or data without signal), the evidence in numbers, and the params to
change."""

from collections import Counter
from dataclasses import replace

import numpy as np
import pandas as pd

from pipeline.causes import (
    SLOW_KINDS,
    barely_trained,
    estimated_train_rows,
    imbalance,
    over_regularized,
    too_narrow,
    with_few_steps,
)
from pipeline.config import DatasetConfig, ModelSpec
from pipeline.findings import (
    CHANCE_SHARE,
    Finding,
    FindingKind,
    ModelEvidence,
    Suggestion,
    class_entropy,
    is_narrow,
    label_entropy,
    learning_rate_change,
    learning_rate_is_low,
    more_regularization,
    ordered_for_not_converged,
    ordered_for_underfitting,
    scaled,
)

# What callers (the compare stage, the tests, the benchmarks) import from here.
__all__ = [
    "Finding",
    "FindingKind",
    "ModelEvidence",
    "Suggestion",
    "class_entropy",
    "diagnose",
    "diagnose_replicates",
    "estimated_train_rows",
    "label_entropy",
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
# sits at chance (at least CHANCE_SHARE of the loss of always predicting the base rate).
PLATEAU_EPOCHS = 3
PLATEAU_CHANGE = 1e-3
# Divergence: the last training loss exceeds the first by this relative margin, or
# the loss rose (by more than TOLERANCE) in at least this share of the epochs while
# staying near the chance level: the steps overshoot.
DIVERGENCE_RISE = 0.05
UNSTABLE_SHARE = 0.5
# Not converged: besides a training loss still falling, val_loss fell by at least this
# share per epoch over the last PLATEAU_EPOCHS epochs. Adam creeps on for hundreds of
# epochs by more than `tol`; below half a percent per epoch, doubling the epochs
# buys little.
CONVERGENCE_GAIN = 0.005


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
        and loss[-1] >= CHANCE_SHARE * chance
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
                scaled(spec.learning_rate, 0.1),
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
        # Near zero, a relative rise is noise: 0.0001 to 0.0002 is no over-fitting.
        and val_loss[last] - val_loss[best] > PLATEAU_CHANGE
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
    return Finding("overfitting", family, evidence, more_regularization(spec, family))


def _plateau(history: pd.DataFrame, family: str, spec: ModelSpec, chance: float) -> Finding | None:
    if len(history) <= PLATEAU_EPOCHS:
        return None
    recent = history["loss"].to_numpy(float)[-(PLATEAU_EPOCHS + 1) :]
    change = float(recent.max() - recent.min())
    if change >= PLATEAU_CHANGE or recent[-1] < CHANCE_SHARE * chance:
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
            learning_rate_change(spec, "larger steps to leave the plateau"),
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
        ordered_for_underfitting(spec),
    )


def _not_converged(
    history: pd.DataFrame, family: str, spec: ModelSpec, stopped_early: bool
) -> Finding | None:
    if stopped_early or len(history) < 2:
        return None
    loss, val_loss = history["loss"].to_numpy(float), history["val_loss"].to_numpy(float)
    drop = float(loss[-2] - loss[-1])
    window = min(PLATEAU_EPOCHS, len(history) - 1)
    gain = float((val_loss[-1 - window] - val_loss[-1]) / val_loss[-1] / window)
    # More epochs help only while the validation loss still improves too, and by more
    # than a creep; with tiny steps a creep is the symptom itself.
    if (
        drop <= TOLERANCE
        or val_loss[-1] > val_loss.min() + TOLERANCE
        or (gain < CONVERGENCE_GAIN and not learning_rate_is_low(spec))
    ):
        return None
    evidence = (
        f"the training loss still fell by {drop:.4f} in the last epoch "
        f"({loss[-2]:.4f} to {loss[-1]:.4f}, more than tol = {TOLERANCE:g}) and val_loss "
        f"{val_loss[-1]:.4f} is at its minimum, {gain:.1%} per epoch lower over the last "
        f"{window} epoch{'s' if window > 1 else ''}"
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
        ordered_for_not_converged(spec),
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


def diagnose(
    models: list[ModelEvidence],
    spec: ModelSpec,
    data: DatasetConfig,
    confidence: float,
    class_fractions: list[float] | None = None,
    train_rows: int | None = None,
) -> list[Finding]:
    """Findings for each model, most severe first; none when training looks healthy.

    `class_fractions` (the share of each class in the data) sets the chance-level
    loss and the majority rate; without it, generated data's `positive_fraction` does.
    `train_rows`, where known, tells how many optimizer steps an epoch takes.
    """
    findings: list[Finding] = []
    no_signal = data.source == "synthetic" and data.kind == "random_labels"
    if no_signal:
        findings.append(_no_signal(models, data, confidence))
    fractions = (
        class_fractions
        if class_fractions is not None
        else [1 - data.positive_fraction, data.positive_fraction]
    )
    chance = class_entropy(fractions)
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
        # A penalty that holds the model at chance explains a plateau or a chance
        # result better than the learning rate or the network's size.
        regularized = over_regularized(model, spec, chance, models)
        # A tiny network at chance needs units, not larger steps: no plateau for it.
        plateau = (
            None
            if regularized or is_narrow(spec)
            else _plateau(history, model.family, spec, chance)
        )
        # A plateau at chance is the more specific reason for a chance result, and
        # the advice for under-fitting already includes more epochs.
        underfitting = (
            None
            if regularized or plateau
            else _underfitting(model, spec, confidence)
            or too_narrow(history, model.family, spec, chance)
        )
        not_converged = (
            None
            if regularized or plateau or underfitting
            else _not_converged(history, model.family, spec, model.stopped_early)
            or barely_trained(history, model.family, spec, train_rows, chance)
        )
        candidates = [
            imbalance(history, model.family, spec, fractions),
            regularized,
            plateau,
            underfitting,
            _overfitting(history, model.family, spec, model.stopped_early),
            not_converged,
        ]
        # A slow or stuck training may be one of too few steps per epoch.
        candidates = [
            with_few_steps(finding, spec, train_rows)
            if finding is not None and finding.kind in SLOW_KINDS
            else finding
            for finding in candidates
        ]
        findings.extend(finding for finding in candidates if finding is not None)
    return findings


def diagnose_replicates(
    replicates: list[list[ModelEvidence]],
    spec: ModelSpec,
    data: DatasetConfig,
    confidence: float,
    class_fractions: list[float] | None = None,
    train_rows: int | None = None,
) -> list[Finding]:
    """`diagnose` for each replicate (both families' models of replicate r), and one
    finding per family and kind: from the first replicate that shows it, with how many
    of the K replicates do, the commonest first. A family's findings are reported only
    when at least half of its replicates show some finding.

    A problem in one replicate of six is a draw of the random numbers; in six of six, a
    property of the setting, which is what a suggested param change can act on. The
    rule counts replicates with any finding, not with the same one: a learning rate far
    too high shows as a divergence in one replicate and dead units at chance in the
    next. Before it, the defaults trained for 100 epochs were called over-fitting in 3
    of 25 healthy runs (seeds 10 to 14), each time in 1 replicate of 3."""
    per_replicate = [
        diagnose(models, spec, data, confidence, class_fractions, train_rows)
        for models in replicates
    ]
    counts = Counter(
        (finding.family, finding.kind) for findings in per_replicate for finding in findings
    )
    affected = Counter(
        family for findings in per_replicate for family in {finding.family for finding in findings}
    )
    first: dict[tuple[str, str], Finding] = {}
    for replicate, findings in enumerate(per_replicate):
        for finding in findings:
            key = (finding.family, finding.kind)
            if key not in first and 2 * affected[finding.family] >= len(replicates):
                first[key] = replace(
                    finding, seen_in=(counts[key], len(replicates)), replicate=replicate
                )
    # The commonest first: a finding in all K replicates is the setting's, one in a
    # single replicate may be chance. Ties keep the order of severity.
    return sorted(first.values(), key=lambda finding: -finding.seen_in[0])
