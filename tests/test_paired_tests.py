"""The per-row scores, the paired tests and the decision over replicates, against
scikit-learn and values worked out by hand."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics

from pipeline.config import CompareConfig, PromoteConfig
from pipeline.paired_tests import (
    McNemar,
    compare_predictions,
    correct_rows,
    decide,
    mcnemar,
    over_replicates,
    paired_bootstrap,
    parameter_count,
    percentile_interval,
    point_metrics,
    replicate_metric,
    stratified_bootstrap_weights,
)
from pipeline.statistics import Interval


def compare_config(**changes) -> CompareConfig:
    values = {
        "primary_metric": "f1",
        "n_bootstrap": 200,
        "confidence": 0.95,
        "alpha": 0.05,
        "promote": PromoteConfig(
            enabled=False,
            registered_model_name="model",
            min_test_roc_auc=0.0,
            min_test_accuracy=0.0,
            require_significant=False,
        ),
    }
    return CompareConfig(**{**values, **changes})


def test_two_probability_columns_score_as_the_probability_of_class_1():
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    positive = np.array([0.1, 0.45, 0.8, 0.35, 0.3, 0.6, 0.9, 0.5])
    columns = np.stack([1 - positive, positive], axis=1)

    values = point_metrics(labels, columns, 0.4)

    assert values == pytest.approx(point_metrics(labels, positive, 0.4))
    assert values["f1"] == pytest.approx(metrics.f1_score(labels, positive > 0.4))
    assert values["roc_auc"] == pytest.approx(metrics.roc_auc_score(labels, positive))


def test_a_zero_probability_for_the_true_class_costs_a_clipped_log_loss():
    labels = np.array([0, 1, 2])
    probabilities = np.array([[0.0, 0.5, 0.5], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    epsilon = np.finfo(np.float64).eps
    by_hand = -np.mean(np.log([epsilon, 0.7, 0.8]))
    assert point_metrics(labels, probabilities, 0.5)["log_loss"] == pytest.approx(by_hand)


def test_correct_rows_follow_the_threshold_or_the_most_probable_class():
    labels = np.array([0, 1, 1, 0])
    np.testing.assert_array_equal(
        correct_rows(labels, np.array([0.3, 0.6, 0.2, 0.7]), 0.5), [True, True, False, False]
    )
    np.testing.assert_array_equal(
        correct_rows(labels, np.array([0.3, 0.6, 0.2, 0.7]), 0.25), [False, True, False, False]
    )
    three = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7]])
    np.testing.assert_array_equal(correct_rows(labels, three, 0.5), [True, False, True, False])


def test_a_test_set_of_one_class_is_refused_by_name():
    with pytest.raises(ValueError) as caught:
        paired_bootstrap(np.ones(5), {"keras": np.full(5, 0.7)}, 0.5, 10, 0)
    assert str(caught.value) == (
        "the test set holds one class only: ROC AUC and recall are undefined"
    )


@pytest.mark.parametrize(("confidence", "tails"), [(0.95, (0.025, 0.975)), (0.8, (0.1, 0.9))])
def test_percentile_interval_cuts_half_the_rest_from_each_tail(confidence: float, tails):
    samples = np.random.default_rng(0).normal(size=1001)
    interval = percentile_interval(0.3, samples, confidence)
    assert interval == Interval(0.3, *np.quantile(samples, tails))


def test_mcnemar_counts_rows_given_as_zeros_and_ones():
    result = mcnemar([1, 1, 0, 0, 1, 1], [0, 1, 1, 0, 0, 1])
    # keras alone right on rows 0 and 4, sklearn alone on row 2: binomial(2 of 3).
    assert result == McNemar(2, 1, 1.0, "exact binomial")
    assert mcnemar([1, 0, 1], [1, 0, 1]) == McNemar(0, 0, 1.0, "no discordant rows")


def test_a_tie_is_never_significant():
    verdict = decide("f1", Interval(0.0, -0.1, 0.1), "paired bootstrap", 0.01, 0.05)
    assert (verdict.winner, verdict.significant) == ("tie", False)


def test_the_comparison_records_its_rows_classes_and_resamples():
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 1, 0, 1])
    rng = np.random.default_rng(3)
    probabilities = {"keras": rng.uniform(size=10), "sklearn": rng.uniform(size=10)}

    comparison = compare_predictions(labels, probabilities, 0.5, compare_config(), seed=0)

    assert (comparison.n_rows, comparison.n_positive) == (10, 6)
    assert (comparison.n_classes, comparison.n_bootstrap) == (2, 200)
    assert comparison.replicates is None and comparison.model_verdict is None


def test_probabilities_of_other_families_are_refused():
    with pytest.raises(ValueError) as caught:
        compare_predictions(
            np.array([0, 1]), {"keras": np.ones(2), "xgboost": np.ones(2)}, 0.5, compare_config(), 0
        )
    assert (
        str(caught.value)
        == "expected probabilities of ('keras', 'sklearn'), got ['keras', 'xgboost']"
    )


def test_over_several_replicates_the_sign_flip_test_decides():
    """Six replicates in which keras' F1 beats sklearn's every time: the exact sign-flip
    p-value is 2 / 2^6. Replicate 0's own per-row verdict is kept beside it."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, size=(6, 40))
    # Keras leans towards the right class, sklearn guesses; threshold 0.3 counts.
    keras = np.clip(0.45 * labels + rng.uniform(0.0, 0.55, size=labels.shape), 0, 1)
    sklearn = rng.uniform(size=labels.shape)
    columns = {
        "keras": np.stack([1 - keras, keras], axis=2),
        "sklearn": np.stack([1 - sklearn, sklearn], axis=2),
    }
    f1 = {
        name: np.array([metrics.f1_score(y, p > 0.3) for y, p in zip(labels, values, strict=True)])
        for name, values in (("keras", keras), ("sklearn", sklearn))
    }
    assert np.all(f1["keras"] > f1["sklearn"])
    config = compare_config()
    first = compare_predictions(
        labels[0], {name: values[0] for name, values in columns.items()}, 0.3, config, 0
    )

    comparison = over_replicates(first, labels, columns, 0.3, config)

    assert comparison.replicates.metric == "f1"
    np.testing.assert_allclose(comparison.replicates.keras, f1["keras"])
    np.testing.assert_allclose(comparison.replicates.sklearn, f1["sklearn"])
    verdict = comparison.verdict
    assert (verdict.metric, verdict.winner, verdict.alpha) == ("f1", "keras", 0.05)
    assert verdict.test == "sign-flip test over 6 replicates"
    assert verdict.p_value == pytest.approx(2 / 2**6)
    assert verdict.significant is True
    assert verdict.difference.estimate == pytest.approx(np.mean(f1["keras"] - f1["sklearn"]))
    assert comparison.model_verdict == first.verdict
    assert comparison.intervals == first.intervals
    # A single replicate: the per-row verdict stands.
    assert over_replicates(first, labels[:1], columns, 0.3, config) is first


