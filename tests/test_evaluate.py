"""Tests for `pipeline.evaluate`, with sklearn.metrics as the oracle, and for the
`data/evaluate/` files that the compare stage writes with it."""

import base64
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from pipeline import paths
from pipeline.evaluate import evaluate_probabilities
from pipeline.files import read_json


def noisy_example(n_samples: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels, and probabilities that lean towards them without being perfect."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n_samples)
    probabilities = np.clip(0.3 * labels + rng.uniform(0.0, 0.7, size=n_samples), 0.0, 1.0)
    return labels, probabilities


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_sklearn(threshold: float, seed: int) -> None:
    labels, probabilities = noisy_example(seed=seed)
    predicted = (probabilities > threshold).astype(int)

    evaluation = evaluate_probabilities(labels, probabilities, threshold)

    expected = {
        "accuracy": metrics.accuracy_score(labels, predicted),
        "balanced_accuracy": metrics.balanced_accuracy_score(labels, predicted),
        "precision": metrics.precision_score(labels, predicted, zero_division=0),
        "recall": metrics.recall_score(labels, predicted, zero_division=0),
        "f1": metrics.f1_score(labels, predicted, zero_division=0),
        "roc_auc": metrics.roc_auc_score(labels, probabilities),
        "log_loss": metrics.log_loss(labels, probabilities),
    }
    assert set(evaluation.metrics) == set(expected)
    for name, value in expected.items():
        assert evaluation.metrics[name] == pytest.approx(value, rel=1e-12), name
        assert type(evaluation.metrics[name]) is float


def test_metrics_by_hand() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    probabilities = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.7])

    evaluation = evaluate_probabilities(labels, probabilities, threshold=0.5)

    # Predicted: 1 1 0 1 0 0 0 1 -> TP 3, FN 1, FP 1, TN 3.
    assert evaluation.metrics["accuracy"] == pytest.approx(6 / 8)
    assert evaluation.metrics["precision"] == pytest.approx(3 / 4)
    assert evaluation.metrics["recall"] == pytest.approx(3 / 4)
    assert evaluation.metrics["f1"] == pytest.approx(3 / 4)
    # Of the 16 positive-negative pairs, only (0.3, 0.6) and (0.3, 0.4) are ordered wrongly.
    assert evaluation.metrics["roc_auc"] == pytest.approx(14 / 16)
    expected_log_loss = -np.mean(
        labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities)
    )
    assert evaluation.metrics["log_loss"] == pytest.approx(expected_log_loss)


def test_perfect_predictor() -> None:
    labels = np.array([0, 1, 1, 0, 1, 0])
    probabilities = np.array([0.1, 0.9, 0.8, 0.2, 0.7, 0.3])

    evaluation = evaluate_probabilities(labels, probabilities, threshold=0.5)

    assert evaluation.metrics["accuracy"] == 1.0
    assert evaluation.metrics["precision"] == 1.0
    assert evaluation.metrics["recall"] == 1.0
    assert evaluation.metrics["f1"] == 1.0
    assert evaluation.metrics["roc_auc"] == 1.0
    np.testing.assert_array_equal(evaluation.confusion_matrix, [[3, 0], [0, 3]])


def test_probability_equal_to_threshold_is_negative() -> None:
    labels = np.array([0, 1, 1, 0])
    probabilities = np.array([0.5, 0.5, 0.51, 0.49])

    evaluation = evaluate_probabilities(labels, probabilities, threshold=0.5)

    np.testing.assert_array_equal(evaluation.confusion["predicted"], [0, 0, 1, 0])
    assert evaluation.metrics["accuracy"] == pytest.approx(3 / 4)
    assert evaluation.metrics["recall"] == pytest.approx(1 / 2)


def test_no_positive_predictions_gives_zero_precision() -> None:
    labels = np.array([0, 1, 1, 0])
    probabilities = np.array([0.1, 0.6, 0.4, 0.2])

    evaluation = evaluate_probabilities(labels, probabilities, threshold=0.9)

    assert evaluation.metrics["precision"] == 0.0
    assert evaluation.metrics["recall"] == 0.0
    assert evaluation.metrics["f1"] == 0.0


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_confusion_matrix_counts(threshold: float) -> None:
    labels, probabilities = noisy_example(n_samples=60, seed=2)
    predicted = probabilities > threshold
    actual = labels == 1

    evaluation = evaluate_probabilities(labels, probabilities, threshold)

    true_negatives = int((~actual & ~predicted).sum())
    false_positives = int((~actual & predicted).sum())
    false_negatives = int((actual & ~predicted).sum())
    true_positives = int((actual & predicted).sum())
    np.testing.assert_array_equal(
        evaluation.confusion_matrix,
        [[true_negatives, false_positives], [false_negatives, true_positives]],
    )
    assert evaluation.confusion_matrix.sum() == 60


def test_confusion_frame_has_one_row_per_test_row() -> None:
    labels, probabilities = noisy_example(n_samples=40, seed=3)

    evaluation = evaluate_probabilities(labels, probabilities, threshold=0.5)

    assert list(evaluation.confusion.columns) == ["actual", "predicted"]
    assert len(evaluation.confusion) == 40
    np.testing.assert_array_equal(evaluation.confusion["actual"], labels)
    np.testing.assert_array_equal(
        evaluation.confusion["predicted"], (probabilities > 0.5).astype(int)
    )


