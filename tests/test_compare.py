"""Tests for `pipeline.compare`: metrics against sklearn.metrics, McNemar against hand
computation, bootstrap intervals that cover, the verdict and the promotion gates."""

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn import metrics
from sklearn.neural_network import MLPClassifier

from pipeline import compare as compare_stage
from pipeline import paths
from pipeline.compare import verdict_record
from pipeline.comparison_report import (
    Training,
    build_report,
    keras_only_note,
    next_commands,
    p_value_text,
    verdict_sentence,
)
from pipeline.config import CompareConfig, Params, PromoteConfig
from pipeline.diagnosis import Finding, Suggestion
from pipeline.files import read_json
from pipeline.headline import rounded
from pipeline.paired_tests import (
    FAMILIES,
    METRICS,
    _score,
    bootstrap_p_value,
    compare_predictions,
    decide,
    mcnemar,
    paired_bootstrap,
    parameter_count,
    point_metrics,
    stratified_bootstrap_weights,
    weighted_metrics,
)
from pipeline.promotion import Gate, Promotion, check_gates
from pipeline.report import Image, to_markdown
from pipeline.statistics import Interval
from tests.endtoend import copy_project, execute, set_nested_params
from tests.factories import StoreStandIn

SKLEARN_METRICS = {
    "accuracy": lambda labels, probabilities, predicted: metrics.accuracy_score(labels, predicted),
    "precision": lambda labels, probabilities, predicted: metrics.precision_score(
        labels, predicted, zero_division=0
    ),
    "recall": lambda labels, probabilities, predicted: metrics.recall_score(
        labels, predicted, zero_division=0
    ),
    "f1": lambda labels, probabilities, predicted: metrics.f1_score(
        labels, predicted, zero_division=0
    ),
    "roc_auc": lambda labels, probabilities, predicted: metrics.roc_auc_score(
        labels, probabilities
    ),
    "log_loss": lambda labels, probabilities, predicted: metrics.log_loss(
        labels, probabilities, labels=[0, 1]
    ),
}


def compare_config(**changes) -> CompareConfig:
    values = {
        "primary_metric": "roc_auc",
        "n_bootstrap": 500,
        "confidence": 0.95,
        "alpha": 0.05,
        "promote": PromoteConfig(
            enabled=True,
            registered_model_name="model",
            min_test_roc_auc=0.8,
            min_test_accuracy=0.0,
            require_significant=False,
        ),
    }
    return CompareConfig(**{**values, **changes})


