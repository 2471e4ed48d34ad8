"""The team setup, end to end: a real PostgreSQL server, the real scripts/tracking-server
in front of it, and two team members whose pipeline runs and queued experiments reach it
through MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD only."""

import base64
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import dvc.api
import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client
from mlflow.tracking import MlflowClient

from pipeline import paths
from pipeline.config import flatten, load_params
from pipeline.files import read_json, read_table
from pipeline.history import read_history
from tests.endtoend import (
    ROOT,
    RUNS_PER_PUBLICATION,
    configure_git_user,
    environment,
    execute,
    tiny_project,
    wait_for_queue,
)

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "tracking-server"
EXPERIMENT = "team-setup"
EPOCHS = 2
QUEUED_LEARNING_RATES = ("0.002", "0.005", "0.02", "0.05")
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
TEST_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
# The tracking database and the role that owns it, as docs/team.md creates them.
DATABASE = "mlflow"
POSTGRES_SUPERUSER = "postgres"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_bin_dir() -> Path | None:
    """Where initdb, pg_ctl, psql and pg_dump live; Debian keeps them off PATH."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    # The newest version first: /usr/lib/postgresql/<version>/bin.
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(debian, key=lambda path: path.parent.name.zfill(8), reverse=True)
    tools = ("initdb", "pg_ctl", "psql", "pg_dump")
    return next(
        (folder for folder in candidates if all((folder / tool).is_file() for tool in tools)),
        None,
    )


def running_as_root() -> bool:
    return os.geteuid() == 0


def as_server_user(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root; there they run as the `postgres` user."""
    if not running_as_root():
        return command
    return ["runuser", "-u", POSTGRES_SUPERUSER, "--", *command]


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dataclass(frozen=True)
class Postgres:
    bin_dir: Path
    port: int

    def client(self, tool: str, *arguments: str) -> str:
        """Run a client tool (psql, pg_dump) as the superuser; return its output."""
        command = [str(self.bin_dir / tool), "-h", "127.0.0.1", "-p", str(self.port)]
        return execute(Path.cwd(), *command, "-U", POSTGRES_SUPERUSER, *arguments).stdout

    def query(self, sql: str) -> list[str]:
        return self.client("psql", "-d", DATABASE, "-tAc", sql).split()

    @property
    def uri(self) -> str:
        """What the team's server gets: no password (trust on loopback, in this test only)."""
        return f"postgresql://{DATABASE}@127.0.0.1:{self.port}/{DATABASE}"


