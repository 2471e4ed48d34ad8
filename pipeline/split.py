"""Split the data set into stratified train / validation / test sets and turn them
into standardized numbers with a preprocessor fitted on the train rows only
(`data/split/`)."""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import skops.io
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pipeline import paths
from pipeline.config import SplitConfig, load_params
from pipeline.errors import PipelineError, run_stage
from pipeline.files import (
    LABEL,
    Table,
    atomic_directory,
    atomic_path,
    read_classes,
    read_table,
    write_json,
    write_table,
)
from pipeline.replicates import MANIFEST, manifest, replicate_seeds
from pipeline.reproducible import rewrite_archive
from pipeline.stratify import stratified_indices

logger = logging.getLogger(__name__)


SPLIT_NAMES = ("train", "validation", "test")
SPLIT_PATHS = {"train": paths.TRAIN, "validation": paths.VALIDATION, "test": paths.TEST}
# Rows per step when fitting the scaler.
CHUNK_ROWS = 1 << 20


Preprocessor = StandardScaler | ColumnTransformer


@dataclass(frozen=True)
class Splits:
    train: Table
    validation: Table
    test: Table
    preprocessor: Preprocessor


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
    return Splits(**dict(splits), preprocessor=scaler)


def fit_preprocessor(features: pd.DataFrame) -> ColumnTransformer:
    """For a table as users bring it: numbers imputed with the median and
    standardized, text imputed with the most frequent value and one-hot encoded.
    Categories seen only outside the train rows encode as all zeros."""
    numeric = [name for name in features if pd.api.types.is_numeric_dtype(features[name])]
    text = [name for name in features if name not in numeric]
    steps: list[tuple[str, Any, list[str]]] = []
    if numeric:
        numbers = Pipeline(
            [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
        )
        steps.append(("numeric", numbers, numeric))
    if text:
        categories = Pipeline(
            [
                ("impute", SimpleImputer(strategy="most_frequent")),
                ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
            ]
        )
        steps.append(("categorical", categories, text))
    return ColumnTransformer(steps, verbose_feature_names_out=False).fit(features)


def frame_splits(
    features: pd.DataFrame, labels: np.ndarray, config: SplitConfig, seed: int
) -> tuple[ColumnTransformer, Iterator[tuple[str, Table]]]:
    """Like `standardized_splits`, for a table with text columns or empty cells."""
    rows = dict(zip(SPLIT_NAMES, stratified_indices(labels, config, seed), strict=True))
    preprocessor = fit_preprocessor(features.iloc[rows["train"]])
    names = tuple(str(name) for name in preprocessor.get_feature_names_out())

    def transformed(name: str) -> Table:
        values = preprocessor.transform(features.iloc[rows[name]]).astype(np.float32)
        return Table(values, labels[rows[name]], names)

    return preprocessor, ((name, transformed(name)) for name in SPLIT_NAMES)


def read_frame(path: Any) -> tuple[pd.DataFrame, np.ndarray]:
    """The data set as loaded (text and empty cells kept), and its class codes."""
    frame = pd.read_parquet(path)
    labels = frame.pop(LABEL).to_numpy().astype(np.int32)
    for name in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[name]):
            # scikit-learn's imputer recognizes NaN, not pandas' own missing marker.
            frame[name] = frame[name].astype(object).where(frame[name].notna(), np.nan)
    return frame, labels


