"""Project-wide rules: lint and format, and heavy imports only where they are needed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
        ("pipeline.track", True),
        ("pipeline.compare", True),
        ("pipeline.rank", True),
        # The search loads models to score trials, and writes to MLflow, lazily.
        ("pipeline.search", False),
        ("pipeline.search_report", False),
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
