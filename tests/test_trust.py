"""End to end: bad input, crashes, signals and MLflow outages never lose results."""

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import zipfile
from contextlib import closing, suppress
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt
from mlflow.tracking import MlflowClient

from pipeline import paths
from pipeline.files import file_md5, read_json, recorded_output
from tests.endtoend import (
    RUNS_PER_PUBLICATION,
    copy_project,
    environment,
    execute,
    process_running,
    set_nested_params,
    set_params,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def project(built_project: Path, tmp_path: Path) -> Path:
    return copy_project(built_project, tmp_path / "project")


def output_hashes(project: Path) -> dict[str, str]:
    return {
        str(path.relative_to(project)): file_md5(path)
        for path in sorted((project / "data").rglob("*"))
        if path.is_file()
    }


def run_statuses(project: Path) -> list[tuple[str, str]]:
    """(status, parent run id or '') of every run, read without creating the store."""
    database = project / "mlflow.db"
    if not database.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
            return connection.execute(
                "SELECT runs.status, COALESCE(tags.value, '') FROM runs LEFT JOIN tags "
                "ON tags.run_uuid = runs.run_uuid AND tags.key = 'mlflow.parentRunId'"
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []


def start(project: Path, *command: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=project,
        env=env or environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so that the whole process group can be signalled
    )


def wait_for(condition, timeout: float = 180, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(interval)


def test_bad_params_fail_in_one_line_and_keep_every_output(project: Path):
    before = output_hashes(project)
    set_params(project, model__epochs=0)
    completed = execute(project, "dvc", "repro", check=False)
    assert completed.returncode != 0
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: params.yaml: model.epochs = 0: must be greater than 0",
    ]
    assert "Traceback" not in completed.stderr
    assert output_hashes(project) == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"model.optimizer": "sgd", "model.momentum": 0.9, "model.nesterov": "yes"},
            "params.yaml: model.nesterov = 'yes': must be a valid boolean",
            id="nesterov yes",
        ),
        pytest.param(
            {"dataset.n_samples": 10**12},
            "params.yaml: dataset.n_samples = 1000000000000: must be less than or equal to "
            "100000000",
            id="a trillion rows",
        ),
        pytest.param(
            {"model.learning_rte": 0.001, "model.learning_rate": None},
            "params.yaml: unknown key model.learning_rte; did you mean 'learning_rate'? "
            "(allowed here: hidden_layers, activation, optimizer, learning_rate, ",
            id="renamed key",
        ),
        pytest.param(
            {"dataset.source": "file", "dataset.path": "table.csv", "dataset.target": "CLASS"},
            # The escape sequence in a column name is shown, not sent to the terminal.
            "table.csv: no column dataset.target = 'CLASS'; did you mean 'class'? "
            "(columns: a, \\x1b[2Jb, class)",
            id="target in another case",
        ),
    ],
)
def test_params_mistakes_are_named_with_the_fix(project: Path, changes: dict, message: str):
    (project / "table.csv").write_text("a,\x1b[2Jb,class\n1,2,yes\n3,4,no\n")
    before = output_hashes(project)
    set_nested_params(project, {key: value for key, value in changes.items() if value is not None})
    raw = yaml.safe_load((project / "params.yaml").read_text())
    for key in (key for key, value in changes.items() if value is None):
        section, name = key.split(".")
        del raw[section][name]
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    completed = execute(project, sys.executable, "-m", "pipeline.dataset", check=False)

    assert completed.returncode == 2
    assert completed.stderr.startswith(f"error: {message}"), completed.stderr
    assert completed.stderr.count("\n") == 1
    assert "\x1b" not in completed.stderr and "Traceback" not in completed.stderr
    assert output_hashes(project) == before


def test_same_params_give_identical_metrics_and_publish_once(project: Path, built_project: Path):
    """A forced rerun in another process reproduces the metrics files bit for bit; its
    publication goes to the existing runs instead of new ones."""
    execute(project, "dvc", "repro", "--force")
    for path in (paths.METRICS, paths.KERAS_HISTORY, paths.SKLEARN_HISTORY):
        assert (project / path).read_bytes() == (built_project / path).read_bytes(), path
    runs_after_first = run_statuses(project)
    assert len(runs_after_first) == RUNS_PER_PUBLICATION
    assert {status for status, _ in runs_after_first} == {"FINISHED"}
    first_ids = (project / paths.MLFLOW_RUNS).read_text()
    completed = execute(project, "dvc", "repro", "--force", "--single-item", "track")
    assert "already published" in completed.stderr
    assert run_statuses(project) == runs_after_first
    assert (project / paths.MLFLOW_RUNS).read_text() == first_ids


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_publishing_ends_runs_killed(project: Path, signal_number: int):
    process = start(project, sys.executable, "-m", "pipeline.track")
    wait_for(lambda: any(status == "RUNNING" for status, _ in run_statuses(project)))
    os.kill(process.pid, signal_number)
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0, output
    statuses = run_statuses(project)
    assert statuses, output
    assert {status for status, _ in statuses} == {"KILLED"}, output


