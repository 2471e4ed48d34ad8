"""Evaluate both families on the same test rows: every replicate's metrics, their
means, and the curves and figures of each family's model (`data/evaluate/`). The
`compare` stage runs it, before the verdict that it feeds."""

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from pipeline import figures, paths
from pipeline.files import TestPredictions, atomic_path, write_csv, write_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    roc: pd.DataFrame  # fpr, tpr, threshold (micro-averaged over classes beyond two)
    precision_recall: pd.DataFrame  # recall, precision (likewise)
    confusion: pd.DataFrame  # one row per test row: actual, predicted (class names)
    confusion_matrix: np.ndarray  # k x k: rows actual, columns predicted
    class_report: dict[str, Any]  # precision, recall, f1 and support per class


@dataclass(frozen=True)
class TestEvaluation:
    """Both families on the test rows: what `data/evaluate/` holds."""

    per_replicate: pd.DataFrame  # every test metric of every replicate, one row each
    models: dict[str, Evaluation]  # each family's model (replicate 0), classes named
    means: dict[str, dict[str, float]]  # metrics.json: the replicates' means


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


def evaluate_families(
    predictions: TestPredictions, classes: list[Any], threshold: float
) -> TestEvaluation:
    """Every replicate's test metrics and their means, and each family's model
    (replicate 0) evaluated in full, with its classes' names."""
    per_replicate = replicate_metrics(predictions, threshold)
    models = {
        family: evaluate_probabilities(predictions.labels[0], probabilities[0], threshold, classes)
        for family, probabilities in predictions.probabilities.items()
    }
    return TestEvaluation(per_replicate, models, mean_metrics(per_replicate))


def evaluation_figures(
    evaluation: TestEvaluation, histories: dict[str, pd.DataFrame], classes: list[Any]
) -> dict[str, bytes]:
    """The PNG figures of `data/evaluate/figures/`, by file name."""
    models = evaluation.models
    return {
        "loss.png": figures.png_bytes(figures.learning_curves(histories, "loss")),
        "accuracy.png": figures.png_bytes(figures.learning_curves(histories, "accuracy")),
        "roc.png": figures.png_bytes(
            figures.roc_curves(
                {family: model.roc for family, model in models.items()},
                {family: model.metrics["roc_auc"] for family, model in models.items()},
            )
        ),
        "precision_recall.png": figures.png_bytes(
            figures.precision_recall_curves(
                {family: model.precision_recall for family, model in models.items()}
            )
        ),
        "confusion.png": figures.png_bytes(
            figures.confusion_matrices(
                {family: model.confusion_matrix for family, model in models.items()},
                [str(name) for name in classes],
            )
        ),
    }


def write_evaluation(evaluation: TestEvaluation, figure_files: dict[str, bytes]) -> None:
    """Write `data/evaluate/`, each file atomically; metrics.json last."""
    for family, model in evaluation.models.items():
        write_csv(model.roc, paths.roc_curve(family))
        write_csv(model.precision_recall, paths.precision_recall_curve(family))
        write_csv(model.confusion, paths.confusion(family))
    for name, png in figure_files.items():
        with atomic_path(paths.FIGURES / name) as temporary:
            temporary.write_bytes(png)
    write_json(
        {family: model.class_report for family, model in evaluation.models.items()},
        paths.CLASS_REPORT,
    )
    write_csv(evaluation.per_replicate, paths.REPLICATE_METRICS)
    # The metrics file is written last: it is what `dvc metrics show` reads.
    write_json(evaluation.means, paths.METRICS)
    count = evaluation.per_replicate["replicate"].nunique()
    for family, values in evaluation.means.items():
        logger.info(
            "evaluate: %-7s %s (mean of %d replicate(s))",
            family,
            "  ".join(f"{name} {value:.4f}" for name, value in values.items()),
            count,
        )
