"""The benchmark's arithmetic and its output shape (never its timings)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import ratios

ROOT = Path(__file__).resolve().parents[1]


def measurement(trainer: str, steady: float, with_compile: float, val_loss: float) -> dict:
    return {
        "trainer": trainer,
        "rows": 1000,
        "batch_size": 32,
        "samples_per_second_steady": steady,
        "samples_per_second_with_compile": with_compile,
        "final_val_loss": val_loss,
    }


def test_ratios_compare_keras_with_sklearn_and_fit():
    (row,) = ratios(
        [
            measurement("keras xla", 2_000_000, 500_000, 0.303),
            measurement("sklearn", 100_000, 80_000, 0.31),
            measurement("keras fit", 20_000, 15_000, 0.300),
        ]
    )
    assert row["keras_over_sklearn_steady"] == pytest.approx(20.0)
    assert row["keras_over_sklearn_with_compile"] == pytest.approx(6.25)
    assert row["keras_over_fit_steady"] == pytest.approx(100.0)
    assert row["val_loss_vs_fit"] == pytest.approx(0.01)


def test_throughput_run_writes_json(tmp_path: Path):
    output = tmp_path / "results.json"
    subprocess.run(
        [
            sys.executable, "-m", "benchmarks.run", "--sections", "throughput",
            "--rows", "1000", "--batches", "32", "--epochs", "2", "--fit-max-rows", "0",
            "--output", str(output),
        ],
        cwd=ROOT, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    results = json.loads(output.read_text())
    trainers = {item["trainer"]: item for item in results["throughput"]}
    assert set(trainers) == {"keras xla", "keras graph", "sklearn"}
    for item in trainers.values():
        assert item["rows"] == 1000 and item["train_rows"] == 600 and item["epochs"] == 2
        assert item["samples_per_second_steady"] > 0
        assert 0 < item["final_val_loss"] < 5
    (row,) = results["ratios"]
    assert row["keras_over_sklearn_steady"] == pytest.approx(
        trainers["keras xla"]["samples_per_second_steady"]
        / trainers["sklearn"]["samples_per_second_steady"]
    )
    assert row["keras_over_fit_steady"] is None


def test_a_stage_is_measured_after_its_imports_and_at_its_peak(tmp_path: Path):
    from benchmarks.run import measure_stage
    from tests.endtoend import copy_repository

    copy_repository(tmp_path)

    measured, errors = measure_stage(tmp_path, "dataset", None, 2000 * 8 * 4, "2000 rows")

    assert (tmp_path / "data" / "dataset" / "dataset.parquet").exists()
    assert "dataset: 2000 rows" in errors
    # Python, NumPy, pandas and scikit-learn are in before a row is generated.
    assert measured["after_imports_rss_bytes"] > 50 * 2**20
    assert measured["peak_rss_bytes"] >= measured["after_imports_rss_bytes"]
    assert measured["peak_over_imports_bytes"] == (
        measured["peak_rss_bytes"] - measured["after_imports_rss_bytes"]
    )
    assert measured["workers"] == 0 and measured["estimate_over_peak"] is None