def scored_example(
    n_samples: int, signal: float, seed: int, dtype=np.float64
) -> tuple[np.ndarray, np.ndarray]:
    """Labels, and probabilities that lean towards them by `signal`, rounded to two
    decimals so that many scores tie."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n_samples)
    probabilities = np.clip(signal * labels + rng.uniform(0, 1 - signal, size=n_samples), 0, 1)
    return labels, np.round(probabilities, 2).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("threshold", [0.3, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_point_metrics_match_sklearn(dtype, threshold: float, seed: int):
    labels, probabilities = scored_example(150, 0.3, seed, dtype)
    # Exact 0 and 1 exercise the log-loss clipping.
    probabilities[:2] = [0.0, 1.0]
    predicted = (probabilities > threshold).astype(int)

    values = point_metrics(labels, probabilities, threshold)

    for name, oracle in SKLEARN_METRICS.items():
        assert values[name] == pytest.approx(oracle(labels, probabilities, predicted), rel=1e-6), (
            name
        )


def test_weights_are_repeated_rows():
    """A resample as draw counts gives the metrics of the rows drawn that often."""
    labels, probabilities = scored_example(60, 0.2, seed=3)
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 4, size=(5, 60)).astype(float)
    counts[:, :2] = 1  # keep both classes in every resample

    values = weighted_metrics(counts, _score(labels, probabilities, 0.5))

    for resample, row_counts in enumerate(counts.astype(int)):
        repeated_labels = np.repeat(labels, row_counts)
        repeated = np.repeat(probabilities, row_counts)
        predicted = (repeated > 0.5).astype(int)
        for name, oracle in SKLEARN_METRICS.items():
            expected = oracle(repeated_labels, repeated, predicted)
            assert values[name][resample] == pytest.approx(expected, rel=1e-9), name


def test_no_predicted_positives_give_zero_precision():
    labels = np.array([0, 1, 1, 0])
    values = point_metrics(labels, np.array([0.1, 0.4, 0.3, 0.2]), threshold=0.5)
    assert values["precision"] == 0.0
    assert values["recall"] == 0.0
    assert values["f1"] == 0.0
    assert values["roc_auc"] == 1.0


def test_stratified_resamples_keep_the_class_counts():
    labels = np.array([0] * 7 + [1] * 3)

    weights = stratified_bootstrap_weights(labels, 200, np.random.default_rng(0))

    assert weights.shape == (200, 10)
    np.testing.assert_array_equal(weights[:, labels == 0].sum(axis=1), 7)
    np.testing.assert_array_equal(weights[:, labels == 1].sum(axis=1), 3)
    # Rows are drawn with replacement: some twice or more, some never.
    assert weights.max() >= 2 and weights.min() == 0
    again = stratified_bootstrap_weights(labels, 200, np.random.default_rng(0))
    np.testing.assert_array_equal(weights, again)


def test_mcnemar_exact_by_hand():
    # b = 3 rows only keras gets right, c = 12 only sklearn: 15 discordant rows.
    keras_correct = np.array([True] * 3 + [False] * 12 + [True] * 40 + [False] * 5)
    sklearn_correct = np.array([False] * 3 + [True] * 12 + [True] * 40 + [False] * 5)

    result = mcnemar(keras_correct, sklearn_correct)

    assert (result.keras_only_correct, result.sklearn_only_correct) == (3, 12)
    assert result.method == "exact binomial"
    # P = 2 * P(X <= 3), X ~ Binomial(15, 1/2) = 2 * (1 + 15 + 105 + 455) / 2**15.
    assert result.p_value == pytest.approx(2 * 576 / 2**15)


def test_mcnemar_chi_squared_by_hand():
    # b = 30, c = 15: 45 discordant rows, the chi-squared test with continuity correction.
    keras_correct = np.array([True] * 30 + [False] * 15 + [True] * 10)
    sklearn_correct = np.array([False] * 30 + [True] * 15 + [True] * 10)

    result = mcnemar(keras_correct, sklearn_correct)

    statistic = (abs(30 - 15) - 1) ** 2 / 45
    # The chi-squared survival function with one degree of freedom.
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(statistic / 2)), rel=1e-9)
    assert result.method.startswith("chi-squared 4.36")
    assert mcnemar(sklearn_correct, keras_correct).p_value == pytest.approx(result.p_value)


def test_mcnemar_without_discordant_rows():
    correct = np.array([True, False, True])
    result = mcnemar(correct, correct)
    assert result.p_value == 1.0
    assert (result.keras_only_correct, result.sklearn_only_correct) == (0, 0)


@pytest.mark.parametrize(
    ("p_value", "alpha", "text"),
    [
        (0.0123456, 0.05, "0.0123"),
        (50 / 1001, 0.05, "0.04995"),  # 25 of 1000 resamples: not "0.05 < alpha = 0.05"
        (0.050049, 0.05, "0.05"),  # shown as ">= alpha = 0.05": still true
        (0.05, 0.05, "0.05"),
        (0.867, 0.05, "0.867"),
        (1.26e-05, 0.05, "1.26e-05"),
        (0.0099999, 0.01, "0.0099999"),
    ],
)
def test_p_value_text_never_rounds_across_alpha(p_value: float, alpha: float, text: str):
    assert p_value_text(p_value, alpha) == text
    assert (float(text) < alpha) == (p_value < alpha)


def test_bootstrap_p_value_by_hand():
    assert bootstrap_p_value(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(2 * 2 / 5)
    assert bootstrap_p_value(np.full(999, 0.5)) == pytest.approx(2 / 1000)
    assert bootstrap_p_value(np.zeros(100)) == 1.0


def test_accuracy_interval_covers_the_true_value():
    """Of 200 test sets where each row is right with probability 0.8, about 95% of the
    95% intervals contain 0.8."""
    rng = np.random.default_rng(11)
    n_rows, covered = 200, 0
    labels = np.array([0, 1] * (n_rows // 2))
    for _ in range(200):
        correct = rng.random(n_rows) < 0.8
        probabilities = np.where(correct == (labels == 1), 0.9, 0.1)
        samples = paired_bootstrap(
            labels, {"model": probabilities}, 0.5, 400, int(rng.integers(2**32))
        )
        interval = np.quantile(samples["model"]["accuracy"], [0.025, 0.975])
        covered += interval[0] <= 0.8 <= interval[1]
    assert 0.91 <= covered / 200 <= 0.99


def test_roc_auc_interval_covers_the_true_value():
    """Positive scores ~ N(1, 1), negative ~ N(0, 1): the ROC AUC is Phi(1 / sqrt 2)."""
    true_auc = 0.5 * math.erfc(-0.5)  # Phi(1 / sqrt(2)) = 0.7602
    rng = np.random.default_rng(12)
    labels = np.array([0, 1] * 100)
    covered = 0
    for _ in range(200):
        scores = rng.normal(labels.astype(float), 1.0)
        probabilities = 1 / (1 + np.exp(-scores))
        samples = paired_bootstrap(
            labels, {"model": probabilities}, 0.5, 400, int(rng.integers(2**32))
        )
        interval = np.quantile(samples["model"]["roc_auc"], [0.025, 0.975])
        covered += interval[0] <= true_auc <= interval[1]
    assert 0.91 <= covered / 200 <= 0.99


def test_one_class_test_set_is_an_error():
    with pytest.raises(ValueError, match="one class only"):
        paired_bootstrap(np.ones(5), {"model": np.full(5, 0.7)}, 0.5, 100, seed=0)


def test_chunked_bootstrap_gives_every_resample(monkeypatch):
    labels, probabilities = scored_example(50, 0.3, seed=5)
    monkeypatch.setattr("pipeline.paired_tests.BOOTSTRAP_CELLS", 120)  # chunks of 2 resamples
    samples = paired_bootstrap(labels, {"model": probabilities}, 0.5, 101, seed=0)
    assert {len(values) for values in samples["model"].values()} == {101}
    assert len(np.unique(samples["model"]["roc_auc"])) > 50


def test_a_clearly_better_model_wins_significantly():
    labels, good = scored_example(300, 0.5, seed=6)
    _, poor = scored_example(300, 0.05, seed=7)
    poor = np.random.default_rng(8).permutation(poor)  # unrelated to the labels

    comparison = compare_predictions(
        labels, {"keras": poor, "sklearn": good}, 0.5, compare_config(), seed=0
    )

    verdict = comparison.verdict
    assert verdict.winner == "sklearn"
    assert verdict.significant
    assert verdict.test == "paired bootstrap"
    assert verdict.p_value == pytest.approx(2 / 501)
    assert verdict.difference.high < 0
    expected = metrics.roc_auc_score(labels, poor) - metrics.roc_auc_score(labels, good)
    assert verdict.difference.estimate == pytest.approx(expected)
    for family, probabilities in (("keras", poor), ("sklearn", good)):
        auc = comparison.intervals[family]["roc_auc"]
        assert auc.estimate == pytest.approx(metrics.roc_auc_score(labels, probabilities))
        assert auc.low < auc.estimate < auc.high
    assert comparison.intervals["keras"]["roc_auc"].contains(0.5)
    assert not comparison.intervals["sklearn"]["roc_auc"].contains(0.5)
    assert comparison.n_rows == 300
    assert len(comparison.primary_samples) == 500


def three_class_example(signal: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels of three classes and (n, 3) probabilities leaning towards them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=240)
    scores = rng.uniform(0, 1, size=(240, 3)) + signal * np.eye(3)[labels]
    return labels, scores / scores.sum(axis=1, keepdims=True)


def test_three_classes_are_scored_by_macro_averages(default_params: Params):
    labels, good = three_class_example(1.5, seed=1)
    _, poor = three_class_example(0.1, seed=2)

    comparison = compare_predictions(
        labels, {"keras": good, "sklearn": poor}, 0.5, compare_config(), seed=0
    )

    assert comparison.n_classes == 3
    predicted = good.argmax(axis=1)
    expected = {
        "accuracy": metrics.accuracy_score(labels, predicted),
        "precision": metrics.precision_score(labels, predicted, average="macro"),
        "recall": metrics.recall_score(labels, predicted, average="macro"),
        "f1": metrics.f1_score(labels, predicted, average="macro"),
        "roc_auc": metrics.roc_auc_score(labels, good, multi_class="ovr", average="macro"),
        "log_loss": metrics.log_loss(labels, good),
    }
    for metric, value in expected.items():
        assert comparison.intervals["keras"][metric].estimate == pytest.approx(value), metric
    assert comparison.verdict.winner == "keras"
    assert comparison.verdict.significant
    # Correct means the most probable class: the threshold plays no part.
    keras_right = predicted == labels
    sklearn_right = poor.argmax(axis=1) == labels
    assert comparison.mcnemar.keras_only_correct == np.count_nonzero(keras_right & ~sklearn_right)
    run = Training(10, 10, False, 1.0, 1000.0, 100)
    text = to_markdown(
        build_report(
            comparison,
            [],
            {"keras": run, "sklearn": run},
            Promotion("disabled", (), "mlp-compare"),
            default_params,
            {name: Image(b"png", name) for name in ("intervals", "differences", "loss", "roc")},
        )
    )
    assert "240 test rows (3 classes; precision, recall, F1 and ROC AUC are macro" in text
    assert "McNemar on correctness (the most probable class)" in text


def test_identical_models_tie():
    labels, probabilities = scored_example(100, 0.3, seed=9)

    comparison = compare_predictions(
        labels, {"keras": probabilities, "sklearn": probabilities}, 0.5, compare_config(), 0
    )

    assert comparison.verdict.winner == "tie"
    assert not comparison.verdict.significant
    assert comparison.verdict.p_value == 1.0
    assert comparison.differences["accuracy"] == Interval(0.0, 0.0, 0.0)
    assert comparison.mcnemar.p_value == 1.0


def test_a_small_difference_is_not_significant():
    labels, keras = scored_example(200, 0.3, seed=10)
    # sklearn: the same scores with a little noise, so neither is clearly better.
    sklearn = np.clip(keras + np.random.default_rng(1).normal(0, 0.03, 200), 0, 1)

    comparison = compare_predictions(
        labels, {"keras": keras, "sklearn": sklearn}, 0.5, compare_config(), seed=0
    )

    verdict = comparison.verdict
    assert verdict.winner in ("keras", "sklearn")
    assert not verdict.significant
    assert verdict.p_value >= 0.05
    assert verdict.difference.contains(0.0)


def test_accuracy_as_primary_metric_uses_mcnemar():
    labels, good = scored_example(300, 0.5, seed=6)
    poor = np.random.default_rng(8).permutation(good)

    comparison = compare_predictions(
        labels,
        {"keras": good, "sklearn": poor},
        0.5,
        compare_config(primary_metric="accuracy"),
        seed=0,
    )

    assert comparison.verdict.test.startswith("McNemar (chi-squared")
    assert comparison.verdict.p_value == comparison.mcnemar.p_value
    assert comparison.verdict.winner == "keras"
    assert comparison.verdict.significant


def test_same_seed_same_intervals():
    labels, probabilities = scored_example(100, 0.3, seed=2)
    inputs = {"keras": probabilities, "sklearn": probabilities[::-1].copy()}
    first = compare_predictions(labels, inputs, 0.5, compare_config(), seed=1)
    second = compare_predictions(labels, inputs, 0.5, compare_config(), seed=1)
    other = compare_predictions(labels, inputs, 0.5, compare_config(), seed=2)
    assert first.intervals == second.intervals
    assert first.intervals != other.intervals


@pytest.mark.parametrize(
    ("metric", "estimate", "winner"),
    [("roc_auc", 0.02, "keras"), ("roc_auc", -0.02, "sklearn"), ("log_loss", 0.02, "sklearn")],
)
def test_decide_follows_the_direction_of_the_metric(metric, estimate: float, winner: str):
    verdict = decide(metric, Interval(estimate, estimate - 0.01, estimate + 0.01), "t", 0.01, 0.05)
    assert verdict.winner == winner
    assert verdict.significant


@pytest.mark.parametrize(("p_value", "significant"), [(0.049, True), (0.05, False), (0.3, False)])
def test_decide_compares_the_p_value_with_alpha(p_value: float, significant: bool):
    verdict = decide("f1", Interval(0.1, 0.0, 0.2), "t", p_value, alpha=0.05)
    assert verdict.winner == "keras"
    assert verdict.significant is significant


def test_every_metric_has_an_interval_and_a_difference():
    labels, probabilities = scored_example(80, 0.3, seed=4)
    comparison = compare_predictions(
        labels, {"keras": probabilities, "sklearn": probabilities**2}, 0.5, compare_config(), 0
    )
    for family in ("keras", "sklearn"):
        assert set(comparison.intervals[family]) == set(METRICS)
    assert set(comparison.differences) == set(METRICS)
    assert set(comparison.bootstrap_p_values) == set(METRICS)


@pytest.mark.parametrize("hidden_layers", [[10, 10], [5], [], [7, 3, 2]])
def test_parameter_count_matches_scikit_learn(hidden_layers: list[int]):
    rng = np.random.default_rng(0)
    classifier = MLPClassifier(hidden_layer_sizes=tuple(hidden_layers), max_iter=1)
    classifier.partial_fit(rng.normal(size=(20, 8)), rng.integers(0, 2, 20), classes=[0, 1])
    fitted = sum(w.size for w in classifier.coefs_) + sum(b.size for b in classifier.intercepts_)
    assert parameter_count(8, hidden_layers) == fitted


def test_parameter_count_of_the_textbook_network():
    # tests/test_train_keras.py checks that Keras counts the same 211.
    assert parameter_count(8, [10, 10]) == 211


def verdict_for(winner: str, significant: bool) -> object:
    estimate = {"keras": 0.05, "sklearn": -0.05, "tie": 0.0}[winner]
    return decide(
        "roc_auc", Interval(estimate, -0.1, 0.1), "paired bootstrap",
        0.01 if significant else 0.4, 0.05,
    )  # fmt: skip


ESTIMATES = {
    "keras": {"roc_auc": 0.91, "accuracy": 0.84},
    "sklearn": {"roc_auc": 0.86, "accuracy": 0.80},
}


def test_gates_pass():
    promote = compare_config().promote.model_copy(update={"min_test_accuracy": 0.8})
    gates = check_gates(verdict_for("keras", significant=False), ESTIMATES, promote)
    assert [gate.name for gate in gates] == ["winner", "min_test_roc_auc", "min_test_accuracy"]
    assert all(gate.passed for gate in gates)
    assert gates[1].detail == "test roc_auc 0.9100 >= 0.8"


def test_failing_gate_is_named_with_its_numbers():
    promote = compare_config().promote.model_copy(update={"min_test_roc_auc": 0.9})
    gates = check_gates(verdict_for("sklearn", significant=True), ESTIMATES, promote)
    failed = [gate for gate in gates if not gate.passed]
    assert [gate.name for gate in failed] == ["min_test_roc_auc"]
    assert failed[0].detail == "test roc_auc 0.8600 < 0.9"


def test_require_significant_gate():
    promote = compare_config().promote.model_copy(update={"require_significant": True})
    gates = check_gates(verdict_for("keras", significant=False), ESTIMATES, promote)
    (failed,) = [gate for gate in gates if not gate.passed]
    assert failed.name == "require_significant"
    assert failed.detail == "paired bootstrap p = 0.4 >= 0.05"
    gates = check_gates(verdict_for("keras", significant=True), ESTIMATES, promote)
    assert all(gate.passed for gate in gates)


def test_a_tie_has_no_winner_to_promote():
    gates = check_gates(verdict_for("tie", significant=False), ESTIMATES, compare_config().promote)
    assert [(gate.name, gate.passed) for gate in gates] == [("winner", False)]


def comparison_example(signal_keras: float, signal_sklearn: float, **changes):
    labels, keras = scored_example(300, signal_keras, seed=6)
    _, sklearn = scored_example(300, signal_sklearn, seed=6)
    return compare_predictions(
        labels, {"keras": keras, "sklearn": sklearn}, 0.5, compare_config(**changes), seed=0
    )


def test_verdict_sentence_names_a_significant_winner():
    sentence = verdict_sentence(comparison_example(0.3, 0.05))
    # One training run per library: the sentence says what it compares.
    assert sentence.startswith(
        "With one training run per library (`replicates.count: 1`), this compares two "
        "trained models, not the two libraries: **keras wins** on test ROC AUC: keras 0."
    )
    # Every one of the 500 resamples favours keras: p = 2 / 501.
    assert "paired bootstrap p = 0.00399 < alpha = 0.05." in sentence
    assert "95% CI +0." in sentence


def test_verdict_sentence_says_not_significant():
    comparison = comparison_example(0.3, 0.3)  # the same predictions twice
    assert comparison.verdict.winner == "tie"
    assert "libraries: **No difference**: both models score" in verdict_sentence(comparison)
    labels, keras = scored_example(200, 0.3, seed=10)
    sklearn = np.clip(keras + np.random.default_rng(1).normal(0, 0.03, 200), 0, 1)
    close = compare_predictions(
        labels, {"keras": keras, "sklearn": sklearn}, 0.5, compare_config(), 0
    )
    sentence = verdict_sentence(close)
    assert "libraries: **No significant difference** on test ROC AUC" in sentence
    assert ">= alpha = 0.05" in sentence
    assert "is ahead on the point estimate only" in sentence


def test_verdict_sentence_for_a_lower_is_better_metric():
    sentence = verdict_sentence(comparison_example(0.05, 0.3, primary_metric="log_loss"))
    assert "libraries: **sklearn wins** on test log-loss (lower is better)" in sentence


def finding(kind: str, family: str, *suggestions: Suggestion) -> Finding:
    return Finding(kind, family, "the numbers", suggestions)


def test_next_commands_take_the_first_suggestion_without_repeats():
    findings = [
        finding("not_converged", "keras", Suggestion("model.epochs", 20, 10)),
        finding("not_converged", "sklearn", Suggestion("model.epochs", 20, 10)),
        finding(
            "overfitting",
            "keras",
            Suggestion("model.l2", 0.0001, 0.0),
            Suggestion("model.dropout", 0.2, 0.0),
        ),
    ]
    assert next_commands(findings) == [
        "dvc exp run -S 'model.epochs=20'",
        "dvc exp run -S 'model.l2=0.0001'",
    ]


def test_keras_only_settings_are_flagged(default_params: Params):
    assert keras_only_note(default_params) is None
    model = default_params.model.model_copy(update={"dropout": 0.2, "l1": 0.001})
    note = keras_only_note(default_params.model_copy(update={"model": model}))
    assert note.startswith("**Not like for like:** `model.l1: 0.001` and `model.dropout: 0.2`")


def test_promotion_descriptions():
    gates = (Gate("winner", True, "keras is better"), Gate("min_test_roc_auc", False, "0.7 < 0.8"))
    refused = Promotion("refused", gates, "mlp-compare", "keras")
    assert refused.describe() == (
        "Not promoted to `mlp-compare`: failed gate `min_test_roc_auc` (0.7 < 0.8)."
    )
    # compare approves before any run exists; track registers and knows the version.
    approved = Promotion("approved", gates[:1], "mlp-compare", "keras")
    assert approved.describe() == (
        "**keras** passes every gate (keras is better): publishing (the track stage) "
        "registers it in the Model Registry as `mlp-compare`, alias `champion`."
    )
    promoted = Promotion("promoted", gates[:1], "mlp-compare", "keras", "3")
    assert promoted.describe().startswith(
        "Promoted **keras** to the Model Registry as `mlp-compare` version 3, alias `champion`"
    )
    assert "enabled: false" in Promotion("disabled", (), "mlp-compare").describe()


def test_verdict_record():
    comparison = comparison_example(0.3, 0.05)
    findings = [finding("overfitting", "keras", Suggestion("model.l2", 0.0001, 0.0))]
    record = verdict_record(comparison, findings, Promotion("approved", (), "mlp-compare", "keras"))
    assert record["winner"] == "keras"
    assert record["significant"] is True
    assert record["difference"] == pytest.approx(comparison.verdict.difference.estimate)
    assert record["findings"] == "keras: overfitting"
    assert record["promotion"] == "approved"
    # What track tags the registered version with: replicate 0's score of the winner.
    assert record["winner_score"] == comparison.intervals["keras"]["roc_auc"].estimate
    empty = verdict_record(comparison, [], Promotion("disabled", (), "mlp-compare"))
    assert empty["findings"] == "none"
    assert "winner_score" not in empty


def test_report_has_every_section(default_params: Params):
    comparison = comparison_example(0.3, 0.05)
    run = Training(10, 10, False, 2.0, 4000.0, 211)
    training = {"keras": run, "sklearn": Training(10, 8, True, 0.5, 16000.0, 211)}
    findings = [
        finding(
            "overfitting",
            "keras",
            Suggestion("model.l2", 0.0001, 0.0, "a stronger L2 penalty"),
            Suggestion("model.dropout", 0.2, 0.0),
        )
    ]
    images = {name: Image(b"png", name) for name in ("intervals", "differences", "loss", "roc")}
    promotion = Promotion("disabled", (), "mlp-compare")

    text = to_markdown(
        build_report(comparison, findings, training, promotion, default_params, images)
    )

    for heading in (
        "# Keras vs scikit-learn: the verdict",
        "## Test metrics",
        "## Paired tests on the same 300 test rows",
        "## Training",
        "## Diagnosis",
        "## What to try next",
        "## Promotion",
    ):
        assert f"\n{heading}\n" in f"\n{text}"
    assert "| ROC AUC | 0." in text
    assert "| training time, all replicates (s) | 2.00 | 0.50 |" in text
    assert "| throughput (training rows per second) | 4,000 | 16,000 |" in text
    assert "| parameters (weights and biases) | 211 | 211 |" in text
    assert "sklearn trained 4.0x faster" in text
    assert "**keras: over-fitting.** The numbers." in text
    assert "- `model.l2`: 0.0 -> **0.0001** (a stronger L2 penalty)" in text
    assert "dvc exp run -S 'model.l2=0.0001'" in text
    assert f"keras is right where sklearn is wrong on {comparison.mcnemar.keras_only_correct}" in (
        text
    )
    # Written before publishing: it names the experiment, never a run that does not
    # exist yet.
    assert "publishes it to MLflow, in experiment `mlp-comparison`" in text
    assert "run `" not in text


# End to end: the real `dvc repro` with promotion on, in a temporary repository.

REGISTERED = "mlp-compare-test"


def promoted_project(built: Path, project: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """A copy of the built project with promotion on, after `dvc repro` (compare and
    track rerun; the models are reused)."""
    copy_project(built, project)
    # The gates judge the promoted model: each family's replicate 0.
    per_replicate = pd.read_csv(project / paths.REPLICATE_METRICS)
    aucs = per_replicate[per_replicate["replicate"] == 0]["roc_auc"].tolist()
    set_nested_params(
        project,
        {
            "compare.promote.enabled": True,
            "compare.promote.registered_model_name": REGISTERED,
            # Whichever model wins passes this gate.
            "compare.promote.min_test_roc_auc": round(max(min(aucs) - 0.01, 0.0), 4),
        },
    )
    return project, execute(project, "dvc", "repro")


@pytest.fixture(scope="module")
def repro(built_project: Path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One promoted project shared by the tests that only read it."""
    return promoted_project(built_project, tmp_path_factory.mktemp("compare") / "project")