def preprocessing_description(preprocessor: Preprocessor, input_columns: list[str]) -> dict:
    """What was fitted on the train rows, as plain JSON."""
    numeric: dict[str, dict[str, Any]] = {}
    categorical: dict[str, dict[str, Any]] = {}
    if isinstance(preprocessor, StandardScaler):
        for name, mean, scale in zip(
            input_columns, preprocessor.mean_, preprocessor.scale_, strict=True
        ):
            numeric[name] = {"mean": float(mean), "scale": float(scale)}
        outputs = list(input_columns)
    else:
        for step, fitted, columns in preprocessor.transformers_:
            if step == "numeric":
                imputer, scaler = fitted.named_steps["impute"], fitted.named_steps["scale"]
                for index, name in enumerate(columns):
                    numeric[name] = {
                        "impute_empty_with": float(imputer.statistics_[index]),
                        "mean": float(scaler.mean_[index]),
                        "scale": float(scaler.scale_[index]),
                    }
            elif step == "categorical":
                imputer, encoder = fitted.named_steps["impute"], fitted.named_steps["one_hot"]
                for index, name in enumerate(columns):
                    categorical[name] = {
                        "impute_empty_with": str(imputer.statistics_[index]),
                        "categories": [str(value) for value in encoder.categories_[index]],
                    }
        outputs = [str(name) for name in preprocessor.get_feature_names_out()]
    return {
        "input_columns": list(input_columns),
        "output_features": outputs,
        "numeric": numeric,
        "categorical": categorical,
    }


def check_same_features(main: Preprocessor, other: Preprocessor, replicate: int) -> None:
    """Re-drawn splits must encode to the same features, so that every replicate's
    network has the same inputs: a one-hot category missing from a replicate's train
    rows would drop a column."""
    if isinstance(main, StandardScaler):
        return
    missing = sorted(set(main.get_feature_names_out()) - set(other.get_feature_names_out()))
    extra = sorted(set(other.get_feature_names_out()) - set(main.get_feature_names_out()))
    if missing or extra:
        column = (missing or extra)[0]
        raise PipelineError(
            f"replicates.resample_split = true: replicate {replicate}'s train rows encode "
            f"to other features than replicate 0's (first: {column!r}, a rare category); "
            "allowed here: false"
        )


def main() -> None:
    params = load_params()
    n_classes = len(read_classes())
    if params.dataset.source == "file":
        features, labels = read_frame(paths.DATASET)
        input_columns = [str(name) for name in features.columns]

        def make_splits(seed: int) -> tuple[Preprocessor, Iterator[tuple[str, Table]]]:
            return frame_splits(features, labels, params.split, seed)
    else:
        # Generated or bundled: numbers only, possibly 10M rows, so no data frame.
        dataset = read_table(paths.DATASET, n_classes=n_classes)
        input_columns = list(dataset.feature_names)

        def make_splits(seed: int) -> tuple[Preprocessor, Iterator[tuple[str, Table]]]:
            return standardized_splits(dataset, params.split, seed)

    # Made first: a data set that cannot be split stops here, before any write.
    preprocessor, splits = make_splits(params.seed)
    seeds = replicate_seeds(params.seed, params.replicates.count)
    # Replicate r >= 1's own split and preprocessing, when every replicate re-draws
    # it; replicate 0's is the main split below.
    with atomic_directory(paths.SPLIT_REPLICATES) as folder:
        if params.replicates.resample_split:
            for replicate, seed in enumerate(seeds[1:], start=1):
                replicate_preprocessor, replicate_splits = make_splits(seed)
                check_same_features(preprocessor, replicate_preprocessor, replicate)
                for name, table in replicate_splits:
                    write_table(table, folder / str(replicate) / SPLIT_PATHS[name].name)
        write_json(manifest(params.replicates, params.seed), folder / MANIFEST.name)
    sizes = {}
    for name, table in splits:
        write_table(table, SPLIT_PATHS[name])
        sizes[name] = len(table.labels)
    description = preprocessing_description(preprocessor, input_columns)
    write_json(description, paths.PREPROCESSING)
    with atomic_path(paths.PREPROCESSOR) as temporary:
        skops.io.dump(preprocessor, temporary)
        rewrite_archive(temporary)
    logger.info(
        "split: %d train, %d validation, %d test rows, %d features -> %s",
        sizes["train"],
        sizes["validation"],
        sizes["test"],
        len(description["output_features"]),
        paths.SPLIT,
    )


if __name__ == "__main__":
    run_stage(main)
