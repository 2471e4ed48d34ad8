"""End to end: the real `dvc repro`, `dvc exp run` and `dvc queue` in a temporary copy of
the repository, checked through the real MLflow store with `MlflowClient`."""

import json
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline import paths
from pipeline.config import flatten, load_params
from pipeline.files import read_json, read_table
from tests.endtoend import (
    END_TO_END_EPOCHS,
    END_TO_END_EXPERIMENT,
    SECRET,
    copy_project,
    execute,
)

pytestmark = pytest.mark.slow

EPOCHS = END_TO_END_EPOCHS
EXPERIMENT = END_TO_END_EXPERIMENT
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
TEST_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")


@pytest.fixture(scope="module")
def project(built_project: Path) -> Path:
    """The built project itself: the tests using it only read."""
    return built_project


@pytest.fixture
def scratch(built_project: Path, tmp_path: Path) -> Path:
    """A copy of the built project to change, with an empty MLflow store."""
    return copy_project(built_project, tmp_path / "project")


def client_for(project: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def parent_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return [run for run in runs if "mlflow.parentRunId" not in run.data.tags]


def children_of(client: MlflowClient, parent_id: str) -> dict[str, object]:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    return {run.data.tags["model_family"]: run for run in runs}


def test_metrics_and_plots_for_both_models(project: Path):
    metrics = read_json(project / paths.METRICS)
    assert set(metrics) == {"keras", "sklearn"}
    for family in ("keras", "sklearn"):
        assert set(metrics[family]) == set(TEST_METRICS)
        for name in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc"):
            assert 0.0 <= metrics[family][name] <= 1.0
        history = (project / f"data/train_{family}/history.csv").read_text().splitlines()
        assert len(history) == 1 + EPOCHS
        test_rows = len(read_table(project / paths.TEST).labels)
        confusion = (project / paths.confusion(family)).read_text().splitlines()
        assert len(confusion) == 1 + test_rows
    for figure in ("loss", "accuracy", "roc", "precision_recall", "confusion"):
        assert (project / paths.FIGURES / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"
    # metrics.json is a DVC output, not DVC metrics (headline.json is), but DVC
    # shows any JSON file it is pointed at.
    shown = json.loads(
        execute(project, "dvc", "metrics", "show", str(paths.METRICS), "--json").stdout
    )
    # One entry: the workspace (keyed "" or "workspace", depending on the DVC version).
    (workspace,) = shown.values()
    shown_metrics = workspace["data"]["data/evaluate/metrics.json"]["data"]
    assert shown_metrics == metrics
    rendered = execute(project, "dvc", "plots", "show", "--json").stdout
    for plot_file in ("roc_keras.csv", "roc_sklearn.csv", "confusion_keras.csv", "history.csv"):
        assert plot_file in rendered


def test_mlflow_holds_one_parent_with_a_child_per_model(project: Path):
    client = client_for(project)
    run_ids = read_json(project / paths.MLFLOW_RUNS)
    (parent,) = parent_runs(client)
    assert parent.info.run_id == run_ids["parent_run_id"]
    assert parent.info.status == "FINISHED"
    commit = execute(project, "git", "rev-parse", "HEAD").stdout.strip()
    assert parent.data.tags["mlflow.source.git.commit"] == commit
    assert parent.info.run_name == commit[:7]
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id, "figures")}
    assert "figures/roc.png" in artifacts and "figures/loss.png" in artifacts

    children = children_of(client, parent.info.run_id)
    assert set(children) == {"keras", "sklearn"}
    metrics = read_json(project / paths.METRICS)
    params = load_params(project / "params.yaml")
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    split_hashes = {out["path"]: out["md5"] for out in lock["stages"]["split"]["outs"]}
    for family, child in children.items():
        assert child.info.run_id == run_ids[f"{family}_run_id"]
        assert child.info.status == "FINISHED"
        assert child.data.params == {key: str(value) for key, value in flatten(params).items()}
        for name in EPOCH_METRICS:
            history = client.get_metric_history(child.info.run_id, name)
            assert sorted(point.step for point in history) == list(range(1, EPOCHS + 1))
        for name in TEST_METRICS:
            assert child.data.metrics[f"test_{name}"] == pytest.approx(metrics[family][name])
        assert child.data.metrics["train_seconds"] > 0
        inputs = {item.dataset.name: item.dataset.digest for item in child.inputs.dataset_inputs}
        assert inputs == {
            "train": split_hashes["data/split/train.parquet"],
            "validation": split_hashes["data/split/validation.parquet"],
            "test": split_hashes["data/split/test.parquet"],
        }
        assert child.data.tags["params_hash"] == parent.data.tags["params_hash"]