@pytest.fixture
def own_repro(built_project: Path, tmp_path: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """A promoted project of the test's own, for a test that reruns compare: the
    registry, tags and report it changes are no other test's."""
    return promoted_project(built_project, tmp_path / "project")


def store_client(project: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


@pytest.mark.slow
def test_report_files(repro):
    project, _ = repro
    markdown = (project / paths.REPORT_MARKDOWN).read_text()
    page = (project / paths.REPORT_HTML).read_text()
    verdict = read_json(project / paths.VERDICT)
    test_metrics = read_json(project / paths.METRICS)

    assert markdown.startswith("# Keras vs scikit-learn: the verdict\n")
    # Written before track: no run id of this publication, in either report.
    run_ids = read_json(project / paths.MLFLOW_RUNS)
    for run_id in (run_ids["parent_run_id"], run_ids["keras_run_id"]):
        assert run_id not in markdown and run_id not in page
    for heading in ("## The two libraries over 6 replicates",
                    "## Replicate 0: these two trained models", "## Paired tests",
                    "## Training", "## Diagnosis", "## What to try next",
                    "## Promotion"):  # fmt: skip
        assert f"\n{heading}" in markdown
    # Five figures, embedded: the page needs no other file.
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == 5
    assert "<link" not in page and 'src="http' not in page
    assert verdict["winner"] in ("keras", "sklearn", "tie")
    assert verdict["primary_metric"] == "roc_auc"
    # The same test rows as evaluate: the verdict's mean difference over the replicates
    # is the difference of metrics.json's means, and replicate 0's table shows its own.
    expected = test_metrics["keras"]["roc_auc"] - test_metrics["sklearn"]["roc_auc"]
    assert verdict["difference"] == pytest.approx(expected, abs=1e-9)
    assert verdict["replicates"] == 6
    per_replicate = pd.read_csv(project / paths.REPLICATE_METRICS)
    for family in ("keras", "sklearn"):
        assert f"{family} {test_metrics[family]['roc_auc']:.4f}" in markdown
        first = per_replicate[
            (per_replicate["family"] == family) & (per_replicate["replicate"] == 0)
        ]
        assert f"{first['roc_auc'].item():.4f} [" in markdown
    assert verdict["difference_low"] <= verdict["difference"] <= verdict["difference_high"]
    shown = json.loads(execute(project, "dvc", "metrics", "show", "--json").stdout)
    (workspace,) = shown.values()
    # The only DVC metrics: the verdict's short row, and the MLflow run that track made.
    assert set(workspace["data"]) == {str(paths.HEADLINE), str(paths.PUBLISHED)}
    assert workspace["data"][str(paths.HEADLINE)]["data"]["verdict"].startswith(verdict["winner"])
    published = workspace["data"][str(paths.PUBLISHED)]["data"]
    assert published["mlflow_run"] == read_json(project / paths.MLFLOW_RUNS)["parent_run_id"]


@pytest.mark.slow
def test_summary_is_printed_at_the_end_of_repro(repro):
    _, completed = repro
    output = completed.stdout + completed.stderr
    # compare first, then track, which publishes and prints where to look.
    assert output.index("Running stage 'compare'") < output.index("Running stage 'track'")
    summary = output[output.index("Running stage 'compare'") :]
    assert re.search(r"compare: (keras wins|sklearn wins|No significant difference)", summary)
    assert "compare: report -> reports/comparison.md, reports/comparison.html; track " in summary
    last = output[output.index("Running stage 'track'") :]
    assert re.search(r"track: Promoted (keras|sklearn) to the Model Registry as ", last)
    assert "track: MLflow UI, the run list, with the verdict's columns: http://" in last


@pytest.mark.slow
def test_parent_run_holds_the_verdict(repro):
    project, _ = repro
    client = store_client(project)
    run_ids = read_json(project / paths.MLFLOW_RUNS)
    verdict = read_json(project / paths.VERDICT)
    parent = client.get_run(run_ids["parent_run_id"])

    assert parent.data.tags["winner"] == verdict["winner"]
    assert parent.data.tags["significant"] == str(verdict["significant"]).lower()
    description = parent.data.tags["mlflow.note.content"]
    assert "| test metric | keras | sklearn | keras - sklearn |" in description
    assert "| ROC AUC |" in description
    # The links to these runs, which compare could not know.
    links = read_json(project / paths.MLFLOW_RUNS)["links"]
    assert set(links.values()) <= set(description.split("\n"))
    assert run_ids["keras_run_id"] in links["both models' loss and val_loss per epoch"]
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id, "report")}
    assert artifacts == {"report/comparison.md", "report/comparison.html", "report/verdict.json"}
    # Rounded to 4 significant digits: the run list shows them to people.
    assert parent.data.metrics["test_roc_auc_difference"] == rounded(verdict["difference"])
    assert parent.data.metrics["p_value"] == rounded(verdict["p_value"])
    assert parent.data.tags["verdict"].startswith(verdict["winner"])
    test_metrics = read_json(project / paths.METRICS)
    for family in ("keras", "sklearn"):
        assert parent.data.metrics[f"{family}_test_roc_auc"] == rounded(
            test_metrics[family]["roc_auc"]
        )