def in_ci() -> bool:
    """Whether the tests run in CI, which sets CI (to `true` on the common services)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_unless_ci(reason: str) -> NoReturn:
    """Skip a test whose prerequisite is missing on a developer's machine; fail in CI,
    where a skipped team test would let a broken team setup pass unseen."""
    if in_ci():
        pytest.fail(f"{reason}; CI must run these tests, not skip them", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server of its own in a temporary directory, on a free loopback port."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        skip_unless_ci(
            "PostgreSQL is not installed (no pg_ctl on PATH or in /usr/lib/postgresql/*/bin); "
            "`apt-get install postgresql` provides it, and .ci/run does that"
        )
    if running_as_root() and not (shutil.which("runuser") and user_exists(POSTGRES_SUPERUSER)):
        skip_unless_ci("running as root, PostgreSQL needs runuser and a `postgres` system user")
    # Not pytest's tmp_path: only its owner may enter it, and as root the server runs as
    # the `postgres` user. The socket directory is this one too, never /var/run.
    base = Path(tempfile.mkdtemp(prefix="mlp-compare-postgres-"))
    data = base / "data"
    pg_ctl = str(bin_dir / "pg_ctl")
    try:
        if running_as_root():
            shutil.chown(base, POSTGRES_SUPERUSER, POSTGRES_SUPERUSER)
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", POSTGRES_SUPERUSER]
        execute(base, *as_server_user([*initdb, "--auth=trust", "--encoding=UTF8", "--no-sync"]))
        port = free_port()
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = [pg_ctl, "-D", str(data), "-l", str(base / "server.log"), "-w", "-o", options]
        execute(base, *as_server_user([*start, "start"]))
        server = Postgres(bin_dir, port)
        statements = [
            f"CREATE ROLE {DATABASE} LOGIN",
            f"CREATE DATABASE {DATABASE} OWNER {DATABASE}",
        ]
        server.client("psql", "-d", "postgres", *(f"--command={sql}" for sql in statements))
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class User:
    name: str
    password: str


@dataclass(frozen=True)
class TrackingServer:
    uri: str
    port: int
    data_dir: Path
    admin: User

    @property
    def artifacts(self) -> Path:
        return self.data_dir / "artifacts"

    def variables(self, user: User) -> dict[str, str]:
        """All a client needs, the pipeline included: the standard MLflow variables."""
        return {
            "MLFLOW_TRACKING_URI": self.uri,
            "MLFLOW_TRACKING_USERNAME": user.name,
            "MLFLOW_TRACKING_PASSWORD": user.password,
        }


def group_alive(process: subprocess.Popen) -> bool:
    process.poll()  # Reap the leader once it exits, so only live members count.
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop the server and the workers it started, which share its process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and group_alive(process):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_until_healthy(uri: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the tracking server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if requests.get(f"{uri}/health", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the tracking server did not answer /health within 180 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def tracking_server(
    postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrackingServer]:
    """scripts/tracking-server itself, as docs/team.md starts it, against `postgres`."""
    data_dir = tmp_path_factory.mktemp("tracking-server")
    log = tmp_path_factory.mktemp("tracking-server-log") / "server.log"
    port = free_port()
    admin = User("admin", secrets.token_urlsafe(18))
    # One worker starts fastest; the default host is the point of one test below.
    command = [str(SCRIPT), "--backend-store-uri", postgres.uri, "--data-dir", str(data_dir)]
    command += ["--port", str(port), "--workers", "1"]
    with open(log, "w") as output:
        process = subprocess.Popen(
            command,
            env=environment({"MLFLOW_AUTH_ADMIN_PASSWORD": admin.password}),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_until_healthy(uri, process, log)
        yield TrackingServer(uri=uri, port=port, data_dir=data_dir, admin=admin)
    finally:
        stop_process_group(process)


@pytest.fixture(scope="module")
def team(tracking_server: TrackingServer) -> dict[str, User]:
    """Two members, created by the admin as docs/team.md shows."""
    members = {name: User(name, secrets.token_urlsafe(18)) for name in ("alice", "bob")}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in tracking_server.variables(tracking_server.admin).items():
            patch.setenv(key, value)
        admin = get_app_client("basic-auth", tracking_uri=tracking_server.uri)
        for member in members.values():
            admin.create_user(member.name, member.password)
    return members


@pytest.fixture(scope="module")
def alice_project(
    tmp_path_factory: pytest.TempPathFactory, tracking_server: TrackingServer, team
) -> Path:
    """Alice's clone, after one `dvc repro` that logs to the server."""
    project = tiny_project(tmp_path_factory.mktemp("alice") / "mlp-compare", EXPERIMENT, EPOCHS)
    execute(project, "dvc", "repro", env=environment(tracking_server.variables(team["alice"])))
    return project


