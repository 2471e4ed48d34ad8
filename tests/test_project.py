"""Project-wide rules: lint and format, and heavy imports only where they are needed."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import paths
from pipeline.files import read_json
from tests.endtoend import copy_project, environment

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff(command: list[str]):
    completed = subprocess.run(
        [sys.executable, "-m", "ruff", *command], cwd=ROOT, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize(
    ("module", "uses_mlflow"),
    [
        ("pipeline.dataset", False),
        ("pipeline.split", False),
        ("pipeline.train_sklearn", False),
        ("pipeline.evaluate", False),
        ("pipeline.diagnosis", False),
        ("pipeline.paired_tests", False),
        ("pipeline.statistics", False),
        ("pipeline.replicates", False),
        ("pipeline.report", False),
        # The verdict and the report: computed from files, before publishing.
        ("pipeline.compare", False),
        ("pipeline.comparison_report", False),
        ("pipeline.promotion", False),
        ("pipeline.headline", False),
        ("pipeline.publication", False),
        # Publishing, and reading the store.
        ("pipeline.track", True),
        ("pipeline.store", True),
        ("pipeline.interruptions", True),
        ("pipeline.registry", True),
        ("pipeline.views", True),
        ("pipeline.rank", True),
        # The search loads models to score trials, and writes to MLflow, lazily.
        ("pipeline.search", True),  # its study run: pipeline.search_publication
        ("pipeline.search_report", False),
        # The trainers' pruning hook imports Optuna only inside a search trial.
        ("pipeline.pruning", False),
        ("pipeline.search_runs", False),
    ],
)
def test_only_train_keras_imports_tensorflow(module: str, uses_mlflow: bool):
    """`import tensorflow` costs about 6 s here: one stage pays it, no other."""
    code = f"import sys, {module}; print('tensorflow' in sys.modules, 'mlflow' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    # MLflow (about 2 s) only where runs are logged or read; training stages import
    # it lazily, at the end, to save their MLflow model.
    assert completed.stdout.split() == ["False", str(uses_mlflow)]


def mlflow_imports_and_writes(path: Path) -> tuple[bool, set[str]]:
    """Whether a module imports MLflow (anywhere in it), and which of MLflow's writing
    calls it makes."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = any(
        (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "mlflow" for a in node.names))
        or (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlflow")
        for node in ast.walk(tree)
    )
    calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    return imports, calls & MLFLOW_WRITES


# MLflow's calls that change a store.
MLFLOW_WRITES = {
    "create_experiment",
    "create_run",
    "start_run",
    "end_run",
    "set_terminated",
    "set_tag",
    "set_experiment_tag",
    "log_metric",
    "log_batch",
    "log_params",
    "log_input",
    "log_artifact",
    "log_artifacts",
    "log_model",
    "register_model",
    "set_registered_model_alias",
}
# The publishing stage and its helpers; `rank` reads the store; `mlflow_models`
# saves a model archive in MLflow's format (training) and logs it (track);
# `search_publication` writes the search's tags and study run (not a DVC stage).
PUBLISHING = {
    "track",
    "store",
    "interruptions",
    "registry",
    "views",
    "mlflow_models",
    "search_publication",
}


def test_only_the_publishing_modules_write_to_mlflow():
    """One owner: `track` and its helpers; the verdict and the report never touch it."""
    importers, writers = set(), set()
    for path in sorted((ROOT / "pipeline").glob("*.py")):
        imports, writes = mlflow_imports_and_writes(path)
        if imports:
            importers.add(path.stem)
        if imports and writes:
            writers.add(path.stem)
    assert importers == PUBLISHING | {"rank"}
    assert writers <= PUBLISHING
    assert {"track", "registry", "views"} <= writers
    # Only the publishing stage and `rank` use the store's helpers; `mlflow_models`
    # is shared with training, which saves the archives that track logs.
    helpers = PUBLISHING - {"mlflow_models", "search_publication"}
    for path in sorted((ROOT / "pipeline").glob("*.py")):
        if path.stem in helpers | {"rank", "search_publication"}:
            continue
        imported = {
            node.module
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.ImportFrom)
        }
        publishing = {f"pipeline.{name}" for name in helpers}
        assert not imported & publishing, f"{path.name} imports {imported & publishing}"


@pytest.mark.slow
def test_the_verdict_stage_runs_without_tensorflow_or_mlflow(built_project: Path, tmp_path: Path):
    """compare, run as DVC runs it, on real stage outputs: it writes its files and has
    imported neither library by the time it exits."""
    project = copy_project(built_project, tmp_path / "project")
    (project / paths.VERDICT).unlink()
    # Python's own record of every module the process imported, as DVC runs it.
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline.compare"],
        cwd=project,
        env=environment({"PYTHONPATH": str(project)}),
        capture_output=True,
        text=True,
    )
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in completed.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert {"pipeline", "pandas", "scipy"} <= imported  # the record is complete
    assert not imported & {"tensorflow", "keras", "mlflow"}
    assert completed.returncode == 0, completed.stderr
    assert "compare: report -> reports/comparison.md" in completed.stderr
    assert read_json(project / paths.VERDICT)["winner"] in ("keras", "sklearn", "tie")


def test_mlflow_telemetry_is_off():
    """The product does not phone home; DVC's analytics are off in .dvc/config."""
    code = (
        "import pipeline.track\n"
        "from mlflow.telemetry.utils import is_telemetry_disabled\n"
        "print(is_telemetry_disabled())"
    )
    # Run as a user would: outside CI and pytest, which MLflow already treats as off.
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTEST_CURRENT_TEST", "CI", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")
    }
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    assert completed.stdout.strip() == "True"
    config = (ROOT / ".dvc" / "config").read_text()
    assert "analytics = false" in config
