"""Tests for `pipeline.split`: stratified sizes, disjoint rows, a train-only scaler."""

import numpy as np
import pytest

from pipeline.config import SplitConfig
from pipeline.errors import PipelineError
from pipeline.files import Table
from pipeline.split import scaler_description, split_dataset, stratified_indices


def make_dataset(n_samples: int = 200, positive_fraction: float = 0.3, seed: int = 0) -> Table:
    """Features with a non-zero mean and non-unit scale, and shuffled labels."""
    rng = np.random.default_rng(seed)
    n_features = 3
    features = rng.normal(loc=[5.0, -2.0, 0.5], scale=[3.0, 0.5, 10.0], size=(n_samples, 3))
    n_positive = round(n_samples * positive_fraction)
    labels = rng.permutation(np.repeat([0, 1], [n_samples - n_positive, n_positive]))
    return Table(
        features=features.astype(np.float32),
        labels=labels.astype(np.int32),
        feature_names=tuple(f"x{index}" for index in range(1, n_features + 1)),
    )


@pytest.mark.parametrize(
    ("n_samples", "test_size", "validation_size"),
    [
        (200, 0.2, 0.2),
        (2000, 0.2, 0.2),
        (1000, 0.1, 0.1),
        (1000, 0.1, 0.3),
        (400, 0.25, 0.25),
        (500, 0.3, 0.1),
        (200, 0.15, 0.15),
        (1000, 0.3, 0.2),
    ],
)
def test_sizes_are_fractions_of_all_rows(
    n_samples: int, test_size: float, validation_size: float
) -> None:
    labels = make_dataset(n_samples).labels
    config = SplitConfig(test_size=test_size, validation_size=validation_size)

    train, validation, test = stratified_indices(labels, config, seed=0)

    assert len(test) == round(test_size * n_samples)
    assert len(validation) == round(validation_size * n_samples)
    assert len(train) == n_samples - len(test) - len(validation)


def test_rows_are_disjoint_and_cover_everything() -> None:
    labels = make_dataset(200).labels
    config = SplitConfig(test_size=0.2, validation_size=0.2)

    train, validation, test = stratified_indices(labels, config, seed=0)

    together = np.concatenate([train, validation, test])
    assert len(together) == len(np.unique(together))
    np.testing.assert_array_equal(np.sort(together), np.arange(200))


@pytest.mark.parametrize("positive_fraction", [0.5, 0.3, 0.1])
def test_each_split_keeps_the_class_mix(positive_fraction: float) -> None:
    dataset = make_dataset(1000, positive_fraction)
    config = SplitConfig(test_size=0.2, validation_size=0.2)

    splits = split_dataset(dataset, config, seed=0)

    for part in (splits.train, splits.validation, splits.test):
        # Stratification rounds each class's count, so a split differs by at most one row.
        assert abs(part.labels.sum() - positive_fraction * len(part.labels)) <= 1


def test_scaler_is_fitted_on_train_rows_only() -> None:
    dataset = make_dataset(300)
    config = SplitConfig(test_size=0.2, validation_size=0.2)
    train_rows, _, _ = stratified_indices(dataset.labels, config, seed=5)

    splits = split_dataset(dataset, config, seed=5)

    raw_train = dataset.features[train_rows].astype(np.float64)
    np.testing.assert_allclose(splits.scaler.mean_, raw_train.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(splits.scaler.scale_, raw_train.std(axis=0), rtol=1e-6)
    np.testing.assert_allclose(splits.train.features.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(splits.train.features.std(axis=0), 1.0, atol=1e-5)
    # Not refitted on the whole data set.
    assert not np.allclose(splits.scaler.mean_, dataset.features.mean(axis=0), rtol=1e-6)


def test_splits_keep_rows_labels_and_types() -> None:
    dataset = make_dataset(200)
    config = SplitConfig(test_size=0.2, validation_size=0.2)
    train_rows, validation_rows, test_rows = stratified_indices(dataset.labels, config, seed=0)

    splits = split_dataset(dataset, config, seed=0)

    for part, rows in [
        (splits.train, train_rows),
        (splits.validation, validation_rows),
        (splits.test, test_rows),
    ]:
        assert part.features.dtype == np.float32
        assert part.feature_names == dataset.feature_names
        np.testing.assert_array_equal(part.labels, dataset.labels[rows])
        expected = (dataset.features[rows] - splits.scaler.mean_) / splits.scaler.scale_
        np.testing.assert_allclose(part.features, expected, rtol=1e-5, atol=1e-5)


def test_same_seed_same_split() -> None:
    labels = make_dataset(200).labels
    config = SplitConfig(test_size=0.2, validation_size=0.2)

    first = stratified_indices(labels, config, seed=3)
    second = stratified_indices(labels, config, seed=3)
    other = stratified_indices(labels, config, seed=4)

    for first_rows, second_rows in zip(first, second, strict=True):
        np.testing.assert_array_equal(first_rows, second_rows)
    assert not np.array_equal(first[2], other[2])


def test_too_few_rows_of_a_class() -> None:
    # One positive row cannot be stratified into three splits.
    labels = np.array([0] * 19 + [1], dtype=np.int32)
    config = SplitConfig(test_size=0.2, validation_size=0.2)

    with pytest.raises(PipelineError, match=r"split\.test_size = 0\.2") as caught:
        stratified_indices(labels, config, seed=0)

    assert "class counts {0: 19, 1: 1}" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_scaler_description_round_trips() -> None:
    dataset = make_dataset(200)
    config = SplitConfig(test_size=0.2, validation_size=0.2)
    train_rows, _, test_rows = stratified_indices(dataset.labels, config, seed=0)
    splits = split_dataset(dataset, config, seed=0)

    description = scaler_description(splits.scaler, dataset.feature_names)

    assert description["feature_names"] == ["x1", "x2", "x3"]
    mean = np.array(description["mean"])
    scale = np.array(description["scale"])
    for raw, standardized in [
        (dataset.features[train_rows], splits.train.features),
        (dataset.features[test_rows], splits.test.features),
    ]:
        np.testing.assert_allclose((raw - mean) / scale, standardized, rtol=1e-5, atol=1e-5)
    assert all(isinstance(value, float) for value in description["mean"] + description["scale"])