@pytest.fixture(scope="module")
def bob_clone(
    tmp_path_factory: pytest.TempPathFactory,
    alice_project: Path,
    tracking_server: TrackingServer,
    team,
) -> Path:
    """Bob's clone on "another machine": four queued experiments, two at a time."""
    clone = tmp_path_factory.mktemp("bob") / "mlp-compare"
    execute(alice_project, "git", "clone", "-q", str(alice_project), str(clone))
    configure_git_user(clone)
    # Set for `dvc queue start`: its workers, and the experiments they run, inherit them.
    variables = environment(tracking_server.variables(team["bob"]))
    for rate in QUEUED_LEARNING_RATES:
        setting = f"model.learning_rate={rate}"
        execute(
            clone, "dvc", "exp", "run", "--queue", "-n", f"lr-{rate}", "-S", setting, env=variables
        )
    execute(clone, "dvc", "queue", "start", "-j", "2", env=variables)
    status = wait_for_queue(clone, variables)
    if "Failed" in status:
        logs = [
            execute(clone, "dvc", "queue", "logs", f"lr-{rate}", env=variables).stdout
            for rate in QUEUED_LEARNING_RATES
        ]
        pytest.fail(f"queued experiments failed:\n{status}\n" + "\n".join(logs))
    return clone


@pytest.fixture
def sign_in(
    tracking_server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[User], MlflowClient]]:
    """Use the server as a given user, through the standard variables only."""

    def signed_in(user: User) -> MlflowClient:
        for key, value in tracking_server.variables(user).items():
            monkeypatch.setenv(key, value)
        mlflow.set_tracking_uri(tracking_server.uri)
        return MlflowClient(tracking_server.uri)

    yield signed_in
    mlflow.set_tracking_uri(None)


def child_runs(client: MlflowClient, experiment_id: str, parent_id: str) -> dict[str, object]:
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    return {run.data.tags["model_family"]: run for run in runs}


def assert_history_logged(client: MlflowClient, run_id: str, history: pd.DataFrame) -> None:
    """Every epoch of every per-epoch metric, at step = epoch, with the recorded value."""
    for name in EPOCH_METRICS:
        logged = sorted(client.get_metric_history(run_id, name), key=lambda point: point.step)
        assert [point.step for point in logged] == history["epoch"].tolist()
        assert [point.value for point in logged] == pytest.approx(history[name].tolist())


def assert_models_predict_like(
    run_ids: dict[str, str], keras_file: Path, sklearn_file: Path, features: np.ndarray
) -> None:
    """The logged models, loaded from the server, predict what the stage files predict."""
    from pipeline.train_keras import load_model as load_keras_model
    from pipeline.train_sklearn import load_model as load_sklearn_model

    keras_logged = mlflow.pyfunc.load_model(f"models:/{run_ids['keras_model_id']}")
    np.testing.assert_allclose(
        keras_logged.predict(features),
        load_keras_model(keras_file).predict(features, verbose=0),
        rtol=1e-6,
    )
    sklearn_logged = mlflow.pyfunc.load_model(f"models:/{run_ids['sklearn_model_id']}")
    np.testing.assert_array_equal(
        sklearn_logged.predict(features), load_sklearn_model(sklearn_file).predict_proba(features)
    )


def experiment_revisions(project: Path) -> dict[str, str]:
    """DVC experiment name -> its commit, from the refs DVC keeps under refs/exps."""
    listed = execute(
        project, "git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"
    ).stdout
    return {
        reference.rsplit("/", 1)[1]: commit
        for reference, commit in (line.split() for line in listed.splitlines())
    }


def file_at(project: Path, revision: str, path: Path, destination: Path) -> Path:
    """A DVC-tracked file as an experiment left it, from the project's DVC cache."""
    target = destination / revision / path
    target.parent.mkdir(parents=True, exist_ok=True)
    with dvc.api.open(str(path), repo=str(project), rev=revision, mode="rb") as source:
        target.write_bytes(source.read())
    return target


