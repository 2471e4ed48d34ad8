"""Reading and writing stage outputs; every write is atomic."""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipeline import paths
from pipeline.errors import PipelineError

LABEL = "label"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`, renamed over it only on success.

    A crash or `kill -9` at any moment leaves either the previous file or the new
    one, never a truncated file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of a writer killed before its rename (kill -9): only this stage writes
    # `path`, so no other process is using them.
    for leftover in path.parent.glob(f".{path.stem}-*{path.suffix}"):
        leftover.unlink(missing_ok=True)
    # Same directory, so that the final rename never crosses file systems; the
    # suffix is kept because some writers (Keras) insist on it.
    handle, temporary_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix
    )
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path` that replaces it only on success.

    The old folder is renamed aside, the new one renamed in, and the old one then
    deleted: a crash leaves the previous folder or the new one (or, between the two
    renames, the previous one under its temporary name beside it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(f".{path.name}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    temporary = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    try:
        yield temporary
        previous = None
        if path.exists():
            previous = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-old-"))
            os.replace(path, previous / "old")
        os.replace(temporary, path)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def file_md5(path: Path) -> str:
    """The content hash DVC records for the same file in `dvc.lock`."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def recorded_output(path: Path, lock_file: Path = Path("dvc.lock")) -> tuple[str, str] | None:
    """(stage, MD5) that `dvc.lock` records for `path` as a stage output, if any."""
    try:
        # LibYAML's parser where PyYAML has it: dvc.lock is long, and the pure-Python
        # one takes some 30 ms per look (track looks for several files).
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        lock = yaml.load(lock_file.read_text(encoding="utf-8"), Loader=loader) or {}  # noqa: S506
    except (OSError, yaml.YAMLError):
        return None
    for stage, record in (lock.get("stages") or {}).items():
        for output in record.get("outs") or []:
            if Path(output.get("path", "")) == path and output.get("md5"):
                return stage, output["md5"]
    return None


def verify_recorded_hash(path: Path, lock_file: Path = Path("dvc.lock")) -> None:
    """Refuse a model file that is not the one `dvc.lock` records.

    Under `dvc repro`, DVC records each output's hash as soon as its stage ends, so a
    difference means the file was replaced since. Outside DVC it is checked the same
    way: a stage rerun by hand also rewrites its outputs without recording them, and
    nothing here can tell that from an edited archive, so the user says which it was
    (`dvc commit` records the files as they are, `dvc repro` rebuilds them). A file
    that `dvc.lock` does not record (no `dvc repro` yet) is not checked.
    """
    recorded = recorded_output(path, lock_file)
    if recorded is None:
        return
    stage, expected = recorded
    actual = file_md5(path)
    if actual != expected:
        raise PipelineError(
            f"{path}: MD5 {actual} differs from {expected}, which dvc.lock records for "
            f"stage {stage}; refusing a file changed since. Run `dvc repro` to rebuild "
            f"it, or `dvc commit -f {stage}` if you reran {stage} by hand on purpose"
        )


def write_text(text: str, path: Path) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(data: Any, path: Path) -> None:
    write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    # A fixed float format keeps the files byte-identical across reruns.
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False, float_format="%.9g")


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as temporary:
        frame.to_parquet(temporary, index=False)
    release_arrow_memory()


@dataclass(frozen=True)
class Table:
    """Features and labels of one data set or split."""

    features: np.ndarray  # (n_samples, n_features), float32
    labels: np.ndarray  # (n_samples,), integer class labels
    feature_names: tuple[str, ...]


# Rows per Parquet row group: written and read one group at a time, so that a large
# table is never held twice (as NumPy and as Arrow) in memory.
ROW_GROUP = 1 << 20


# The alignment TensorFlow needs to use a NumPy array's memory as it is (Eigen's).
TENSOR_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """`np.empty`, starting at a multiple of TENSOR_ALIGNMENT bytes (NumPy's own start
    at 16): `train_keras` then hands the array to TensorFlow without copying it."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(size + TENSOR_ALIGNMENT, dtype=np.uint8)
    offset = -raw.ctypes.data % TENSOR_ALIGNMENT
    return raw[offset : offset + size].view(dtype).reshape(shape)


def release_arrow_memory() -> None:
    """Hand the memory Arrow has freed back to the system. Its allocator (mimalloc)
    otherwise keeps it for later Arrow work: about 130 MB after reading 6M rows, held
    through the stage's peak, where NumPy and TensorFlow cannot use it."""
    pa.default_memory_pool().release_unused()


def write_table(table: Table, path: Path) -> None:
    """Features as float32 columns, then the integer label, written atomically."""
    names = [*table.feature_names, LABEL]
    with atomic_path(path) as temporary:
        writer = None
        try:
            for start in range(0, max(len(table.labels), 1), ROW_GROUP):
                rows = slice(start, start + ROW_GROUP)
                columns = [
                    pa.array(np.ascontiguousarray(column)) for column in table.features[rows].T
                ]
                group = pa.Table.from_arrays([*columns, pa.array(table.labels[rows])], names=names)
                if writer is None:
                    writer = pq.ParquetWriter(temporary, group.schema)
                writer.write_table(group)
        finally:
            if writer is not None:
                writer.close()
    release_arrow_memory()


def read_table(
    path: Path,
    expected_features: tuple[str, ...] | None = None,
    n_classes: int = 2,
    with_features: bool = True,
) -> Table:
    """Read and check a Parquet table: readable, the expected columns, finite numeric
    features and labels 0..n_classes-1. Any problem is one `PipelineError` line naming
    the file. Without `with_features`, only the labels are read (the features are an
    empty (n_rows, 0) array; their names are all there).

    Rows are read and checked one row group at a time, so that no second copy of
    a large table is ever held.
    """
    if not path.exists():
        raise PipelineError(f"{path}: missing; run the stages before this one (`dvc repro`)")
    if path.stat().st_size == 0:
        raise PipelineError(f"{path}: the file is empty")
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        columns = list(schema.names)
        check_columns(path, schema, expected_features)
        feature_names = tuple(name for name in columns if name != LABEL)
        n_rows = parquet.metadata.num_rows
        if n_rows == 0:
            raise PipelineError(f"{path}: has no rows")
        read = feature_names if with_features else ()
        features = aligned_empty((n_rows, len(read)), np.float32)
        labels = np.empty(n_rows, dtype=schema.field(LABEL).type.to_pandas_dtype())
        start = 0
        for group in range(parquet.num_row_groups):
            batch = parquet.read_row_group(group, columns=[*read, LABEL])
            stop = start + batch.num_rows
            for index, name in enumerate(read):
                features[start:stop, index] = batch.column(name).to_numpy()
            labels[start:stop] = batch.column(LABEL).to_numpy()
            start = stop
    except PipelineError:
        raise
    except Exception as error:  # pyarrow raises many types for unreadable files
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        raise PipelineError(
            f"{path}: not a readable Parquet file, truncated or corrupt? ({reason})"
        ) from None
    release_arrow_memory()
    check_finite(path, features, read)
    check_labels(path, labels, n_classes)
    return Table(features=features, labels=labels, feature_names=feature_names)


def check_columns(path: Path, schema: pa.Schema, expected_features: tuple[str, ...] | None) -> None:
    columns = list(schema.names)
    if LABEL not in columns:
        raise PipelineError(f"{path}: no {LABEL!r} column (columns: {', '.join(columns)})")
    feature_names = tuple(name for name in columns if name != LABEL)
    if expected_features is not None and feature_names != expected_features:
        missing = [name for name in expected_features if name not in feature_names]
        extra = [name for name in feature_names if name not in expected_features]
        problem = (
            f"missing columns {missing}"
            if missing
            else f"unexpected columns {extra}"
            if extra
            else "columns in a different order"
        )
        raise PipelineError(
            f"{path}: {problem}; expected {', '.join(expected_features)} and {LABEL}"
        )
    for name in feature_names:
        kind = schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise PipelineError(
                f"{path}: column {name!r} has type {kind}; features must be numbers"
            )
    label_type = schema.field(LABEL).type
    if not pa.types.is_integer(label_type):
        raise PipelineError(
            f"{path}: column {LABEL!r} has type {label_type}; allowed: the integers 0 and 1"
        )


def check_finite(path: Path, features: np.ndarray, feature_names: tuple[str, ...]) -> None:
    for index, name in enumerate(feature_names):
        finite = np.isfinite(features[:, index])
        if not finite.all():
            raise PipelineError(
                f"{path}: column {name!r} has {int((~finite).sum())} NaN or infinite values "
                f"(first at row {int(np.argmin(finite))}); allowed: finite numbers"
            )


def check_labels(path: Path, labels: np.ndarray, n_classes: int) -> None:
    valid = (labels >= 0) & (labels < n_classes)
    if not valid.all():
        bad = sorted(set(labels[~valid].tolist()))
        allowed = "0 and 1" if n_classes == 2 else f"0 to {n_classes - 1}"
        raise PipelineError(
            f"{path}: column {LABEL!r} has values {bad[:5]}; allowed: the integers {allowed}"
        )


def read_classes(path: Path = paths.CLASSES) -> list[Any]:
    """The target's classes, by code, as the dataset stage recorded them."""
    try:
        return list(read_json(path)["classes"])
    except (OSError, KeyError, ValueError, TypeError):
        raise PipelineError(f"{path}: missing or unreadable; run `dvc repro`") from None


REPLICATE = "replicate"


def write_predictions(probabilities: np.ndarray, path: Path) -> None:
    """Test-set class probabilities of every replicate, (K, n_rows, n_classes): one
    row per replicate and test row, a `replicate` column, then one column per class
    code ("0", "1", ...)."""
    count, n_rows, n_classes = probabilities.shape
    columns = {REPLICATE: np.repeat(np.arange(count, dtype=np.int32), n_rows)}
    flat = probabilities.reshape(count * n_rows, n_classes)
    columns |= {str(code): flat[:, code] for code in range(n_classes)}
    write_parquet(pd.DataFrame(columns), path)


def read_predictions(path: Path, n_rows: int, n_classes: int, count: int) -> np.ndarray:
    """(count, n_rows, n_classes) probabilities a training stage wrote, checked."""
    try:
        table = pq.read_table(path)
        replicates = table.column(REPLICATE).to_numpy()
        probabilities = np.column_stack(
            [table.column(str(code)).to_numpy() for code in range(n_classes)]
        )
    except (OSError, KeyError, ValueError, pa.ArrowException) as error:
        raise PipelineError(f"{path}: unreadable predictions ({error}); run `dvc repro`") from None
    del table
    release_arrow_memory()
    # Checked without arrays of every row's replicate number or sum (K x test rows each).
    in_order = len(replicates) == count * n_rows and bool(
        (replicates.reshape(count, n_rows) == np.arange(count)[:, None]).all()
    )
    # NaN fails both comparisons, as it fails np.allclose.
    in_range = bool(probabilities.min(initial=0.0) >= 0 and probabilities.max(initial=1.0) <= 1)
    if (
        len(probabilities) != count * n_rows
        or not in_order
        or not in_range
        or not np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)
    ):
        raise PipelineError(
            f"{path}: expected {count} replicates x {n_rows} rows of {n_classes} class "
            "probabilities in [0, 1] summing to 1, one per test row; run `dvc repro` to "
            "rebuild it"
        )
    return probabilities.reshape(count, n_rows, n_classes)


@dataclass(frozen=True)
class TestPredictions:
    """What both families predicted for the test rows, replicate by replicate."""

    labels: np.ndarray  # (K, n_rows): replicate r's test labels (the same rows unless re-drawn)
    probabilities: dict[str, np.ndarray]  # family -> (K, n_rows, n_classes)
    n_features: int

    @property
    def count(self) -> int:
        return len(self.labels)


def read_test_predictions(
    test_paths: list[Path], prediction_paths: dict[str, Path], n_classes: int, count: int
) -> TestPredictions:
    """The test labels and each family's probabilities for the same rows: the
    training stages predicted them, so no later stage loads a model. `test_paths`
    holds one test split shared by the `count` replicates, or one per replicate."""
    # The labels only: the features are not needed here (and were checked by the
    # training stages, which read them).
    tables = [read_table(path, n_classes=n_classes, with_features=False) for path in test_paths]
    labels = np.stack([table.labels for table in tables])
    if len(tables) == 1:
        # One split for every replicate: a read-only view, not K copies of its labels.
        labels = np.broadcast_to(labels, (count, labels.shape[1]))
    return TestPredictions(
        labels=labels,
        probabilities={
            family: read_predictions(path, labels.shape[1], n_classes, count)
            for family, path in prediction_paths.items()
        },
        n_features=len(tables[0].feature_names),
    )
