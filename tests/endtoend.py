"""Helpers for end-to-end tests: temporary copies of the repository and commands in them."""

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

END_TO_END_EPOCHS = 3
END_TO_END_EXPERIMENT = "end-to-end"
# The replicates the committed params.yaml trains, and the MLflow runs one
# publication of them makes: the parent, one run per family, one per replicate.
DEFAULT_REPLICATES = yaml.safe_load((ROOT / "params.yaml").read_text())["replicates"]["count"]
RUNS_PER_PUBLICATION = 1 + 2 * (1 + DEFAULT_REPLICATES)


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without MLflow, DVC or pipeline settings, plus `extra`."""
    variables = {
        key: value
        for key, value in os.environ.items()
        # A copy uses only the store and remote its test gives it, whatever the caller has set.
        if not key.startswith(("MLFLOW_", "DVC_", "PIPELINE_"))
    }
    # `python` in dvc.yaml, and `mlflow` in scripts/tracking-server, must be this
    # environment's.
    variables["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{variables['PATH']}"
    return {**variables, **(extra or {})}


# Set by tests/conftest.py: writes a line to the terminal past pytest's capture, so
# that a long end-to-end test shows which stage it is in.
progress: Callable[[str], None] = lambda line: None  # noqa: E731
PROGRESS_LINE = re.compile(r"^(Running stage '\w+'|Stage '\w+' didn't change)")


def execute(
    project: Path,
    *command: str,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run a command in `project`; with `check`, fail the test with its output. Each
    stage DVC starts is reported as progress while it runs."""
    process = subprocess.Popen(
        command,
        cwd=project,
        env=env or environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # stderr is drained on its own thread, so that neither pipe can fill and block.
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    lines = []
    for line in process.stdout:
        lines.append(line)
        if PROGRESS_LINE.match(line):
            progress(f"    {' '.join(command[:2])}: {line.strip()}")
        if time.monotonic() > deadline:
            process.kill()
            raise subprocess.TimeoutExpired(command, timeout)
    try:
        process.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    reader.join()
    completed = subprocess.CompletedProcess(
        command, process.returncode, "".join(lines), "".join(errors)
    )
    if check:
        assert completed.returncode == 0, (
            f"{' '.join(command)} failed:\n{completed.stdout}\n{completed.stderr}"
        )
    return completed


def copy_repository(destination: Path) -> None:
    """The files git would give a fresh clone, including uncommitted edits, without
    dvc.lock: every stage of the copy runs."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (destination / "dvc.lock").unlink(missing_ok=True)


def set_params(project: Path, **changes: object) -> None:
    """Change params.yaml keys given as section__key=value."""
    path = project / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw[section][key] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def set_nested_params(project: Path, changes: dict[str, object]) -> None:
    """Change params.yaml keys given by their dotted path, at any depth
    (`{"compare.promote.enabled": True}`)."""
    path = project / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        section = raw
        for key in parents:
            section = section[key]
        section[last] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


SECRET = "s3cret-never-logged-7f1e"


def copy_project(built: Path, destination: Path) -> Path:
    """An independent copy of a built project (git, DVC cache, outputs) with an empty
    MLflow store of its own."""
    shutil.copytree(
        built,
        destination,
        symlinks=True,
        ignore=shutil.ignore_patterns("mlflow.db*", "mlartifacts"),
    )
    return destination


def commit_all(project: Path, message: str) -> None:
    execute(project, "git", "add", "-A")
    execute(project, "git", "commit", "-qm", message)


def tiny_project(destination: Path, experiment_name: str, epochs: int) -> Path:
    """A git repository holding this project with 400 rows and a few epochs, not yet run."""
    destination.mkdir(parents=True, exist_ok=True)
    copy_repository(destination)
    raw = yaml.safe_load((destination / "params.yaml").read_text())
    raw["dataset"]["n_samples"] = 400
    raw["model"]["epochs"] = epochs
    raw["track"]["experiment_name"] = experiment_name
    (destination / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    initialize_repository(destination, "tiny params")
    return destination


def initialize_repository(project: Path, message: str) -> None:
    """Make `project` a git repository with everything in it committed: DVC's
    experiments and the pipeline's git tags need a commit."""
    execute(project, "git", "init", "-q", "-b", "main")
    configure_git_user(project)
    commit_all(project, message)


def configure_git_user(project: Path) -> None:
    """Commits, DVC's experiment commits included, need an author on any machine."""
    execute(project, "git", "config", "user.name", "test")
    execute(project, "git", "config", "user.email", "test@example.com")


def wait_for_queue(project: Path, env: dict[str, str], timeout: float = 600) -> str:
    """Poll `dvc queue status` until no experiment is queued or running; return the status.

    Each poll costs about a second of CPU, taken from the experiments: poll rarely.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = execute(project, "dvc", "queue", "status", env=env).stdout
        if "Queued" not in status and "Running" not in status:
            return status
        assert time.monotonic() < deadline, f"the queue did not finish in {timeout} s:\n{status}"
        time.sleep(10)


def process_running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        # Gone before the open, or reaped between the open and the read (ESRCH).
        return False
