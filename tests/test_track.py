"""Tests for `pipeline.track`: what one publication holds in a real MLflow store, the
statuses its runs end with, and a result published once. Publishing runs in-process
on hand-made outputs of the stages before it (tests/factories.py), so that these tests
are quick enough for mutation testing; end to end it runs in tests/test_pipeline.py,
tests/test_trust.py and tests/test_compare.py."""

import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pipeline import paths, track
from pipeline.errors import PipelineError
from pipeline.files import file_md5, read_json, read_table
from pipeline.mlflow_models import check_logged_model, load_logged_model
from pipeline.publication import MLFLOW_MODELS
from pipeline.store import TAG_FAMILY, resolve_store
from pipeline.track import epoch_metrics
from tests.factories import (
    STAGE_EPOCHS,
    STAGE_SEEDS,
    STAGE_TEST_METRICS,
    built_stage_outputs,
    stage_loss,
)

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "mlp-comparison"  # params.yaml's track.experiment_name
REGISTERED_MODEL = "mlp-compare"  # params.yaml's compare.promote.registered_model_name
# The links to MLflow's UI, in the order the run's description and the log show them.
LINK_NAMES = (
    "the run list, with the verdict's columns",
    "both models' loss and val_loss per epoch",
)
DVC_EXPERIMENT = {"DVC_EXP_NAME": "tuned-palp", "DVC_EXP_BASELINE_REV": "0123456789abcdef"}


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


def stage_outputs_in(folder: Path, monkeypatch: pytest.MonkeyPatch, replicates: int) -> Path:
    """A copy of the hand-made stage outputs with the committed params, as the working
    directory, publishing to the embedded store (no dvc.lock: the archives are not
    checked against one)."""
    shutil.copytree(built_stage_outputs(replicates), folder)
    shutil.copyfile(ROOT / paths.PARAMS, folder / paths.PARAMS)
    monkeypatch.chdir(folder)
    for variable in ("MLFLOW_TRACKING_URI", "DVC_ROOT", *DVC_EXPERIMENT):
        monkeypatch.delenv(variable, raising=False)
    return folder


@contextmanager
def signal_handlers_kept() -> Iterator[None]:
    """Undo the SIGINT and SIGTERM handlers that `track.main()` installs."""
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)


@pytest.fixture(autouse=True)
def _signal_handlers_kept() -> Iterator[None]:
    with signal_handlers_kept():
        yield


@pytest.fixture
def outputs(tmp_path: Path, monkeypatch) -> Path:
    """This test's own copy of the outputs of two replicates per family."""
    return stage_outputs_in(tmp_path / "project", monkeypatch, replicates=2)


def store_client(folder: Path) -> MlflowClient:
    return MlflowClient(resolve_store({}, folder).tracking_uri)


def all_runs(folder: Path) -> list[Run]:
    client = store_client(folder)
    experiment_ids = [experiment.experiment_id for experiment in client.search_experiments()]
    return client.search_runs(experiment_ids)


def run_statuses(folder: Path) -> dict[str, str]:
    """The status of every run in the embedded store, by its name."""
    return {run.info.run_name: run.info.status for run in all_runs(folder)}


@dataclass(frozen=True)
class Published:
    """One publication of two replicates per family, made under `dvc exp run`."""

    folder: Path
    client: MlflowClient
    run_ids: dict[str, str]
    runs: dict[str, Run]  # by run name: the parent's is the DVC experiment's
    published_between: tuple[float, float]  # seconds since the epoch


