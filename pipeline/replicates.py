"""Replicates: the seeds of each library's K training runs, the shared start
(initial weights and batch order) that both libraries can begin replicate r from,
and where each replicate's split is.

Pure NumPy, so that both trainers, the split and the benchmarks import it without
TensorFlow.
"""

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import paths
from pipeline.config import Activation, ReplicatesConfig
from pipeline.errors import PipelineError
from pipeline.files import Table, read_json, read_table


def replicate_seeds(seed: int, count: int) -> list[int]:
    """Replicate r's seed. Replicate 0 uses `seed` itself, so that one replicate
    trains exactly what a single training run with that seed trains; the others
    come from NumPy's SeedSequence, independent streams keyed by (seed, r)."""
    return [
        seed
        if replicate == 0
        else int(np.random.SeedSequence([seed, replicate]).generate_state(1)[0])
        for replicate in range(count)
    ]


def layer_units(n_features: int, hidden_layers: list[int], n_classes: int) -> list[int]:
    """Units per layer, input first: the output has one unit for two classes (a
    sigmoid), one per class for more (a softmax), in both libraries."""
    return [n_features, *hidden_layers, 1 if n_classes == 2 else n_classes]


@dataclass
class SharedStart:
    """Where scikit-learn's MLPClassifier starts when seeded with `RandomState(seed)`.

    `weights` are in Keras' `get_weights()` order (kernel, bias, kernel, bias, ...).
    `random_state` has made exactly the draws MLPClassifier makes to initialize; each
    later `permutation(n_rows)` is the order of one epoch, as `partial_fit` shuffles.
    """

    weights: list[np.ndarray]
    random_state: np.random.RandomState

    def epoch_orders(self, n_rows: int) -> Iterator[np.ndarray]:
        while True:
            yield self.random_state.permutation(n_rows).astype(np.int32)


def shared_start(seed: int, units: list[int], activation: Activation) -> SharedStart:
    """scikit-learn's initialization, drawn as `MLPClassifier._init_coef` draws it
    (sklearn/neural_network/_multilayer_perceptron.py): per layer, a kernel and then
    a bias, both uniform in +-sqrt(factor / (fan_in + fan_out)), factor 2 for the
    logistic activation and 6 otherwise. tests/test_replicates.py checks that
    MLPClassifier ends up with exactly these weights."""
    random_state = np.random.RandomState(seed)
    factor = 2.0 if activation == "logistic" else 6.0
    weights: list[np.ndarray] = []
    for fan_in, fan_out in itertools.pairwise(units):
        bound = np.sqrt(factor / (fan_in + fan_out))
        weights.append(random_state.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32))
        weights.append(random_state.uniform(-bound, bound, fan_out).astype(np.float32))
    return SharedStart(weights=weights, random_state=random_state)


def own_epoch_orders(seed: int, n_rows: int) -> Iterator[np.ndarray]:
    """Keras' own batch order, one seeded permutation per epoch (the Keras default
    when the libraries do not share a start)."""
    rng = np.random.default_rng(seed)
    while True:
        yield rng.permutation(n_rows).astype(np.int32)


# ---------------------------------------------------------------------------------
# Each replicate's split, as the split stage wrote it

SPLIT_FILES = {"train": paths.TRAIN, "validation": paths.VALIDATION, "test": paths.TEST}
MANIFEST = paths.SPLIT_REPLICATES / "manifest.json"


def split_path(name: str, replicate: int) -> Path:
    """Replicate r's `train`, `validation` or `test` file: the main split for r = 0,
    and for every replicate when the split is not re-drawn."""
    if replicate == 0:
        return SPLIT_FILES[name]
    return paths.SPLIT_REPLICATES / str(replicate) / SPLIT_FILES[name].name


def manifest(config: ReplicatesConfig, seed: int) -> dict[str, Any]:
    return {
        "count": config.count,
        "resample_split": config.resample_split,
        "seeds": replicate_seeds(seed, config.count),
    }


def split_paths(name: str, config: ReplicatesConfig, seed: int) -> list[Path]:
    """One path shared by every replicate, or one per replicate when re-drawn.

    Checks that the split stage wrote the splits for these params: a stage run by
    hand after changing `replicates` would otherwise pair the wrong rows.
    """
    try:
        written = read_json(MANIFEST)
    except (OSError, ValueError):
        raise PipelineError(f"{MANIFEST}: missing or unreadable; run `dvc repro`") from None
    if written != manifest(config, seed):
        raise PipelineError(
            f"{MANIFEST}: the splits were made for other `seed` or `replicates` params; "
            "run `dvc repro` to re-make them"
        )
    if not config.resample_split:
        return [SPLIT_FILES[name]]
    return [split_path(name, replicate) for replicate in range(config.count)]


def read_split(
    name: str,
    config: ReplicatesConfig,
    seed: int,
    n_classes: int,
    columns: tuple[str, ...] | None = None,
) -> list[Table]:
    """The `name` split of every replicate: one shared table, or one per replicate."""
    return [read_table(path, columns, n_classes) for path in split_paths(name, config, seed)]
