"""A user's CSV or Parquet file read in batches: its rows and columns estimated before
it is loaded, its numbers held as float32 and its text as categories from the first
batch on, and a progress line for large files."""

import csv
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pa_compute
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pandas.api.types import union_categoricals

from pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

# Bytes of CSV text parsed per batch: the most that is held twice (as Arrow and as
# the columns built from it) at any moment.
BLOCK_BYTES = 16 << 20
# The first bytes of a CSV file read to estimate its rows and columns before loading.
SAMPLE_BYTES = 4 << 20
# Files from this size on get a progress line every PROGRESS_STEP of the file.
PROGRESS_MIN_BYTES = 64 << 20
PROGRESS_STEP = 0.1
# Empty cells of text columns are empty, as in pandas, not "".
CONVERT = pa_csv.ConvertOptions(strings_can_be_null=True)


@dataclass(frozen=True)
class FileSample:
    """What the first rows of a file say about all of it."""

    n_rows: int  # estimated for CSV files, exact for Parquet
    columns: list[str]
    distinct_text: dict[str, int]  # text column -> its distinct values in the sample


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _unreadable(path: Path, error: Exception) -> PipelineError:
    return PipelineError(f"{path}: cannot be read as {path.suffix[1:]} ({_reason(error)})")


def csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8") as file:
            return next(csv.reader(file), [])
    except (UnicodeDecodeError, csv.Error, OSError) as error:
        raise _unreadable(path, error) from None


def parquet_columns(path: Path) -> list[str]:
    """The column names from a Parquet file's footer, without reading its rows."""
    try:
        return list(pq.ParquetFile(path).schema_arrow.names)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise _unreadable(path, error) from None


def _text_columns(schema: pa.Schema) -> list[str]:
    return [
        field.name
        for field in schema
        if not (
            pa.types.is_integer(field.type)
            or pa.types.is_floating(field.type)
            or pa.types.is_boolean(field.type)
            or pa.types.is_null(field.type)
        )
    ]


def sample_file(path: Path) -> FileSample:
    """The rows and columns of the whole file, estimated for a CSV file from its first
    SAMPLE_BYTES (rows scale with its size), read from a Parquet file's footer."""
    try:
        if path.suffix.lower() == ".parquet":
            parquet = pq.ParquetFile(path)
            schema = parquet.schema_arrow
            first = parquet.read_row_group(0) if parquet.num_row_groups else schema.empty_table()
            n_rows = parquet.metadata.num_rows
        else:
            size = path.stat().st_size
            with open(path, "rb") as file:
                head = file.read(SAMPLE_BYTES)
            if len(head) < size:
                # Whole lines only: the last one may be cut in the middle.
                head = head[: head.rfind(b"\n") + 1] or head
            # One block: the types are inferred from all of it, not its first megabyte.
            first = pa_csv.read_csv(
                io.BytesIO(head),
                read_options=pa_csv.ReadOptions(block_size=len(head) + 1),
                convert_options=CONVERT,
            )
            schema = first.schema
            n_rows = round(first.num_rows * size / max(len(head), 1))
    except (pa.ArrowException, OSError, ValueError) as error:
        raise _unreadable(path, error) from None
    distinct = {name: len(pa_compute.unique(first.column(name))) for name in _text_columns(schema)}
    return FileSample(n_rows, list(schema.names), distinct)


def _csv_batches(
    path: Path, column_types: dict[str, pa.DataType], block_bytes: int
) -> Iterator[pa.RecordBatch]:
    options = pa_csv.ConvertOptions(strings_can_be_null=True, column_types=column_types)
    reader = pa_csv.open_csv(
        path, read_options=pa_csv.ReadOptions(block_size=block_bytes), convert_options=options
    )
    last = None
    for batch in reader:
        last = batch
        yield batch
    # Arrow ends a quote left open at the end of the file there, with every line after
    # it inside one value; values hold no line breaks otherwise (newlines_in_values).
    for column in last.columns if last is not None else []:
        if (
            pa.types.is_string(column.type)
            and pa_compute.any(pa_compute.match_substring(column, "\n")).as_py()
        ):
            raise ValueError("a quote opened near the end of the file is never closed")


def _column_values(array: pa.Array) -> np.ndarray | pd.Categorical:
    """A batch's column: numbers (and booleans) as float32, NaN where empty; text as
    categories (each distinct value stored once, not once per row); anything else as
    objects."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    kind = array.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        if pa.types.is_boolean(kind):
            array = array.cast(pa.int8())
        return array.to_numpy(zero_copy_only=False).astype(np.float32)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pa_compute.dictionary_encode(array).to_pandas().array
    values = array.to_numpy(zero_copy_only=False).astype(object)
    values[pd.isna(values)] = np.nan
    return values


def _join(chunks: list) -> np.ndarray | pd.Categorical:
    """One column out of its batches' pieces."""
    if len(chunks) == 1:
        return chunks[0]
    if all(isinstance(chunk, pd.Categorical) for chunk in chunks):
        return union_categoricals(chunks)
    return np.concatenate(
        [
            np.asarray(chunk, dtype=object) if isinstance(chunk, pd.Categorical) else chunk
            for chunk in chunks
        ]
    )


