"""Tests for `pipeline.split`: stratified sizes, disjoint rows, a train-only scaler."""

import numpy as np
import pandas as pd
import pytest

from pipeline.config import SplitConfig
from pipeline.errors import PipelineError
from pipeline.files import Table
from pipeline.split import (
    frame_splits,
    preprocessing_description,
    read_frame,
    split_dataset,
    stratified_indices,
)


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
    np.testing.assert_allclose(splits.preprocessor.mean_, raw_train.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(splits.preprocessor.scale_, raw_train.std(axis=0), rtol=1e-6)
    np.testing.assert_allclose(splits.train.features.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(splits.train.features.std(axis=0), 1.0, atol=1e-5)
    # Not refitted on the whole data set.
    assert not np.allclose(splits.preprocessor.mean_, dataset.features.mean(axis=0), rtol=1e-6)


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
        expected = (dataset.features[rows] - splits.preprocessor.mean_) / splits.preprocessor.scale_
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

    with pytest.raises(PipelineError, match=r"1 of them in fewer than 3 rows \(1 \(1 row\)\)"):
        stratified_indices(labels, config, seed=0)


def test_more_classes_than_test_rows() -> None:
    # 500 numbers of 4 rows each: 400 test rows cannot hold a row of each.
    labels = np.repeat(np.arange(500, dtype=np.int32), 4)
    config = SplitConfig(test_size=0.2, validation_size=0.2)

    with pytest.raises(PipelineError) as caught:
        stratified_indices(labels, config, seed=0)

    assert str(caught.value) == (
        "split: the label column has 500 classes in 2000 rows, but split.test_size = 0.2 and "
        "split.validation_size = 0.2 leave 400 test rows; every split needs a row of each "
        "class (a number to predict rather than classes?)"
    )


def test_preprocessing_description_round_trips() -> None:
    dataset = make_dataset(200)
    config = SplitConfig(test_size=0.2, validation_size=0.2)
    train_rows, _, test_rows = stratified_indices(dataset.labels, config, seed=0)
    splits = split_dataset(dataset, config, seed=0)

    description = preprocessing_description(splits.preprocessor, list(dataset.feature_names))

    assert description["input_columns"] == ["x1", "x2", "x3"]
    assert description["output_features"] == ["x1", "x2", "x3"]
    assert description["categorical"] == {}
    mean = np.array([description["numeric"][name]["mean"] for name in dataset.feature_names])
    scale = np.array([description["numeric"][name]["scale"] for name in dataset.feature_names])
    for raw, standardized in [
        (dataset.features[train_rows], splits.train.features),
        (dataset.features[test_rows], splits.test.features),
    ]:
        np.testing.assert_allclose((raw - mean) / scale, standardized, rtol=1e-5, atol=1e-5)


def user_table() -> tuple[pd.DataFrame, np.ndarray]:
    """A small table as users bring it: text, empty cells, a category only in one row."""
    rng = np.random.default_rng(3)
    n_rows = 120
    features = pd.DataFrame(
        {
            "size": rng.normal(10, 2, n_rows),
            "colour": rng.choice(["red", "green", "blue"], n_rows).astype(object),
        }
    )
    features.loc[[3, 40, 77], "size"] = np.nan
    features.loc[[5, 50], "colour"] = np.nan
    labels = (rng.random(n_rows) < 0.4).astype(np.int32)
    return features, labels


def test_text_and_empty_cells_are_fitted_on_train_rows_only() -> None:
    features, labels = user_table()
    config = SplitConfig(test_size=0.2, validation_size=0.2)
    train_rows, _, test_rows = stratified_indices(labels, config, seed=1)

    preprocessor, splits = frame_splits(features, labels, config, seed=1)
    tables = dict(splits)

    names = tables["train"].feature_names
    assert names == ("size", "colour_blue", "colour_green", "colour_red")
    train = features.iloc[train_rows]
    # Empty cells take the median of the train rows, then everything is standardized.
    median = train["size"].median()
    filled = train["size"].fillna(median)
    np.testing.assert_allclose(
        tables["train"].features[:, 0],
        (filled - filled.mean()) / filled.std(ddof=0),
        rtol=1e-5,
        atol=1e-5,
    )
    # One-hot columns hold 0 and 1; every row has exactly one colour after imputation.
    one_hot = tables["test"].features[:, 1:]
    assert set(np.unique(one_hot)) <= {0.0, 1.0}
    np.testing.assert_array_equal(one_hot.sum(axis=1), 1.0)
    np.testing.assert_array_equal(tables["test"].labels, labels[test_rows])
    description = preprocessing_description(preprocessor, ["size", "colour"])
    assert description["numeric"]["size"]["impute_empty_with"] == pytest.approx(median)
    assert description["categorical"]["colour"]["categories"] == ["blue", "green", "red"]


def test_unseen_category_encodes_as_all_zeros() -> None:
    features, labels = user_table()
    config = SplitConfig(test_size=0.2, validation_size=0.2)
    _, _, test_rows = stratified_indices(labels, config, seed=1)
    features.loc[test_rows[0], "colour"] = "violet"  # never seen in training

    _, splits = frame_splits(features, labels, config, seed=1)
    test = dict(splits)["test"]

    np.testing.assert_array_equal(test.features[0, 1:], [0.0, 0.0, 0.0])


def test_read_frame_keeps_text_and_marks_gaps_as_nan(tmp_path) -> None:
    features, labels = user_table()
    path = tmp_path / "dataset.parquet"
    features.assign(label=labels).to_parquet(path)

    frame, read_labels = read_frame(path)

    np.testing.assert_array_equal(read_labels, labels)
    assert frame["colour"].dtype == object
    assert frame["colour"].isna().sum() == 2
    # Gaps are float NaN, which scikit-learn's imputer recognizes (not pd.NA).
    gaps = [value for value in frame["colour"] if not isinstance(value, str)]
    assert len(gaps) == 2 and all(isinstance(gap, float) and np.isnan(gap) for gap in gaps)
