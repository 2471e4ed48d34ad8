"""What a later stage would refuse about the data and the params, checked by `dataset`
before it writes anything: the stratified split, the batch size, the features of
re-drawn splits, and the memory of every stage."""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline.config import Params, check_batch_size, split_sizes
from pipeline.errors import PipelineError
from pipeline.memory import DataShape, check_run_memory
from pipeline.replicates import replicate_seeds
from pipeline.stratify import check_stratifiable, stratified_indices
from pipeline.user_file import FileSample


def generated_shape(params: Params) -> DataShape:
    """Generated data: numbers only, two classes."""
    n_features = params.dataset.n_features
    return DataShape(params.dataset.n_samples, n_features, 0, n_features, 2)


def frame_shape(features: pd.DataFrame, n_classes: int) -> DataShape:
    """A loaded table: each text column becomes one feature per distinct value (at
    most; the train rows may hold fewer)."""
    text = [name for name in features if not pd.api.types.is_numeric_dtype(features[name])]
    n_features = features.shape[1] - len(text) + sum(features[name].nunique() for name in text)
    return DataShape(len(features), features.shape[1], len(text), n_features, n_classes)


def sampled_shape(sample: FileSample, target: str) -> DataShape:
    """A file's shape as its first rows suggest, before it is loaded: the rows
    extrapolated from the file's size, the one-hot width and the classes at least
    what those rows hold."""
    text = {name: count for name, count in sample.distinct_text.items() if name != target}
    n_columns = len(sample.columns) - (target in sample.columns)
    n_features = n_columns - len(text) + sum(text.values())
    return DataShape(sample.n_rows, n_columns, len(text), n_features, 2)


def check_resampled_categories(features: pd.DataFrame, labels: np.ndarray, params: Params) -> None:
    """With `replicates.resample_split`, every replicate's train rows must hold the same
    categories of each text column as replicate 0's: each one-hot category is a
    network input, and every replicate's network has the same inputs (`split` checks
    the same on the fitted encoders)."""
    text = [name for name in features if not pd.api.types.is_numeric_dtype(features[name])]
    if not (params.replicates.resample_split and text):
        return
    seeds = replicate_seeds(params.seed, params.replicates.count)
    columns = {name: features[name].to_numpy() for name in text}

    def categories(train_rows: np.ndarray) -> dict[str, set]:
        return {
            name: set(pd.unique(values[train_rows][pd.notna(values[train_rows])]))
            for name, values in columns.items()
        }

    first = categories(stratified_indices(labels, params.split, seeds[0])[0])
    for replicate, seed in enumerate(seeds[1:], start=1):
        other = categories(stratified_indices(labels, params.split, seed)[0])
        for name in text:
            differ = sorted(map(str, first[name] ^ other[name]))
            if differ:
                raise PipelineError(
                    f"replicates.resample_split = true: replicate {replicate}'s train rows "
                    f"encode to other features than replicate 0's (first: "
                    f"{f'{name}_{differ[0]}'!r}, a rare category); allowed here: false"
                )


def check_before_writing(
    params: Params,
    labels: np.ndarray,
    class_names: Sequence[object],
    shape: DataShape,
    what: str,
    features: pd.DataFrame | None = None,
) -> None:
    """Refuse, in one line, data and params that `split`, the trainers or the memory of
    any stage would refuse later, after `dataset` had replaced its outputs."""
    counts = np.bincount(labels, minlength=len(class_names))
    check_stratifiable(counts.tolist(), list(class_names), params.split, what)
    n_train, _, _ = split_sizes(len(labels), params.split)
    check_batch_size(params.model, n_train)
    if features is not None:
        check_resampled_categories(features, labels, params)
    check_run_memory(params, shape)
