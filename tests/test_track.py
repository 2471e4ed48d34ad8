"""Tests for `pipeline.track`: per-epoch metrics as MLflow logs them, and file hashes
as DVC records them. Publishing itself runs end to end in tests/test_pipeline.py,
tests/test_trust.py and tests/test_compare.py; here, in-process on the outputs of the
real stages before it: the statuses its runs end with."""

import hashlib
import os
import shutil
import signal
import zipfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline import paths, track
from pipeline.files import file_md5, read_json
from pipeline.store import TAG_FAMILY, resolve_store
from pipeline.track import epoch_metrics


def test_epoch_metrics_use_the_epoch_as_step():
    history = pd.DataFrame(
        {
            "epoch": [1, 2],
            "loss": [0.7, 0.6],
            "accuracy": [0.5, 0.6],
            "val_loss": [0.71, 0.65],
            "val_accuracy": [0.5, 0.55],
        }
    )
    metrics = epoch_metrics(history)
    assert len(metrics) == 8
    by_key = {(metric.key, metric.step): metric.value for metric in metrics}
    assert by_key[("val_loss", 2)] == pytest.approx(0.65)
    assert by_key[("accuracy", 1)] == pytest.approx(0.5)


def test_file_md5_is_the_hash_dvc_records(tmp_path: Path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 3_000_000)
    assert file_md5(path) == hashlib.md5(b"x" * 3_000_000).hexdigest()


@pytest.fixture
def trained(trained_outputs: Path, tmp_path: Path, monkeypatch) -> Path:
    """This test's own copy of the outputs of every stage before `track`, as the working
    directory, with the embedded store (no dvc.lock: the archives are not checked
    against one)."""
    folder = tmp_path / "project"
    shutil.copytree(trained_outputs, folder)
    monkeypatch.chdir(folder)
    for variable in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        monkeypatch.delenv(variable, raising=False)
    return folder


def run_statuses(folder: Path) -> dict[str, str]:
    """The status of every run in the embedded store: `parent` or the family."""
    client = MlflowClient(resolve_store({}, folder).tracking_uri)
    runs = client.search_runs(
        [experiment.experiment_id for experiment in client.search_experiments()]
    )
    return {run.data.tags.get(TAG_FAMILY, "parent"): run.info.status for run in runs}


@pytest.mark.stages
def test_an_error_while_publishing_ends_its_runs_failed(trained: Path):
    # Logging the keras model fails once the parent and keras runs exist.
    paths.KERAS_MLFLOW_MODEL.write_bytes(b"not a zip archive")

    with pytest.raises(zipfile.BadZipFile):
        track.main()

    assert run_statuses(trained) == {"parent": "FAILED", "keras": "FAILED"}
    assert not paths.MLFLOW_RUNS.exists()


@pytest.mark.stages
@pytest.mark.parametrize(
    ("signal_number", "code"),
    # `dvc queue kill` sends SIGINT; the death of `dvc` sends the stage SIGTERM.
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
)
def test_a_signal_while_publishing_ends_its_runs_killed(
    trained: Path, monkeypatch, signal_number: int, code: int
):
    log_artifacts = mlflow.log_artifacts

    def log_then_signal(*arguments, **options):
        log_artifacts(*arguments, **options)
        os.kill(os.getpid(), signal_number)

    monkeypatch.setattr(mlflow, "log_artifacts", log_then_signal)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as exited:
            track.main()
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)

    assert exited.value.code == code
    assert run_statuses(trained) == {"parent": "KILLED"}
    assert not paths.MLFLOW_RUNS.exists()


@pytest.mark.stages
def test_a_finished_publication_is_reused(trained: Path):
    track.main()
    first = read_json(paths.MLFLOW_RUNS)
    assert run_statuses(trained) == {
        "parent": "FINISHED",
        "keras": "FINISHED",
        "sklearn": "FINISHED",
    }

    track.main()

    assert read_json(paths.MLFLOW_RUNS) == first
