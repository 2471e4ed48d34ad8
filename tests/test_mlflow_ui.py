"""The MLflow UI as a reviewer opens it: `mlflow ui` on a store the pipeline wrote, and
the links that `compare` prints, in headless Chromium."""

import html
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import paths
from pipeline.views import curves_link, runs_link
from tests.browser import dump_dom
from tests.endtoend import environment

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def page_text(dom: str) -> str:
    """What a person reads on the page: the DOM without scripts, styles and tags."""
    text = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", dom, flags=re.DOTALL)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


@pytest.fixture(scope="module")
def mlflow_ui(built_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow ui` on 127.0.0.1, serving a copy of the built project's store."""
    store = tmp_path_factory.mktemp("store")
    for database in built_project.glob("mlflow.db*"):
        shutil.copy(database, store / database.name)
    port = free_port()
    log = store / "mlflow-ui.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            ["mlflow", "ui", "--host", "127.0.0.1", "--port", str(port)]
            + ["--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}"],
            cwd=built_project,
            env=environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{address}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, f"mlflow ui exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"mlflow ui did not answer:\n{log.read_text()}"
            time.sleep(1)
        yield address
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def run_ids(built_project: Path) -> dict[str, str]:
    return json.loads((built_project / paths.MLFLOW_RUNS).read_text())


def test_the_run_list_shows_the_verdict_and_both_families_metric(
    mlflow_ui, run_ids, built_project, tmp_path
):
    headline = json.loads((built_project / paths.HEADLINE).read_text())
    dom = dump_dom(runs_link(mlflow_ui, run_ids["experiment_id"]), tmp_path)
    assert re.search(r"<title>Runs - ", dom)
    text = page_text(dom)
    # The columns come from the view that compare stored in the experiment.
    assert "You're viewing a shared view" in text
    for column in ("keras_test_roc_auc", "sklearn_test_roc_auc", "p_value", "verdict"):
        assert column in text
    # The parent row, collapsed, with the verdict and both rounded metrics on it.
    assert headline["verdict"] in text
    assert f"{headline['keras_roc_auc']}" in text
    assert f"{headline['sklearn_roc_auc']}" in text


def test_the_experiment_opens_on_its_runs_not_the_genai_overview(mlflow_ui, run_ids, tmp_path):
    # MLflow 3 remembers the last layout per browser; a fresh one starts on GenAI,
    # whose experiment page is an overview of traces. The documented links ask for
    # the model-training layout, where an experiment opens on its runs.
    experiment = f"{mlflow_ui}/#/experiments/{run_ids['experiment_id']}"
    assert "<title>Overview - " in dump_dom(experiment, tmp_path / "genai")
    dom = dump_dom(f"{experiment}?workflowType=machine_learning", tmp_path / "training")
    assert "<title>Runs - " in dom


def test_the_curves_link_overlays_both_models_loss_and_val_loss(mlflow_ui, run_ids, tmp_path):
    link = curves_link(mlflow_ui, run_ids["experiment_id"], run_ids)
    text = page_text(dump_dom(link, tmp_path))
    assert "Comparing 2 Runs" in text
    # The chart's legend: one curve per model and metric.
    for curve in ("keras (loss)", "keras (val_loss)", "sklearn (loss)", "sklearn (val_loss)"):
        assert curve in text
