"""What a run will cost in memory, estimated from the params and the data's shape
before any stage does the work, and what the machine has available."""

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Params, flatten, split_sizes
from pipeline.errors import PipelineError
from pipeline.history import PREDICTION_CHUNK
from pipeline.paired_tests import BOOTSTRAP_CELLS

MIB = 1 << 20
GIB = 1 << 30

# What each stage holds before it reads a row: Python, NumPy, pandas, scikit-learn,
# and TensorFlow in train_keras. Measured as the peak RSS of each stage on 1,000 rows
# (`benchmarks/run.py --sections memory`), rounded up. compare's is the larger one of
# the old compare stage, which imported MLflow; it now runs the evaluation too.
IMPORT_BYTES = {
    "dataset": 220 * MIB,
    "split": 250 * MIB,
    "train_keras": 830 * MIB,
    "train_sklearn": 300 * MIB,
    "compare": 450 * MIB,
}
FLOAT32, FLOAT64 = 4, 8
# A text cell as `split` holds it: a Python string object and its pointer.
TEXT_CELL_BYTES = 64
# Generated data at its peak. classification: the float32 features, make_classification's
# float64 informative features, and per row its int64 label, the float64 draw that
# flips labels and its mask (`dataset.classification_dataset`). The geometric kinds:
# per cell a float64 array, the float64 stacked copy and the float32 copy.
CLASSIFICATION_ROW_BYTES = 2 * FLOAT64 + 1
OTHER_GENERATED_CELL_BYTES = 2 * FLOAT64 + FLOAT32
# A cell of a user's file while `dataset` loads and writes it: a number is float32
# in the table, float32 again in the Arrow table written out, plus the parsing of one
# batch; text is a category code and its share of the batch's Arrow strings. Fitted
# to the peak RSS of `dataset` on CSV files of 0.2 and 1 GB (benchmarks/run.py
# --sections csv).
FILE_CELL_BYTES = 14
FILE_TEXT_CELL_BYTES = 8
# pyarrow parses several blocks at once, one per thread: the reader's own buffers.
FILE_READER_BYTES = 120 * MIB
# Copies of each weight held while training: Keras holds every replicate's model and
# the stacked network, its gradients and two Adam moments; scikit-learn the weights,
# gradients, two Adam moments and the best weights of early stopping.
KERAS_WEIGHT_COPIES = 5
SKLEARN_WEIGHT_COPIES = 5
# Forward and backward activations per unit of a row in a batch or a prediction chunk.
ACTIVATION_COPIES = 3
# The constants below were fitted to the peak RSS of each stage at 2 and 10 million rows
# x 8 features (docs/performance.md, "The memory estimate").
# split fits its scaler to numbers-only data a chunk of rows at a time
# (`split.CHUNK_ROWS`): float64 copies and Arrow buffers of one chunk, per feature.
SPLIT_CHUNK_ROWS = 1 << 20
SPLIT_CHUNK_BYTES = 28
# train_keras: the rows as NumPy and as tensors, partly at once; XLA's compiled program
# and its buffers once training is long enough for XLA (`XLA_MIN_SAMPLE_EPOCHS`); the
# test predictions of every replicate (float32), while they are written.
KERAS_ROW_COPIES = 1.25
KERAS_PREDICTION_COPIES = 1
KERAS_XLA_MIN_SAMPLE_EPOCHS = 300_000
KERAS_XLA_BYTES = 300 * MIB
# train_sklearn: the splits (shared with the workers), and in each process that trains
# (the workers, or the stage itself for small trainings) what each `partial_fit` makes
# per train row: the labels binarized, the shuffled row numbers. Each worker imports
# scikit-learn again (`SKLEARN_WORKER_IMPORT_BYTES`, what is not shared).
SKLEARN_ROW_COPIES = 1.35
SKLEARN_TRAIN_ROW_BYTES = 48
SKLEARN_WORKER_IMPORT_BYTES = 140 * MIB
# Copied from train_sklearn (which imports scikit-learn): from this much work, the
# replicates train in worker processes.
SKLEARN_PARALLEL_MIN_SAMPLE_EPOCHS = 1_000_000
# compare's evaluation (`pipeline.evaluate`, a stage of its own when measured): both
# families' probabilities, and the per-replicate metrics' copies.
EVALUATE_PREDICTION_COPIES = 2.8
# compare's paired tests: both families' probabilities, and the per-row tests' arrays
# of replicate 0.
COMPARE_PREDICTION_COPIES = 1.5


@dataclass(frozen=True)
class DataShape:
    """What the stages' memory depends on, known once the data set is loaded."""

    n_rows: int
    n_columns: int  # feature columns as loaded
    n_text_columns: int
    n_features: int  # network inputs, after one-hot encoding
    n_classes: int


