import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline import paths, track
from pipeline.config import Params
from pipeline.errors import PipelineError
from pipeline.files import file_md5, read_json
from pipeline.track import (
    HTTP_RETRY_POLICY,
    TAG_FAMILY,
    TAG_HOST,
    TAG_PID,
    Revision,
    Store,
    connect,
    ensure_experiment,
    epoch_metrics,
    mark_orphans_killed,
    open_store,
    params_hash,
    parent_run_name,
    redact,
    repository_root,
    resolve_store,
)
from tests.factories import StoreStandIn

ROOT = Path(__file__).resolve().parents[1]


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


def test_redact_hides_credentials():
    assert redact("http://alice:secret@127.0.0.1:5000/") == "http://127.0.0.1:5000/"
    assert redact("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_server_is_one_line_naming_the_uri():
    uri = f"http://bob:hunter2@127.0.0.1:{free_port()}"
    with pytest.raises(PipelineError) as caught:
        connect(Store(tracking_uri=uri, artifact_location=None))
    message = str(caught.value)
    assert message.startswith(f"MLflow tracking store {redact(uri)} is unreachable")
    assert "hunter2" not in message
    assert "\n" not in message


@pytest.fixture
def default_retry_policy(monkeypatch):
    """None of MLflow's HTTP variables set; `connect` sets its own, undone afterwards."""
    for variable in HTTP_RETRY_POLICY:
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)


def test_a_store_that_drops_connections_is_tried_three_times(default_retry_policy):
    with StoreStandIn(answer=False) as stand_in, pytest.raises(PipelineError) as caught:
        connect(Store(tracking_uri=stand_in.uri, artifact_location=None))
    assert len(stand_in.requests) == 3
    assert str(caught.value).startswith(f"MLflow tracking store {stand_in.uri} is unreachable")


def test_a_slow_store_is_waited_for_unless_the_environment_sets_a_shorter_timeout(
    default_retry_policy, monkeypatch
):
    # A 2 s answer is within the default 10 s per try: one request, connected.
    with StoreStandIn(answer=True, delay=2) as stand_in:
        connect(Store(tracking_uri=stand_in.uri, artifact_location=None))
    assert len(stand_in.requests) == 1

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    with StoreStandIn(answer=True, delay=2) as stand_in, pytest.raises(PipelineError):
        connect(Store(tracking_uri=stand_in.uri, artifact_location=None))
    assert len(stand_in.requests) == 3


OPEN_STORE = """
import sys
from pathlib import Path
import pipeline.track as track
# Where the empty-store template lives: unwritable forces every process through a
# real creation; a fresh folder makes the first create it and the others copy it.
track.store_template = lambda: Path(sys.argv[2])
store = track.resolve_store({}, Path(sys.argv[1]))
client = track.open_store(store)
print(track.ensure_experiment(client, "race", store))
"""


