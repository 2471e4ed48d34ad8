"""Load the data set, from a file or scikit-learn's bundled sets, or generate it
(`data/dataset/`): the features as they are, and the target as class codes."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
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
from pipeline.config import DatasetConfig, Params, closest_name, feature_names, load_params
from pipeline.errors import PipelineError, run_stage
from pipeline.files import LABEL, Table, write_json, write_parquet, write_table
from pipeline.memory import check_run_memory
from pipeline.preflight import check_before_writing, frame_shape, generated_shape, sampled_shape
from pipeline.stratify import check_class_rows
from pipeline.user_file import FileSample, check_readable, read_user_file, sample_file

logger = logging.getLogger(__name__)

# The geometric kinds carry their signal in two features; the others are noise.
SIGNAL_FEATURES = 2

# Rows of generated noise features drawn at a time.
GENERATED_CHUNK_ROWS = 1 << 20

# A text column with more distinct values than this share of its rows looks like an
# identifier (names, ids, free text) rather than a category.
IDENTIFIER_SHARE = 0.5


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


class _NoiseFeaturesInPlace(np.random.RandomState):
    """make_classification's random state, seeded as its `random_state=seed` would be,
    which writes the features that carry no signal straight into `features` (float32).

    make_classification draws those features, all rows at once, just before it draws
    the labels to flip (its only draw of `n_samples` uniform numbers). Asked for only
    the informative features, it skips that draw; this state makes it there instead, in
    chunks of rows, so that every later draw, and so every value, is what
    make_classification with every feature gives. Its float64 array of all the
    features and the temporary array of the noise are never held (1 GB at 10M rows).
    """

    def __init__(self, seed: int, features: np.ndarray, n_informative: int) -> None:
        super().__init__(seed)
        self._features, self._n_informative = features, n_informative

    def uniform(self, low=0.0, high=1.0, size=None):
        n_samples, n_features = self._features.shape
        if size == n_samples and self._n_informative < n_features:
            for start in range(0, n_samples, GENERATED_CHUNK_ROWS):
                rows = min(GENERATED_CHUNK_ROWS, n_samples - start)
                noise = self.standard_normal(size=(rows, n_features - self._n_informative))
                # make_classification then adds its shift, 0.0 (which turns -0.0 into 0.0).
                self._features[start : start + rows, self._n_informative :] = noise + 0.0
            self._n_informative = n_features
        return super().uniform(low, high, size)


def classification_dataset(config: DatasetConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """make_classification's features (as float32) and labels, without shuffling."""
    features = np.empty((config.n_samples, config.n_features), dtype=np.float32)
    informative, labels = make_classification(
        n_samples=config.n_samples,
        n_features=config.n_informative,
        n_informative=config.n_informative,
        n_redundant=0,
        # make_classification needs 2 ** n_informative >= classes * clusters.
        n_clusters_per_class=1 if config.n_informative == 1 else 2,
        weights=[1 - config.positive_fraction],
        flip_y=config.noise,
        class_sep=config.class_sep,
        # No shuffling: it would copy the whole float64 array (320 MB at 10M rows).
        # The informative features are then x1..x{n_informative}; the rows come
        # grouped by class, which the stratified, shuffled split undoes.
        shuffle=False,
        random_state=_NoiseFeaturesInPlace(seed, features, config.n_informative),
    )
    features[:, : config.n_informative] = informative
    return features, labels


