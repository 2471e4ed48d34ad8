"""What both trainers share: the per-epoch history they record in the same shape,
early stopping, the summary, the optimizer's constants, class weights and chunked
prediction."""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

# `loss` is the mean of the batch losses during the epoch (L2 penalty included), as
# both libraries report it; `val_loss` is the loss on the validation set after the
# epoch, penalty included, as Keras reports it.
COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")

# Keras' Adam defaults (scikit-learn's own epsilon is 1e-8), so that both libraries
# run the same optimizer.
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7
# Rows per forward pass when predicting: large enough to amortize the call, small
# enough that a big test set never sits in memory as activations.
PREDICTION_CHUNK = 65536


@dataclass(frozen=True)
class TrainingSummary:
    epochs_trained: int
    best_epoch: int  # the epoch whose weights the saved model has
    stopped_early: bool
    train_seconds: float
    samples_per_second: float


@dataclass
class EarlyStopping:
    """Keras' EarlyStopping rule on `val_loss`, for loops that are not `model.fit`.

    An epoch improves when its validation loss is strictly lower than the best so
    far; training stops after `patience` epochs without an improvement (never when
    patience is 0), and the caller restores the best epoch's weights.
    """

    patience: int
    best_val_loss: float = float("inf")
    best_epoch: int = 0

    def improved(self, epoch: int, val_loss: float) -> bool:
        """Record the epoch; True when its weights are the best so far."""
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch = val_loss, epoch
            return True
        return False

    def should_stop(self, epoch: int) -> bool:
        return self.patience > 0 and epoch - self.best_epoch >= self.patience


def training_summary(
    epochs_planned: int,
    epochs_trained: int,
    stopping: EarlyStopping,
    train_seconds: float,
    n_rows: int,
) -> TrainingSummary:
    """The summary of a finished loop; without early stopping the last epoch is best."""
    return TrainingSummary(
        epochs_trained=epochs_trained,
        best_epoch=stopping.best_epoch if stopping.patience > 0 else epochs_trained,
        stopped_early=epochs_trained < epochs_planned,
        train_seconds=train_seconds,
        samples_per_second=n_rows * epochs_trained / train_seconds,
    )


def predict_in_chunks(
    predict: Callable[[np.ndarray], np.ndarray], features: np.ndarray
) -> np.ndarray:
    """`predict` over `PREDICTION_CHUNK` rows at a time, the outputs stacked."""
    return np.concatenate(
        [
            predict(features[start : start + PREDICTION_CHUNK])
            for start in range(0, len(features), PREDICTION_CHUNK)
        ]
    )


def log_epoch(family: str, record: dict[str, float], epochs: int) -> None:
    logger.info(
        "%-7s epoch %3d/%d  loss %.4f  val_loss %.4f  accuracy %.4f  val_accuracy %.4f",
        family,
        record["epoch"],
        epochs,
        record["loss"],
        record["val_loss"],
        record["accuracy"],
        record["val_accuracy"],
    )


def history_frame(records: list[dict[str, float]]) -> pd.DataFrame:
    return pd.DataFrame(records, columns=list(COLUMNS))


def read_history(path: Path) -> pd.DataFrame:
    try:
        history = pd.read_csv(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; run the training stages first") from None
    missing = set(COLUMNS) - set(history.columns)
    if missing:
        raise PipelineError(f"{path}: missing columns {sorted(missing)}")
    return history


def class_count(*tables: Any) -> int:
    """Classes in the data: codes run 0..k-1 and every class is in the train split."""
    return int(max(int(table.labels.max()) for table in tables)) + 1


def row_weights(labels: np.ndarray, n_classes: int, class_weight: str) -> np.ndarray:
    """Each row's weight in the loss: 1, or for "balanced" n_rows / (n_classes *
    rows of its class), so that every class weighs the same in total."""
    if class_weight == "none":
        return np.ones(len(labels), dtype=np.float32)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return (len(labels) / (n_classes * counts[labels])).astype(np.float32)