@pytest.mark.parametrize(
    ("arguments", "admin_password", "message"),
    [
        ([], "a-long-enough-password", "no backend store"),
        (
            ["--backend-store-uri", "sqlite:///mlflow.db"],
            "a-long-enough-password",
            "must be a PostgreSQL URI",
        ),
        (
            ["--backend-store-uri", "postgresql://mlflow:hunter2@db/mlflow"],
            "a-long-enough-password",
            "contains a password",
        ),
        (
            ["--backend-store-uri", "postgresql://mlflow@db/mlflow"],
            None,
            "set MLFLOW_AUTH_ADMIN_PASSWORD",
        ),
        (
            ["--backend-store-uri", "postgresql://mlflow@db/mlflow"],
            "too-short",
            "set MLFLOW_AUTH_ADMIN_PASSWORD (at least 12 characters)",
        ),
    ],
)
def test_script_refuses_an_incomplete_setup_in_one_line(
    tmp_path: Path, arguments: list[str], admin_password: str | None, message: str
):
    extra = {"MLFLOW_AUTH_ADMIN_PASSWORD": admin_password} if admin_password else {}
    completed = subprocess.run(
        [str(SCRIPT), *arguments, "--data-dir", str(tmp_path / "state")],
        env=environment(extra),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert completed.stderr.startswith("tracking-server: ")
    assert message in completed.stderr
    assert len(completed.stderr.splitlines()) == 1
    assert not (tmp_path / "state").exists()


def test_script_defaults_to_loopback_postgresql_served_artifacts_and_basic_auth(tmp_path: Path):
    help_text = execute(tmp_path, str(SCRIPT), "--help").stdout
    assert "--backend-store-uri" in help_text and "MLFLOW_AUTH_ADMIN_PASSWORD" in help_text
    arguments = ["--backend-store-uri", "postgresql://mlflow@db/mlflow", "--print-command"]
    arguments += ["--data-dir", str(tmp_path / "state"), "--", "--allowed-hosts", "example.org"]
    variables = environment({"MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-enough-password"})
    printed = execute(tmp_path, str(SCRIPT), *arguments, env=variables).stdout
    command = printed.split()
    assert Path(command[0]).name == "mlflow" and command[1] == "server"

    def option(name: str) -> str:
        return command[command.index(name) + 1]

    assert option("--host") == "127.0.0.1"
    assert option("--backend-store-uri") == "postgresql://mlflow@db/mlflow"
    assert option("--artifacts-destination") == str(tmp_path / "state" / "artifacts")
    assert option("--app-name") == "basic-auth"
    assert "--serve-artifacts" in command
    assert command[-2:] == ["--allowed-hosts", "example.org"]


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port`, as the kernel lists them."""
    addresses = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                addresses.add(address)
    return addresses


def test_server_listens_on_loopback_only(tracking_server: TrackingServer):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux's /proc/net/tcp to see where the server listens")
    # 127.0.0.1, as /proc/net/tcp writes it: little-endian hexadecimal.
    assert listening_addresses(tracking_server.port) == {"0100007F"}


def test_unauthenticated_client_is_refused(
    tracking_server: TrackingServer,
    team: dict[str, User],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    url = f"{tracking_server.uri}/api/2.0/mlflow/experiments/search"
    query = {"max_results": 10}
    alice = team["alice"]
    assert requests.get(url, params=query, timeout=30).status_code == 401
    wrong = (alice.name, alice.password + "x")
    assert requests.get(url, params=query, auth=wrong, timeout=30).status_code == 401
    answer = requests.get(url, params=query, auth=(alice.name, alice.password), timeout=30)
    assert answer.status_code == 200
    assert "Default" in {experiment["name"] for experiment in answer.json()["experiments"]}

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    # MLflow also reads ~/.mlflow/credentials: a home without one.
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(MlflowException, match="401"):
        MlflowClient(tracking_server.uri).search_experiments()


def test_pipeline_run_is_on_the_server_in_postgresql(
    alice_project: Path, tracking_server: TrackingServer, postgres: Postgres, team, sign_in
):
    client = sign_in(team["alice"])
    run_ids = read_json(alice_project / paths.MLFLOW_RUNS)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.experiment_id == run_ids["experiment_id"]
    params = {
        key: str(value)
        for key, value in flatten(load_params(alice_project / "params.yaml")).items()
    }
    parent = client.get_run(run_ids["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.params == params
    # Served artifacts: the client uploads through the server, which stores them.
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:/")
    listed = {item.path for item in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"figures/roc.png", "figures/loss.png"} <= listed
    stored = tracking_server.artifacts / experiment.experiment_id / parent.info.run_id
    assert (stored / "artifacts" / "figures" / "roc.png").read_bytes()[:4] == b"\x89PNG"

    children = child_runs(client, experiment.experiment_id, parent.info.run_id)
    assert set(children) == {"keras", "sklearn"}
    metrics = read_json(alice_project / paths.METRICS)
    for family, child in children.items():
        assert child.info.run_id == run_ids[f"{family}_run_id"]
        assert child.info.status == "FINISHED"
        assert child.data.params == params
        assert_history_logged(
            client,
            child.info.run_id,
            read_history(alice_project / f"data/train_{family}/history.csv"),
        )
        for name in TEST_METRICS:
            assert child.data.metrics[f"test_{name}"] == pytest.approx(metrics[family][name])

    # The runs are rows of the PostgreSQL database, not of some local store.
    in_database = postgres.query(
        f"SELECT run_uuid FROM runs WHERE experiment_id = {int(experiment.experiment_id)}"
    )
    assert {parent.info.run_id, *(child.info.run_id for child in children.values())} <= set(
        in_database
    )
    assert not (alice_project / paths.MLFLOW_DATABASE).exists()


def test_logged_models_predict_like_the_stage_files(
    alice_project: Path, team, sign_in, monkeypatch: pytest.MonkeyPatch
):
    sign_in(team["alice"])
    # MLflow deserializes no scikit-learn model, skops included, unless told that the
    # source is trusted: here it is our own server.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    assert_models_predict_like(
        read_json(alice_project / paths.MLFLOW_RUNS),
        alice_project / paths.KERAS_MODEL,
        alice_project / paths.SKLEARN_MODEL,
        read_table(alice_project / paths.TEST).features,
    )


def test_queued_experiments_of_a_second_member_meet_in_the_same_experiment(
    alice_project: Path,
    bob_clone: Path,
    team,
    sign_in,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    client = sign_in(team["bob"])
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.experiment_id == read_json(alice_project / paths.MLFLOW_RUNS)["experiment_id"]
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = {run.info.run_name: run for run in runs if "mlflow.parentRunId" not in run.data.tags}
    alice_commit = execute(alice_project, "git", "rev-parse", "HEAD").stdout.strip()
    names = {f"lr-{rate}" for rate in QUEUED_LEARNING_RATES}
    assert set(parents) == {alice_commit[:7], *names}

    revisions = experiment_revisions(bob_clone)
    assert set(revisions) == names
    for rate in QUEUED_LEARNING_RATES:
        name = f"lr-{rate}"
        parent = parents[name]
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["dvc.experiment"] == name
        # The DVC experiment points at its MLflow runs, and they are these.
        revision = revisions[name]
        run_ids = read_json(file_at(bob_clone, revision, paths.MLFLOW_RUNS, tmp_path))
        assert run_ids["parent_run_id"] == parent.info.run_id
        children = child_runs(client, experiment.experiment_id, parent.info.run_id)
        assert set(children) == {"keras", "sklearn"}
        for family, child in children.items():
            assert child.info.run_id == run_ids[f"{family}_run_id"]
            assert child.info.status == "FINISHED"
            assert child.data.params["model.learning_rate"] == rate
            history = file_at(
                bob_clone, revision, Path(f"data/train_{family}/history.csv"), tmp_path
            )
            assert_history_logged(client, child.info.run_id, read_history(history))
        assert_models_predict_like(
            run_ids,
            file_at(bob_clone, revision, paths.KERAS_MODEL, tmp_path),
            file_at(bob_clone, revision, paths.SKLEARN_MODEL, tmp_path),
            read_table(file_at(bob_clone, revision, paths.TEST, tmp_path)).features,
        )
    # The queue's workers got Bob's variables: nothing fell back to an embedded store.
    assert not (bob_clone / paths.MLFLOW_DATABASE).exists()


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() and not path.is_symlink()]


def stored_bytes(path: Path) -> bytes:
    """A file's bytes, plus the decoded body of a message in DVC's queue (base64 in JSON)."""
    content = path.read_bytes()
    if path.suffix == ".msg":
        content += base64.b64decode(json.loads(content)["body"])
    return content


def test_no_password_is_stored_anywhere(
    alice_project: Path,
    bob_clone: Path,
    tracking_server: TrackingServer,
    postgres: Postgres,
    team,
    sign_in,
):
    passwords = [tracking_server.admin.password, *(member.password for member in team.values())]
    client = sign_in(tracking_server.admin)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(runs) == RUNS_PER_PUBLICATION * (1 + len(QUEUED_LEARNING_RATES))
    for run in runs:
        logged = [*run.data.params.items(), *run.data.tags.items()]
        assert logged
        for password in passwords:
            assert not [item for item in logged if password in item[0] or password in item[1]]

    # Every row of the tracking database.
    dump = postgres.client("pg_dump", "--data-only", DATABASE)
    assert runs[0].info.run_id in dump
    for password in passwords:
        assert password not in dump

    places = {
        "artifact store": files_under(tracking_server.artifacts),
        "login database and server state": files_under(tracking_server.data_dir),
        "Alice's clone": files_under(alice_project),
        # Bob's clone holds DVC's queue: its messages, logs and experiment commits.
        "Bob's clone": files_under(bob_clone),
    }
    for place, files in places.items():
        assert files, place
        for path in files:
            content = stored_bytes(path)
            for password in passwords:
                assert password.encode() not in content, f"{place}: {path}"
    # The users are in the login database, by name and password hash only.
    login_database = (tracking_server.data_dir / "basic_auth.db").read_bytes()
    assert b"alice" in login_database and b"bob" in login_database

    # Git compresses what it stores: read every commit, DVC's experiments included.
    histories = {
        clone: execute(clone, "git", "log", "--all", "--patch").stdout
        for clone in (alice_project, bob_clone)
    }
    assert f"learning_rate: {QUEUED_LEARNING_RATES[0]}" in histories[bob_clone]
    for clone, history in histories.items():
        for password in passwords:
            assert password not in history, clone


def test_members_log_into_each_others_experiment_but_cannot_delete_it(
    alice_project: Path, bob_clone: Path, tracking_server: TrackingServer, team
):
    """The default permission, EDIT: Bob's queued runs are in Alice's experiment (above),
    but deleting it takes the MANAGE permission that only its creator and the admin have."""
    experiment_id = read_json(alice_project / paths.MLFLOW_RUNS)["experiment_id"]
    url = f"{tracking_server.uri}/api/2.0/mlflow/experiments"
    bob = (team["bob"].name, team["bob"].password)
    refused = requests.post(
        f"{url}/delete", json={"experiment_id": experiment_id}, auth=bob, timeout=30
    )
    assert refused.status_code == 403
    answer = requests.get(
        f"{url}/get", params={"experiment_id": experiment_id}, auth=bob, timeout=30
    )
    assert answer.json()["experiment"]["lifecycle_stage"] == "active"


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [
        (None, pytest.skip.Exception),
        ("", pytest.skip.Exception),
        ("false", pytest.skip.Exception),
        ("true", pytest.fail.Exception),
        ("1", pytest.fail.Exception),
    ],
)
def test_missing_postgresql_skips_for_a_developer_and_fails_in_ci(
    ci: str | None, outcome: type[BaseException], monkeypatch
):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)

    # Both outcomes are caught here: an escaping skip would skip this test, not fail it.
    with pytest.raises((pytest.skip.Exception, pytest.fail.Exception)) as raised:
        skip_unless_ci("PostgreSQL is not installed")

    assert raised.type is outcome
    assert str(raised.value).startswith("PostgreSQL is not installed")
    assert ("CI must run these tests" in str(raised.value)) == (outcome is pytest.fail.Exception)
