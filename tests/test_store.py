"""Tests for `pipeline.store`: where runs go, a connection that fails in one line, and
a new SQLite store created safely by parallel processes."""

import fcntl
import logging
import socket
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipeline.errors import PipelineError
from pipeline.store import (
    HTTP_RETRY_POLICY,
    Store,
    connect,
    ensure_experiment,
    failure_reason,
    open_store,
    redact,
    repository_root,
    resolve_store,
    store_lock,
    store_template,
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


OPEN_STORE = """
import sys
from pathlib import Path
import pipeline.store as store_module
# Where the empty-store template lives: unwritable forces every process through a
# real creation; a fresh folder makes the first create it and the others copy it.
store_module.store_template = lambda: Path(sys.argv[2])
store = store_module.resolve_store({}, Path(sys.argv[1]))
client = store_module.open_store(store)
print(store_module.ensure_experiment(client, "race", store))
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


def test_a_blank_tracking_uri_variable_means_the_embedded_store(tmp_path: Path):
    assert resolve_store({"MLFLOW_TRACKING_URI": "  "}, tmp_path) == resolve_store({}, tmp_path)
    assert resolve_store({}, tmp_path).lock_path == tmp_path / "mlflow.db.lock"
    spaced = resolve_store({"MLFLOW_TRACKING_URI": " http://127.0.0.1:5000 \n"}, tmp_path)
    assert spaced == Store(tracking_uri="http://127.0.0.1:5000", artifact_location=None)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://alice:secret@mlflow.example.org/path", "https://mlflow.example.org/path"),
        ("http://alice@127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://:secret@127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("postgresql://bob:hunter2@db:5432/mlflow", "postgresql://db:5432/mlflow"),
    ],
)
def test_redact_drops_the_user_and_keeps_the_host_and_port(uri: str, shown: str):
    assert redact(uri) == shown


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            ConnectionError(
                "HTTPConnectionPool(host='h', port=1): Max retries exceeded (Caused by "
                "NewConnectionError('<urllib3.connection.HTTPConnection>: Failed to "
                "establish a new connection: [Errno 111] Connection refused'))"
            ),
            "[Errno 111] Connection refused",
        ),
        (OSError("[Errno -2] Name or service not known"), "[Errno -2] Name or service not known"),
        (
            ValueError("\n  bad answer from https://bob:hunter2@host/api\nsecond line"),
            "bad answer from https://host/api",
        ),
        (ValueError(""), "ValueError"),
        (ValueError("x" * 300), "x" * 200),
    ],
)
def test_failure_reason_is_the_gist_without_credentials(error: Exception, reason: str):
    assert failure_reason(error) == reason


def test_an_unreachable_store_says_how_to_publish_later():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PipelineError) as caught:
        connect(Store(tracking_uri=uri, artifact_location=None))
    assert str(caught.value) == (
        f"MLflow tracking store {uri} is unreachable ([Errno 111] Connection refused); the "
        "training outputs are complete, run `dvc repro` again to publish them once it is back"
    )


def test_the_store_lock_is_exclusive_while_held(tmp_path: Path):
    store = resolve_store({}, tmp_path / "new folder")
    with store_lock(store):
        with open(store.lock_path, "a") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
    with open(store.lock_path, "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
    # A tracking server needs no lock: none is made.
    with store_lock(Store(tracking_uri="http://127.0.0.1:5000", artifact_location=None)):
        pass


def test_the_empty_store_template_is_kept_in_the_environment():
    template = store_template()
    assert template.is_relative_to(sys.prefix)
    assert mlflow.__version__ in template.name


def test_a_new_embedded_store_is_readable_while_written_and_keeps_artifacts_here(
    tmp_path: Path, caplog
):
    store = resolve_store({}, tmp_path)
    with caplog.at_level(logging.INFO, logger="pipeline.store"):
        client = open_store(store)
    assert [record.getMessage() for record in caplog.records] == [
        f"track: first run here: creating the MLflow store {tmp_path / 'mlflow.db'} (runs) "
        "and mlartifacts (files)"
    ]
    database = tmp_path / "mlflow.db"
    with closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert client.get_experiment("0").artifact_location == f"{store.artifact_location}/0"
    experiment_id = ensure_experiment(client, "here", store)
    assert client.get_experiment(experiment_id).artifact_location == store.artifact_location
    assert ensure_experiment(client, "here", store) == experiment_id

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.store"):
        open_store(store)
    assert caplog.records == []  # not new: nothing created


def test_the_first_new_store_is_kept_as_the_template_of_the_next(
    tmp_path: Path, monkeypatch, caplog
):
    from pipeline import store as store_module

    template = tmp_path / "environment" / "share" / "empty.db"
    template.parent.mkdir(parents=True)  # the environment's folder may exist already
    monkeypatch.setattr(store_module, "store_template", lambda: template)
    first = resolve_store({}, tmp_path / "first")
    with caplog.at_level(logging.INFO):
        client = open_store(first)  # created by MLflow's migrations
        # MLflow's lines for each step of creating its tables are not shown; the
        # rest are.
        assert logging.getLogger().level == logging.INFO
    assert not [record for record in caplog.records if record.name.startswith("mlflow.store")]
    assert [path.name for path in template.parent.iterdir()] == ["empty.db"]
    kept = MlflowClient(f"sqlite:///{template}")
    assert [experiment.name for experiment in kept.search_experiments()] == ["Default"]

    # A store that is not new never becomes the template, even where none is kept.
    ensure_experiment(client, "first", first)
    template.unlink()
    open_store(first)
    assert not template.exists()

    open_store(resolve_store({}, tmp_path / "again"))  # saves the template again
    second = resolve_store({}, tmp_path / "second")
    client = open_store(second)  # a copy of the template
    assert client.get_experiment("0").artifact_location == f"{second.artifact_location}/0"
    assert ensure_experiment(client, "second", second) == "1"


def test_an_unwritable_template_folder_only_costs_time(tmp_path: Path, monkeypatch):
    from pipeline import store as store_module

    monkeypatch.setattr(store_module, "store_template", lambda: Path("/proc/none/empty.db"))
    store = resolve_store({}, tmp_path)
    client = open_store(store)
    assert client.get_experiment("0").artifact_location == f"{store.artifact_location}/0"


def test_a_deleted_store_leaves_no_stale_write_ahead_log_behind(tmp_path: Path):
    # mlflow.db deleted by hand while a reader (the MLflow UI) kept its write-ahead
    # log. A new store starts in rollback-journal mode (the template, or MLflow's own
    # creation), so SQLite ignores the old log instead of applying its pages.
    store = resolve_store({}, tmp_path)
    client = open_store(store)
    database = tmp_path / "mlflow.db"
    with closing(sqlite3.connect(database)) as reader:
        reader.execute("PRAGMA wal_autocheckpoint=0")
        reader.execute("SELECT count(*) FROM experiments").fetchone()
        ensure_experiment(client, "old", store)
        stale = {suffix: Path(f"{database}{suffix}").read_bytes() for suffix in ("-wal", "-shm")}
    database.unlink()
    for suffix, content in stale.items():
        Path(f"{database}{suffix}").write_bytes(content)

    client = open_store(store)

    assert [experiment.name for experiment in client.search_experiments()] == ["Default"]
    assert ensure_experiment(client, "new", store) == "1"
