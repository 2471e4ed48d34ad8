"""The warm worker and its client: real sockets, real forks, tiny stages in a copy of
`pipeline/`. Each worker these tests start imports TensorFlow once (seconds)."""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.worker import EARLY_STAGES, PRELOADED
from pipeline.worker_protocol import (
    connect,
    private_directory,
    receive_message,
    send_message,
    socket_path,
)
from tests.endtoend import (
    END_TO_END_EPOCHS,
    environment,
    execute,
    process_running,
    tiny_project,
)

ROOT = Path(__file__).resolve().parents[1]
STOPPED = (
    "every output is the previous one or a complete new one, and `dvc repro` finishes the rest"
)
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the worker is Linux's (pidfds, SO_PEERCRED)"
)

# A stage that says where and how it runs, then does what FAKE asks.
FAKE_STAGE = """
import gc
import json
import os
import sys
import time
from pathlib import Path

from pipeline.errors import PipelineError, run_stage

VERSION = "{version}"


def main():
    action = os.environ.get("FAKE", "")
    report = {{
        "version": VERSION,
        "pid": os.getpid(),
        "parent": os.getppid(),
        "directory": os.getcwd(),
        "arguments": sys.argv[1:],
        "variable": action,
        "preloaded": "tensorflow" in sys.modules,
        "frozen": gc.get_freeze_count(),
        "stdout_is_line_buffered": sys.stdout.line_buffering,
    }}
    print(json.dumps(report), flush=True)
    sys.stderr.write("to stderr\\n")
    Path("output.txt").write_text("written")
    if action == "bad":
        raise PipelineError("fake.value: 'x' is not one of a, b")
    if action == "crash":
        raise RuntimeError("boom")
    if action == "wait":
        Path("started").write_text(str(os.getpid()))
        time.sleep(120)


if __name__ == "__main__":
    run_stage(main)
"""
# A stage whose imports take long (as TensorFlow's do) and announce themselves.
SLOW_IMPORT_STAGE = """
import os
import time
from pathlib import Path

Path("importing").write_text(str(os.getpid()))
time.sleep(120)

from pipeline.errors import run_stage  # noqa: E402

if __name__ == "__main__":
    run_stage(lambda: None)
"""


def make_project(directory: Path, version: str = "1") -> Path:
    """A directory with a copy of `pipeline/` and the two stages above."""
    package = directory / "pipeline"
    package.mkdir(parents=True)
    for source in (ROOT / "pipeline").glob("*.py"):
        shutil.copy2(source, package / source.name)
    (package / "fake_stage.py").write_text(FAKE_STAGE.format(version=version))
    (package / "slow_import.py").write_text(SLOW_IMPORT_STAGE)
    return directory


def private_runtime(directory: Path) -> Path:
    directory.mkdir(mode=0o700)
    return directory


def variables(runtime: Path, **extra: str) -> dict[str, str]:
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PIPELINE_", "DVC_", "FAKE"))
    }
    return {**base, "XDG_RUNTIME_DIR": str(runtime), **extra}


def socket_file(runtime: Path) -> Path:
    sockets = list((runtime / "pipeline-worker").glob("*.sock"))
    assert len(sockets) == 1
    return sockets[0]


