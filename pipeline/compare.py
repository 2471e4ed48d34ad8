"""The verdict: which model won on the same test rows, by how much, and what to try next
(`reports/comparison.{md,html}`, `data/compare/verdict.json`, tags on the MLflow parent run).
"""

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from pipeline.config import CompareConfig, MetricName, PromoteConfig

logger = logging.getLogger(__name__)

FAMILIES = ("keras", "sklearn")  # differences are always keras - sklearn
METRICS: tuple[MetricName, ...] = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
LOWER_IS_BETTER = frozenset({"log_loss"})
# Below this many discordant pairs McNemar's chi-squared approximation is poor, so the
# exact binomial test is used instead (the usual rule of thumb).
MCNEMAR_EXACT_BELOW = 25
# Resamples are processed in chunks of at most this many (resample, row) cells.
BOOTSTRAP_CELLS = 4_000_000

Winner = Literal["keras", "sklearn", "tie"]


@dataclass(frozen=True)
class Interval:
    """A point estimate on the test set and its bootstrap confidence interval."""

    estimate: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class McNemar:
    """McNemar's test on the rows where exactly one of the two models is right."""

    keras_only_correct: int  # b: keras right, sklearn wrong
    sklearn_only_correct: int  # c: keras wrong, sklearn right
    p_value: float
    method: str


@dataclass(frozen=True)
class Verdict:
    metric: MetricName
    winner: Winner  # the better point estimate; "tie" when equal
    difference: Interval  # keras - sklearn, on `metric`
    test: str  # the paired test that gives `p_value`
    p_value: float
    alpha: float
    significant: bool


@dataclass(frozen=True)
class Comparison:
    n_rows: int
    n_positive: int
    n_bootstrap: int
    confidence: float
    intervals: dict[str, dict[str, Interval]]  # family -> metric -> interval
    differences: dict[str, Interval]  # metric -> keras - sklearn
    bootstrap_p_values: dict[str, float]  # metric -> paired bootstrap p-value
    primary_samples: np.ndarray  # bootstrap differences of the primary metric
    mcnemar: McNemar
    verdict: Verdict


@dataclass(frozen=True)
class _Scored:
    """One model's per-row quantities that every (weighted) metric is built from."""

    labels: np.ndarray  # bool: label 1
    predicted: np.ndarray  # bool: probability above the threshold
    row_log_loss: np.ndarray
    order: np.ndarray  # rows sorted by probability
    group_starts: np.ndarray  # first sorted position of each distinct probability


def _score(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> _Scored:
    probabilities = np.asarray(probabilities)
    # The same clipping as sklearn.metrics.log_loss: the dtype's machine epsilon.
    epsilon = np.finfo(probabilities.dtype).eps
    clipped = np.clip(probabilities, epsilon, 1 - epsilon).astype(np.float64)
    positive = np.asarray(labels) == 1
    order = np.argsort(probabilities, kind="stable")
    ordered = probabilities[order]
    return _Scored(
        labels=positive,
        predicted=probabilities > threshold,
        row_log_loss=-np.where(positive, np.log(clipped), np.log1p(-clipped)),
        order=order,
        group_starts=np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]),
    )


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, and 0 where the denominator is 0 (zero_division=0)."""
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 0.0)


def weighted_metrics(weights: np.ndarray, scored: _Scored) -> dict[str, np.ndarray]:
    """Every test metric under each row of `weights` (n_resamples, n_rows).

    A bootstrap resample is a vector of counts: how often each test row was drawn.
    With all weights 1 these are the plain test metrics, as sklearn.metrics computes
    them (tests/test_compare.py checks it).
    """
    positive = scored.labels.astype(np.float64)
    predicted = scored.predicted.astype(np.float64)
    total = weights.sum(axis=1)
    true_positives = weights @ (positive * predicted)
    predicted_positives = weights @ predicted
    actual_positives = weights @ positive
    correct = (scored.labels == scored.predicted).astype(np.float64)
    # ROC AUC as the Mann-Whitney statistic: the weighted share of (positive,
    # negative) pairs ordered correctly, ties counting one half.
    ordered = weights[:, scored.order]
    ordered_positive = scored.labels[scored.order]
    positive_weight = np.add.reduceat(ordered * ordered_positive, scored.group_starts, axis=1)
    negative_weight = np.add.reduceat(ordered * ~ordered_positive, scored.group_starts, axis=1)
    negatives_below = np.cumsum(negative_weight, axis=1) - negative_weight
    ordered_pairs = (positive_weight * (negatives_below + 0.5 * negative_weight)).sum(axis=1)
    return {
        "accuracy": weights @ correct / total,
        "precision": _ratio(true_positives, predicted_positives),
        "recall": _ratio(true_positives, actual_positives),
        "f1": _ratio(2 * true_positives, predicted_positives + actual_positives),
        "roc_auc": ordered_pairs / (positive_weight.sum(axis=1) * negative_weight.sum(axis=1)),
        "log_loss": weights @ scored.row_log_loss / total,
    }


def stratified_bootstrap_weights(
    labels: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_resamples, n_rows) draw counts; each resample keeps both class counts.

    Resampling within each class keeps every resample's ROC AUC defined, also for a
    small test set with few positives.
    """
    weights = np.zeros((n_resamples, len(labels)))
    for label in (0, 1):
        rows = np.flatnonzero(labels == label)
        weights[:, rows] = rng.multinomial(
            len(rows), np.full(len(rows), 1 / len(rows)), size=n_resamples
        )
    return weights