def test_runs_orphaned_by_kill_9_are_marked_killed_by_the_next_publish(project: Path):
    process = start(project, sys.executable, "-m", "pipeline.track")
    wait_for(lambda: any(status == "RUNNING" for status, _ in run_statuses(project)))
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    orphaned = [status for status, _ in run_statuses(project)]
    assert "RUNNING" in orphaned
    execute(project, sys.executable, "-m", "pipeline.track")
    statuses = run_statuses(project)
    parents = [status for status, parent in statuses if not parent]
    assert sorted(parents) == ["FINISHED", "KILLED"]
    assert "RUNNING" not in {status for status, _ in statuses}


def test_runs_orphaned_in_another_experiment_are_marked_killed_too(project: Path):
    """The next publish after a kill -9 may go to another experiment (a changed
    track.experiment_name): the orphans of the first still end KILLED."""
    process = start(project, sys.executable, "-m", "pipeline.track")
    wait_for(lambda: any(status == "RUNNING" for status, _ in run_statuses(project)))
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # A child run may have ended before the kill: only the RUNNING ones are orphans.
    left = sorted(status for status, _ in run_statuses(project))
    assert "RUNNING" in left
    set_nested_params(project, {"track.experiment_name": "another experiment"})

    completed = execute(project, sys.executable, "-m", "pipeline.track")

    killed = completed.stderr.count("KILLED: its process died without ending it")
    assert killed == left.count("RUNNING")
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    statuses = {
        name: sorted(
            run.info.status
            for run in client.search_runs([client.get_experiment_by_name(name).experiment_id])
        )
        for name in ("end-to-end", "another experiment")
    }
    assert statuses["end-to-end"] == sorted(status.replace("RUNNING", "KILLED") for status in left)
    assert set(statuses["another experiment"]) == {"FINISHED"}


def test_model_archive_changed_outside_the_pipeline_is_not_published(project: Path):
    """Outside DVC too: a file added to a model archive after `dvc repro` recorded it."""
    archive = project / paths.KERAS_MLFLOW_MODEL
    with zipfile.ZipFile(archive, "a") as opened:
        opened.writestr("extra.py", "print('not from the pipeline')")
    before = output_hashes(project)

    completed = execute(project, sys.executable, "-m", "pipeline.track", check=False)

    assert completed.returncode == 2
    assert completed.stderr == (
        f"error: {paths.KERAS_MLFLOW_MODEL}: MD5 {file_md5(archive)} differs from "
        f"{recorded_output(paths.KERAS_MLFLOW_MODEL, project / 'dvc.lock')[1]}, which dvc.lock "
        "records for stage train_keras; refusing a file changed since. Run `dvc repro` to "
        "rebuild it, or `dvc commit -f train_keras` if you reran train_keras by hand on "
        "purpose\n"
    )
    assert output_hashes(project) == before
    assert run_statuses(project) == []
    # The first remedy the message names works: `dvc repro` rebuilds the archive, byte
    # for byte the one dvc.lock records (so `track` itself has nothing new to do), and
    # publishing it is accepted.
    repro = execute(project, "dvc", "repro")
    assert "Running stage 'train_keras'" in repro.stdout
    assert "extra.py" not in zipfile.ZipFile(archive).namelist()
    assert file_md5(archive) == recorded_output(paths.KERAS_MLFLOW_MODEL, project / "dvc.lock")[1]
    execute(project, sys.executable, "-m", "pipeline.track")
    assert {status for status, _ in run_statuses(project)} == {"FINISHED"}


def test_kill_9_during_training_loses_nothing(project: Path):
    before = output_hashes(project)
    set_params(project, model__epochs=40)
    process = start(project, "dvc", "repro")
    seen: list[str] = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("keras#0 epoch   2/40"):
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait()
    assert any(line.startswith("keras#0 epoch") for line in seen), "".join(seen)
    # Either the previous outputs or new complete ones; here, mid-training, the old.
    assert output_hashes(project) == before
    assert not [path for path in (project / "data").rglob(".*") if path.is_file()]
    completed = execute(project, "dvc", "repro")
    assert "Running stage 'train_keras'" in completed.stdout
    history = (project / paths.KERAS_HISTORY).read_text().splitlines()
    assert len(history) == 1 + 40
    assert execute(project, "dvc", "status").stdout.strip() == "Data and pipelines are up to date."


STOPPED = (
    "every output is the previous one or a complete new one, and `dvc repro` finishes the rest"
)


# Keras' second epoch: `keras   epoch   2/...`, or `keras#1 epoch   2/...` with replicates.
SECOND_KERAS_EPOCH = re.compile(r"keras(#\d+)? +epoch +2/")


def read_until_second_keras_epoch(process: subprocess.Popen) -> list[str]:
    """The output lines of `process` up to Keras' second epoch."""
    seen: list[str] = []
    for line in process.stdout:
        seen.append(line)
        if SECOND_KERAS_EPOCH.match(line):
            return seen
    raise AssertionError(f"no second Keras epoch:\n{''.join(seen)}")