@dataclass(frozen=True)
class Cost:
    """A stage's estimated peak memory, and the params key that drives most of it."""

    stage: str
    bytes: int
    key: str
    part: str  # what that key makes the stage hold, and its bytes


def _gib(size: float) -> str:
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size / MIB:.0f} MiB"


def _cost(stage: str, parts: list[tuple[str, str, float]]) -> Cost:
    """The stage's import floor plus its parts (key, description, bytes); the largest
    part names the key."""
    key, description, largest = max(parts, key=lambda part: part[2])
    total = IMPORT_BYTES[stage] + sum(size for _, _, size in parts)
    return Cost(stage, int(total), key, f"{description}: {_gib(largest)}")


def network_weights(n_features: int, hidden_layers: list[int], n_classes: int) -> int:
    """Weights and biases of the network, input and output layers included."""
    units = [n_features, *hidden_layers, 1 if n_classes == 2 else n_classes]
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in itertools.pairwise(units))


def estimate_costs(params: Params, shape: DataShape) -> list[Cost]:
    """Each stage's estimated peak memory (the stages run one at a time, each in its
    own process, so a run needs the largest of them, not their sum)."""
    model, replicates = params.model, params.replicates
    count = replicates.count
    n_train, n_validation, n_test = split_sizes(shape.n_rows, params.split)
    n_numeric = shape.n_columns - shape.n_text_columns
    rows_key = "dataset.n_samples" if params.dataset.source == "synthetic" else "dataset.path"
    if params.dataset.source == "synthetic":
        if params.dataset.kind == "classification":
            loading = shape.n_rows * (
                shape.n_columns * FLOAT32
                + params.dataset.n_informative * FLOAT64
                + CLASSIFICATION_ROW_BYTES
            )
        else:
            loading = shape.n_rows * shape.n_columns * OTHER_GENERATED_CELL_BYTES
    else:
        loading = FILE_READER_BYTES + shape.n_rows * (
            n_numeric * FILE_CELL_BYTES + shape.n_text_columns * FILE_TEXT_CELL_BYTES
        )
    generated = params.dataset.source != "file"
    # A file's table is read by pandas through Arrow: its numbers are held twice at once.
    number_bytes = FLOAT32 if generated else 2 * FLOAT32
    held = shape.n_rows * (n_numeric * number_bytes + shape.n_text_columns * TEXT_CELL_BYTES)
    # A split's encoded rows: float64 out of the preprocessor, then the float32 copy.
    encoded_copy = FLOAT64 + FLOAT32 if shape.n_text_columns else FLOAT32
    split_copies = count if replicates.resample_split else 1
    weights = network_weights(shape.n_features, model.hidden_layers, shape.n_classes)
    units = sum(model.hidden_layers) + shape.n_features
    weights_key = "model.hidden_layers"
    weights_what = f"{count} replicate{'s' if count > 1 else ''} of {weights:,} weights"
    keras_rows = min(PREDICTION_CHUNK, n_train)
    widest = max(shape.n_features, *model.hidden_layers)
    parallel = n_train * model.epochs * count >= SKLEARN_PARALLEL_MIN_SAMPLE_EPOCHS
    workers = min(count, os.cpu_count() or 1) if parallel else 1
    return [
        _cost("dataset", [(rows_key, f"{shape.n_rows:,} rows as loaded", loading)]),
        _cost(
            "split",
            [
                (rows_key, f"{shape.n_rows:,} rows", held),
                (
                    rows_key,
                    f"{n_train:,} train rows x {shape.n_features:,} features",
                    n_train * shape.n_features * encoded_copy,
                ),
                (
                    rows_key,
                    "a chunk of rows at a time",
                    min(shape.n_rows, SPLIT_CHUNK_ROWS) * shape.n_features * SPLIT_CHUNK_BYTES
                    if generated
                    else 0,
                ),
            ],
        ),
        _cost(
            "train_keras",
            [
                (
                    "replicates.resample_split" if split_copies > 1 else rows_key,
                    f"{split_copies} copies of the train and validation rows",
                    split_copies
                    * (n_train + n_validation)
                    * shape.n_features
                    * FLOAT32
                    * KERAS_ROW_COPIES,
                ),
                (
                    "model.epochs",
                    "XLA's compiled program",
                    KERAS_XLA_BYTES
                    if params.train_keras.trainer != "fit"
                    and n_train * model.epochs * count >= KERAS_XLA_MIN_SAMPLE_EPOCHS
                    else 0,
                ),
                (weights_key, weights_what, count * weights * KERAS_WEIGHT_COPIES * FLOAT32),
                (
                    rows_key,
                    f"{count} x {n_test:,} test predictions",
                    KERAS_PREDICTION_COPIES * count * n_test * shape.n_classes * FLOAT32,
                ),
                (
                    "model.hidden_layers",
                    f"activations of {count} x {keras_rows:,} rows",
                    count
                    * FLOAT32
                    * max(
                        # Predicting a chunk of rows: a layer's input and output at once.
                        keras_rows * 2 * widest,
                        # A training step: every layer's activations and their gradients.
                        min(model.batch_size, n_train) * units * ACTIVATION_COPIES,
                    ),
                ),
            ],
        ),
        _cost(
            "train_sklearn",
            [
                (
                    "replicates.resample_split" if split_copies > 1 else rows_key,
                    f"{split_copies} copies of the train and validation rows",
                    split_copies
                    * (n_train + n_validation)
                    * shape.n_features
                    * FLOAT32
                    * SKLEARN_ROW_COPIES,
                ),
                (
                    rows_key,
                    f"partial_fit's labels and order of {workers} x {n_train:,} train rows",
                    workers * n_train * SKLEARN_TRAIN_ROW_BYTES
                    + (workers if workers > 1 else 0) * SKLEARN_WORKER_IMPORT_BYTES,
                ),
                (
                    weights_key,
                    weights_what,
                    (count + workers * SKLEARN_WEIGHT_COPIES) * weights * FLOAT32,
                ),
                (
                    "model.batch_size",
                    f"activations of {workers} x {model.batch_size:,} rows",
                    workers * min(model.batch_size, n_train) * units * ACTIVATION_COPIES * FLOAT64,
                ),
            ],
        ),
        _cost(
            "compare",
            [
                (
                    "compare.n_bootstrap",
                    f"{params.compare.n_bootstrap:,} bootstrap resamples",
                    # The resample matrix comes in chunks of BOOTSTRAP_CELLS; each
                    # metric of each family keeps one value per resample.
                    4 * min(BOOTSTRAP_CELLS, params.compare.n_bootstrap * n_test) * FLOAT64
                    + 2 * 6 * params.compare.n_bootstrap * FLOAT64,
                ),
                (
                    rows_key,
                    f"{count} x {n_test:,} test predictions",
                    # The evaluation first, then the paired tests, in one process: the
                    # larger of the two counts.
                    max(EVALUATE_PREDICTION_COPIES, COMPARE_PREDICTION_COPIES)
                    * count
                    * n_test
                    * shape.n_classes
                    * FLOAT64,
                ),
            ],
        ),
    ]