def paired_bootstrap(
    labels: np.ndarray,
    probabilities: dict[str, np.ndarray],
    threshold: float,
    n_resamples: int,
    seed: int,
) -> dict[str, dict[str, np.ndarray]]:
    """family -> metric -> (n_resamples,) values, every family on the same resamples."""
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        raise ValueError("the test set holds one class only: ROC AUC and recall are undefined")
    rng = np.random.default_rng(seed)
    scored = {family: _score(labels, values, threshold) for family, values in probabilities.items()}
    chunk = max(1, BOOTSTRAP_CELLS // len(labels))
    parts: dict[str, list[dict[str, np.ndarray]]] = {family: [] for family in probabilities}
    for start in range(0, n_resamples, chunk):
        weights = stratified_bootstrap_weights(labels, min(chunk, n_resamples - start), rng)
        for family, family_scored in scored.items():
            parts[family].append(weighted_metrics(weights, family_scored))
    return {
        family: {metric: np.concatenate([part[metric] for part in chunks]) for metric in METRICS}
        for family, chunks in parts.items()
    }


def point_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float
) -> dict[str, float]:
    """The plain test metrics: every row weighted once."""
    scored = _score(np.asarray(labels), probabilities, threshold)
    values = weighted_metrics(np.ones((1, len(labels))), scored)
    return {metric: float(values[metric][0]) for metric in METRICS}