@pytest.mark.slow
def test_winner_is_the_champion(repro):
    project, _ = repro
    client = store_client(project)
    run_ids = read_json(project / paths.MLFLOW_RUNS)
    verdict = read_json(project / paths.VERDICT)
    winner = verdict["winner"]

    # compare approved it; track registered it once the runs were FINISHED.
    assert verdict["promotion"] == "approved"
    champion = client.get_model_version_by_alias(REGISTERED, "champion")
    assert int(champion.version) == read_json(project / paths.PUBLISHED)["champion_version"]
    assert champion.source == f"models:/{run_ids[f'{winner}_model_id']}"
    assert champion.tags["parent_run_id"] == run_ids["parent_run_id"]
    assert champion.tags["model_family"] == winner
    assert champion.tags["test_roc_auc"] == f"{verdict['winner_score']:.6g}"
    assert client.get_run(run_ids["parent_run_id"]).info.status == "FINISHED"
    assert f"**{winner}** passes every gate" in (project / paths.REPORT_MARKDOWN).read_text()


@pytest.mark.slow
def test_republishing_registers_no_second_version(repro):
    project, _ = repro
    client = store_client(project)
    before = client.search_model_versions(f"name = '{REGISTERED}'")
    completed = execute(project, "dvc", "repro", "-f", "-s", "track")
    assert "already published" in completed.stderr
    after = client.search_model_versions(f"name = '{REGISTERED}'")
    assert [version.version for version in after] == [version.version for version in before]


