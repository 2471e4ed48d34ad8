"""Helpers for end-to-end tests: temporary copies of the repository and commands in them."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

END_TO_END_EPOCHS = 3
END_TO_END_EXPERIMENT = "end-to-end"


def execute(
    project: Path,
    *command: str,
    environment: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run a command in `project` with this environment's tools first on PATH."""
    variables = {
        key: value
        for key, value in os.environ.items()
        # The copy must use its own embedded store, whatever the caller has set.
        if not key.startswith(("MLFLOW_", "DVC_", "PIPELINE_"))
    }
    # `python` in dvc.yaml must be this environment's interpreter.
    variables["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{variables['PATH']}"
    variables.update(environment or {})
    completed = subprocess.run(
        command, cwd=project, env=variables, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert completed.returncode == 0, (
            f"{' '.join(command)} failed:\n{completed.stdout}\n{completed.stderr}"
        )
    return completed


def copy_repository(destination: Path) -> None:
    """The files git would give a fresh clone, including uncommitted edits."""
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
