"""The verdict over replicates: do the two libraries differ, judged over K training
runs of each, paired by replicate? Pure NumPy and SciPy, no files.

The per-row tests in `compare` (paired bootstrap, McNemar) judge two trained models
on the test rows; training variance (initial weights, batch order, the split) lies
outside them. Here each replicate is one paired observation, so that variance is
inside the test (Dietterich 1998; Bouthillier et al., MLSys 2021).
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from pipeline.config import MetricName

LOWER_IS_BETTER = frozenset({"log_loss"})
# Up to this many replicates the sign-flip test enumerates all 2^K sign patterns;
# beyond, it draws this many patterns at random (seeded).
EXACT_MAX_REPLICATES = 16
MONTE_CARLO_PATTERNS = 1 << 16

Winner = Literal["keras", "sklearn", "tie"]


@dataclass(frozen=True)
class Interval:
    """An estimate and its confidence interval."""

    estimate: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class ReplicateVerdict:
    """The libraries compared over K replicates on one test metric."""

    metric: MetricName
    keras: np.ndarray  # (K,) the metric of each Keras replicate
    sklearn: np.ndarray  # (K,) of each scikit-learn replicate, paired by replicate
    difference: Interval  # mean keras - sklearn, with its t interval
    p_value: float  # exact sign-flip test of "mean difference 0"
    keras_better: Interval  # P(keras better than sklearn in a replicate), Wilson interval
    alpha: float
    confidence: float
    winner: Winner
    significant: bool

    @property
    def count(self) -> int:
        return len(self.keras)

    @property
    def differences(self) -> np.ndarray:
        return self.keras - self.sklearn


def sign_flip_p_value(differences: np.ndarray, seed: int = 0) -> float:
    """Two-sided p-value of "the paired differences are symmetric about 0" for their
    mean (the Fisher-Pitman permutation test): the share of sign patterns whose mean
    is at least as far from 0 as the observed one. Exact: every one of the 2^K
    patterns up to `EXACT_MAX_REPLICATES` replicates."""
    differences = np.asarray(differences, dtype=np.float64)
    count = len(differences)
    observed = abs(differences.mean())
    if observed == 0:
        return 1.0
    # A tolerance for patterns whose mean equals the observed one up to rounding.
    threshold = observed * (1 - 1e-12)
    if count <= EXACT_MAX_REPLICATES:
        patterns = np.arange(1 << count)[:, None] >> np.arange(count) & 1
        signs = 1 - 2 * patterns
        means = np.abs(signs @ np.abs(differences)) / count
        return float(np.mean(means >= threshold))
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(MONTE_CARLO_PATTERNS, count))
    extreme = np.count_nonzero(np.abs(signs @ np.abs(differences)) / count >= threshold)
    # The observed pattern counts as one of the draws, so that p is never 0.
    return float((extreme + 1) / (MONTE_CARLO_PATTERNS + 1))


def mean_interval(differences: np.ndarray, confidence: float) -> Interval:
    """The mean and its Student t interval over the replicates."""
    differences = np.asarray(differences, dtype=np.float64)
    mean = float(differences.mean())
    if len(differences) < 2:
        return Interval(mean, mean, mean)
    half = stats.t.ppf((1 + confidence) / 2, len(differences) - 1) * stats.sem(differences)
    half = 0.0 if not np.isfinite(half) else float(half)
    return Interval(mean, mean - half, mean + half)


def wilson_interval(successes: float, trials: int, confidence: float) -> Interval:
    """A proportion and its Wilson score interval, sound also near 0 and 1."""
    share = successes / trials
    z = stats.norm.ppf((1 + confidence) / 2)
    centre = (share + z**2 / (2 * trials)) / (1 + z**2 / trials)
    half = z * np.sqrt(share * (1 - share) / trials + z**2 / (4 * trials**2)) / (1 + z**2 / trials)
    return Interval(share, float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def advantage(metric: MetricName, differences: np.ndarray) -> np.ndarray:
    """keras - sklearn, signed so that positive means keras is better."""
    return -differences if metric in LOWER_IS_BETTER else differences


def compare_replicates(
    metric: MetricName,
    keras: np.ndarray,
    sklearn: np.ndarray,
    alpha: float,
    confidence: float,
) -> ReplicateVerdict:
    """The verdict over paired replicates: the mean difference with its interval,
    the sign-flip test, and how often keras beat sklearn (ties count one half)."""
    keras = np.asarray(keras, dtype=np.float64)
    sklearn = np.asarray(sklearn, dtype=np.float64)
    if keras.shape != sklearn.shape or keras.ndim != 1 or len(keras) == 0:
        raise ValueError(f"expected paired replicates, got {keras.shape} and {sklearn.shape}")
    differences = keras - sklearn
    ahead = advantage(metric, differences)
    wins = np.count_nonzero(ahead > 0) + 0.5 * np.count_nonzero(ahead == 0)
    p_value = sign_flip_p_value(differences)
    mean_advantage = float(ahead.mean())
    winner: Winner = "tie" if mean_advantage == 0 else "keras" if mean_advantage > 0 else "sklearn"
    return ReplicateVerdict(
        metric=metric,
        keras=keras,
        sklearn=sklearn,
        difference=mean_interval(differences, confidence),
        p_value=p_value,
        keras_better=wilson_interval(wins, len(keras), confidence),
        alpha=alpha,
        confidence=confidence,
        winner=winner,
        significant=winner != "tie" and len(keras) > 1 and p_value < alpha,
    )