def check_memory(costs: list[Cost], available: int, source: str, params: Params) -> None:
    """Refuse, in one line naming the key, the estimate and the limit, a run whose
    largest stage would not fit in `available` bytes."""
    largest = max(costs, key=lambda cost: cost.bytes)
    if largest.bytes > available:
        value = flatten(params)[largest.key]
        raise PipelineError(
            f"{largest.key} = {value!r}: {largest.stage} would need about "
            f"{_gib(largest.bytes)} of memory "
            f"({largest.part}), more than the {_gib(available)} available ({source}); "
            "make the data or the network smaller"
        )


def _read_number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory(
    meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")
) -> tuple[int, str] | None:
    """(bytes, where that figure comes from): the kernel's MemAvailable, or what the
    cgroup's limit leaves if that is lower; None where neither can be read."""
    found: list[tuple[int, str]] = []
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"))
    except (OSError, ValueError, IndexError):
        pass
    limit = _read_number(cgroup / "memory.max")
    if limit is not None:
        used = _read_number(cgroup / "memory.current") or 0
        found.append((max(limit - used, 0), "the cgroup's memory.max less memory.current"))
    return min(found) if found else None


def check_run_memory(params: Params, shape: DataShape) -> None:
    """Refuse a run that this machine's memory cannot hold, before it starts."""
    available = available_memory()
    if available is not None:
        check_memory(estimate_costs(params, shape), *available, params)


def check_stage_memory(
    params: Params, n_train: int, n_features: int, n_classes: int, stage: str
) -> None:
    """A training stage that runs without `dataset` before it (only `model.*` changed):
    refuse its own estimated memory, from the train rows it read, before it trains."""
    available = available_memory()
    if available is None:
        return
    held_out = params.split.test_size + params.split.validation_size
    shape = DataShape(round(n_train / (1 - held_out)), n_features, 0, n_features, n_classes)
    costs = [cost for cost in estimate_costs(params, shape) if cost.stage == stage]
    check_memory(costs, *available, params)
