"""Atomic writes and the checks on data files: every bad file gets one clear line."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline import files
from pipeline.errors import PipelineError
from pipeline.files import (
    Table,
    atomic_path,
    file_md5,
    read_classes,
    read_predictions,
    read_table,
    read_test_predictions,
    recorded_output,
    verify_recorded_hash,
    write_csv,
    write_json,
    write_parquet,
    write_predictions,
    write_table,
)

COLUMNS = ("x1", "x2", "x3")


def good_frame(rows: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, 3)).astype(np.float32), columns=list(COLUMNS))
    frame["label"] = np.array([0, 1] * (rows // 2), dtype=np.int32)
    return frame


def test_good_table_round_trips(tmp_path: Path):
    table = Table(
        features=np.arange(6, dtype=np.float32).reshape(3, 2),
        labels=np.array([0, 1, 1], dtype=np.int32),
        feature_names=("a", "b"),
    )
    write_table(table, tmp_path / "table.parquet")
    read = read_table(tmp_path / "table.parquet", ("a", "b"))
    np.testing.assert_array_equal(read.features, table.features)
    np.testing.assert_array_equal(read.labels, table.labels)
    assert read.feature_names == ("a", "b")


def write_frame(frame: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path, index=False)
    return path


def with_value(column: str, row: int, value: object) -> pd.DataFrame:
    frame = good_frame()
    frame.loc[row, column] = value
    return frame


BAD_FRAMES = [
    pytest.param(
        with_value("x2", 3, np.nan),
        r"column 'x2' has 1 NaN or infinite values \(first at row 3\)",
        id="nan",
    ),
    pytest.param(
        with_value("x1", 0, np.inf),
        r"column 'x1' has 1 NaN or infinite values \(first at row 0\)",
        id="inf",
    ),
    pytest.param(with_value("x3", 5, -np.inf), r"column 'x3' has 1 NaN or infinite", id="-inf"),
    pytest.param(
        good_frame().drop(columns="x3"),
        r"missing columns \['x3'\]; expected x1, x2, x3 and label",
        id="missing column",
    ),
    pytest.param(good_frame().assign(x4=1.0), r"unexpected columns \['x4'\]", id="extra column"),
    pytest.param(
        good_frame()[["x2", "x1", "x3", "label"]], r"columns in a different order", id="reordered"
    ),
    pytest.param(
        good_frame().drop(columns="label"),
        r"no 'label' column \(columns: x1, x2, x3\)",
        id="no label",
    ),
    pytest.param(
        with_value("label", 1, 2),
        r"column 'label' has values \[2\]; allowed: the integers 0 and 1",
        id="label 2",
    ),
    pytest.param(
        good_frame().assign(label=[0.0, 1.0] * 3),
        r"column 'label' has type double; allowed: the integers 0 and 1",
        id="float labels",
    ),
    pytest.param(
        good_frame().assign(label=["no", "yes"] * 3),
        r"column 'label' has type \w+; allowed: the integers 0 and 1",
        id="string labels",
    ),
    pytest.param(
        good_frame().assign(label=[0, -1] * 3),
        r"column 'label' has values \[-1\]",
        id="negative label",
    ),
    pytest.param(
        good_frame().assign(x1="a"),
        r"column 'x1' has type \w+; features must be numbers",
        id="string feature",
    ),
    pytest.param(good_frame().iloc[:0], r"has no rows", id="no rows"),
]


@pytest.mark.parametrize(("frame", "message"), BAD_FRAMES)
def test_bad_frame_is_one_clear_line(frame: pd.DataFrame, message: str, tmp_path: Path):
    path = write_frame(frame, tmp_path)
    with pytest.raises(PipelineError, match=message) as caught:
        read_table(path, COLUMNS)
    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"the file is empty"),
        (b"this is not parquet at all", r"not a readable Parquet file, truncated or corrupt\?"),
        (None, r"not a readable Parquet file"),  # a real file cut in half
    ],
)
def test_unreadable_file(content: bytes | None, message: str, tmp_path: Path):
    path = tmp_path / "data.parquet"
    if content is None:
        good_frame().to_parquet(path, index=False)
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(PipelineError, match=message) as caught:
        read_table(path, COLUMNS)
    assert "\n" not in str(caught.value)


def test_missing_file_says_to_run_the_earlier_stages(tmp_path: Path):
    with pytest.raises(PipelineError, match=r"missing; run the stages before this one"):
        read_table(tmp_path / "absent.parquet")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path):
    path = tmp_path / "out.json"
    write_json({"version": 1}, path)
    with pytest.raises(RuntimeError), atomic_path(path) as temporary:
        temporary.write_text("half written")
        raise RuntimeError("crash")
    assert path.read_text() == '{\n  "version": 1\n}\n'
    assert sorted(item.name for item in tmp_path.iterdir()) == ["out.json"]


def test_atomic_write_removes_leftovers_of_a_killed_writer(tmp_path: Path):
    path = tmp_path / "model.keras"
    leftover = tmp_path / ".model-abc123.keras"
    leftover.write_bytes(b"truncated")
    other = tmp_path / ".history-abc123.csv"  # another output's leftover: not ours
    other.write_bytes(b"x")
    with atomic_path(path) as temporary:
        assert temporary.name.startswith(".model-") and temporary.suffix == ".keras"
        temporary.write_bytes(b"complete")
    assert path.read_bytes() == b"complete"
    assert not leftover.exists()
    assert other.exists()


@pytest.mark.parametrize("under_dvc", [True, False])
def test_model_file_is_checked_against_dvc_lock(tmp_path: Path, monkeypatch, under_dvc: bool):
    model = tmp_path / "model.skops"
    model.write_bytes(b"produced by the pipeline")
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  train:\n    outs:\n"
        f"    - path: {model}\n      md5: {file_md5(model)}\n"
    )
    monkeypatch.delenv("DVC_STAGE", raising=False)
    if under_dvc:
        monkeypatch.setenv("DVC_STAGE", "evaluate")
    verify_recorded_hash(model, lock)  # untouched: accepted
    model.write_bytes(b"replaced by hand")
    with pytest.raises(PipelineError) as caught:
        verify_recorded_hash(model, lock)
    assert str(caught.value) == (
        f"{model}: MD5 {file_md5(model)} differs from {md5_of(b'produced by the pipeline')}, "
        "which dvc.lock records for stage train; refusing a file changed since. Run "
        "`dvc repro` to rebuild it, or `dvc commit -f train` if you reran train by hand "
        "on purpose"
    )


def test_model_file_that_dvc_lock_does_not_record_is_accepted(tmp_path: Path):
    model = tmp_path / "model.skops"
    model.write_bytes(b"never reproduced")
    lock = tmp_path / "dvc.lock"
    verify_recorded_hash(model, lock)  # no dvc.lock at all
    lock.write_text("schema: '2.0'\nstages:\n  train:\n    outs:\n    - path: other\n")
    verify_recorded_hash(model, lock)


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def write_test_inputs(folder: Path, keras: list[float], sklearn: list[float]) -> dict:
    """A two-row test split and each model's per-row probabilities, as the stages write
    them."""
    table = Table(np.zeros((2, 2), np.float32), np.array([0, 1], np.int32), ("x1", "x2"))
    write_table(table, folder / "test.parquet")
    prediction_paths = {}
    for family, values in (("keras", keras), ("sklearn", sklearn)):
        prediction_paths[family] = folder / f"{family}.parquet"
        positive = np.array(values, np.float32)
        write_predictions(
            np.stack([1 - positive, positive], axis=1)[None], prediction_paths[family]
        )
    return prediction_paths


def test_read_test_predictions_pairs_labels_and_probabilities(tmp_path: Path):
    prediction_paths = write_test_inputs(tmp_path, [0.2, 0.9], [0.1, 0.7])

    predictions = read_test_predictions([tmp_path / "test.parquet"], prediction_paths, 2, 1)

    np.testing.assert_array_equal(predictions.labels, [[0, 1]])
    assert predictions.n_features == 2
    np.testing.assert_allclose(predictions.probabilities["keras"][0, :, 1], [0.2, 0.9])
    np.testing.assert_allclose(predictions.probabilities["sklearn"][0, :, 1], [0.1, 0.7])


def test_predictions_of_several_replicates_round_trip(tmp_path: Path):
    probabilities = np.random.default_rng(0).dirichlet(np.ones(3), size=(4, 5))
    write_predictions(probabilities, tmp_path / "predictions.parquet")
    np.testing.assert_allclose(
        read_predictions(tmp_path / "predictions.parquet", 5, 3, 4), probabilities
    )
    with pytest.raises(PipelineError, match="expected 3 replicates x 5 rows"):
        read_predictions(tmp_path / "predictions.parquet", 5, 3, 3)


@pytest.mark.parametrize(
    ("keras", "sklearn"),
    [([0.2, np.nan], [0.1, 0.7]), ([0.2, 0.9], [1.5, 0.7]), ([0.2], [0.1, 0.7])],
)
def test_read_test_predictions_rejects_bad_rows(tmp_path: Path, keras, sklearn):
    prediction_paths = write_test_inputs(tmp_path, keras, sklearn)
    with pytest.raises(PipelineError, match=r"expected 1 replicates x 2 rows of 2 class"):
        read_test_predictions([tmp_path / "test.parquet"], prediction_paths, 2, 1)


def test_write_text_keeps_the_previous_file_when_writing_fails(tmp_path: Path, monkeypatch):
    from pipeline.files import write_text

    path = tmp_path / "report.md"
    write_text("previous\n", path)
    original_write_text = Path.write_text

    def write_half_then_fail(self: Path, data: str, *arguments, **keywords) -> int:
        original_write_text(self, data[: len(data) // 2], *arguments, **keywords)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", write_half_then_fail)
    with pytest.raises(OSError, match="No space left on device"):
        write_text("the new report, long enough to be cut in half\n", path)
    monkeypatch.undo()

    assert path.read_text(encoding="utf-8") == "previous\n"
    assert sorted(item.name for item in tmp_path.iterdir()) == ["report.md"]


def test_a_table_of_several_row_groups_round_trips_as_float32(tmp_path: Path, monkeypatch):
    # Written and read one row group at a time: 7 rows in groups of 3, 3 and 1.
    monkeypatch.setattr(files, "ROW_GROUP", 3)
    table = Table(
        features=np.arange(14, dtype=np.float32).reshape(7, 2) / 3,
        labels=np.array([0, 1, 2, 1, 0, 2, 1], dtype=np.int32),
        feature_names=("a", "b"),
    )
    write_table(table, tmp_path / "table.parquet")
    assert pq.ParquetFile(tmp_path / "table.parquet").num_row_groups == 3

    read = read_table(tmp_path / "table.parquet", ("a", "b"), n_classes=3)

    assert read.features.dtype == np.float32
    np.testing.assert_array_equal(read.features, table.features)
    np.testing.assert_array_equal(read.labels, table.labels)


@pytest.mark.parametrize(
    ("frame", "n_classes", "message"),
    [
        (good_frame()[["x2", "x1", "x3", "label"]], 2,
         "columns in a different order; expected x1, x2, x3 and label"),
        (good_frame().assign(label=[0, 3, 4, 5, 6, 7]), 3,
         "column 'label' has values [3, 4, 5, 6, 7]; allowed: the integers 0 to 2"),
        (good_frame().assign(label=[0, 3, 4, 5, 6, 7]), 5,
         "column 'label' has values [5, 6, 7]; allowed: the integers 0 to 4"),
        (good_frame().assign(label=[7, 2, 3, 4, 5, 6]), 2,
         "column 'label' has values [2, 3, 4, 5, 6]; allowed: the integers 0 and 1"),
    ],
)  # fmt: skip
def test_bad_frame_messages_in_full(frame: pd.DataFrame, n_classes: int, message: str, tmp_path):
    path = write_frame(frame, tmp_path)
    with pytest.raises(PipelineError) as caught:
        read_table(path, COLUMNS, n_classes)
    assert str(caught.value) == f"{path}: {message}"


def test_an_unreadable_file_names_pyarrows_reason(tmp_path: Path):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(Exception) as raised_by_pyarrow:
        pq.ParquetFile(path)
    reason = str(raised_by_pyarrow.value).strip().splitlines()[0]
    assert reason

    with pytest.raises(PipelineError) as caught:
        read_table(path, COLUMNS)

    assert str(caught.value) == (
        f"{path}: not a readable Parquet file, truncated or corrupt? ({reason})"
    )


def test_dvc_lock_records_are_found_by_path(tmp_path: Path):
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n"
        "  split:\n    outs:\n    - md5: 0123\n    - path: data/a\n      md5: aaaa\n"
        "  train:\n    outs:\n    - path: data/b\n      md5: bbbb\n    - path: data/c\n"
    )
    assert recorded_output(Path("data/b"), lock) == ("train", "bbbb")
    assert recorded_output(Path("data/a"), lock) == ("split", "aaaa")
    # Recorded without a hash, or not at all: nothing to check against.
    assert recorded_output(Path("data/c"), lock) is None
    assert recorded_output(Path("data/d"), lock) is None


def test_json_is_written_with_sorted_keys_and_a_final_newline(tmp_path: Path):
    write_json({"b": 1, "a": {"d": 2, "c": "é"}}, tmp_path / "data.json")
    assert (tmp_path / "data.json").read_bytes() == (
        b'{\n  "a": {\n    "c": "\\u00e9",\n    "d": 2\n  },\n  "b": 1\n}\n'
    )


def test_csv_is_written_without_index_and_with_9_significant_digits(tmp_path: Path):
    frame = pd.DataFrame({"epoch": [1, 2], "loss": [1 / 3, 1e-10]}, index=[5, 7])
    write_csv(frame, tmp_path / "history.csv")
    assert (tmp_path / "history.csv").read_text() == "epoch,loss\n1,0.333333333\n2,1e-10\n"


def test_parquet_holds_the_columns_only_not_the_index(tmp_path: Path):
    # Rows left after a filter keep their old index; it must not become a column.
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "label": [0, 1, 0]}).iloc[[0, 2]]
    write_parquet(frame, tmp_path / "data.parquet")
    written = pq.read_table(tmp_path / "data.parquet")
    assert written.column_names == ["a", "label"]
    # Nor as pandas metadata: read back, the rows are numbered afresh.
    read = pd.read_parquet(tmp_path / "data.parquet")
    pd.testing.assert_index_equal(read.index, pd.RangeIndex(2))


def test_missing_classes_say_to_run_the_pipeline(tmp_path: Path):
    path = tmp_path / "classes.json"
    with pytest.raises(PipelineError) as caught:
        read_classes(path)
    assert str(caught.value) == f"{path}: missing or unreadable; run `dvc repro`"
    write_json({"target": "approved", "classes": ["no", "yes"]}, path)
    assert read_classes(path) == ["no", "yes"]


def write_probabilities(path: Path, rows: list[list[float]], replicates: list[int]) -> None:
    frame = pd.DataFrame(np.array(rows), columns=["0", "1"])
    frame.insert(0, "replicate", np.array(replicates, dtype=np.int32))
    frame.to_parquet(path, index=False)


@pytest.mark.parametrize(
    ("rows", "replicates", "accepted"),
    [
        ([[0.0, 1.0], [1.0, 0.0]], [0, 0], True),  # certain predictions are probabilities
        ([[0.3, 0.7005], [0.5, 0.5]], [0, 0], True),  # float32 sums within 1e-3 of 1
        ([[1.0005, 0.0], [0.5, 0.5]], [0, 0], False),  # above 1
        ([[0.3, 0.6], [0.5, 0.5]], [0, 0], False),  # a row summing to 0.9
        ([[0.3, 0.7], [0.5, 0.5]], [0, 1], False),  # the rows of another replicate
    ],
)
def test_prediction_rows_are_checked(tmp_path: Path, rows, replicates, accepted: bool):
    path = tmp_path / "predictions.parquet"
    write_probabilities(path, rows, replicates)
    if accepted:
        np.testing.assert_allclose(read_predictions(path, 2, 2, 1)[0], rows)
        return
    with pytest.raises(PipelineError) as caught:
        read_predictions(path, 2, 2, 1)
    assert str(caught.value) == (
        f"{path}: expected 1 replicates x 2 rows of 2 class probabilities in [0, 1] summing "
        "to 1, one per test row; run `dvc repro` to rebuild it"
    )


def test_unreadable_predictions_are_one_line(tmp_path: Path):
    path = tmp_path / "predictions.parquet"
    pd.DataFrame({"replicate": [0], "0": [1.0]}).to_parquet(path, index=False)
    with pytest.raises(PipelineError) as caught:
        read_predictions(path, 1, 2, 1)
    assert str(caught.value).startswith(f"{path}: unreadable predictions (")
    assert str(caught.value).endswith("); run `dvc repro`")


def test_one_test_split_serves_every_replicate_of_three_classes(tmp_path: Path):
    table = Table(np.zeros((3, 2), np.float32), np.array([0, 2, 1], np.int32), ("x1", "x2"))
    write_table(table, tmp_path / "test.parquet")
    probabilities = np.random.default_rng(0).dirichlet(np.ones(3), size=(2, 3))
    write_predictions(probabilities, tmp_path / "keras.parquet")

    predictions = read_test_predictions(
        [tmp_path / "test.parquet"], {"keras": tmp_path / "keras.parquet"}, 3, 2
    )

    np.testing.assert_array_equal(predictions.labels, [[0, 2, 1], [0, 2, 1]])
    assert predictions.count == 2
    np.testing.assert_allclose(predictions.probabilities["keras"], probabilities)


def test_a_table_read_without_its_features_has_its_labels_and_names(tmp_path: Path):
    table = Table(
        np.array([[np.nan, 1.0], [2.0, 3.0]], np.float32), np.array([1, 0], np.int32), ("a", "b")
    )
    write_table(table, tmp_path / "test.parquet")

    # The features are not read, so not checked either (their NaN is the trainers' to refuse).
    labels_only = read_table(tmp_path / "test.parquet", with_features=False)

    assert labels_only.features.shape == (2, 0)
    assert labels_only.labels.tolist() == [1, 0]
    assert labels_only.feature_names == ("a", "b")
    with pytest.raises(PipelineError, match="column 'a' has 1 NaN or infinite values"):
        read_table(tmp_path / "test.parquet")


def test_tables_are_read_into_memory_tensorflow_can_share(tmp_path: Path):
    write_table(
        Table(np.ones((3, 2), np.float32), np.zeros(3, np.int32), ("a", "b")),
        tmp_path / "t.parquet",
    )

    features = read_table(tmp_path / "t.parquet").features

    assert features.ctypes.data % files.TENSOR_ALIGNMENT == 0
    assert features.flags.c_contiguous and features.flags.writeable
    aligned = files.aligned_empty((5, 3), np.int32)
    assert aligned.shape == (5, 3) and aligned.dtype == np.int32
    assert aligned.ctypes.data % files.TENSOR_ALIGNMENT == 0
