"""`dataset` refuses what a later stage would refuse about the data and the params, and
what this machine's memory cannot hold, before it writes anything: run as the user runs
it (`python -m pipeline.dataset`), one line, exit code 2, the previous outputs kept."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import paths
from pipeline.config import parse_params
from pipeline.errors import PipelineError
from pipeline.preflight import check_resampled_categories

ROOT = Path(__file__).resolve().parents[1]
PREVIOUS_DATASET = b"the previous data set"
PREVIOUS_CLASSES = '{"target": "approved", "classes": ["no", "yes"]}'


def default_raw() -> dict:
    return yaml.safe_load((ROOT / paths.PARAMS).read_text(encoding="utf-8"))


def run_dataset(project: Path, changes: dict[str, dict]) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline.dataset` in `project` with these params sections changed,
    over previous outputs that it must keep."""
    raw = default_raw()
    for section, values in changes.items():
        raw[section] |= values
    (project / paths.PARAMS).write_text(yaml.safe_dump(raw), encoding="utf-8")
    (project / paths.DATASET).parent.mkdir(parents=True, exist_ok=True)
    (project / paths.DATASET).write_bytes(PREVIOUS_DATASET)
    (project / paths.CLASSES).write_text(PREVIOUS_CLASSES)
    variables = {**os.environ, "PYTHONPATH": str(ROOT)}
    variables.pop("PIPELINE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.dataset"],
        cwd=project,
        env=variables,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_refused(completed: subprocess.CompletedProcess[str], project: Path) -> str:
    """The one error line; the previous outputs untouched, nothing beside them."""
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
    assert (project / paths.DATASET).read_bytes() == PREVIOUS_DATASET
    assert (project / paths.CLASSES).read_text() == PREVIOUS_CLASSES
    assert sorted(path.name for path in (project / paths.DATASET).parent.iterdir()) == [
        "classes.json",
        "dataset.parquet",
    ]
    return lines[0]


def test_a_number_to_predict_is_refused_by_dataset_not_split(tmp_path: Path) -> None:
    # 500 values of 4 rows each: every class has the 3 rows a split needs, but 400
    # test rows cannot hold a row of each of 500 classes.
    rng = np.random.default_rng(0)
    prices = np.repeat(np.arange(500) + 0.5, 4)
    table = pd.DataFrame({"size": rng.normal(size=2000), "price": rng.permutation(prices)})
    table.to_csv(tmp_path / "prices.csv", index=False)

    completed = run_dataset(
        tmp_path, {"dataset": {"source": "file", "path": "prices.csv", "target": "price"}}
    )

    assert assert_refused(completed, tmp_path) == (
        "error: prices.csv: target column 'price' has 500 classes in 2000 rows, but "
        "split.test_size = 0.2 and split.validation_size = 0.2 leave 400 test rows; every "
        "split needs a row of each class (a number to predict rather than classes?)"
    )


def test_many_rare_classes_are_summarized_in_one_short_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {"size": rng.normal(size=1000), "price": np.repeat(np.arange(500) + 0.5, 2)}
    )
    table.to_csv(tmp_path / "prices.csv", index=False)

    completed = run_dataset(
        tmp_path, {"dataset": {"source": "file", "path": "prices.csv", "target": "price"}}
    )

    line = assert_refused(completed, tmp_path)
    assert line == (
        "error: prices.csv: target column 'price' has 500 classes, 500 of them in fewer than "
        "3 rows (0.5 (2 rows), 1.5 (2 rows), 2.5 (2 rows), ...); the stratified split needs "
        "3 rows of each class (one per split)"
    )


def test_a_batch_larger_than_the_train_rows_is_refused_by_dataset(tmp_path: Path) -> None:
    # iris: 150 rows, 90 of them for training; the trainers would refuse batch 100.
    completed = run_dataset(tmp_path, {"dataset": {"source": "iris"}, "model": {"batch_size": 100}})

    assert assert_refused(completed, tmp_path) == (
        "error: model.batch_size = 100: larger than the 90 training rows; allowed: 1 to 90"
    )


def loans_with_a_rare_category(project: Path) -> None:
    loans = pd.read_csv(ROOT / "examples" / "loans.csv")
    loans.loc[0, "region"] = "a region of one row"
    loans.to_csv(project / "loans.csv", index=False)


