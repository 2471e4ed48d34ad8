"""Split the data set into stratified train / validation / test sets and standardize
them with a scaler fitted on the train set only (`data/split/`)."""

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sklearn.preprocessing import StandardScaler

from pipeline import paths
from pipeline.config import SplitConfig, feature_names, load_params, split_sizes
from pipeline.errors import PipelineError, run_stage
from pipeline.files import Table, read_table, write_json, write_table

logger = logging.getLogger(__name__)


SPLIT_NAMES = ("train", "validation", "test")
SPLIT_PATHS = {"train": paths.TRAIN, "validation": paths.VALIDATION, "test": paths.TEST}
# Rows per step when fitting the scaler.
CHUNK_ROWS = 1 << 20


@dataclass(frozen=True)
class Splits:
    train: Table
    validation: Table
    test: Table
    scaler: StandardScaler


def apportion(total: int, sizes: np.ndarray) -> np.ndarray:
    """Whole numbers proportional to `sizes` that add up to `total`: rounded down,
    the rows left over to the largest remainders, and then at least one each
    (taken from the largest share)."""
    exact = total * sizes / sizes.sum()
    whole = np.floor(exact).astype(np.int64)
    left_over = total - int(whole.sum())
    whole[np.argsort(whole - exact, kind="stable")[:left_over]] += 1
    for empty in np.flatnonzero(whole == 0):
        whole[np.argmax(whole)] -= 1
        whole[empty] = 1
    return whole


def stratified_indices(
    labels: np.ndarray, config: SplitConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of the train, validation and test sets, each with the class mix
    of the whole data set, in increasing order.

    Written out rather than `train_test_split`: on 10 million rows, that made
    several int64 copies of the labels and indices (700 MB at once).
    """
    n_train, n_validation, n_test = split_sizes(len(labels), config)
    classes, counts = np.unique(labels, return_counts=True)
    if min(n_train, n_validation, n_test) < len(classes) or counts.min() < 3:
        raise PipelineError(
            f"split: cannot stratify {len(labels)} rows (class counts "
            f"{dict(zip(classes.tolist(), counts.tolist(), strict=True))}) into {n_train} "
            f"train, {n_validation} validation and {n_test} test rows with split.test_size "
            f"= {config.test_size} and split.validation_size = {config.validation_size}: "
            "every split needs a row of each class"
        )
    test_counts = apportion(n_test, counts)
    validation_counts = apportion(n_validation, counts - test_counts)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
    for label, n_class_test, n_class_validation in zip(
        classes, test_counts, validation_counts, strict=True
    ):
        # int32 row numbers: half the memory of int64 on 10 million rows.
        rows = np.flatnonzero(labels == label).astype(np.int32)
        rng.shuffle(rows)
        parts["test"].append(rows[:n_class_test])
        parts["validation"].append(rows[n_class_test : n_class_test + n_class_validation])
        parts["train"].append(rows[n_class_test + n_class_validation :])
    train, validation, test = (np.sort(np.concatenate(parts[name])) for name in SPLIT_NAMES)
    return train, validation, test


def fit_scaler(features: np.ndarray, train_rows: np.ndarray) -> StandardScaler:
    """A scaler fitted on the train rows only, a chunk at a time: the train set is
    never copied whole just to compute its means and variances."""
    scaler = StandardScaler()
    for start in range(0, len(train_rows), CHUNK_ROWS):
        scaler.partial_fit(features[train_rows[start : start + CHUNK_ROWS]])
    return scaler


def standardized(dataset: Table, rows: np.ndarray, scaler: StandardScaler) -> Table:
    # Fancy indexing has already copied the rows: standardize that copy in place.
    features = scaler.transform(dataset.features[rows], copy=False)
    return Table(
        features.astype(np.float32, copy=False), dataset.labels[rows], dataset.feature_names
    )


def standardized_splits(
    dataset: Table, config: SplitConfig, seed: int
) -> tuple[StandardScaler, Iterator[tuple[str, Table]]]:
    """The fitted scaler, and the three standardized splits one at a time, so that a
    caller can write each and let it go before the next is built."""
    rows = dict(zip(SPLIT_NAMES, stratified_indices(dataset.labels, config, seed), strict=True))
    scaler = fit_scaler(dataset.features, rows["train"])
    return scaler, ((name, standardized(dataset, rows[name], scaler)) for name in SPLIT_NAMES)


def split_dataset(dataset: Table, config: SplitConfig, seed: int) -> Splits:
    """Split and standardize; the scaler sees the train rows only."""
    scaler, splits = standardized_splits(dataset, config, seed)
    return Splits(**dict(splits), scaler=scaler)


def scaler_description(scaler: StandardScaler, feature_names: tuple[str, ...]) -> dict:
    """The fitted scaler as plain JSON: x_standardized = (x - mean) / scale."""
    return {
        "feature_names": list(feature_names),
        "mean": scaler.mean_.tolist(),
        "scale": scaler.scale_.tolist(),
    }


def main() -> None:
    params = load_params()
    columns = feature_names(params.dataset.n_features)
    dataset = read_table(paths.DATASET, columns)
    scaler, splits = standardized_splits(dataset, params.split, params.seed)
    sizes = {}
    for name, table in splits:
        write_table(table, SPLIT_PATHS[name])
        sizes[name] = len(table.labels)
    write_json(scaler_description(scaler, dataset.feature_names), paths.SCALER)
    logger.info(
        "split: %d train, %d validation, %d test rows -> %s",
        sizes["train"],
        sizes["validation"],
        sizes["test"],
        paths.SPLIT,
    )


if __name__ == "__main__":
    run_stage(main)
