"""Users' files read in batches: types as pandas would give them, text as categories,
a progress line, and the shape estimated from the first rows."""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import PipelineError
from pipeline.user_file import check_readable, read_user_file, sample_file


def write_rows(path: Path, rows: list[str]) -> Path:
    path.write_text("a,b,colour,approved\n" + "".join(f"{row}\n" for row in rows))
    return path


def test_a_column_typed_by_its_first_rows_is_read_again_as_decimals_then_text(
    tmp_path: Path,
) -> None:
    # Blocks of 1 KiB: column a is whole numbers in the first block, decimals in the
    # second and text in the last; column b whole numbers, then decimals.
    first = [f"{index},{index},red,yes" for index in range(200)]
    second = [f"{index}.5,{index}.25,blue,no" for index in range(200)]
    last = ["n/a-ish,7,green,yes"]
    path = write_rows(tmp_path / "data.csv", first + second + last)

    frame = read_user_file(path, "approved", expected_rows=401, block_bytes=1024)

    expected = pd.read_csv(path)
    assert len(frame) == 401
    assert frame["b"].dtype == np.float32
    np.testing.assert_allclose(frame["b"], expected["b"].astype(np.float32))
    # Text anywhere: a text column, as pandas reads it.
    assert expected["a"].dtype == object or pd.api.types.is_string_dtype(expected["a"])
    assert isinstance(frame["a"].dtype, pd.CategoricalDtype)
    assert list(frame["a"].astype(str)) == list(expected["a"].astype(str))
    assert isinstance(frame["colour"].dtype, pd.CategoricalDtype)
    assert set(frame["colour"].cat.categories) == {"red", "blue", "green"}
    assert list(frame["approved"].astype(str)) == list(expected["approved"])


def test_empty_cells_are_missing_in_numbers_and_text(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "data.csv", ["1,,red,yes", ",2,,no", "3,4,blue,yes"])

    frame = read_user_file(path, "approved", expected_rows=3)

    assert frame["a"].isna().tolist() == [False, True, False]
    assert frame["b"].isna().tolist() == [True, False, False]
    assert frame["colour"].isna().tolist() == [False, True, False]


def test_a_large_file_reports_progress(tmp_path: Path, caplog) -> None:
    path = write_rows(
        tmp_path / "data.csv", [f"{index},{index % 7},red,yes" for index in range(3000)]
    )

    with caplog.at_level(logging.INFO, logger="pipeline.user_file"):
        read_user_file(path, "approved", 3000, block_bytes=4096, progress_min_bytes=0)

    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) >= 5
    assert lines[0].startswith(f"dataset: reading {path}: ")
    assert lines[0].endswith("% of 0.00 GiB")
    assert lines[-1] == f"dataset: read {path}: 3000 rows"


def test_the_rows_of_a_csv_file_are_estimated_from_its_first_bytes(tmp_path: Path) -> None:
    rows = [
        f"{index % 10},{index % 3},{'red' if index % 2 else 'blue'},yes" for index in range(300_000)
    ]
    path = write_rows(tmp_path / "data.csv", rows)

    sample = sample_file(path)

    # The first 4 MiB hold rows of the same length as the rest: a close estimate.
    assert sample.n_rows == pytest.approx(300_000, rel=0.02)
    assert sample.columns == ["a", "b", "colour", "approved"]
    assert sample.distinct_text == {"colour": 2, "approved": 1}


def test_the_sample_types_columns_from_all_of_its_rows(tmp_path: Path) -> None:
    # Whole numbers for over a megabyte, then decimals, within the first 4 MiB.
    rows = [f"{index},1,red,yes" for index in range(200_000)] + ["0.5,1,red,no"]
    path = write_rows(tmp_path / "data.csv", rows)

    sample = sample_file(path)

    assert sample.n_rows == 200_001
    assert sample.distinct_text == {"colour": 1, "approved": 2}


def test_an_unclosed_quote_at_the_end_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('a,b,approved\n1,2,"yes\n3,4,no\n')
    check_readable(path)

    with pytest.raises(PipelineError, match=r"cannot be read as csv \(a quote opened near"):
        read_user_file(path, "approved", expected_rows=2)