def test_roc_frame_is_finite_and_matches_sklearn() -> None:
    labels, probabilities = noisy_example(seed=4)

    evaluation = evaluate_probabilities(labels, probabilities, threshold=0.5)

    fpr, tpr, _ = metrics.roc_curve(labels, probabilities)
    assert list(evaluation.roc.columns) == ["fpr", "tpr", "threshold"]
    assert np.isfinite(evaluation.roc.to_numpy()).all()
    assert evaluation.roc["threshold"].max() <= 1.0
    np.testing.assert_allclose(evaluation.roc["fpr"], fpr)
    np.testing.assert_allclose(evaluation.roc["tpr"], tpr)
    assert (evaluation.roc["fpr"].iloc[0], evaluation.roc["tpr"].iloc[0]) == (0.0, 0.0)
    assert (evaluation.roc["fpr"].iloc[-1], evaluation.roc["tpr"].iloc[-1]) == (1.0, 1.0)


def test_precision_recall_frame_matches_sklearn() -> None:
    labels, probabilities = noisy_example(seed=5)

    evaluation = evaluate_probabilities(labels, probabilities, threshold=0.5)

    precision, recall, _ = metrics.precision_recall_curve(labels, probabilities)
    assert list(evaluation.precision_recall.columns) == ["recall", "precision"]
    np.testing.assert_allclose(evaluation.precision_recall["precision"], precision)
    np.testing.assert_allclose(evaluation.precision_recall["recall"], recall)


def test_multiclass_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, size=200)
    logits = rng.normal(size=(200, 4)) + 2.0 * np.eye(4)[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)

    evaluation = evaluate_probabilities(labels, probabilities, 0.5, ["a", "b", "c", "d"])

    expected = {
        "accuracy": metrics.accuracy_score(labels, predicted),
        "balanced_accuracy": metrics.balanced_accuracy_score(labels, predicted),
        "precision_macro": metrics.precision_score(labels, predicted, average="macro"),
        "recall_macro": metrics.recall_score(labels, predicted, average="macro"),
        "f1_macro": metrics.f1_score(labels, predicted, average="macro"),
        "precision_weighted": metrics.precision_score(labels, predicted, average="weighted"),
        "recall_weighted": metrics.recall_score(labels, predicted, average="weighted"),
        "f1_weighted": metrics.f1_score(labels, predicted, average="weighted"),
        "roc_auc": metrics.roc_auc_score(labels, probabilities, multi_class="ovr"),
        "log_loss": metrics.log_loss(labels, probabilities),
    }
    assert set(evaluation.metrics) == set(expected)
    for name, value in expected.items():
        assert evaluation.metrics[name] == pytest.approx(value, rel=1e-12), name
    # Class names, not codes, in the confusion rows and the per-class report.
    assert set(evaluation.confusion["actual"]) == {"a", "b", "c", "d"}
    assert evaluation.confusion_matrix.shape == (4, 4)
    assert evaluation.confusion_matrix.sum() == 200
    assert evaluation.class_report["c"]["support"] == int(np.sum(labels == 2))
    # One micro-averaged ROC curve: every (row, class) pair is one decision.
    micro_auc = metrics.roc_auc_score(np.eye(4)[labels].ravel(), probabilities.ravel())
    assert np.trapezoid(evaluation.roc["tpr"], evaluation.roc["fpr"]) == pytest.approx(micro_auc)


@pytest.mark.stages
def test_metrics_file_holds_the_replicates_means(trained_outputs: Path) -> None:
    """metrics.json, replicate_metrics.csv and the headline agree: one evaluation feeds
    all three, in the compare stage."""
    per_replicate = pd.read_csv(trained_outputs / paths.REPLICATE_METRICS)
    means = read_json(trained_outputs / paths.METRICS)
    headline = read_json(trained_outputs / paths.HEADLINE)

    assert set(means) == set(paths.MODEL_FAMILIES)
    for family, values in means.items():
        rows = per_replicate[per_replicate["family"] == family]
        assert len(rows) == 1  # TINY: one replicate
        for name, value in values.items():
            # replicate_metrics.csv keeps 9 significant digits.
            assert value == pytest.approx(rows[name].mean(), rel=1e-8), name
        assert headline[f"{family}_roc_auc"] == float(f"{values['roc_auc']:.4g}")


@pytest.mark.stages
def test_evaluation_files_are_written(trained_outputs: Path) -> None:
    figures = sorted(path.name for path in (trained_outputs / paths.FIGURES).iterdir())
    assert figures == [
        "accuracy.png",
        "confusion.png",
        "loss.png",
        "precision_recall.png",
        "roc.png",
    ]
    for name in figures:
        assert (trained_outputs / paths.FIGURES / name).read_bytes().startswith(b"\x89PNG")
    for family in paths.MODEL_FAMILIES:
        roc = pd.read_csv(trained_outputs / paths.roc_curve(family))
        assert list(roc.columns) == ["fpr", "tpr", "threshold"]
        assert roc["threshold"].max() <= 1.0
    report = read_json(trained_outputs / paths.CLASS_REPORT)
    assert set(report) == set(paths.MODEL_FAMILIES)


@pytest.mark.stages
def test_report_embeds_the_evaluation_figures(trained_outputs: Path) -> None:
    """The loss and ROC charts are drawn once: the report shows the very files that
    data/evaluate/figures/ holds (and MLflow's parent run)."""
    page = (trained_outputs / paths.REPORT_HTML).read_text(encoding="utf-8")
    for name in ("loss.png", "roc.png"):
        png = (trained_outputs / paths.FIGURES / name).read_bytes()
        assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page, name
    # The other three figures are not in the report.
    png = (trained_outputs / paths.FIGURES / "accuracy.png").read_bytes()
    assert base64.b64encode(png).decode() not in page