def generate_dataset(config: DatasetConfig, seed: int) -> Table:
    """Draw `config.n_samples` rows of `config.kind` data, reproducibly from `seed`."""
    rng = np.random.default_rng(seed)
    n_samples, n_features = config.n_samples, config.n_features
    if config.kind == "classification":
        features, labels = classification_dataset(config, seed)
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
        # make_classification's features are float32 already: not copied again.
        features=features.astype(np.float32, copy=False),
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
        if isinstance(values.dtype, pd.CategoricalDtype):
            # Text read from a file: sorting its few distinct values, not its rows.
            ordered = values.cat.reorder_categories(sorted(values.cat.categories))
            classes = np.asarray(ordered.cat.categories, dtype=object)
            codes = ordered.cat.codes.to_numpy()
        else:
            classes, codes = np.unique(values.to_numpy(), return_inverse=True)
    except TypeError:
        raise mixed from None
    if len(classes) < 2:
        raise PipelineError(
            f"{path}: target column {values.name!r} has one class only ({classes[0]!r}); "
            "a classifier needs at least two"
        )
    return codes.astype(np.int32), classes.tolist()


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
            # Numbers are float32 once read: 7 as the file has it, not 7.0.
            first = int(first) if isinstance(first, float) and first.is_integer() else first
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
        # Text read from a file stays categorical: one copy of each distinct value.
        text = column if isinstance(column.dtype, pd.CategoricalDtype) else column.astype(object)
        checked[name] = column.astype(np.float32) if numeric else text
    return pd.DataFrame(checked)


def load_file(config: DatasetConfig, sample: FileSample | None = None) -> RawData:
    """The user's own table: the target column, and every other column as a feature.
    `sample` is what `sample_file` found, where the caller has already checked it."""
    path = Path(config.path)
    if sample is None:
        check_readable(path)
        sample = sample_file(path)
    frame = read_user_file(path, config.target, sample.n_rows)
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
    counts = np.bincount(labels, minlength=len(classes)).tolist()
    check_class_rows(counts, classes, f"{path}: target column {config.target!r}")
    return RawData(checked, labels, classes, config.target)


def check_fits(params: Params) -> FileSample | None:
    """Refuse, before generating or loading anything, a run that this machine's memory
    cannot hold; for a file, what its first rows say about it (for `load_file`)."""
    config = params.dataset
    if config.source == "synthetic":
        check_run_memory(params, generated_shape(params))
    if config.source != "file":
        return None
    path = Path(config.path)
    check_readable(path)
    sample = sample_file(path)
    check_run_memory(params, sampled_shape(sample, config.target))
    return sample


def load_dataset(
    config: DatasetConfig, seed: int, sample: FileSample | None = None
) -> Table | RawData:
    """Generated data as a numeric table, or loaded data as it came."""
    if config.source == "synthetic":
        return generate_dataset(config, seed)
    if config.source == "file":
        return load_file(config, sample)
    return bundled_dataset(config.source)


def check_dataset(params: Params, dataset: Table | RawData) -> None:
    """What `split`, the trainers or any stage's memory would refuse later."""
    if isinstance(dataset, Table):
        classes: list[Any] = [0, 1]
        shape, what, frame = generated_shape(params), f"dataset.kind {params.dataset.kind!r}", None
    else:
        classes, frame = dataset.classes, dataset.features
        shape = frame_shape(frame, len(classes))
        source = params.dataset.path if params.dataset.source == "file" else params.dataset.source
        what = f"{source}: target column {dataset.target!r}"
    check_before_writing(params, dataset.labels, classes, shape, what, frame)


def class_counts_summary(classes: list, counts: list[int], shown: int = 10) -> str:
    """Rows per class for the success line: every class when there are few, else the
    range, so that hundreds of classes do not make it hundreds of entries long."""
    if len(classes) <= shown:
        return repr(dict(zip(map(str, classes), counts, strict=True)))
    return f"of {min(counts):,} to {max(counts):,} rows each"


def main() -> None:
    params = load_params()
    sample = check_fits(params)
    dataset = load_dataset(params.dataset, params.seed, sample)
    # Everything a later stage would refuse, refused before this one writes.
    check_dataset(params, dataset)
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
    logger.info(
        "dataset: %d rows, %d features, %d classes %s (%s) -> %s",
        len(labels),
        n_features,
        len(classes),
        class_counts_summary(classes, np.bincount(labels, minlength=len(classes)).tolist()),
        params.dataset.source,
        paths.DATASET,
    )


if __name__ == "__main__":
    run_stage(main)
