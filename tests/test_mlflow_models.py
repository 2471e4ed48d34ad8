"""Models as the training stages save them and as a user loads them from MLflow."""

import json
import sys

import pytest

from pipeline import paths
from tests.endtoend import environment, execute

# The README's way to load a logged model, with its predictions printed.
LOAD = """
import json, sys
import numpy as np
from pipeline.mlflow_models import load_logged_model

model = load_logged_model(sys.argv[1])
print(json.dumps(np.asarray(model.predict(np.zeros((3, 8), dtype="float32"))).tolist()))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("uri", "columns"),
    [("models:/{keras_model_id}", 1), ("runs:/{sklearn_run_id}/model", 2)],
)
def test_a_logged_model_loads_and_predicts_without_a_line_on_stderr(built_project, uri, columns):
    run_ids = json.loads((built_project / paths.MLFLOW_RUNS).read_text())
    store = environment(
        {
            "MLFLOW_TRACKING_URI": f"sqlite:///{built_project / 'mlflow.db'}",
            # skops, not pickle; MLflow asks for this before any scikit-learn model.
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
        }
    )
    completed = execute(built_project, sys.executable, "-c", LOAD, uri.format(**run_ids), env=store)
    assert completed.stderr == ""
    probabilities = json.loads(completed.stdout)
    assert len(probabilities) == 3
    assert all(len(row) == columns and 0 <= min(row) <= max(row) <= 1 for row in probabilities)