def test_parameter_count_of_three_classes():
    # 4 -> 5 -> 3: (4 + 1) x 5 + (5 + 1) x 3.
    assert parameter_count(4, [5], 3) == 43


def test_a_single_predicted_positive_gives_its_precision():
    labels = np.array([1, 0, 0, 1])
    positive = np.array([0.9, 0.1, 0.2, 0.3])
    values = point_metrics(labels, positive, 0.5)
    assert values["precision"] == metrics.precision_score(labels, positive > 0.5) == 1.0
    assert values["recall"] == metrics.recall_score(labels, positive > 0.5) == 0.5


def test_multiclass_resamples_are_scored_on_their_own_rows():
    """Each resample's accuracy and log loss over three classes, worked out from the
    same draw counts: the rows a resample drew, as often as it drew them."""
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1, 2], [6, 5, 4])
    probabilities = rng.dirichlet(np.ones(3), size=15)
    weights = stratified_bootstrap_weights(labels, 8, np.random.default_rng(11))

    samples = paired_bootstrap(labels, {"keras": probabilities}, 0.5, 8, seed=11)["keras"]

    correct = probabilities.argmax(axis=1) == labels
    row_loss = -np.log(probabilities[np.arange(15), labels])
    np.testing.assert_allclose(samples["accuracy"], weights @ correct / 15)
    np.testing.assert_allclose(samples["log_loss"], weights @ row_loss / 15)


def test_float32_probabilities_are_clipped_at_float32_precision():
    labels = np.array([0, 1, 2])
    probabilities = np.array([[0.0, 0.5, 0.5], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    epsilon = np.finfo(np.float32).eps
    by_hand = -np.mean(np.log([epsilon, np.float32(0.7), np.float32(0.8)]))
    assert point_metrics(labels, probabilities, 0.5)["log_loss"] == pytest.approx(by_hand)


def test_mcnemar_chi_squared_keeps_both_counts():
    keras_correct = np.array([True] * 20 + [False] * 10)
    result = mcnemar(keras_correct, ~keras_correct)
    statistic = (abs(20 - 10) - 1) ** 2 / 30
    assert (result.keras_only_correct, result.sklearn_only_correct) == (20, 10)
    assert result.p_value == pytest.approx(stats.chi2.sf(statistic, df=1))


def test_replicates_must_pair_up():
    labels = np.tile([0, 1, 0, 1], (6, 1))
    probabilities = np.full((5, 4, 2), 0.5)
    with pytest.raises(ValueError, match="zip"):
        replicate_metric(labels, probabilities, 0.5, "accuracy")