def percentile_interval(estimate: float, samples: np.ndarray, confidence: float) -> Interval:
    tail = (1 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return Interval(estimate=float(estimate), low=float(low), high=float(high))


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from paired bootstrap differences.

    Twice the share of resamples on the far side of zero, with the +1 correction
    that keeps a Monte Carlo p-value from being 0.
    """
    n_resamples = len(differences)
    at_most_zero = (np.count_nonzero(differences <= 0) + 1) / (n_resamples + 1)
    at_least_zero = (np.count_nonzero(differences >= 0) + 1) / (n_resamples + 1)
    return float(min(1.0, 2 * min(at_most_zero, at_least_zero)))


def mcnemar(keras_correct: np.ndarray, sklearn_correct: np.ndarray) -> McNemar:
    """McNemar's test: are the rows only keras gets right as many as those only
    sklearn gets right? Exact binomial test for few discordant rows, else the
    continuity-corrected chi-squared test."""
    keras_correct = np.asarray(keras_correct, dtype=bool)
    sklearn_correct = np.asarray(sklearn_correct, dtype=bool)
    keras_only = int(np.count_nonzero(keras_correct & ~sklearn_correct))
    sklearn_only = int(np.count_nonzero(~keras_correct & sklearn_correct))
    discordant = keras_only + sklearn_only
    if discordant == 0:
        return McNemar(keras_only, sklearn_only, 1.0, "no discordant rows")
    if discordant < MCNEMAR_EXACT_BELOW:
        p_value = stats.binomtest(keras_only, discordant, 0.5).pvalue
        return McNemar(keras_only, sklearn_only, float(p_value), "exact binomial")
    statistic = (abs(keras_only - sklearn_only) - 1) ** 2 / discordant
    p_value = stats.chi2.sf(statistic, df=1)
    return McNemar(
        keras_only,
        sklearn_only,
        float(p_value),
        f"chi-squared {statistic:.2f}, continuity-corrected",
    )


def decide(
    metric: MetricName, difference: Interval, test: str, p_value: float, alpha: float
) -> Verdict:
    """The better model on `metric` (keras - sklearn = `difference`), and whether the
    paired test calls the difference significant at level `alpha`."""
    advantage = -difference.estimate if metric in LOWER_IS_BETTER else difference.estimate
    if advantage == 0:
        winner: Winner = "tie"
    else:
        winner = "keras" if advantage > 0 else "sklearn"
    return Verdict(
        metric=metric,
        winner=winner,
        difference=difference,
        test=test,
        p_value=p_value,
        alpha=alpha,
        significant=winner != "tie" and p_value < alpha,
    )


def compare_predictions(
    labels: np.ndarray,
    probabilities: dict[str, np.ndarray],
    threshold: float,
    config: CompareConfig,
    seed: int,
) -> Comparison:
    """Test metrics with bootstrap intervals, paired tests and the verdict."""
    if set(probabilities) != set(FAMILIES):
        raise ValueError(f"expected probabilities of {FAMILIES}, got {sorted(probabilities)}")
    labels = np.asarray(labels)
    samples = paired_bootstrap(labels, probabilities, threshold, config.n_bootstrap, seed)
    estimates = {
        family: point_metrics(labels, probabilities[family], threshold) for family in FAMILIES
    }
    intervals = {
        family: {
            metric: percentile_interval(
                estimates[family][metric], samples[family][metric], config.confidence
            )
            for metric in METRICS
        }
        for family in FAMILIES
    }
    difference_samples = {
        metric: samples["keras"][metric] - samples["sklearn"][metric] for metric in METRICS
    }
    differences = {
        metric: percentile_interval(
            estimates["keras"][metric] - estimates["sklearn"][metric],
            difference_samples[metric],
            config.confidence,
        )
        for metric in METRICS
    }
    p_values = {metric: bootstrap_p_value(difference_samples[metric]) for metric in METRICS}
    correct = {
        family: (np.asarray(probabilities[family]) > threshold) == (labels == 1)
        for family in FAMILIES
    }
    mcnemar_result = mcnemar(correct["keras"], correct["sklearn"])
    metric = config.primary_metric
    if metric == "accuracy":
        test, p_value = f"McNemar ({mcnemar_result.method})", mcnemar_result.p_value
    else:
        test, p_value = "paired bootstrap", p_values[metric]
    return Comparison(
        n_rows=len(labels),
        n_positive=int(np.count_nonzero(labels == 1)),
        n_bootstrap=config.n_bootstrap,
        confidence=config.confidence,
        intervals=intervals,
        differences=differences,
        bootstrap_p_values=p_values,
        primary_samples=difference_samples[metric],
        mcnemar=mcnemar_result,
        verdict=decide(metric, differences[metric], test, p_value, config.alpha),
    )


def parameter_count(n_features: int, hidden_layers: list[int]) -> int:
    """Weights and biases of n_features -> hidden_layers -> 1, the same in both
    libraries (dropout adds none)."""
    widths = [n_features, *hidden_layers, 1]
    return sum(
        fan_in * fan_out + fan_out for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True)
    )


@dataclass(frozen=True)
class Gate:
    name: str  # the compare.promote key, or "winner"
    passed: bool
    detail: str


def check_gates(
    verdict: Verdict, estimates: dict[str, dict[str, float]], promote: PromoteConfig
) -> list[Gate]:
    """Each quality gate the winner must pass before it may become the champion."""
    if verdict.winner == "tie":
        return [Gate("winner", False, f"the models tie on test {verdict.metric}: no winner")]
    winner = estimates[verdict.winner]
    gates = [Gate("winner", True, f"{verdict.winner} is better on test {verdict.metric}")]
    for key, metric in (("min_test_roc_auc", "roc_auc"), ("min_test_accuracy", "accuracy")):
        minimum = getattr(promote, key)
        passed = winner[metric] >= minimum
        relation = ">=" if passed else "<"
        gates.append(
            Gate(key, passed, f"test {metric} {winner[metric]:.4f} {relation} {minimum:g}")
        )
    if promote.require_significant:
        gates.append(
            Gate(
                "require_significant",
                verdict.significant,
                f"{verdict.test} p = {verdict.p_value:.4g} "
                + (f"< {verdict.alpha:g}" if verdict.significant else f">= {verdict.alpha:g}"),
            )
        )
    return gates