def test_a_rare_category_with_resampled_splits_is_refused_by_dataset(tmp_path: Path) -> None:
    loans_with_a_rare_category(tmp_path)

    completed = run_dataset(
        tmp_path,
        {
            "dataset": {"source": "file", "path": "loans.csv", "target": "approved"},
            "replicates": {"resample_split": True},
        },
    )

    line = assert_refused(completed, tmp_path)
    assert line.startswith("error: replicates.resample_split = true: replicate ")
    assert line.endswith(
        "train rows encode to other features than replicate 0's (first: "
        "'region_a region of one row', a rare category); allowed here: false"
    )


def test_resampled_splits_with_common_categories_pass() -> None:
    loans = pd.read_csv(ROOT / "examples" / "loans.csv")
    labels = pd.factorize(loans.pop("approved"), sort=True)[0].astype(np.int32)
    raw = default_raw()
    raw["replicates"]["resample_split"] = True
    params = parse_params(raw)

    check_resampled_categories(loans, labels, params)

    loans.loc[0, "region"] = "a region of one row"
    with pytest.raises(PipelineError, match="a rare category"):
        check_resampled_categories(loans, labels, params)


def test_a_network_too_large_for_memory_is_refused_before_generating(tmp_path: Path) -> None:
    # 100,000 inputs x 100,000 units: 10^10 weights of each of 6 replicates.
    completed = run_dataset(
        tmp_path,
        {
            "dataset": {"n_samples": 100, "n_features": 100_000, "n_informative": 2},
            "model": {"hidden_layers": [100_000]},
        },
    )

    line = assert_refused(completed, tmp_path)
    assert re.fullmatch(
        r"error: model\.hidden_layers = \[100000\]: train_keras would need about 111\d\.\d GiB "
        r"of memory \(6 replicates of 10,000,200,001 weights: 1117\.6 GiB\), more than the "
        r"[\d.]+ [GM]iB available \((MemAvailable in /proc/meminfo|the cgroup's memory\.max "
        r"less memory\.current)\); make the data or the network smaller",
        line,
    ), line


def test_a_file_larger_than_memory_allows_is_refused_before_loading(tmp_path: Path) -> None:
    # A few real rows, then a sparse terabyte: loading would need far more than any
    # machine here has, and the estimate from the first rows says so without reading on.
    path = tmp_path / "huge.csv"
    path.write_text("a,b,approved\n1.25,2.5,yes\n3.5,4.75,no\n5.5,6.25,yes\n")
    with open(path, "r+b") as file:
        file.truncate(1 << 40)

    completed = run_dataset(
        tmp_path, {"dataset": {"source": "file", "path": "huge.csv", "target": "approved"}}
    )

    line = assert_refused(completed, tmp_path)
    assert re.fullmatch(
        r"error: dataset\.path = 'huge\.csv': \w+ would need about [\d.]+ GiB of memory "
        r"\(.*[\d,]+ (rows as loaded|test predictions|train rows): [\d.]+ GiB\), more than the "
        r"[\d.]+ [GM]iB available .*",
        line,
    ), line


def run_stage(project: Path, stage: str) -> subprocess.CompletedProcess[str]:
    variables = {**os.environ, "PYTHONPATH": str(ROOT)}
    variables.pop("PIPELINE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", f"pipeline.{stage}"],
        cwd=project,
        env=variables,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_trainer_run_without_dataset_checks_its_own_memory(tmp_path: Path) -> None:
    # Only model.hidden_layers changed since dataset and split ran: DVC reruns the
    # trainers alone, and train_keras refuses 64 replicates of 10^8 weights itself.
    raw = default_raw()
    raw["replicates"]["count"] = 64
    (tmp_path / paths.PARAMS).write_text(yaml.safe_dump(raw), encoding="utf-8")
    for stage in ("dataset", "split"):
        assert run_stage(tmp_path, stage).returncode == 0
    raw["model"]["hidden_layers"] = [100_000, 1000]
    (tmp_path / paths.PARAMS).write_text(yaml.safe_dump(raw), encoding="utf-8")

    completed = run_stage(tmp_path, "train_keras")

    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert errors[0].startswith(
        "error: model.hidden_layers = [100000, 1000]: train_keras would need about "
    )
    assert not (tmp_path / paths.KERAS_MODEL).parent.exists()