def test_logged_models_predict_like_the_stage_files(project: Path, monkeypatch):
    from pipeline.train_keras import load_model as load_keras_model
    from pipeline.train_sklearn import load_model as load_sklearn_model

    # MLflow refuses to deserialize any scikit-learn model, skops included, unless
    # told that the source is trusted: here it is our own store.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    run_ids = read_json(project / paths.MLFLOW_RUNS)
    features = read_table(project / paths.TEST).features
    keras_logged = mlflow.pyfunc.load_model(f"models:/{run_ids['keras_model_id']}")
    keras_local = load_keras_model(project / paths.KERAS_MODEL)
    np.testing.assert_allclose(
        keras_logged.predict(features), keras_local.predict(features, verbose=0), rtol=1e-6
    )
    sklearn_logged = mlflow.pyfunc.load_model(f"runs:/{run_ids['sklearn_run_id']}/model")
    sklearn_local = load_sklearn_model(project / paths.SKLEARN_MODEL)
    np.testing.assert_array_equal(
        sklearn_logged.predict(features), sklearn_local.predict_proba(features)
    )
    assert keras_logged.metadata.signature is not None
    assert sklearn_logged.metadata.signature is not None


def test_second_repro_does_nothing(project: Path):
    before = len(parent_runs(client_for(project)))
    completed = execute(project, "dvc", "repro")
    assert "Running stage" not in completed.stdout
    assert len(parent_runs(client_for(project))) == before


def test_password_never_reaches_the_store(project: Path):
    stored = [project / "mlflow.db", *(project / "mlartifacts").rglob("*")]
    for path in stored:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_parameter_experiment_adds_a_comparison(scratch: Path):
    project = scratch
    execute(project, "dvc", "exp", "run", "-n", "faster", "-S", "model.learning_rate=0.01")
    client = client_for(project)
    (new_parent,) = parent_runs(client)
    assert new_parent.info.run_name == "faster"
    assert new_parent.data.tags["dvc.experiment"] == "faster"
    children = children_of(client, new_parent.info.run_id)
    assert {child.data.params["model.learning_rate"] for child in children.values()} == {"0.01"}
    shown = json.loads(execute(project, "dvc", "exp", "show", "--json").stdout)
    experiments = {
        experiment["name"]: experiment["data"]
        for baseline in shown
        for group in baseline.get("experiments") or []
        for experiment in group["revs"]
    }
    published = experiments["faster"]["metrics"]["data/track/published.json"]["data"]
    assert published["mlflow_run"] == new_parent.info.run_id
    headline = experiments["faster"]["metrics"]["data/compare/headline.json"]["data"]
    assert headline["verdict"] == new_parent.data.tags["verdict"]


def test_queued_experiments_land_in_the_main_store(scratch: Path):
    """Four queued experiments, two at a time, racing to create a fresh SQLite store."""
    project = scratch
    for epochs in (1, 2, 4, 5):
        execute(project, "dvc", "exp", "run", "--queue", "-n", f"queued-{epochs}",
                "-S", f"model.epochs={epochs}")  # fmt: skip
    execute(project, "dvc", "queue", "start", "-j", "2")
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = execute(project, "dvc", "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert "Failed" not in status, status
    client = client_for(project)
    parents = parent_runs(client)
    assert sorted(run.info.run_name for run in parents) == [
        "queued-1",
        "queued-2",
        "queued-4",
        "queued-5",
    ]
    for parent in parents:
        assert parent.info.status == "FINISHED"
        epochs = int(parent.info.run_name.split("-")[1])
        children = children_of(client, parent.info.run_id)
        assert set(children) == {"keras", "sklearn"}
        for child in children.values():
            assert child.info.status == "FINISHED"
            for name in EPOCH_METRICS:
                history = client.get_metric_history(child.info.run_id, name)
                assert sorted(point.step for point in history) == list(range(1, epochs + 1))
            # Artifacts live at the main repository root, not in the deleted copy.
            assert child.info.artifact_uri.startswith((project / "mlartifacts").as_uri())
            model = client.get_logged_model(child.data.tags["model_id"])
            assert model.source_run_id == child.info.run_id
    assert not list((project / ".dvc" / "tmp" / "exps").glob("tmp*/mlflow.db"))
