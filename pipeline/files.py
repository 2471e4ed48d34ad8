"""Reading and writing stage outputs; every write is atomic."""

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError

LABEL = "label"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`, renamed over it only on success.

    A crash or `kill -9` at any moment leaves either the previous file or the new
    one, never a truncated file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
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


@dataclass(frozen=True)
class Table:
    """Features and labels of one data set or split."""

    features: np.ndarray  # (n_samples, n_features), float32
    labels: np.ndarray  # (n_samples,), integer class labels
    feature_names: tuple[str, ...]


def table_to_frame(table: Table) -> pd.DataFrame:
    frame = pd.DataFrame(table.features, columns=list(table.feature_names))
    frame[LABEL] = table.labels
    return frame


def write_table(table: Table, path: Path) -> None:
    write_parquet(table_to_frame(table), path)


def read_table(path: Path) -> Table:
    """Read a Parquet table written by an earlier stage."""
    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise PipelineError(
            f"{path}: missing; run the stages before this one (`dvc repro`)"
        ) from None
    except Exception as error:  # pyarrow raises many types for unreadable files
        raise PipelineError(f"{path}: not a readable Parquet file ({error})") from None
    if LABEL not in frame.columns:
        raise PipelineError(f"{path}: no {LABEL!r} column")
    feature_names = tuple(str(name) for name in frame.columns if name != LABEL)
    features = frame[list(feature_names)].to_numpy(dtype=np.float32)
    labels = frame[LABEL].to_numpy()
    return Table(features=features, labels=labels, feature_names=feature_names)
