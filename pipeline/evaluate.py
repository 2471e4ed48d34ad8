"""Evaluate both models on the same test set: metrics, curves and figures
(`data/evaluate/`)."""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics

from pipeline import figures, paths
from pipeline.config import feature_names, load_params
from pipeline.errors import PipelineError, run_stage
from pipeline.files import read_table, write_csv, write_json
from pipeline.history import read_history

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    roc: pd.DataFrame  # fpr, tpr, threshold
    precision_recall: pd.DataFrame  # recall, precision
    confusion: pd.DataFrame  # one row per test row: actual, predicted
    confusion_matrix: np.ndarray  # 2 x 2: rows actual, columns predicted


def evaluate_probabilities(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float
) -> Evaluation:
    """Metrics and curves of predicted probabilities of the positive class."""
    predicted = (probabilities > threshold).astype(np.int32)
    fpr, tpr, roc_thresholds = metrics.roc_curve(labels, probabilities)
    precision, recall, _ = metrics.precision_recall_curve(labels, probabilities)
    scores = {
        "accuracy": metrics.accuracy_score(labels, predicted),
        "precision": metrics.precision_score(labels, predicted, zero_division=0),
        "recall": metrics.recall_score(labels, predicted, zero_division=0),
        "f1": metrics.f1_score(labels, predicted, zero_division=0),
        "roc_auc": metrics.roc_auc_score(labels, probabilities),
        "log_loss": metrics.log_loss(labels, probabilities, labels=[0, 1]),
    }
    return Evaluation(
        metrics={name: float(value) for name, value in scores.items()},
        # The first ROC threshold is +inf, which JSON and CSV readers dislike.
        roc=pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(roc_thresholds, 1.0)}),
        precision_recall=pd.DataFrame({"recall": recall, "precision": precision}),
        confusion=pd.DataFrame({"actual": labels, "predicted": predicted}),
        confusion_matrix=metrics.confusion_matrix(labels, predicted, labels=[0, 1]),
    )


def read_predictions(path: Path, n_rows: int) -> np.ndarray:
    """The test-set probabilities a training stage wrote, one per test row."""
    try:
        probabilities = pd.read_parquet(path)["probability"].to_numpy()
    except (OSError, KeyError, ValueError) as error:
        raise PipelineError(f"{path}: unreadable predictions ({error}); run `dvc repro`") from None
    if len(probabilities) != n_rows or not np.all((probabilities >= 0) & (probabilities <= 1)):
        raise PipelineError(
            f"{path}: expected {n_rows} probabilities in [0, 1], one per test row; "
            "run `dvc repro` to rebuild it"
        )
    return probabilities


def main() -> None:
    params = load_params()
    columns = feature_names(params.dataset.n_features)
    test_set = read_table(paths.TEST, columns)
    # The training stages predicted the test set; TensorFlow does not load here.
    predictions = {
        "keras": read_predictions(paths.KERAS_PREDICTIONS, len(test_set.labels)),
        "sklearn": read_predictions(paths.SKLEARN_PREDICTIONS, len(test_set.labels)),
    }
    evaluations = {
        family: evaluate_probabilities(test_set.labels, probabilities, params.evaluate.threshold)
        for family, probabilities in predictions.items()
    }
    for family, evaluation in evaluations.items():
        write_csv(evaluation.roc, paths.roc_curve(family))
        write_csv(evaluation.precision_recall, paths.precision_recall_curve(family))
        write_csv(evaluation.confusion, paths.confusion(family))
    histories = {
        "keras": read_history(paths.KERAS_HISTORY),
        "sklearn": read_history(paths.SKLEARN_HISTORY),
    }
    figures.save_figure(figures.learning_curves(histories, "loss"), paths.FIGURES / "loss.png")
    figures.save_figure(
        figures.learning_curves(histories, "accuracy"), paths.FIGURES / "accuracy.png"
    )
    figures.save_figure(
        figures.roc_curves(
            {family: evaluation.roc for family, evaluation in evaluations.items()},
            {family: evaluation.metrics["roc_auc"] for family, evaluation in evaluations.items()},
        ),
        paths.FIGURES / "roc.png",
    )
    figures.save_figure(
        figures.precision_recall_curves(
            {family: evaluation.precision_recall for family, evaluation in evaluations.items()}
        ),
        paths.FIGURES / "precision_recall.png",
    )
    figures.save_figure(
        figures.confusion_matrices(
            {family: evaluation.confusion_matrix for family, evaluation in evaluations.items()}
        ),
        paths.FIGURES / "confusion.png",
    )
    # The metrics file is written last: it is what `dvc metrics show` reads.
    write_json(
        {family: evaluation.metrics for family, evaluation in evaluations.items()},
        paths.METRICS,
    )
    for family, evaluation in evaluations.items():
        logger.info(
            "evaluate: %-7s %s",
            family,
            "  ".join(f"{name} {value:.4f}" for name, value in evaluation.metrics.items()),
        )


if __name__ == "__main__":
    run_stage(main)