@pytest.mark.slow
def test_a_failing_gate_is_reported_by_name(own_repro):
    project, _ = own_repro
    client = store_client(project)
    champion = client.get_model_version_by_alias(REGISTERED, "champion").version
    best = max(read_json(project / paths.METRICS)[family]["roc_auc"] for family in FAMILIES)
    assert best < 0.999
    set_nested_params(project, {"compare.promote.min_test_roc_auc": 0.999})

    completed = execute(project, "dvc", "repro")

    verdict = read_json(project / paths.VERDICT)
    assert verdict["promotion"] == "refused"
    markdown = (project / paths.REPORT_MARKDOWN).read_text()
    assert re.search(
        rf"Not promoted to `{REGISTERED}`: failed gate `min_test_roc_auc` "
        r"\(test roc_auc 0\.\d{4} < 0\.999\)",
        markdown,
    )
    assert "failed gate min_test_roc_auc" in completed.stdout + completed.stderr
    assert "champion_version" not in read_json(project / paths.PUBLISHED)
    # The champion stays where it was.
    assert client.get_model_version_by_alias(REGISTERED, "champion").version == champion


def discordant_rows(keras_only: int, sklearn_only: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of both models: rows only one of them gets right, then 10 both do."""
    keras_correct = np.array([True] * keras_only + [False] * sklearn_only + [True] * 10)
    sklearn_correct = np.array([False] * keras_only + [True] * sklearn_only + [True] * 10)
    return keras_correct, sklearn_correct


def test_mcnemar_is_exact_up_to_24_discordant_rows():
    result = mcnemar(*discordant_rows(8, 16))

    assert result.method == "exact binomial"
    # P = 2 * P(X <= 8), X ~ Binomial(24, 1/2).
    exact = 2 * sum(math.comb(24, k) for k in range(9)) / 2**24
    assert result.p_value == pytest.approx(exact, rel=1e-9)


def test_mcnemar_is_chi_squared_from_25_discordant_rows():
    result = mcnemar(*discordant_rows(8, 17))

    # (|8 - 17| - 1)^2 / 25 = 2.56; the chi-squared survival function with one degree
    # of freedom is erfc(sqrt(statistic / 2)).
    assert result.method == "chi-squared 2.56, continuity-corrected"
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(2.56 / 2)), rel=1e-9)


def test_report_without_timings_says_they_were_not_measured(default_params: Params):
    """After `dvc pull` there is no timing.json: no "nanx faster" in the report."""
    nan = float("nan")
    training = {family: Training(10, 10, False, nan, nan, 211) for family in ("keras", "sklearn")}
    images = {name: Image(b"png", name) for name in ("intervals", "differences", "loss", "roc")}
    text = to_markdown(
        build_report(
            comparison_example(0.3, 0.05),
            [],
            training,
            Promotion("disabled", (), "mlp-compare"),
            default_params,
            images,
        )
    )
    assert "Training times were not measured here (no data/train_*/timing.json)." in text
    assert "| training time, all replicates (s) | nan | nan |" in text
    assert "faster" not in text


@pytest.mark.stages
def test_compare_never_contacts_the_store(trained_outputs: Path, tmp_path: Path, monkeypatch):
    """The verdict is computed from files: with the tracking server down, compare still
    writes the report and the verdict, and the server never hears from it."""
    folder = tmp_path / "project"
    shutil.copytree(trained_outputs, folder)
    monkeypatch.chdir(folder)

    with StoreStandIn(answer=False) as stand_in:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", stand_in.uri)
        compare_stage.main()

    assert stand_in.requests == []
    assert read_json(paths.VERDICT)["winner"] in ("keras", "sklearn", "tie")
    assert paths.REPORT_MARKDOWN.exists() and paths.REPORT_HTML.exists()
