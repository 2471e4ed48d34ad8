"""Load the data set, from a file or scikit-learn's bundled sets, or generate it
(`data/dataset/`): the features as they are, and the target as class codes."""

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sklearn.datasets import (
    load_breast_cancer,
    load_digits,
    load_iris,
    load_wine,
    make_circles,
    make_classification,
    make_moons,
)

from pipeline import paths
from pipeline.config import DatasetConfig, closest_name, feature_names, load_params
from pipeline.errors import PipelineError, run_stage
from pipeline.files import LABEL, Table, write_json, write_parquet, write_table

logger = logging.getLogger(__name__)

# The geometric kinds carry their signal in two features; the others are noise.
SIGNAL_FEATURES = 2

# A text column with more distinct values than this share of its rows looks like an
# identifier (names, ids, free text) rather than a category.
IDENTIFIER_SHARE = 0.5
# A row of each class in each of train, validation and test.
MIN_CLASS_ROWS = 3


def class_counts(n_samples: int, positive_fraction: float) -> tuple[int, int]:
    """(negatives, positives), with at least one row of each class."""
    positives = min(max(round(n_samples * positive_fraction), 1), n_samples - 1)
    return n_samples - positives, positives


def balanced_labels(
    n_samples: int, positive_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Exactly `class_counts` labels, in random order."""
    negatives, positives = class_counts(n_samples, positive_fraction)
    labels = np.concatenate([np.zeros(negatives), np.ones(positives)])
    return rng.permutation(labels).astype(np.int32)


def xor_features(labels: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Points in [-1, 1]^2 whose quadrant gives the label: 1 where x1 * x2 > 0."""
    points = rng.uniform(-1.0, 1.0, size=(len(labels), 2))
    same_sign = points[:, 0] * points[:, 1] > 0
    # Mirror the second coordinate wherever the quadrant disagrees with the label.
    points[:, 1] = np.where(same_sign == labels.astype(bool), points[:, 1], -points[:, 1])
    return points + rng.normal(0.0, noise, size=points.shape)


def generate_dataset(config: DatasetConfig, seed: int) -> Table:
    """Draw `config.n_samples` rows of `config.kind` data, reproducibly from `seed`."""
    rng = np.random.default_rng(seed)
    n_samples, n_features = config.n_samples, config.n_features
    if config.kind == "classification":
        features, labels = make_classification(
            n_samples=n_samples,
            n_features=n_features,
            n_informative=config.n_informative,
            n_redundant=0,
            # make_classification needs 2 ** n_informative >= classes * clusters.
            n_clusters_per_class=1 if config.n_informative == 1 else 2,
            weights=[1 - config.positive_fraction],
            flip_y=config.noise,
            class_sep=config.class_sep,
            # No shuffling: it would copy the whole float64 array (640 MB at 10M rows).
            # The informative features are then x1..x{n_informative}; the rows come
            # grouped by class, which the stratified, shuffled split undoes.
            shuffle=False,
            random_state=seed,
        )
    elif config.kind == "random_labels":
        # The textbook example's own data: uniform features, labels unrelated to them.
        features = rng.random((n_samples, n_features))
        labels = balanced_labels(n_samples, config.positive_fraction, rng)
    else:
        counts = class_counts(n_samples, config.positive_fraction)
        if config.kind == "moons":
            signal, labels = make_moons(counts, noise=config.noise, random_state=seed)
        elif config.kind == "circles":
            signal, labels = make_circles(counts, noise=config.noise, factor=0.5, random_state=seed)
        else:
            labels = balanced_labels(n_samples, config.positive_fraction, rng)
            signal = xor_features(labels, config.noise, rng)
        padding = rng.standard_normal((n_samples, n_features - SIGNAL_FEATURES))
        features = np.hstack([signal, padding])
    # Labels first: the int64 copy goes before the float32 features are made.
    labels = np.asarray(labels, dtype=np.int32)
    return Table(
        features=features.astype(np.float32),
        labels=labels,
        feature_names=feature_names(n_features),
    )


BUNDLED = {
    "breast_cancer": load_breast_cancer,
    "wine": load_wine,
    "iris": load_iris,
    "digits": load_digits,
}


@dataclass(frozen=True)
class RawData:
    """Rows as loaded: features in their own types (text and empty cells allowed) and
    the target encoded as class codes 0..k-1, one code per original value."""

    features: pd.DataFrame
    labels: np.ndarray
    classes: list[Any]  # the original target value of each code
    target: str


def bundled_dataset(name: str) -> RawData:
    """One of scikit-learn's data sets that ship with it (no download)."""
    bunch = BUNDLED[name](as_frame=True)
    return RawData(
        features=bunch.data.astype(np.float32),
        labels=bunch.target.to_numpy().astype(np.int32),
        classes=np.asarray(bunch.target_names).tolist(),
        target=str(bunch.target.name),
    )


def read_user_file(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a data frame, or one line saying why it cannot be read."""
    if not path.is_file():
        raise PipelineError(f"{path}: no such file (dataset.path)")
    if path.stat().st_size == 0:
        raise PipelineError(f"{path}: the file is empty")
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as file:
                header = next(csv.reader(file), [])
            frame = pd.read_csv(path, encoding="utf-8")
        else:
            table = pq.read_table(path)
            header = table.column_names
            frame = table.to_pandas()
    except (UnicodeDecodeError, ValueError, OSError, pd.errors.ParserError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PipelineError(f"{path}: cannot be read as {path.suffix[1:]} ({reason})") from None
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise PipelineError(
            f"{path}: column names appear more than once: {', '.join(duplicates)}; "
            "every column needs its own name"
        )
    if frame.empty:
        raise PipelineError(f"{path}: has a header but no rows")
    return frame


def encode_target(values: pd.Series, path: Path) -> tuple[np.ndarray, list[Any]]:
    """Class codes 0..k-1 in the sorted order of the target's values, and those values."""
    empty = values.isna().to_numpy()
    if empty.any():
        raise PipelineError(
            f"{path}: target column {values.name!r} is empty in {int(empty.sum())} rows "
            f"(first at row {int(np.argmax(empty))}); fill or drop those rows"
        )
    mixed = PipelineError(
        f"{path}: target column {values.name!r} mixes numbers and text; "
        "use one type for every class"
    )
    # A CSV column of numbers and words reads as text throughout ("1", "yes"), which
    # would sort and encode without complaint.
    if not pd.api.types.is_numeric_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce").notna()
        if numbers.any() and not numbers.all():
            raise mixed
    try:
        classes, codes = np.unique(values.to_numpy(), return_inverse=True)
    except TypeError:
        raise mixed from None
    if len(classes) < 2:
        raise PipelineError(
            f"{path}: target column {values.name!r} has one class only ({classes[0]!r}); "
            "a classifier needs at least two"
        )
    return codes.astype(np.int32), classes.tolist()


def check_class_sizes(labels: np.ndarray, classes: list[Any], target: str, path: Path) -> None:
    """Enough rows of every class for the stratified split."""
    counts = np.bincount(labels, minlength=len(classes))
    rare = np.flatnonzero(counts < MIN_CLASS_ROWS)
    if len(rare):
        # Most often a number to predict (a regression target), not a class.
        examples = ", ".join(repr(classes[code]) for code in rare[:3])
        raise PipelineError(
            f"{path}: target column {target!r} has {len(classes)} classes, "
            f"{len(rare)} of them in fewer than {MIN_CLASS_ROWS} rows ({examples}"
            f"{', ...' if len(rare) > 3 else ''}); the stratified split needs "
            f"{MIN_CLASS_ROWS} rows of each class (one per split)"
        )


def check_features(frame: pd.DataFrame, config: DatasetConfig, path: Path) -> pd.DataFrame:
    """Numbers as float32 and text as text; constant columns, infinities, and (by the
    params) text or empty cells refused, each in one line naming the column."""
    checked = {}
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_bool_dtype(column):
            column = column.astype(np.float32)
        numeric = pd.api.types.is_numeric_dtype(column)
        values = column.dropna()
        if values.nunique() <= 1:
            first = values.iloc[0] if not values.empty else None
            first = first.item() if isinstance(first, np.generic) else first
            what = "no values" if values.empty else f"a single value ({first!r})"
            raise PipelineError(
                f"{path}: column {name!r} has {what}; it cannot help predict, drop it"
            )
        if numeric and np.isinf(values.to_numpy(dtype=np.float64)).any():
            raise PipelineError(
                f"{path}: column {name!r} has infinite values; allowed: finite numbers"
            )
        if not numeric and config.categorical == "reject":
            examples = ", ".join(repr(str(value)) for value in values.unique()[:3])
            raise PipelineError(
                f"{path}: column {name!r} holds text ({examples}, ...); set "
                "dataset.categorical: one_hot to encode it, or drop the column"
            )
        distinct = values.nunique()
        if not numeric and distinct > IDENTIFIER_SHARE * len(column):
            # Legal, but one-hot encoding an identifier gives one feature per row.
            logger.warning(
                "dataset: %s: text column %r has %d distinct values in %d rows; one-hot "
                "encoding makes a feature of each. An identifier? Drop it from the file",
                path,
                name,
                distinct,
                len(column),
            )
        empty = column.isna().to_numpy()
        if empty.any() and config.missing == "reject":
            raise PipelineError(
                f"{path}: column {name!r} has {int(empty.sum())} empty cells (first at row "
                f"{int(np.argmax(empty))}); set dataset.missing: impute, or fill them"
            )
        checked[name] = column.astype(np.float32) if numeric else column.astype(object)
    return pd.DataFrame(checked)


def load_file(config: DatasetConfig) -> RawData:
    """The user's own table: the target column, and every other column as a feature."""
    path = Path(config.path)
    frame = read_user_file(path)
    columns = [str(name) for name in frame.columns]
    if config.target not in columns:
        close = closest_name(config.target, columns)
        hint = f"; did you mean {close!r}?" if close else ""
        raise PipelineError(
            f"{path}: no column dataset.target = {config.target!r}{hint} "
            f"(columns: {', '.join(columns)})"
        )
    if LABEL in columns and config.target != LABEL:
        raise PipelineError(
            f"{path}: a feature column is named {LABEL!r}, the name the pipeline gives the "
            "target; rename that column"
        )
    labels, classes = encode_target(frame[config.target], path)
    features = frame.drop(columns=config.target)
    if features.shape[1] == 0:
        raise PipelineError(f"{path}: no columns besides the target {config.target!r}")
    checked = check_features(features, config, path)
    check_class_sizes(labels, classes, config.target, path)
    return RawData(checked, labels, classes, config.target)


def load_dataset(config: DatasetConfig, seed: int) -> Table | RawData:
    """Generated data as a numeric table, or loaded data as it came."""
    if config.source == "synthetic":
        return generate_dataset(config, seed)
    if config.source == "file":
        return load_file(config)
    return bundled_dataset(config.source)


def main() -> None:
    params = load_params()
    dataset = load_dataset(params.dataset, params.seed)
    if isinstance(dataset, Table):
        # Generated data can be large (10M rows): written column by column.
        write_table(dataset, paths.DATASET)
        classes, target, labels = [0, 1], LABEL, dataset.labels
        n_features = len(dataset.feature_names)
    else:
        write_parquet(dataset.features.assign(**{LABEL: dataset.labels}), paths.DATASET)
        classes, target, labels = dataset.classes, dataset.target, dataset.labels
        n_features = dataset.features.shape[1]
    write_json({"target": target, "classes": classes}, paths.CLASSES)
    counts = np.bincount(labels, minlength=len(classes))
    logger.info(
        "dataset: %d rows, %d features, %d classes %s (%s) -> %s",
        len(labels),
        n_features,
        len(classes),
        dict(zip(map(str, classes), counts.tolist(), strict=True)),
        params.dataset.source,
        paths.DATASET,
    )


if __name__ == "__main__":
    run_stage(main)
