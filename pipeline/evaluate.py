"""Evaluate both families on the same test rows: every replicate's metrics, their
means, and the curves and figures of each family's model (`data/evaluate/`)."""

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from pipeline import figures, paths
from pipeline.config import load_params
from pipeline.errors import run_stage
from pipeline.files import (
    TestPredictions,
    read_classes,
    read_test_predictions,
    write_csv,
    write_json,
)
from pipeline.history import read_history
from pipeline.replicates import split_paths

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    roc: pd.DataFrame  # fpr, tpr, threshold (micro-averaged over classes beyond two)
    precision_recall: pd.DataFrame  # recall, precision (likewise)
    confusion: pd.DataFrame  # one row per test row: actual, predicted (class names)
    confusion_matrix: np.ndarray  # k x k: rows actual, columns predicted
    class_report: dict[str, Any]  # precision, recall, f1 and support per class


def predicted_classes(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Two classes: class 1 when its probability is above `threshold`. More: the
    most probable class."""
    if probabilities.shape[1] == 2:
        return (probabilities[:, 1] > threshold).astype(np.int32)
    return probabilities.argmax(axis=1).astype(np.int32)


def evaluate_probabilities(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    classes: list[Any] | None = None,
) -> Evaluation:
    """Metrics and curves of (n_rows, n_classes) predicted class probabilities, or of
    P(class 1) per row for two classes. Confusion rows name the classes when given."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim == 1:
        probabilities = np.column_stack([1 - probabilities, probabilities])
    n_classes = probabilities.shape[1]
    codes = list(range(n_classes))
    names = [str(name) for name in classes] if classes is not None else codes
    predicted = predicted_classes(probabilities, threshold)
    scores = {
        "accuracy": metrics.accuracy_score(labels, predicted),
        "balanced_accuracy": metrics.balanced_accuracy_score(labels, predicted),
    }
    if n_classes == 2:
        positive = probabilities[:, 1]
        scores |= {
            "precision": metrics.precision_score(labels, predicted, zero_division=0),
            "recall": metrics.recall_score(labels, predicted, zero_division=0),
            "f1": metrics.f1_score(labels, predicted, zero_division=0),
            "roc_auc": metrics.roc_auc_score(labels, positive),
        }
        curve_truth, curve_scores = labels, positive
    else:
        for average in ("macro", "weighted"):
            precision, recall, f1, _ = metrics.precision_recall_fscore_support(
                labels, predicted, labels=codes, average=average, zero_division=0
            )
            scores |= {
                f"precision_{average}": precision,
                f"recall_{average}": recall,
                f"f1_{average}": f1,
            }
        scores["roc_auc"] = metrics.roc_auc_score(
            labels, probabilities, multi_class="ovr", average="macro", labels=codes
        )
        # One curve for all classes: every (row, class) pair is one binary decision.
        curve_truth = np.eye(n_classes, dtype=np.int32)[labels].ravel()
        curve_scores = probabilities.ravel()
    scores["log_loss"] = metrics.log_loss(labels, probabilities, labels=codes)
    fpr, tpr, roc_thresholds = metrics.roc_curve(curve_truth, curve_scores)
    precision_curve, recall_curve, _ = metrics.precision_recall_curve(curve_truth, curve_scores)
    name_of = np.asarray(names, dtype=object if classes is not None else np.int64)
    return Evaluation(
        metrics={name: float(value) for name, value in scores.items()},
        # The first ROC threshold is +inf, which JSON and CSV readers dislike.
        roc=pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(roc_thresholds, 1.0)}),
        precision_recall=pd.DataFrame({"recall": recall_curve, "precision": precision_curve}),
        confusion=pd.DataFrame({"actual": name_of[labels], "predicted": name_of[predicted]}),
        confusion_matrix=metrics.confusion_matrix(labels, predicted, labels=codes),
        class_report=metrics.classification_report(
            labels,
            predicted,
            labels=codes,
            target_names=[str(name) for name in names],
            output_dict=True,
            zero_division=0,
        ),
    )


def replicate_metrics(predictions: TestPredictions, threshold: float) -> pd.DataFrame:
    """Every test metric of every replicate of both families, one row each."""
    return pd.DataFrame(
        [
            {
                "family": family,
                "replicate": replicate,
                **evaluate_probabilities(
                    predictions.labels[replicate], probabilities[replicate], threshold
                ).metrics,
            }
            for family, probabilities in predictions.probabilities.items()
            for replicate in range(predictions.count)
        ]
    )


def mean_metrics(per_replicate: pd.DataFrame) -> dict[str, dict[str, float]]:
    """metrics.json: each family's test metrics, averaged over its replicates."""
    return {
        str(family): {
            name: float(value)
            for name, value in group.drop(columns=["family", "replicate"]).mean().items()
        }
        for family, group in per_replicate.groupby("family", sort=False)
    }


def main() -> None:
    params = load_params()
    classes = read_classes()
    # The training stages predicted the test set; TensorFlow does not load here.
    predictions = read_test_predictions(
        split_paths("test", params.replicates, params.seed),
        paths.PREDICTIONS,
        len(classes),
        params.replicates.count,
    )
    per_replicate = replicate_metrics(predictions, params.evaluate.threshold)
    # Curves, figures and the per-class report are of each family's model, replicate 0.
    evaluations = {
        family: evaluate_probabilities(
            predictions.labels[0], probabilities[0], params.evaluate.threshold, classes
        )
        for family, probabilities in predictions.probabilities.items()
    }
    for family, evaluation in evaluations.items():
        write_csv(evaluation.roc, paths.roc_curve(family))
        write_csv(evaluation.precision_recall, paths.precision_recall_curve(family))
        write_csv(evaluation.confusion, paths.confusion(family))
    histories = {family: read_history(path) for family, path in paths.HISTORIES.items()}
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
            {family: evaluation.confusion_matrix for family, evaluation in evaluations.items()},
            [str(name) for name in classes],
        ),
        paths.FIGURES / "confusion.png",
    )
    write_json(
        {family: evaluation.class_report for family, evaluation in evaluations.items()},
        paths.CLASS_REPORT,
    )
    write_csv(per_replicate, paths.REPLICATE_METRICS)
    # The metrics file is written last: it is what `dvc metrics show` reads.
    means = mean_metrics(per_replicate)
    write_json(means, paths.METRICS)
    for family, values in means.items():
        logger.info(
            "evaluate: %-7s %s (mean of %d replicate(s))",
            family,
            "  ".join(f"{name} {value:.4f}" for name, value in values.items()),
            predictions.count,
        )


if __name__ == "__main__":
    run_stage(main)