@pytest.mark.parametrize("template", ["unwritable", "fresh"])
def test_parallel_processes_create_a_new_store_safely(template: str, tmp_path: Path):
    """Four processes start at once on a store that does not exist yet."""
    template_path = (
        "/proc/no-such-folder/template.db" if template == "unwritable" else tmp_path / "t.db"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_STORE, str(tmp_path), str(template_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [process.communicate(timeout=300) for process in processes]
    for process, (_, errors) in zip(processes, results, strict=True):
        assert process.returncode == 0, errors
    assert len({output.strip() for output, _ in results}) == 1  # one experiment id
    client = MlflowClient(resolve_store({}, tmp_path).tracking_uri)
    assert [experiment.name for experiment in client.search_experiments()].count("race") == 1
    assert Path(template_path).exists() == (template == "fresh")


def test_runs_of_dead_processes_are_marked_killed(tmp_path: Path):
    store = resolve_store({}, tmp_path)
    client = open_store(store)
    experiment_id = ensure_experiment(client, "orphans", store)
    other_experiment_id = ensure_experiment(client, "an earlier experiment", store)
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    # A live publisher: its command line names pipeline.track, like the real stage.
    alive = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "pipeline.track"]
    )
    try:
        host = socket.gethostname()
        runs = {
            name: client.create_run(
                experiment, tags={TAG_HOST: host, TAG_PID: str(pid)}, run_name=name
            ).info.run_id
            for name, experiment, pid in (
                ("dead", experiment_id, dead_pid.pid),
                ("alive", experiment_id, alive.pid),
                ("dead elsewhere", other_experiment_id, dead_pid.pid),
            )
        }
        other_host = client.create_run(
            experiment_id, tags={TAG_HOST: "elsewhere", TAG_PID: str(dead_pid.pid)}
        ).info.run_id
        assert sorted(mark_orphans_killed(client)) == sorted([runs["dead"], runs["dead elsewhere"]])
        assert client.get_run(runs["dead"]).info.status == "KILLED"
        assert client.get_run(runs["dead elsewhere"]).info.status == "KILLED"
        assert client.get_run(runs["alive"]).info.status == "RUNNING"
        # Another machine's run: this host cannot know whether it is still going.
        assert client.get_run(other_host).info.status == "RUNNING"
    finally:
        alive.kill()
        alive.wait()


def write_published_files(changed: Path | None = None) -> None:
    """Tiny real versions of the files that identify a publication; the file `changed`
    holds one value more than the others."""
    import numpy as np

    from pipeline import paths
    from pipeline.files import Table, write_csv, write_json, write_table

    def value(path: Path) -> float:
        return 1.0 if path == changed else 0.0

    for path in (paths.TRAIN, paths.VALIDATION, paths.TEST):
        features = np.array([[value(path)], [2.0]], dtype=np.float32)
        write_table(Table(features, np.array([0, 1], dtype=np.int32), ("x",)), path)
    for path in (
        paths.KERAS_HISTORY,
        paths.SKLEARN_HISTORY,
        paths.KERAS_REPLICATE_HISTORIES,
        paths.SKLEARN_REPLICATE_HISTORIES,
    ):
        write_csv(pd.DataFrame({"epoch": [1, 2], "loss": [0.7, 0.6 + value(path)]}), path)
    write_csv(
        pd.DataFrame({"family": ["keras"], "roc_auc": [0.8 + value(paths.REPLICATE_METRICS)]}),
        paths.REPLICATE_METRICS,
    )
    write_json({"mean": [value(paths.PREPROCESSING)]}, paths.PREPROCESSING)
    write_json({"classes": [0, 1 + value(paths.CLASSES)]}, paths.CLASSES)
    write_json({"keras": {"accuracy": 0.5 + value(paths.METRICS)}}, paths.METRICS)


# Named one by one, not read from track.PUBLISHED_FILES, which the test checks.
PUBLISHED_PATHS = [
    "TRAIN",
    "VALIDATION",
    "TEST",
    "KERAS_HISTORY",
    "SKLEARN_HISTORY",
    "KERAS_REPLICATE_HISTORIES",
    "SKLEARN_REPLICATE_HISTORIES",
    "METRICS",
    "REPLICATE_METRICS",
    "PREPROCESSING",
    "CLASSES",
]


@pytest.mark.parametrize("name", PUBLISHED_PATHS)
def test_publish_key_follows_each_published_file(
    name: str, default_params: Params, tmp_path: Path, monkeypatch
):
    from pipeline import paths
    from pipeline.track import publish_key

    monkeypatch.chdir(tmp_path)
    write_published_files()
    key = publish_key(default_params)
    write_published_files()
    assert publish_key(default_params) == key

    write_published_files(changed=getattr(paths, name))

    assert publish_key(default_params) != key
    assert len(key) == 64


@pytest.fixture
def trained(trained_outputs: Path, tmp_path: Path, monkeypatch) -> Path:
    """This test's own copy of the trained outputs, as the working directory, with the
    embedded store (no dvc.lock: the archives are not checked against one)."""
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