def _assemble(
    batches: Iterator[pa.RecordBatch], target: str, done: Callable[[int], None]
) -> pd.DataFrame:
    """Each batch's columns converted at once (numbers to float32, text to categories),
    then joined: the raw Arrow batch is let go before the next is read."""
    parts: dict[str, list] = {}
    for batch in batches:
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            if name == target and not _text_columns(pa.schema([(name, column.type)])):
                # Numbers to predict keep their type: integers stay integers (1, not 1.0).
                values = column.to_numpy(zero_copy_only=False)
            else:
                values = _column_values(column)
            parts.setdefault(name, []).append(values)
        done(batch.num_rows)
    frame = {}
    for name, chunks in parts.items():
        frame[name] = _join(chunks)
        chunks.clear()
    return pd.DataFrame(frame, copy=False)


def read_batches(
    path: Path,
    target: str,
    column_types: dict[str, pa.DataType],
    expected_rows: int,
    block_bytes: int,
    progress_min_bytes: int,
) -> pd.DataFrame:
    """The whole file as a data frame with float32 numbers, read in batches, with a
    progress line every tenth of a large file (by rows, estimated for CSV)."""
    size = path.stat().st_size
    if path.suffix.lower() == ".parquet":
        batches: Iterator[pa.RecordBatch] = pq.ParquetFile(path).iter_batches(batch_size=1 << 16)
    else:
        batches = _csv_batches(path, column_types, block_bytes)
    progress = {"rows": 0, "next": PROGRESS_STEP}

    def done(rows: int) -> None:
        progress["rows"] += rows
        share = progress["rows"] / max(expected_rows, 1)
        if size >= progress_min_bytes and share >= progress["next"]:
            logger.info(
                "dataset: reading %s: %d rows, about %d%% of %.2f GiB",
                path,
                progress["rows"],
                min(share, 1) * 100,
                size / (1 << 30),
            )
            progress["next"] = share + PROGRESS_STEP

    frame = _assemble(batches, target, done)
    if size >= progress_min_bytes:
        logger.info("dataset: read %s: %d rows", path, progress["rows"])
    return frame


def check_readable(path: Path) -> None:
    """There, not empty, and (CSV) a header of distinct UTF-8 names."""
    if not path.is_file():
        raise PipelineError(f"{path}: no such file (dataset.path)")
    if path.stat().st_size == 0:
        raise PipelineError(f"{path}: the file is empty")
    header = csv_header(path) if path.suffix.lower() == ".csv" else parquet_columns(path)
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise PipelineError(
            f"{path}: column names appear more than once: {', '.join(duplicates)}; "
            "every column needs its own name"
        )


# A CSV column that the first rows typed wrongly is read again as the next of these.
RETYPES = (pa.float64(), pa.string())


def read_user_file(
    path: Path,
    target: str,
    expected_rows: int,
    block_bytes: int = BLOCK_BYTES,
    progress_min_bytes: int = PROGRESS_MIN_BYTES,
) -> pd.DataFrame:
    """A checked file (`check_readable`) as a data frame, or one line saying why it
    cannot be read. A CSV column with text anywhere is text, as pandas reads it."""
    header = csv_header(path) if path.suffix.lower() == ".csv" else []
    column_types: dict[str, pa.DataType] = {}
    while True:
        try:
            frame = read_batches(
                path, target, column_types, expected_rows, block_bytes, progress_min_bytes
            )
            break
        except pa.ArrowInvalid as error:
            # Numbers in a CSV file's first rows, and decimals or text further on: read
            # the column again as decimals, then as text, as pandas would have typed it.
            column = _failed_column(str(error), header)
            tried = column_types.get(column) if column else None
            if column is None or tried == RETYPES[-1]:
                raise _unreadable(path, error) from None
            column_types[column] = RETYPES[RETYPES.index(tried) + 1 if tried else 0]
        except (pa.ArrowException, OSError, ValueError) as error:
            raise _unreadable(path, error) from None
    if frame.empty:
        raise PipelineError(f"{path}: has a header but no rows")
    return frame


def _failed_column(message: str, header: list[str]) -> str | None:
    """The column named in Arrow's "In CSV column #3: CSV conversion error to int64"."""
    marker = "In CSV column #"
    if marker not in message or "conversion error" not in message:
        return None
    number = message.split(marker, 1)[1].split(":", 1)[0]
    return header[int(number)] if number.isdigit() and int(number) < len(header) else None