def kill_group(process: subprocess.Popen) -> None:
    """End whatever is left of `process` and the processes it started."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def leftovers(project: Path) -> list[Path]:
    """Temporary files of atomic writes left behind."""
    return [path for path in (project / "data").rglob(".*") if path.is_file()]


@pytest.mark.parametrize(
    ("signal_number", "exit_code", "name"),
    [(signal.SIGINT, 130, "Ctrl-C (SIGINT)"), (signal.SIGTERM, 143, "SIGTERM")],
)
def test_interrupted_stage_stops_in_one_line(
    project: Path, signal_number: int, exit_code: int, name: str
):
    before = output_hashes(project)
    set_params(project, model__epochs=100_000)
    process = start(project, sys.executable, "-m", "pipeline.train_keras")
    try:
        read_until_second_keras_epoch(process)
        os.kill(process.pid, signal_number)
        output, _ = process.communicate(timeout=60)
    finally:
        kill_group(process)

    assert process.returncode == exit_code, output
    assert output.splitlines()[-1] == f"error: stopped by {name}; {STOPPED}"
    assert "Traceback" not in output
    assert output_hashes(project) == before
    assert not leftovers(project)


def descendants(pid: int) -> list[int]:
    """The processes `pid` started, and theirs, from /proc."""
    children = [
        int(child)
        for tasks in Path(f"/proc/{pid}/task").glob("*/children")
        for child in tasks.read_text().split()
    ]
    return children + [grandchild for child in children for grandchild in descendants(child)]


def test_stage_stops_when_dvc_is_killed(project: Path):
    """SIGTERM to `dvc repro` alone (not its process group): the stage it started
    stops too, instead of training on with nobody to record its outputs. SHELL=/bin/sh
    (what DVC uses where SHELL is unset, as in many CI services) puts a shell between
    them: dash forks the stage and waits, so the stage's parent outlives `dvc`."""
    before = output_hashes(project)
    set_params(project, model__epochs=100_000)
    process = start(project, "dvc", "repro", env=environment({"SHELL": "/bin/sh"}))
    try:
        seen = read_until_second_keras_epoch(process)
        stage = descendants(process.pid)
        assert any(
            b"pipeline.train_keras" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in stage
        )
        os.kill(process.pid, signal.SIGTERM)
        # The pipe closes only when the stage, which shares it, has ended as well.
        output, _ = process.communicate(timeout=60)
    finally:
        kill_group(process)

    output = "".join(seen) + output
    assert f"error: stopped by SIGTERM; {STOPPED}" in output.splitlines()
    assert "Traceback" not in output
    assert not any(process_running(pid) for pid in stage)
    assert output_hashes(project) == before
    assert not leftovers(project)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_outage_fails_fast_and_publishes_later_without_retraining(project: Path, tmp_path: Path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    set_params(project, evaluate__threshold=0.4)
    server_variables = environment({"MLFLOW_TRACKING_URI": uri})
    failed = execute(project, "dvc", "repro", env=server_variables, check=False)
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: MLflow tracking store {uri} is unreachable"
    ), failed.stderr
    # The verdict and the report are there before publishing fails.
    assert "Running stage 'compare'" in failed.stdout
    assert "McNemar on correctness (threshold 0.4)" in (project / paths.REPORT_MARKDOWN).read_text()
    assert read_json(project / paths.VERDICT)["winner"] in ("keras", "sklearn", "tie")

    server = start(
        tmp_path, sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--serve-artifacts", "--artifacts-destination", str(tmp_path / "server-artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    )  # fmt: skip
    try:

        def healthy() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False

        wait_for(healthy, timeout=120)
        published = execute(project, "dvc", "repro", env=server_variables)
        ran = [line for line in published.stdout.splitlines() if line.startswith("Running stage")]
        # Only publishing was left to do.
        assert ran == ["Running stage 'track':"]
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("end-to-end")
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == RUNS_PER_PUBLICATION
        assert {run.info.status for run in runs} == {"FINISHED"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def test_markup_in_params_is_shown_as_text_in_every_report(project: Path):
    """An experiment name that closes its code span and opens an HTML tag: the Markdown
    report, the HTML report and MLflow's run description all show it as text."""
    name = "x` <img src=x onerror=alert(3)> `y"
    set_nested_params(project, {"track.experiment_name": name})

    completed = execute(project, "dvc", "repro")

    assert "Running stage 'compare'" in completed.stdout
    markdown = (project / paths.REPORT_MARKDOWN).read_text()
    # What GitHub, MLflow or an editor's preview shows: CommonMark, raw HTML allowed.
    shown = MarkdownIt("commonmark").enable("table").render(markdown)
    assert "<img" not in shown
    assert "in experiment <code>x` &lt;img src=x onerror=alert(3)&gt; `y</code>" in shown
    page = (project / paths.REPORT_HTML).read_text()
    assert "<img src=x" not in page
    assert "<code>x` &lt;img src=x onerror=alert(3)&gt; `y</code>" in page
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    parent = client.get_run(read_json(project / paths.MLFLOW_RUNS)["parent_run_id"])
    assert client.get_experiment(parent.info.experiment_id).name == name
    note = parent.data.tags["mlflow.note.content"]
    assert "Keras vs scikit-learn" in note
    assert "<img" not in MarkdownIt("commonmark").enable("table").render(note)
