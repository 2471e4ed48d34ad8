"""Project-wide rules: lint and format, and heavy imports only where they are needed."""

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
        ("pipeline.generate", False),
        ("pipeline.split", False),
        ("pipeline.train_sklearn", False),
        ("pipeline.evaluate", False),
        ("pipeline.diagnosis", False),
        ("pipeline.report", False),
        ("pipeline.compare", True),
        ("pipeline.rank", True),
    ],
)
def test_stage_does_not_import_tensorflow(module: str, uses_mlflow: bool):
    """`import tensorflow` costs seconds; stages that do not train Keras skip it, and
    only the stages that talk to MLflow import it."""
    code = f"import sys, {module}; print('tensorflow' in sys.modules, 'mlflow' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert completed.stdout.split() == ["False", str(uses_mlflow)]
