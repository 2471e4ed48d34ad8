import itertools

import numpy as np
import pytest
from scipy import stats

from pipeline.config import smallest_p_value
from pipeline.statistics import (
    Interval,
    compare_replicates,
    mean_interval,
    sign_flip_p_value,
    wilson_interval,
)


def brute_force_p_value(differences: list[float]) -> float:
    """Every sign pattern written out, the oracle for the vectorized enumeration."""
    observed = abs(np.mean(differences))
    extreme = 0
    patterns = list(itertools.product((1, -1), repeat=len(differences)))
    for signs in patterns:
        mean = abs(
            np.mean([sign * abs(value) for sign, value in zip(signs, differences, strict=True)])
        )
        extreme += mean >= observed - 1e-15
    return extreme / len(patterns)


@pytest.mark.parametrize(
    "differences",
    [
        [0.01, 0.02, 0.03, 0.04, 0.05, 0.06],
        [0.01, -0.02, 0.03, -0.04, 0.05, 0.06],
        [-0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
        [0.002, 0.001],
    ],
)
def test_sign_flip_p_value_counts_every_sign_pattern(differences):
    assert sign_flip_p_value(np.array(differences)) == pytest.approx(
        brute_force_p_value(differences)
    )


def test_all_differences_on_one_side_give_the_smallest_p_value():
    for count in (6, 8):
        differences = np.linspace(0.01, 0.02, count)
        assert sign_flip_p_value(differences) == smallest_p_value(count) == 2 / 2**count


def test_no_difference_at_all_is_p_one():
    assert sign_flip_p_value(np.zeros(6)) == 1.0


def test_many_replicates_use_a_seeded_monte_carlo_p_value():
    rng = np.random.default_rng(0)
    differences = rng.normal(0.3, 1.0, size=40)
    first = sign_flip_p_value(differences, seed=1)
    assert first == sign_flip_p_value(differences, seed=1)
    # The permutation test and the t-test agree closely on this many normal values.
    assert first == pytest.approx(stats.ttest_1samp(differences, 0).pvalue, abs=0.02)


def test_mean_interval_is_the_student_t_interval():
    differences = np.array([0.01, 0.03, -0.02, 0.04, 0.0, 0.02])
    interval = mean_interval(differences, 0.95)
    low, high = stats.t.interval(
        0.95, len(differences) - 1, loc=differences.mean(), scale=stats.sem(differences)
    )
    assert (interval.estimate, interval.low, interval.high) == pytest.approx(
        (differences.mean(), low, high)
    )


def test_wilson_interval_matches_its_formula_at_the_extremes():
    # 6 of 6: the Wilson interval's upper end is 1, its lower end z^2-shrunk from 1.
    interval = wilson_interval(6, 6, 0.95)
    z = stats.norm.ppf(0.975)
    assert interval.estimate == 1.0
    assert interval.high == pytest.approx(1.0)
    assert interval.low == pytest.approx(6 / (6 + z**2))


def test_a_consistent_difference_is_significant_and_names_the_winner():
    verdict = compare_replicates(
        "roc_auc",
        keras=np.array([0.80, 0.81, 0.79, 0.80, 0.82, 0.80]),
        sklearn=np.array([0.85, 0.86, 0.84, 0.86, 0.85, 0.87]),
        alpha=0.05,
        confidence=0.95,
    )
    assert verdict.winner == "sklearn"
    assert verdict.significant
    assert verdict.p_value == pytest.approx(2 / 64)
    assert verdict.difference.estimate == pytest.approx(-0.0516667, abs=1e-6)
    assert verdict.difference.high < 0
    assert verdict.keras_better.estimate == 0.0


def test_differences_of_both_signs_are_not_significant():
    verdict = compare_replicates(
        "roc_auc",
        keras=np.array([0.75, 0.82, 0.85, 0.87, 0.81, 0.85]),
        sklearn=np.array([0.86, 0.86, 0.80, 0.83, 0.81, 0.84]),
        alpha=0.05,
        confidence=0.95,
    )
    assert not verdict.significant
    assert verdict.p_value > 0.5
    assert verdict.difference.low < 0 < verdict.difference.high
    # 3 wins, one tie counted as half, 2 losses.
    assert verdict.keras_better.estimate == pytest.approx(3.5 / 6)


def test_lower_is_better_metrics_flip_the_winner():
    verdict = compare_replicates(
        "log_loss",
        keras=np.full(6, 0.40) + np.arange(6) * 1e-3,
        sklearn=np.full(6, 0.50),
        alpha=0.05,
        confidence=0.95,
    )
    assert verdict.winner == "keras"
    assert verdict.significant
    assert verdict.keras_better.estimate == 1.0


def test_one_replicate_is_never_significant():
    verdict = compare_replicates("roc_auc", np.array([0.9]), np.array([0.5]), 0.05, 0.95)
    assert verdict.winner == "keras"
    assert not verdict.significant


def test_monte_carlo_counts_patterns_as_extreme_as_the_observed_one():
    # 17 differences of equal size, 9 up and 8 down: every sign pattern's mean is at
    # least as far from 0 as the observed one (an odd count never sums to 0).
    differences = np.array([0.1, -0.1] * 8 + [0.1])
    assert sign_flip_p_value(differences, seed=3) == 1.0


def test_identical_replicates_are_a_tie():
    values = np.array([0.8, 0.82, 0.79, 0.81, 0.8, 0.83])
    verdict = compare_replicates("roc_auc", values, values.copy(), 0.05, 0.95)
    assert verdict.winner == "tie"
    assert not verdict.significant
    assert verdict.p_value == 1.0
    assert verdict.keras_better.estimate == 0.5
    assert (verdict.difference.low, verdict.difference.high) == (0.0, 0.0)


def test_two_replicates_get_a_t_interval():
    interval = mean_interval(np.array([0.01, 0.03]), 0.95)
    # mean 0.02, standard error 0.01, t(0.975, 1 df) = 12.706.
    assert interval.estimate == pytest.approx(0.02)
    assert interval.high - interval.estimate == pytest.approx(0.12706, rel=1e-4)
    assert mean_interval(np.array([0.05]), 0.95) == Interval(0.05, 0.05, 0.05)


def test_wilson_interval_in_the_middle():
    # 3 of 10 at 95%: the textbook Wilson interval, 0.1078 to 0.6032.
    interval = wilson_interval(3, 10, 0.95)
    assert interval.estimate == pytest.approx(0.3)
    assert (interval.low, interval.high) == pytest.approx((0.1078, 0.6032), abs=1e-4)
    assert interval.contains(0.3) and interval.contains(0.1078)
    assert not interval.contains(0.1) and not interval.contains(0.61)


def test_paired_values_must_have_the_same_shape():
    with pytest.raises(ValueError, match="expected paired replicates"):
        compare_replicates("roc_auc", np.ones(6), np.ones(5), 0.05, 0.95)
    with pytest.raises(ValueError, match="expected paired replicates"):
        compare_replicates("roc_auc", np.ones(0), np.ones(0), 0.05, 0.95)
