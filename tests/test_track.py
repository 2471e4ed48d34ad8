import hashlib
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import Params
from pipeline.files import file_md5
from pipeline.track import (
    Revision,
    epoch_metrics,
    params_hash,
    parent_run_name,
    repository_root,
    resolve_store,
)


def test_embedded_store_is_absolute_at_the_repository_root(tmp_path: Path):
    store = resolve_store({}, tmp_path)
    assert store.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert store.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert Path(store.tracking_uri.removeprefix("sqlite:///")).is_absolute()


def test_tracking_uri_variable_overrides_the_default(tmp_path: Path):
    store = resolve_store({"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}, tmp_path)
    assert store.tracking_uri == "http://127.0.0.1:5000"
    # The server chooses where artifacts go.
    assert store.artifact_location is None


def test_queued_runs_store_in_the_main_repository(monkeypatch, tmp_path: Path):
    # dvc exp run --queue runs in a deleted copy and points DVC_ROOT at the main repo.
    main_repository = tmp_path / "main"
    main_repository.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(main_repository))
    assert repository_root() == main_repository.resolve()
    monkeypatch.delenv("DVC_ROOT")
    assert repository_root() == tmp_path.resolve()


@pytest.mark.parametrize(
    ("revision", "name"),
    [
        (Revision("0123456789abcdef", False, "tuned-palp", "0123456789abcdef"), "tuned-palp"),
        (Revision("0123456789abcdef", False, None, None), "0123456"),
        (Revision("0123456789abcdef", True, None, None), "0123456-dirty"),
    ],
)
def test_parent_run_name(revision: Revision, name: str):
    assert parent_run_name(revision) == name


def test_params_hash_follows_the_params(default_params: Params):
    same = Params.model_validate(default_params.model_dump())
    changed = default_params.model_copy(
        update={"model": default_params.model.model_copy(update={"learning_rate": 0.01})}
    )
    assert params_hash(default_params) == params_hash(same)
    assert params_hash(default_params) != params_hash(changed)
    assert len(params_hash(default_params)) == 64


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
