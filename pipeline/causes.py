"""Findings that name a setting as the cause: regularization that holds a model at
chance, an unweighted class imbalance, batches too large for the data, a network too
narrow for it."""

import math
from dataclasses import replace

import pandas as pd

from pipeline.config import ModelSpec, SplitConfig
from pipeline.findings import (
    CHANCE_SHARE,
    REGULARIZATION_NAMES,
    Finding,
    ModelEvidence,
    Suggestion,
    is_narrow,
    ordered_for_not_converged,
    ordered_for_underfitting,
    regularizers,
    weaker,
)

# Fewer optimizer steps per epoch than this: the batches are too large for the data,
# and each epoch moves the weights only a few times.
MIN_STEPS_PER_EPOCH = 10
# A narrow network under-fits when its training loss stays above this share of the
# chance level: it has removed less than half of the labels' uncertainty.
NARROW_LOSS_SHARE = 0.5
# Imbalance: the largest class holds at least this share of the rows, and validation
# accuracy is at most IMBALANCE_MARGIN above that share: always predicting the
# majority class would score as well.
IMBALANCE_MAJORITY = 0.7
IMBALANCE_MARGIN = 0.01
# Strengths commonly used for small MLPs; a setting's ratio to its own orders which one
# to lower first when regularization holds a model at chance.
# The findings that too few optimizer steps per epoch can explain.
SLOW_KINDS = ("plateau", "underfitting", "not_converged")


def too_narrow(
    history: pd.DataFrame, family: str, spec: ModelSpec, chance: float
) -> Finding | None:
    """A tiny network whose training loss stays above half the chance level: too few
    units to fit even the training rows."""
    loss = float(history["loss"].iloc[-1])
    if not is_narrow(spec) or loss < NARROW_LOSS_SHARE * chance:
        return None
    layers = (
        "no hidden layer (a linear model)"
        if not spec.hidden_layers
        else (f"hidden layers {spec.hidden_layers}")
    )
    evidence = (
        f"with {layers} the training loss ends at {loss:.4f}, {loss / chance:.0%} of the "
        f"chance level {chance:.4f}, after {len(history)} epochs; train accuracy "
        f"{history['accuracy'].iloc[-1]:.4f}: the network is too small to fit even the "
        "training rows"
    )
    return Finding("underfitting", family, evidence, ordered_for_underfitting(spec))


def over_regularized(
    model: ModelEvidence, spec: ModelSpec, chance: float, models: list[ModelEvidence]
) -> Finding | None:
    """Both losses end at or above the chance level while a penalty or dropout is on:
    the regularization, not the data, shapes the weights."""
    active = regularizers(spec, model.family)
    loss, val_loss = (float(model.history[column].iloc[-1]) for column in ("loss", "val_loss"))
    if not active or min(loss, val_loss) < CHANCE_SHARE * chance:
        return None
    settings = ", ".join(f"model.{key} = {value:g}" for key, value in active)
    where = "above" if val_loss > chance else "next to"
    evidence = (
        f"the training loss ends at {loss:.4f} and val_loss at {val_loss:.4f}, {where} the "
        f"chance level {chance:.4f} of always predicting the base rate, with {settings}; "
        f"test ROC AUC {model.test_roc_auc:.3f}: the regularization outweighs what the "
        "data teach"
    )
    keras_only = [key for key, _ in active if key != "l2"]
    for other in models:
        other_loss = float(other.history["val_loss"].iloc[-1])
        if keras_only and other.family != model.family and other_loss < CHANCE_SHARE * chance:
            evidence += (
                f". {other.family}, which trains without "
                f"{' or '.join(REGULARIZATION_NAMES[key] for key in keras_only)}, reaches "
                f"val_loss {other_loss:.4f} and test ROC AUC {other.test_roc_auc:.3f}"
            )
            break
    return Finding(
        "over_regularized",
        model.family,
        evidence,
        tuple(weaker(key, value) for key, value in active),
    )


def imbalance(
    history: pd.DataFrame, family: str, spec: ModelSpec, class_fractions: list[float]
) -> Finding | None:
    """Accuracy no better than always predicting the majority class, on skewed data."""
    majority = max(class_fractions)
    accuracy = float(history["val_accuracy"].iloc[-1])
    if (
        spec.class_weight == "balanced"
        or majority < IMBALANCE_MAJORITY
        or accuracy > majority + IMBALANCE_MARGIN
    ):
        return None
    evidence = (
        f"validation accuracy {accuracy:.4f} is no better than the majority rate "
        f"{majority:.4f}: the largest class holds {majority:.0%} of the rows, and a model "
        "that always predicts it scores as well. Accuracy hides this; judge the model by "
        "ROC AUC, recall or F1"
    )
    return Finding(
        "imbalance",
        family,
        evidence,
        (
            Suggestion(
                "model.class_weight",
                "balanced",
                spec.class_weight,
                "weigh each class's rows inversely to its share, so the rare class counts",
            ),
        ),
    )


def with_few_steps(finding: Finding, spec: ModelSpec, train_rows: int | None) -> Finding:
    """A slow or stuck training, explained by batches too large for the data: fewer
    than MIN_STEPS_PER_EPOCH optimizer steps per epoch. Smaller batches come first."""
    if train_rows is None:
        return finding
    steps = math.ceil(train_rows / spec.batch_size)
    if steps >= MIN_STEPS_PER_EPOCH:
        return finding
    # The largest power of two that gives MIN_STEPS_PER_EPOCH steps, at most 32.
    smaller = 2 ** max(0, int(math.log2(max(1, train_rows // MIN_STEPS_PER_EPOCH))))
    smaller = min(32, smaller, max(1, spec.batch_size // 2))
    batch = Suggestion(
        "model.batch_size",
        smaller,
        spec.batch_size,
        f"{math.ceil(train_rows / smaller)} steps per epoch instead of {steps}",
    )
    others = tuple(
        suggestion for suggestion in finding.suggestions if suggestion.param != "model.batch_size"
    )
    evidence = (
        f"{finding.evidence}; with {train_rows} train rows and model.batch_size = "
        f"{spec.batch_size} the optimizer takes only {steps} step{'s' if steps > 1 else ''} "
        f"per epoch, {steps * spec.epochs} in all"
    )
    return replace(finding, evidence=evidence, suggestions=(batch, *others))


def barely_trained(
    history: pd.DataFrame, family: str, spec: ModelSpec, train_rows: int | None, chance: float
) -> Finding | None:
    """Too few steps in all to learn: fewer than MIN_STEPS_PER_EPOCH per epoch, and the
    training loss still at chance. The loss moves too slowly for the other rules (a
    creep, not a plateau), yet the model has barely begun."""
    loss = float(history["loss"].iloc[-1])
    if train_rows is None or loss < CHANCE_SHARE * chance:
        return None
    if math.ceil(train_rows / spec.batch_size) >= MIN_STEPS_PER_EPOCH:
        return None
    evidence = (
        f"the training loss ends at {loss:.4f}, {loss / chance:.0%} of the chance level "
        f"{chance:.4f}, after {len(history)} epochs: training has barely begun"
    )
    # `diagnose` adds the steps and the smaller batch, as to every slow finding.
    return Finding("not_converged", family, evidence, ordered_for_not_converged(spec))


def estimated_train_rows(test_rows: int, split: SplitConfig) -> int:
    """The train rows of a split with `test_rows` test rows: the stages after training
    read only the test rows, and the fractions are of all rows."""
    train_share = 1 - split.test_size - split.validation_size
    return max(1, round(test_rows * train_share / split.test_size))