def wait_for_worker(runtime: Path, timeout: float = 300) -> None:
    """Until a worker answers on the runtime directory's socket (its imports take a
    while on a busy machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sockets = list((runtime / "pipeline-worker").glob("*.sock"))
        connection = connect(sockets[0]) if sockets else None
        if connection is not None:
            connection.close()
            return
        time.sleep(0.2)
    raise AssertionError(f"no worker answered in {timeout} s")


def start_worker(project: Path, runtime: Path, *options: str) -> subprocess.Popen:
    with open(runtime / "worker.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.worker", "serve", *options],
            cwd=project,
            env=variables(runtime),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    wait_for_worker(runtime)
    return process


def stop_worker(project: Path, runtime: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pipeline.worker", "stop"],
        cwd=project,
        env=variables(runtime),
        capture_output=True,
        timeout=60,
    )


def run_client(
    project: Path, runtime: Path, *arguments: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.client", "pipeline.fake_stage", *arguments],
        cwd=project,
        env=variables(runtime, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def start_client(project: Path, runtime: Path, stage: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.client", stage],
        cwd=project,
        env=variables(runtime, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def report_of(completed: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(completed.stdout.splitlines()[0])


def wait_for_file(path: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


def wait_until_ended(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while process_running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process_running(pid)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("worker") / "project")


@pytest.fixture(scope="module")
def runtime() -> Iterator[Path]:
    """Directly under the temporary directory: another user can be let in (below)."""
    directory = Path(tempfile.mkdtemp(prefix="pipeline-worker-test-"))
    yield directory
    shutil.rmtree(directory)


@pytest.fixture(scope="module")
def worker(project: Path, runtime: Path) -> Iterator[subprocess.Popen]:
    process = start_worker(project, runtime)
    yield process
    stop_worker(project, runtime)
    process.wait(timeout=60)


def test_stage_runs_in_a_child_of_the_worker_as_it_would_by_itself(
    project: Path, runtime: Path, worker: subprocess.Popen
):
    warm = run_client(project, runtime, "--flag", "value", FAKE="hello")
    alone = run_client(project, runtime, "--flag", "value", FAKE="hello", PIPELINE_WORKER="0")

    for completed in (warm, alone):
        assert completed.returncode == 0, completed.stderr
        assert completed.stderr == "to stderr\n"
    warm_report, alone_report = report_of(warm), report_of(alone)
    assert warm_report["parent"] == worker.pid
    assert warm_report["preloaded"] is True
    # The preloaded objects are out of the garbage collector's way (gc.freeze).
    assert warm_report["frozen"] > 100_000
    assert alone_report["parent"] != worker.pid
    assert alone_report["preloaded"] is False
    assert alone_report["frozen"] == 0
    for report in (warm_report, alone_report):
        assert report["directory"] == str(project)
        assert report["arguments"] == ["--flag", "value"]
        assert report["variable"] == "hello"
        assert report["stdout_is_line_buffered"] is False  # a pipe, as for the client
    # The child tells the client its exit code once its outputs are written and its
    # streams flushed, then ends at once.
    assert wait_until_ended(warm_report["pid"], timeout=10)


@pytest.mark.parametrize(
    ("action", "code", "error"),
    [
        ("bad", 2, "error: fake.value: 'x' is not one of a, b\n"),
        ("crash", 1, "RuntimeError: boom\n"),
    ],
)
def test_exit_code_and_errors_come_back(
    project: Path, runtime: Path, worker: subprocess.Popen, action: str, code: int, error: str
):
    completed = run_client(project, runtime, FAKE=action)

    assert report_of(completed)["parent"] == worker.pid
    assert completed.returncode == code
    assert completed.stderr.startswith("to stderr\n")
    assert completed.stderr.endswith(error)
    assert ("Traceback" in completed.stderr) == (action == "crash")


def test_edits_to_a_stage_count_at_once(tmp_path: Path, runtime: Path, worker: subprocess.Popen):
    """The worker holds no stage code: each child loads the caller's, here from another
    directory (as a queued experiment's temporary copy is) and then edited."""
    copy = make_project(tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc", version="copy")

    first = report_of(run_client(copy, runtime))
    (copy / "pipeline" / "fake_stage.py").write_text(FAKE_STAGE.format(version="edited"))
    second = report_of(run_client(copy, runtime))

    assert (first["version"], second["version"]) == ("copy", "edited")
    assert first["parent"] == second["parent"] == worker.pid
    assert first["directory"] == str(copy)
    assert (copy / "output.txt").read_text() == "written"


@pytest.mark.parametrize(
    ("how", "code", "name"),
    [
        ("SIGINT", 130, "Ctrl-C (SIGINT)"),
        ("SIGTERM", 143, "SIGTERM"),
        # `dvc queue kill`: SIGINT to the experiment's whole process group.
        ("group SIGINT", 130, "Ctrl-C (SIGINT)"),
    ],
)
def test_signals_reach_the_stage(
    tmp_path: Path,
    project: Path,
    runtime: Path,
    worker: subprocess.Popen,
    how: str,
    code: int,
    name: str,
):
    directory = tmp_path / "stage"
    shutil.copytree(project, directory)
    client = start_client(directory, runtime, "pipeline.fake_stage", FAKE="wait")
    stage = int(wait_for_file(directory / "started"))
    signal_number = signal.Signals[how.split()[-1]]
    if how.startswith("group"):
        os.killpg(client.pid, signal_number)
    else:
        client.send_signal(signal_number)
    output, errors = client.communicate(timeout=60)

    assert json.loads(output.splitlines()[0])["parent"] == worker.pid
    assert client.returncode == code
    assert errors == f"to stderr\nerror: stopped by {name}; {STOPPED}\n"
    assert wait_until_ended(stage)


def test_stage_stops_when_its_client_is_killed(
    tmp_path: Path, project: Path, runtime: Path, worker: subprocess.Popen
):
    directory = tmp_path / "stage"
    shutil.copytree(project, directory)
    client = start_client(directory, runtime, "pipeline.fake_stage", FAKE="wait")
    stage = int(wait_for_file(directory / "started"))
    client.kill()
    client.wait()

    assert wait_until_ended(stage)


# Starts the client as `dvc repro` starts a stage (DVC_STAGE set), prints its pid and
# waits to be killed.
DVC_STANDIN = """
import os
import subprocess
import sys
import time

variables = {**os.environ, "DVC_STAGE": "fake_stage"}
client = subprocess.Popen(
    [sys.executable, "-m", "pipeline.client", "pipeline.fake_stage"], env=variables
)
print(client.pid, flush=True)
time.sleep(120)
"""


def test_stage_stops_when_dvc_dies(
    tmp_path: Path, project: Path, runtime: Path, worker: subprocess.Popen
):
    directory = tmp_path / "stage"
    shutil.copytree(project, directory)
    standin = subprocess.Popen(
        [sys.executable, "-c", DVC_STANDIN],
        cwd=directory,
        env=variables(runtime, FAKE="wait"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = int(standin.stdout.readline())
    stage = int(wait_for_file(directory / "started"))
    standin.kill()
    standin.wait()
    # The pipes close once the client and the stage, which share them, have ended.
    output, errors = standin.communicate(timeout=60)

    assert json.loads(output.splitlines()[0])["parent"] == worker.pid
    assert errors == f"to stderr\nerror: stopped by SIGTERM; {STOPPED}\n"
    assert wait_until_ended(stage)
    assert wait_until_ended(client)


@pytest.mark.parametrize("worker_variable", ["1", "0"])
def test_ctrl_c_while_a_stage_imports_is_one_line(
    tmp_path: Path, project: Path, runtime: Path, worker: subprocess.Popen, worker_variable: str
):
    """In the worker's child and by itself alike: TensorFlow's import takes seconds,
    and Ctrl-C during it is no traceback."""
    directory = tmp_path / "stage"
    shutil.copytree(project, directory)
    client = start_client(
        directory, runtime, "pipeline.slow_import", PIPELINE_WORKER=worker_variable
    )
    importer = int(wait_for_file(directory / "importing"))
    client.send_signal(signal.SIGINT)
    _, errors = client.communicate(timeout=60)

    assert (importer == client.pid) == (worker_variable == "0")
    assert client.returncode == 130
    assert errors == f"error: stopped by Ctrl-C (SIGINT); {STOPPED}\n"


def test_socket_is_private(runtime: Path, worker: subprocess.Popen):
    path = socket_file(runtime)

    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_a_directory_open_to_others_is_not_used(tmp_path: Path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    shared.chmod(0o755)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "private")
    (tmp_path / "private").mkdir(mode=0o700)

    assert not private_directory(shared)
    assert not private_directory(link)
    assert private_directory(tmp_path / "fresh")


def reply_to_another_user(path: Path) -> str:
    """What a process of user 65534 gets when it connects to `path` (forked from this
    one: the interpreter itself may not be readable by that user)."""
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                connection.connect(str(path))
                answer = json.dumps(receive_message(connection)[0])
            except PermissionError:
                answer = "permission denied"
            os.write(writing, answer.encode())
        finally:
            os._exit(0)
    os.close(writing)
    os.waitpid(pid, 0)
    with os.fdopen(reading) as answer:
        return answer.read()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to become another user")
def test_another_user_is_refused(runtime: Path, worker: subprocess.Popen):
    path = socket_file(runtime)

    assert reply_to_another_user(path) == "permission denied"
    # Even past the permissions, the worker checks who connects (SO_PEERCRED).
    for opened, mode in ((runtime, 0o711), (path.parent, 0o711), (path, 0o666)):
        opened.chmod(mode)
    try:
        assert json.loads(reply_to_another_user(path)) == {"refused": "another user"}
    finally:
        for closed, mode in ((runtime, 0o700), (path.parent, 0o700), (path, 0o600)):
            closed.chmod(mode)


def test_missing_dead_and_outdated_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No worker, or a dead one (its socket left behind): the stage starts one and runs
    in it once it has imported its libraries. A changed environment (here the lock
    file): the worker refuses, the stage runs by itself, the old worker exits and a
    fresh one starts for the next stages."""
    project = make_project(tmp_path / "project")
    runtime = private_runtime(tmp_path / "run")
    directory = runtime / "pipeline-worker"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(socket_path()))
    dead.close()
    try:
        first = report_of(run_client(project, runtime))
        assert first["preloaded"] is True
        warm = report_of(run_client(project, runtime))
        assert warm["preloaded"] is True
        assert warm["parent"] == first["parent"] != os.getpid()

        (project / "uv.lock").write_text("a changed lock file\n")
        changed = report_of(run_client(project, runtime))
        assert changed["preloaded"] is False
        assert wait_until_ended(warm["parent"], timeout=60)
        wait_for_worker(runtime)
        fresh = report_of(run_client(project, runtime))
        assert fresh["preloaded"] is True
        assert fresh["parent"] != warm["parent"]
    finally:
        stop_worker(project, runtime)


def test_first_stages_start_while_the_worker_still_imports(tmp_path: Path):
    """A worker listens before it imports: `split` (one of EARLY_STAGES) starts as soon
    as its libraries are in, before TensorFlow; any other stage asked for meanwhile
    waits for every import instead of importing them again by itself."""
    project = make_project(tmp_path / "project")
    (project / "pipeline" / "split.py").write_text(FAKE_STAGE.format(version="split"))
    runtime = private_runtime(tmp_path / "run")
    with open(runtime / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline.worker", "serve"],
            cwd=project,
            env=variables(runtime),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not list((runtime / "pipeline-worker").glob("*.sock")):
            assert time.monotonic() < deadline, "the worker never listened"
            time.sleep(0.02)
        late = start_client(project, runtime, "pipeline.fake_stage")
        early = start_client(project, runtime, "pipeline.split")
        early_output, _ = early.communicate(timeout=120)
        late_output, _ = late.communicate(timeout=120)
    finally:
        stop_worker(project, runtime)
        worker.wait(timeout=60)

    early_report = json.loads(early_output.splitlines()[0])
    late_report = json.loads(late_output.splitlines()[0])
    assert early_report["version"] == "split"
    assert early_report["parent"] == late_report["parent"] == worker.pid
    assert early_report["preloaded"] is False  # TensorFlow was still to come
    assert late_report["preloaded"] is True
    log = (runtime / "worker.log").read_text()
    assert log.index("runs pipeline.split") < log.index("runs pipeline.fake_stage")


@pytest.mark.parametrize(("stage", "needed"), EARLY_STAGES.items())
def test_early_stages_import_only_the_early_libraries(stage: str, needed: int):
    """What lets the worker start EARLY_STAGES before its other imports: their modules
    import none of the libraries that come later in PRELOADED."""
    code = (
        f"import sys, {stage}; "
        f"later = {{name.split('.')[0] for name in {PRELOADED[needed:]!r}}}; "
        "print(sorted(later & {name.split('.')[0] for name in sys.modules}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )

    assert completed.stdout == "[]\n"
    assert "mlflow" in {name.split(".")[0] for name in PRELOADED[needed:]}


# Opens an SQLite store as `track` does, after the worker's imports: which MLflow and
# SQLAlchemy modules did that import anew?
OPEN_STORE = """
import shutil, sys
from pathlib import Path
from pipeline.worker import preload
preload()
from pipeline.store import store_template
before = set(sys.modules)
database = Path(sys.argv[1])
if store_template().exists():
    shutil.copyfile(store_template(), database)
from mlflow.tracking import MlflowClient
MlflowClient(tracking_uri=f"sqlite:///{database}").search_experiments(max_results=1)
print(sorted(name for name in set(sys.modules) - before if "sqlalchemy_store" in name))
"""


def test_the_stores_of_track_are_preloaded(tmp_path: Path):
    """MLflow imports its SQLAlchemy store (0.5 s of CPU) only when a client first
    opens an SQL store: the worker imports it, so that `track` does not."""
    completed = subprocess.run(
        [sys.executable, "-c", OPEN_STORE, str(tmp_path / "mlflow.db")],
        cwd=ROOT,
        env=variables(tmp_path),
        capture_output=True,
        text=True,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.splitlines()[-1] == "[]"


def test_a_worker_that_ends_before_the_stage_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A worker that takes the request and then ends (killed while importing, say)
    before any stage started: the client runs the stage itself."""
    project = make_project(tmp_path / "project")
    runtime = private_runtime(tmp_path / "run")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path()))
    listener.listen(1)

    def take_and_end() -> None:
        connection, _ = listener.accept()
        with connection:
            request, descriptors = receive_message(connection, max_descriptors=3)
            for descriptor in descriptors:
                os.close(descriptor)
            assert request is not None and request["announce"] is True

    taker = threading.Thread(target=take_and_end)
    taker.start()
    try:
        completed = run_client(project, runtime, FAKE="hello")
    finally:
        taker.join(timeout=60)
        listener.close()
        stop_worker(project, runtime)

    assert completed.returncode == 0, completed.stderr
    report = report_of(completed)
    assert report["preloaded"] is False
    assert report["parent"] == os.getpid()  # the client itself ran it
    assert completed.stderr == "to stderr\n"


def test_idle_worker_exits(tmp_path: Path):
    project = make_project(tmp_path / "project")
    runtime = private_runtime(tmp_path / "run")
    worker = start_worker(project, runtime, "--idle-seconds", "1")

    assert worker.wait(timeout=60) == 0
    assert not list((runtime / "pipeline-worker").glob("*.sock"))


def test_stop_request_ends_the_worker(runtime: Path, worker: subprocess.Popen):
    """Last in this module: `python -m pipeline.worker stop`."""
    connection = connect(socket_file(runtime))
    assert connection is not None
    with connection:
        send_message(connection, {"stop": True})
        assert receive_message(connection)[0] == {"refused": "stopping"}
    assert not list((runtime / "pipeline-worker").glob("*.sock"))


# Files that differ between any two runs: MLflow run ids, new with every publication,
# and training times (not DVC outputs: pipeline/paths.py TIMINGS).
# The MLflow run ids (each store draws its own) and the training times.
VARYING_FILES = {
    "data/track/mlflow_runs.json",
    "data/track/published.json",
    "data/train_keras/timing.json",
    "data/train_sklearn/timing.json",
}


def data_hashes(project: Path) -> dict[str, str]:
    return {
        str(path.relative_to(project)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((project / "data").rglob("*"))
        if path.is_file() and str(path.relative_to(project)) not in VARYING_FILES
    }


@pytest.mark.slow
def test_outputs_are_byte_identical_with_and_without_the_worker(tmp_path: Path):
    """`dvc repro` of the real pipeline, every stage in the worker's children, against
    every stage by itself."""
    warm = tiny_project(tmp_path / "warm", "worker", END_TO_END_EPOCHS)
    alone = tiny_project(tmp_path / "alone", "worker", END_TO_END_EPOCHS)
    runtime = private_runtime(tmp_path / "run")
    start_worker(warm, runtime)
    try:
        execute(warm, "dvc", "repro", env=environment({"XDG_RUNTIME_DIR": str(runtime)}))
    finally:
        stop_worker(warm, runtime)
    execute(alone, "dvc", "repro", env=environment({"PIPELINE_WORKER": "0"}))

    log = (runtime / "worker.log").read_text()
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in stages:
        assert f"runs pipeline.{stage} in {warm}\n" in log
    warm_hashes, alone_hashes = data_hashes(warm), data_hashes(alone)
    assert len(warm_hashes) > 20
    assert warm_hashes == alone_hashes


def test_client_and_worker_modules_import_only_the_standard_library():
    """The client starts in a few hundredths of a second, and the worker holds no stage
    code of its own but these modules, which each child drops."""
    code = (
        "import sys; started = set(sys.modules); import pipeline.client, pipeline.worker; "
        "print(sorted({name.split('.')[0] for name in set(sys.modules) - started} "
        "- set(sys.stdlib_module_names) - {'pipeline'}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )

    assert completed.stdout == "[]\n"
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, pipeline.client; print(sorted(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'pipeline.config'" not in loaded


def test_ctrl_c_while_a_stage_run_by_hand_imports_is_one_line(tmp_path: Path):
    """`python -m pipeline.<stage>` typed by hand, without the client: Ctrl-C during
    the stage's imports is the same one line and 130, not a traceback."""
    directory = make_project(tmp_path / "by-hand")
    stage = subprocess.Popen(
        [sys.executable, "-m", "pipeline.slow_import"],
        cwd=directory,
        env=variables(tmp_path),
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_file(directory / "importing")
    stage.send_signal(signal.SIGINT)
    _, errors = stage.communicate(timeout=60)

    assert stage.returncode == 130
    assert errors == f"error: stopped by Ctrl-C (SIGINT); {STOPPED}\n"
