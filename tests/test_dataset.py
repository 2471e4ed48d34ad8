"""Tests for `pipeline.dataset`: shapes, types, class balance, reproducibility, signal."""

from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from pipeline.config import DatasetConfig
from pipeline.dataset import class_counts, generate_dataset

KINDS = ["classification", "moons", "circles", "xor", "random_labels"]
# The kinds whose labels are drawn to exact class counts.
EXACT_KINDS = ["moons", "circles", "xor", "random_labels"]


def make_config(**changes: Any) -> DatasetConfig:
    fields = {
        "kind": "classification",
        "n_samples": 200,
        "n_features": 5,
        "n_informative": 3,
        "noise": 0.05,
        "class_sep": 1.0,
        "positive_fraction": 0.5,
    }
    return DatasetConfig(**{**fields, **changes})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n_samples", "n_features"), [(200, 5), (301, 2)])
def test_shape_types_and_names(kind: str, n_samples: int, n_features: int) -> None:
    config = make_config(kind=kind, n_samples=n_samples, n_features=n_features, n_informative=2)

    dataset = generate_dataset(config, seed=0)

    assert dataset.features.shape == (n_samples, n_features)
    assert dataset.features.dtype == np.float32
    assert dataset.labels.shape == (n_samples,)
    assert dataset.labels.dtype == np.int32
    assert set(np.unique(dataset.labels).tolist()) == {0, 1}
    assert dataset.feature_names == tuple(f"x{index}" for index in range(1, n_features + 1))
    assert np.isfinite(dataset.features).all()


@pytest.mark.parametrize("kind", EXACT_KINDS)
@pytest.mark.parametrize(("n_samples", "positive_fraction"), [(200, 0.5), (500, 0.3), (333, 0.1)])
def test_exact_class_counts(kind: str, n_samples: int, positive_fraction: float) -> None:
    config = make_config(kind=kind, n_samples=n_samples, positive_fraction=positive_fraction)

    labels = generate_dataset(config, seed=1).labels

    negatives, positives = class_counts(n_samples, positive_fraction)
    assert int((labels == 0).sum()) == negatives
    assert int((labels == 1).sum()) == positives
    assert positives == round(n_samples * positive_fraction)


@pytest.mark.parametrize("positive_fraction", [0.5, 0.3, 0.1])
def test_classification_positive_fraction_is_approximate(positive_fraction: float) -> None:
    # Without flipped labels make_classification draws the class weights almost exactly.
    config = make_config(n_samples=2000, noise=0.0, positive_fraction=positive_fraction)

    labels = generate_dataset(config, seed=2).labels

    assert labels.mean() == pytest.approx(positive_fraction, abs=0.01)


def test_classification_flipped_labels_move_fraction_towards_half() -> None:
    # A share `noise` of labels is redrawn uniformly, so E[positives] = p (1 - noise) + noise / 2.
    config = make_config(n_samples=2000, noise=0.2, positive_fraction=0.1)

    labels = generate_dataset(config, seed=3).labels

    assert labels.mean() == pytest.approx(0.1 * 0.8 + 0.1, abs=0.025)


@pytest.mark.parametrize(("n_samples", "positive_fraction"), [(10, 0.01), (10, 0.99), (2, 0.5)])
def test_class_counts_keep_one_row_of_each_class(n_samples: int, positive_fraction: float) -> None:
    negatives, positives = class_counts(n_samples, positive_fraction)

    assert negatives >= 1
    assert positives >= 1
    assert negatives + positives == n_samples


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_data(kind: str) -> None:
    config = make_config(kind=kind)

    first = generate_dataset(config, seed=7)
    second = generate_dataset(config, seed=7)

    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(first.labels, second.labels)


@pytest.mark.parametrize("kind", KINDS)
def test_different_seed_different_data(kind: str) -> None:
    config = make_config(kind=kind)

    first = generate_dataset(config, seed=7)
    second = generate_dataset(config, seed=8)

    assert not np.array_equal(first.features, second.features)
    assert not np.array_equal(first.labels, second.labels)


@pytest.mark.parametrize("n_features", [2, 4])
def test_xor_without_noise_labels_by_quadrant(n_features: int) -> None:
    config = make_config(kind="xor", n_samples=500, n_features=n_features, noise=0.0)

    dataset = generate_dataset(config, seed=4)

    x1, x2 = dataset.features[:, 0], dataset.features[:, 1]
    np.testing.assert_array_equal(dataset.labels, (x1 * x2 > 0).astype(np.int32))
    assert np.abs(dataset.features[:, :2]).max() <= 1.0


def mean_cross_validated_accuracy(config: DatasetConfig, seed: int) -> float:
    dataset = generate_dataset(config, seed)
    scores = cross_val_score(LogisticRegression(), dataset.features, dataset.labels, cv=5)
    return float(scores.mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_labels_cannot_be_learned(seed: int) -> None:
    config = make_config(kind="random_labels", n_samples=2000, n_features=8)

    accuracy = mean_cross_validated_accuracy(config, seed)

    assert accuracy == pytest.approx(0.5, abs=0.08)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_can_be_learned(seed: int) -> None:
    # Two well-separated informative features: a linear model must beat chance clearly.
    config = make_config(n_samples=2000, n_features=8, n_informative=2, class_sep=2.0)

    accuracy = mean_cross_validated_accuracy(config, seed)

    assert accuracy > 0.7
