"""What the diagnosis reports: a finding, its evidence, and the params it suggests
changing, in the order to try them."""

import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from pipeline.config import ModelSpec

FindingKind = Literal[
    "no_signal",
    "diverged",
    "over_regularized",
    "imbalance",
    "overfitting",
    "underfitting",
    "not_converged",
    "plateau",
]

# Learning rates above these are unusually high for the optimizer: steps this large
# overshoot, or push ReLU units into never firing again (a flat loss at chance).
# A loss at or above this share of the chance level (the loss of always predicting
# the class frequencies) is at chance: the model has learnt next to nothing.
CHANCE_SHARE = 0.9
HIGH_LEARNING_RATE = {"adam": 0.05, "sgd": 0.5}
# ... and below these unusually low: each step moves the weights so little that
# slow progress is the symptom, and larger steps the remedy, before more epochs.
LOW_LEARNING_RATE = {"adam": 1e-4, "sgd": 1e-3}
# A network without a hidden layer, or with one narrower than this, has too little
# capacity for any but (nearly) linear boundaries: more units come before more steps.
NARROW_WIDTH = 4
TYPICAL_REGULARIZATION = {"l1": 1e-4, "l2": 1e-3, "dropout": 0.3}
REGULARIZATION_NAMES = {"l1": "an L1 penalty", "l2": "an L2 penalty", "dropout": "dropout"}


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


def class_entropy(class_fractions: list[float]) -> float:
    """Log-loss of always predicting the class frequencies, for any number of classes."""
    return -sum(p * math.log(p) for p in class_fractions if p > 0)


def scaled(value: float, factor: float) -> float:
    return float(f"{value * factor:.3g}")


def more_regularization(spec: ModelSpec, family: str) -> tuple[Suggestion, ...]:
    suggestions = [
        Suggestion(
            "model.l2",
            1e-4 if spec.l2 == 0 else scaled(spec.l2, 10),
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
                1e-5 if spec.l1 == 0 else scaled(spec.l1, 10),
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


def learning_rate_is_high(spec: ModelSpec) -> bool:
    return spec.learning_rate >= HIGH_LEARNING_RATE[spec.optimizer]


def learning_rate_is_low(spec: ModelSpec) -> bool:
    return spec.learning_rate < LOW_LEARNING_RATE[spec.optimizer]


def learning_rate_change(spec: ModelSpec, larger_note: str) -> Suggestion:
    """Larger steps, unless the learning rate is already high for the optimizer."""
    if learning_rate_is_high(spec):
        return Suggestion(
            "model.learning_rate",
            scaled(spec.learning_rate, 0.1),
            spec.learning_rate,
            f"{spec.learning_rate:g} is high for {spec.optimizer}: steps this large "
            "overshoot or leave ReLU units dead",
        )
    return Suggestion(
        "model.learning_rate", scaled(spec.learning_rate, 10), spec.learning_rate, larger_note
    )


def wider(hidden_layers: list[int]) -> list[int]:
    return [2 * units for units in hidden_layers] if hidden_layers else [10]


def is_narrow(spec: ModelSpec) -> bool:
    """No hidden layer (a linear model), or one of fewer than NARROW_WIDTH units."""
    return not spec.hidden_layers or min(spec.hidden_layers) < NARROW_WIDTH


def ordered_for_underfitting(spec: ModelSpec) -> tuple[Suggestion, ...]:
    capacity = Suggestion(
        "model.hidden_layers", wider(spec.hidden_layers), spec.hidden_layers, "more capacity"
    )
    steps = learning_rate_change(spec, "larger steps")
    longer = Suggestion("model.epochs", spec.epochs * 2, spec.epochs, "longer training")
    # A learning rate far too high is the likelier culprit than too small a network,
    # unless the network is tiny; a learning rate far too low, unless it is tiny too.
    if learning_rate_is_high(spec) and not is_narrow(spec):
        return (steps, capacity, longer)
    if learning_rate_is_low(spec) and not is_narrow(spec):
        return (steps, capacity, longer)
    return (capacity, steps, longer)


def ordered_for_not_converged(spec: ModelSpec) -> tuple[Suggestion, ...]:
    longer = Suggestion("model.epochs", spec.epochs * 2, spec.epochs, "train longer")
    if is_narrow(spec):
        capacity = Suggestion(
            "model.hidden_layers",
            wider(spec.hidden_layers),
            spec.hidden_layers,
            f"a network of {spec.hidden_layers} hidden units fits only simple boundaries, "
            "and slowly",
        )
        return (capacity, longer)
    if learning_rate_is_low(spec):
        steps = Suggestion(
            "model.learning_rate",
            scaled(spec.learning_rate, 10),
            spec.learning_rate,
            f"{spec.learning_rate:g} is low for {spec.optimizer}: each step barely moves "
            "the weights",
        )
        return (steps, longer)
    steps = Suggestion(
        "model.learning_rate",
        scaled(spec.learning_rate, 3),
        spec.learning_rate,
        "or take larger steps",
    )
    return (longer, steps)


def regularizers(spec: ModelSpec, family: str) -> list[tuple[str, float]]:
    """The penalties and dropout this family trains with, the strongest (relative to
    its typical strength) first; scikit-learn has only the L2 penalty."""
    keys = ("l1", "l2", "dropout") if family == "keras" else ("l2",)
    active = [(key, float(getattr(spec, key))) for key in keys if getattr(spec, key) > 0]
    return sorted(active, key=lambda item: item[1] / TYPICAL_REGULARIZATION[item[0]], reverse=True)


def weaker(key: str, value: float) -> Suggestion:
    if key == "dropout":
        return Suggestion(
            "model.dropout", round(value / 2, 2), value, "drop half as many units (Keras only)"
        )
    scope = "Keras only" if key == "l1" else "both libraries"
    return Suggestion(
        f"model.{key}", scaled(value, 0.1), value, f"a penalty ten times weaker ({scope})"
    )