def publish_in(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Published:
    """Publish two replicates per family under `dvc exp run`, in `folder`."""
    stage_outputs_in(folder, monkeypatch, replicates=2)
    for variable, value in DVC_EXPERIMENT.items():
        monkeypatch.setenv(variable, value)
    started = time.time()
    track.main()
    runs = {run.info.run_name: run for run in all_runs(folder)}
    return Published(
        folder,
        store_client(folder),
        read_json(folder / paths.MLFLOW_RUNS),
        runs,
        (started, time.time()),
    )


def test_a_publication_holds_everything_it_promises(tmp_path: Path, monkeypatch):
    """One publication, checked in one test: mutation testing runs only the tests that
    called the changed function, and a publication shared by several tests would be
    made by the first of them only."""
    published = publish_in(tmp_path / "project", monkeypatch)
    check_runs(published)
    check_lineage(published)
    check_parent(published)
    check_timestamps_and_steps(published)
    check_champion(published)
    check_run_ids_and_links(published)
    for family in ("keras", "sklearn"):
        check_family_run(published, family)
        check_inputs(published, family)
        check_model(published, family)
        for replicate in (0, 1):
            check_replicate_run(published, family, replicate)


def check_runs(published: Published):
    runs, run_ids = published.runs, published.run_ids
    assert sorted(runs) == [
        "keras",
        "keras#0",
        "keras#1",
        "sklearn",
        "sklearn#0",
        "sklearn#1",
        "tuned-palp",
    ]
    assert {run.info.status for run in runs.values()} == {"FINISHED"}
    parent = runs["tuned-palp"]
    assert parent.info.run_id == run_ids["parent_run_id"]
    assert {run.info.experiment_id for run in runs.values()} == {run_ids["experiment_id"]}
    assert published.client.get_experiment(run_ids["experiment_id"]).name == EXPERIMENT
    for family in ("keras", "sklearn"):
        child = runs[family]
        assert child.info.run_id == run_ids[f"{family}_run_id"]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags[TAG_FAMILY] == family
        assert child.data.tags["model_id"] == run_ids[f"{family}_model_id"]
        for replicate in (0, 1):
            nested = runs[f"{family}#{replicate}"]
            assert nested.data.tags["mlflow.parentRunId"] == child.info.run_id
            assert nested.data.tags[TAG_FAMILY] == family
            assert nested.data.tags["replicate"] == str(replicate)
            assert nested.data.tags["seed"] == str(STAGE_SEEDS[family][replicate])


def check_lineage(published: Published):
    from pipeline.config import flatten, load_params
    from pipeline.publication import params_hash, publish_key

    params = load_params(published.folder / paths.PARAMS)
    expected_params = {key: str(value) for key, value in flatten(params).items()}
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(published.folder)
        key = publish_key(params)
    for name, run in published.runs.items():
        tags = run.data.tags
        assert tags["dvc.experiment"] == "tuned-palp", name
        assert tags["dvc.baseline_rev"] == "0123456789abcdef"
        assert tags["mlflow.source.git.commit"] == "0123456789abcdef"
        assert tags["git.dirty"] == "false"
        assert tags["params_hash"] == params_hash(params)
        assert tags["publish_key"] == key
        assert tags["pipeline.pid"] == str(os.getpid())
        assert tags["pipeline.host"] == os.uname().nodename
        if "#" not in name:  # the replicates' runs hold no params of their own
            assert run.data.params == expected_params, name


def check_parent(published: Published):
    parent = published.runs["tuned-palp"]
    tags, metrics = parent.data.tags, parent.data.metrics
    assert tags["winner"] == "sklearn"
    assert tags["significant"] == "true"
    assert tags["primary_metric"] == "f1"
    assert tags["verdict_level"] == "libraries, 2 replicates"
    assert tags["verdict"] == "sklearn wins"
    links = read_json(published.folder / paths.MLFLOW_RUNS)["links"]
    # compare's description, then where to look in MLflow's UI.
    assert tags["mlflow.note.content"] == (
        "**sklearn** wins on F1.\n\n#### In the MLflow UI\n\n"
        "With `mlflow ui` running (see the README), open:\n\n```\n"
        + "".join(f"# {name}\n{links[name]}\n" for name in LINK_NAMES)
        + "```\n"
    )
    # Rounded to 4 significant digits for the run list.
    assert metrics == {
        "test_f1_difference": -0.06251,
        "p_value": 0.01235,
        "p_keras_better": 0.03123,
        "keras_test_f1": 0.625,
        "sklearn_test_f1": 0.75,
        "keras_test_roc_auc": 0.8125,
        "sklearn_test_roc_auc": 0.875,
        "keras_test_accuracy": 0.75,
        "sklearn_test_accuracy": 0.8125,
        "keras_test_log_loss": 0.5,
        "sklearn_test_log_loss": 0.4375,
    }
    artifacts = artifact_files(published.client, parent.info.run_id)
    assert artifacts == {
        "classes.json": (published.folder / paths.CLASSES).read_bytes(),
        "figures/loss.png": b"fake png\n",
        "figures/roc.png": b"fake png\n",
        "metrics.json": (published.folder / paths.METRICS).read_bytes(),
        "preprocessing.json": (published.folder / paths.PREPROCESSING).read_bytes(),
        "preprocessor.skops": (published.folder / paths.PREPROCESSOR).read_bytes(),
        "report/comparison.html": (published.folder / paths.REPORT_HTML).read_bytes(),
        "report/comparison.md": (published.folder / paths.REPORT_MARKDOWN).read_bytes(),
        "report/verdict.json": (published.folder / paths.VERDICT).read_bytes(),
    }
    experiment = published.client.get_experiment(published.run_ids["experiment_id"])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(experiment.tags["mlflow.sharedViewState.mlp-compare"])
    assert view["selectedColumns"] == [
        "tags.`verdict`",
        "metrics.`keras_test_f1`",
        "metrics.`sklearn_test_f1`",
        "metrics.`p_value`",
    ]


def artifact_files(client: MlflowClient, run_id: str, folder: str = "") -> dict[str, bytes]:
    """Every artifact file of a run (logged models are not artifacts), by its path."""
    files = {}
    for entry in client.list_artifacts(run_id, folder or None):
        if entry.is_dir:
            files |= artifact_files(client, run_id, entry.path)
        else:
            local = client.download_artifacts(run_id, entry.path)
            files[entry.path] = Path(local).read_bytes()
    return files


def mean_loss(family: str, epoch: int) -> float:
    """The training loss of the family's curve: the mean of its two replicates."""
    return (stage_loss(family, 0, epoch) + stage_loss(family, 1, epoch)) / 2


def check_family_run(published: Published, family: str):
    run = published.runs[family]
    assert run.data.metrics == {
        **{f"test_{name}": value for name, value in STAGE_TEST_METRICS[family].items()},
        "replicate_count": 2.0,
        "epochs_trained": float(STAGE_EPOCHS),
        "best_epoch": float(STAGE_EPOCHS),
        "train_seconds": 2.5,
        "samples_per_second": 9.6,
        # The last epoch's values, of the replicates' mean curve.
        "loss": pytest.approx(mean_loss(family, 3)),
        "val_loss": pytest.approx(mean_loss(family, 3) + 0.0625),
        "accuracy": 0.6875,
        "val_accuracy": 0.59375,
    }
    history = read_history_of(published, run.info.run_id)
    assert history["loss"] == pytest.approx(
        {epoch: mean_loss(family, epoch) for epoch in (1, 2, 3)}
    )
    assert history["accuracy"] == {1: 0.5625, 2: 0.625, 3: 0.6875}
    assert history["val_accuracy"] == {1: 0.53125, 2: 0.5625, 3: 0.59375}
    assert artifact_files(published.client, run.info.run_id) == {
        "history.csv": (published.folder / paths.HISTORIES[family]).read_bytes()
    }


def read_history_of(published: Published, run_id: str) -> dict[str, dict[int, float]]:
    """Every per-epoch metric of a run: its value by step."""
    return {
        key: {
            metric.step: metric.value for metric in published.client.get_metric_history(run_id, key)
        }
        for key in ("loss", "accuracy", "val_loss", "val_accuracy")
    }


def check_replicate_run(published: Published, family: str, replicate: int):
    run = published.runs[f"{family}#{replicate}"]
    assert run.data.metrics == {
        **{
            f"test_{name}": value - 0.03125 * replicate
            for name, value in STAGE_TEST_METRICS[family].items()
        },
        "epochs_trained": float(STAGE_EPOCHS),
        "best_epoch": float(STAGE_EPOCHS - replicate),
        "loss": stage_loss(family, replicate, 3),
        "val_loss": stage_loss(family, replicate, 3) + 0.0625,
        "accuracy": 0.6875,
        "val_accuracy": 0.59375,
    }
    history = read_history_of(published, run.info.run_id)
    assert history["loss"] == {epoch: stage_loss(family, replicate, epoch) for epoch in (1, 2, 3)}
    assert history["val_loss"] == {
        epoch: stage_loss(family, replicate, epoch) + 0.0625 for epoch in (1, 2, 3)
    }
    assert run.data.params == {}


def check_inputs(published: Published, family: str):
    inputs = published.runs[family].inputs.dataset_inputs
    by_context = {entry.tags[0].value: entry.dataset for entry in inputs if entry.tags}
    assert sorted(by_context) == ["testing", "training", "validation"]
    for context, name, path in (
        ("training", "train", paths.TRAIN),
        ("validation", "validation", paths.VALIDATION),
        ("testing", "test", paths.TEST),
    ):
        dataset = by_context[context]
        assert dataset.name == name
        assert dataset.digest == file_md5(published.folder / path)
        assert json.loads(dataset.source) == {"uri": str(path)}
        schema = json.loads(dataset.schema)["mlflow_colspec"]
        assert [(column["name"], column["type"]) for column in schema] == [
            ("a", "float"),
            ("b", "float"),
            ("c", "float"),
            ("label", "integer"),
        ]


def check_model(published: Published, family: str):
    """The logged model is the family's archive, under this run. The scikit-learn model
    is loaded and predicts; the Keras one is checked as `load_logged_model` checks it
    before loading, without TensorFlow, which can hang in a forked process (mutmut
    runs each mutant's tests in a fork)."""
    model_id = published.run_ids[f"{family}_model_id"]
    logged = published.client.get_logged_model(model_id)
    assert logged.source_run_id == published.run_ids[f"{family}_run_id"]
    mlflow.set_tracking_uri(resolve_store({}, published.folder).tracking_uri)
    with tempfile.TemporaryDirectory() as work:
        directory = Path(mlflow.artifacts.download_artifacts(f"models:/{model_id}", dst_path=work))
        assert check_logged_model(directory, f"models:/{model_id}") == family
        logged_files = {
            str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file()
        }
        with zipfile.ZipFile(published.folder / MLFLOW_MODELS[family]) as saved:
            assert set(saved.namelist()) <= logged_files  # every file the stage saved
    if family == "sklearn":
        model = load_logged_model(f"models:/{model_id}")
        sample = read_table(published.folder / paths.TRAIN).features
        probabilities = np.asarray(model.predict(sample))
        assert probabilities.shape == (8, 2)
        assert np.allclose(probabilities.sum(axis=1), 1.0)


def check_timestamps_and_steps(published: Published):
    # MLflow's UI plots and sorts by these: milliseconds since the epoch, and the
    # epoch as the step of a curve; a value logged once is at step 0.
    start, end = (int(seconds * 1000) for seconds in published.published_between)
    for run in published.runs.values():
        for key in run.data.metrics:
            history = published.client.get_metric_history(run.info.run_id, key)
            assert all(start <= metric.timestamp <= end for metric in history), key
            if key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                assert [metric.step for metric in history] == [1, 2, 3]
            else:
                assert [metric.step for metric in history] == [0], (run.info.run_name, key)


def check_champion(published: Published):
    champion = published.client.get_model_version_by_alias(REGISTERED_MODEL, "champion")
    assert int(champion.version) == 1
    assert champion.source == f"models:/{published.run_ids['sklearn_model_id']}"
    assert champion.tags == {
        "parent_run_id": published.run_ids["parent_run_id"],
        "model_family": "sklearn",
        "test_f1": "0.875123",
    }
    assert read_json(published.folder / paths.PUBLISHED) == {
        "mlflow_run": published.run_ids["parent_run_id"],
        "champion_version": 1,
    }


def check_run_ids_and_links(published: Published):
    written = read_json(published.folder / paths.MLFLOW_RUNS)
    experiment_id = written["experiment_id"]
    assert written["links"] == {
        "the run list, with the verdict's columns": "http://127.0.0.1:5000/#/experiments/"
        f"{experiment_id}/runs?viewStateShareKey=mlp-compare&workflowType=machine_learning",
        "both models' loss and val_loss per epoch": track.curves_link(
            "http://127.0.0.1:5000", experiment_id, written
        ),
    }
    assert set(written) == {
        "experiment_id",
        "parent_run_id",
        "keras_run_id",
        "sklearn_run_id",
        "keras_model_id",
        "sklearn_model_id",
        "links",
    }


def test_one_replicate_publishes_no_nested_runs(tmp_path: Path, monkeypatch):
    folder = stage_outputs_in(tmp_path / "project", monkeypatch, replicates=1)
    verdict = read_json(paths.VERDICT) | {"promotion": "refused"}
    paths.VERDICT.write_text(json.dumps(verdict), encoding="utf-8")
    for path in paths.TIMINGS.values():
        path.unlink()  # as after `dvc pull`, which restores DVC outputs only

    track.main()

    runs = {run.info.run_name: run for run in all_runs(folder)}
    # Outside `dvc exp run` and outside git: the parent is named after the commit.
    assert sorted(runs) == ["keras", "sklearn", "unknown"]
    parent = runs["unknown"]
    assert parent.data.tags["verdict_level"] == "two trained models"
    assert "p_keras_better" not in parent.data.metrics
    assert "dvc.experiment" not in parent.data.tags
    assert "dvc.baseline_rev" not in parent.data.tags
    assert runs["keras"].data.metrics["replicate_count"] == 1.0
    assert "train_seconds" not in runs["keras"].data.metrics
    assert "samples_per_second" not in runs["sklearn"].data.metrics
    # Not approved: nothing registered, no champion version in DVC's metrics.
    assert store_client(folder).search_registered_models() == []
    assert read_json(paths.PUBLISHED) == {"mlflow_run": parent.info.run_id}


def test_an_error_while_publishing_ends_every_run_of_it_failed(outputs: Path):
    # Logging the sklearn model fails once keras' runs and its replicates' are finished.
    paths.SKLEARN_MLFLOW_MODEL.write_bytes(b"not a zip archive")

    with pytest.raises(zipfile.BadZipFile):
        track.main()

    assert run_statuses(outputs) == {
        "unknown": "FAILED",
        "keras": "FAILED",
        "keras#0": "FAILED",
        "keras#1": "FAILED",
        "sklearn": "FAILED",
    }
    assert not paths.MLFLOW_RUNS.exists()
    assert not paths.PUBLISHED.exists()


@pytest.mark.parametrize(
    ("signal_number", "code"),
    # `dvc queue kill` sends SIGINT; the death of `dvc` sends the stage SIGTERM.
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
)
def test_a_signal_while_publishing_ends_its_runs_killed(
    outputs: Path, monkeypatch, caplog, signal_number: int, code: int
):
    log_artifacts = mlflow.log_artifacts

    def log_then_signal(*arguments, **options):
        log_artifacts(*arguments, **options)
        os.kill(os.getpid(), signal_number)

    monkeypatch.setattr(mlflow, "log_artifacts", log_then_signal)
    with pytest.raises(SystemExit) as exited, caplog.at_level(logging.ERROR):
        track.main()

    assert exited.value.code == code
    assert [record.getMessage() for record in caplog.records] == [
        f"track: stopped by {signal.Signals(signal_number).name}; unfinished runs are marked KILLED"
    ]
    assert run_statuses(outputs) == {"unknown": "KILLED"}
    assert not paths.MLFLOW_RUNS.exists()


def test_a_signal_after_the_last_write_still_ends_the_runs_killed(outputs: Path, monkeypatch):
    end_run = mlflow.end_run

    def end_then_signal(*arguments, **options):
        end_run(*arguments, **options)
        if mlflow.active_run() is None:  # the parent has just ended
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(mlflow, "end_run", end_then_signal)
    with pytest.raises(SystemExit) as exited:
        track.main()

    assert exited.value.code == 143
    assert set(run_statuses(outputs).values()) == {"KILLED"}
    assert len(run_statuses(outputs)) == 7


def test_a_finished_publication_is_reused_and_an_unfinished_one_is_not(outputs: Path, caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.track"):
        track.main()
    first = read_json(paths.MLFLOW_RUNS)
    uri = resolve_store({}, outputs).tracking_uri
    assert caplog.records[0].getMessage() == (
        f"track: published parent run {first['parent_run_id']} in experiment "
        f"'mlp-comparison' at {uri}"
    )
    caplog.clear()
    published = read_json(paths.PUBLISHED)
    assert len(all_runs(outputs)) == 7
    # Another experiment's publication pointed the run list's view at its own metric.
    client = store_client(outputs)
    view_key = "mlflow.sharedViewState.mlp-compare"
    view = client.get_experiment(first["experiment_id"]).tags[view_key]
    client.set_experiment_tag(first["experiment_id"], view_key, "{}")
    client.set_tag(first["parent_run_id"], "verdict", "keras wins")

    with caplog.at_level(logging.INFO, logger="pipeline.track"):
        track.main()

    assert read_json(paths.MLFLOW_RUNS) == first
    assert read_json(paths.PUBLISHED) == published
    assert len(all_runs(outputs)) == 7
    assert len(client.search_model_versions(f"name = '{REGISTERED_MODEL}'")) == 1
    assert client.get_experiment(first["experiment_id"]).tags[view_key] == view
    assert client.get_run(first["parent_run_id"]).data.tags["verdict"] == "sklearn wins"
    assert [record.getMessage() for record in caplog.records] == [
        "track: already published (same params and results) as parent run "
        f"{first['parent_run_id']} in experiment 'mlp-comparison' at {uri}",
        "track: Promoted sklearn to the Model Registry as mlp-compare version 1, alias champion.",
        *(f"track: MLflow UI, {name}: {first['links'][name]}" for name in LINK_NAMES),
    ]

    # A publication that did not finish is never reused, nor one with a family's run
    # that did not: the same results are published anew.
    client.set_terminated(first["parent_run_id"], "FAILED")
    track.main()
    second = read_json(paths.MLFLOW_RUNS)
    assert second["parent_run_id"] != first["parent_run_id"]
    assert second["experiment_id"] == first["experiment_id"]
    # The newer publication's winner is the champion now.
    assert int(client.get_model_version_by_alias(REGISTERED_MODEL, "champion").version) == 2
    client.set_terminated(second["sklearn_run_id"], "FAILED")
    track.main()
    assert read_json(paths.MLFLOW_RUNS)["parent_run_id"] != second["parent_run_id"]
    assert len(all_runs(outputs)) == 21


def test_an_archive_changed_since_its_stage_is_refused_before_the_store_exists(outputs: Path):
    recorded = {"path": str(paths.SKLEARN_MLFLOW_MODEL), "md5": "0" * 32}
    Path("dvc.lock").write_text(
        json.dumps({"schema": "2.0", "stages": {"train_sklearn": {"outs": [recorded]}}})
    )
    with pytest.raises(PipelineError, match=f"^{paths.SKLEARN_MLFLOW_MODEL}: MD5 "):
        track.main()
    # A refusal leaves no trace: no store was created.
    assert not (outputs / "mlflow.db").exists()
    assert not paths.MLFLOW_RUNS.exists()
