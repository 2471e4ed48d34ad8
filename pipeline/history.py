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

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.files import read_json, write_csv, write_json

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


def replicate_label(family: str, replicate: int, count: int) -> str:
    """`keras` for a single training run, `keras#2` for replicate 2 of several."""
    return family if count == 1 else f"{family}#{replicate}"


def replicate_histories(histories: list[pd.DataFrame]) -> pd.DataFrame:
    """Every replicate's history in one table, with a leading `replicate` column."""
    return pd.concat(
        [history.assign(replicate=index) for index, history in enumerate(histories)],
        ignore_index=True,
    )[["replicate", *COLUMNS]]


def mean_history(histories: list[pd.DataFrame]) -> pd.DataFrame:
    """Per epoch, the mean over the replicates that trained that epoch (early
    stopping may end some sooner): the family's curve in plots and MLflow."""
    combined = pd.concat(histories, ignore_index=True)
    return combined.groupby("epoch", as_index=False)[list(COLUMNS[1:])].mean()[list(COLUMNS)]


def split_histories(table: pd.DataFrame) -> list[pd.DataFrame]:
    """The inverse of `replicate_histories`: one history per replicate, in order."""
    return [
        group.drop(columns="replicate").reset_index(drop=True)
        for _, group in table.groupby("replicate", sort=True)
    ]


def family_summary(summaries: list[TrainingSummary], seeds: list[int]) -> dict[str, Any]:
    """summary.json: replicate 0's epochs (the family's model) and each replicate's
    own epochs; nothing that changes between two identical runs."""
    first = summaries[0]
    return {
        "replicate_count": len(summaries),
        "epochs_trained": first.epochs_trained,
        "best_epoch": first.best_epoch,
        "stopped_early": first.stopped_early,
        "replicates": [
            {
                "replicate": index,
                "seed": seed,
                "epochs_trained": summary.epochs_trained,
                "best_epoch": summary.best_epoch,
                "stopped_early": summary.stopped_early,
            }
            for index, (summary, seed) in enumerate(zip(summaries, seeds, strict=True))
        ],
    }


def family_timing(
    summaries: list[TrainingSummary], train_seconds: float, n_rows: int
) -> dict[str, float]:
    """timing.json: the time of all replicates together and their throughput."""
    epochs = sum(summary.epochs_trained for summary in summaries)
    return {"train_seconds": train_seconds, "samples_per_second": n_rows * epochs / train_seconds}


def read_summary(family: str) -> dict[str, Any]:
    """summary.json, with timing.json's numbers where that file exists (it is absent
    after `dvc pull` or `dvc checkout`, which restore DVC outputs only)."""
    summary = read_json(paths.SUMMARIES[family])
    if paths.TIMINGS[family].exists():
        summary.update(read_json(paths.TIMINGS[family]))
    return summary


def read_history(path: Path, replicates: bool = False) -> pd.DataFrame:
    """A history.csv, or with `replicates` a replicate_histories.csv."""
    try:
        history = pd.read_csv(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; run the training stages first") from None
    expected = {*COLUMNS, "replicate"} if replicates else set(COLUMNS)
    missing = expected - set(history.columns)
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


def write_training_records(
    family: str,
    histories: list[pd.DataFrame],
    summary: dict[str, Any],
    timing: dict[str, float],
) -> None:
    """A training stage's history.csv (the replicates' mean), replicate_histories.csv,
    summary.json and timing.json."""
    write_csv(mean_history(histories), paths.HISTORIES[family])
    write_csv(replicate_histories(histories), paths.REPLICATE_HISTORIES[family])
    write_json(summary, paths.SUMMARIES[family])
    write_json(timing, paths.TIMINGS[family])
