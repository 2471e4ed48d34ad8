"""The DVC metrics row, the MLflow run list's columns and the links to the curves."""

import json
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline import paths
from pipeline.headline import headline_record, rounded, verdict_text
from pipeline.views import (
    EXPERIMENT_KIND,
    SHARED_VIEW_PREFIX,
    curves_link,
    parent_metrics,
    publish_views,
    run_list_columns,
    runs_link,
    ui_address,
)
from tests.endtoend import environment, execute

ROOT = Path(__file__).resolve().parents[1]
TEST_METRICS = {
    "keras": {"roc_auc": 0.82626666666, "accuracy": 0.755, "log_loss": 0.52084408, "f1": 0.738},
    "sklearn": {"roc_auc": 0.83318333333, "accuracy": 0.7520833, "log_loss": 0.5215195, "f1": 0.7},
}


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [
        (-0.00160000000000000458, 4, -0.0016),
        (0.82626666666, 4, 0.8263),
        (0.875, 3, 0.875),
        (0.001998001998, 3, 0.002),
        (123456.7, 4, 123500.0),
    ],
)
def test_rounded_keeps_significant_digits(value, digits, expected):
    assert rounded(value, digits) == expected


@pytest.mark.parametrize(
    ("winner", "significant", "expected"),
    [("keras", True, "keras wins"), ("sklearn", False, "sklearn, n.s."), ("tie", False, "tie")],
)
def test_verdict_text(winner, significant, expected):
    assert verdict_text(winner, significant) == expected


def test_parent_metrics_start_with_the_primary_metric_and_are_rounded():
    metrics = parent_metrics(TEST_METRICS, "f1")
    assert list(metrics) == [
        "keras_test_f1",
        "sklearn_test_f1",
        "keras_test_roc_auc",
        "sklearn_test_roc_auc",
        "keras_test_accuracy",
        "sklearn_test_accuracy",
        "keras_test_log_loss",
        "sklearn_test_log_loss",
    ]
    assert metrics["keras_test_roc_auc"] == 0.8263
    assert metrics["sklearn_test_log_loss"] == 0.5215


def test_headline_record_is_one_short_row():
    record = headline_record("sklearn, n.s.", "roc_auc", TEST_METRICS, 0.87512)
    assert record == {
        "verdict": "sklearn, n.s.",
        "keras_roc_auc": 0.8263,
        "sklearn_roc_auc": 0.8332,
        "p_value": 0.875,
    }


def test_the_dvc_metrics_are_the_headline_and_the_published_run():
    """compare's verdict row, and track's MLflow run: it exists only once track ran."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    metrics = {
        name: [next(iter(entry)) for entry in stage.get("metrics", [])]
        for name, stage in stages.items()
    }
    assert {name: files for name, files in metrics.items() if files} == {
        "compare": [str(paths.HEADLINE)],
        "track": [str(paths.PUBLISHED)],
    }


def test_links_point_at_the_ui_of_the_store():
    assert ui_address("sqlite:////repo/mlflow.db") == "http://127.0.0.1:5000"
    assert ui_address("https://mlflow.example.org/") == "https://mlflow.example.org"
    assert runs_link("http://127.0.0.1:5000", "3") == (
        "http://127.0.0.1:5000/#/experiments/3/runs"
        "?viewStateShareKey=mlp-compare&workflowType=machine_learning"
    )
    link = curves_link("http://h:1", "3", {"keras_run_id": "k1", "sklearn_run_id": "s1"})
    address, query = link.split("?", 1)
    assert address == "http://h:1/#/metric"
    # What MLflow's metric page reads from its address: both runs' loss and val_loss
    # against the epoch, every point shown, nothing smoothed.
    assert dict(parse_qsl(query)) == {
        "runs": '["k1","s1"]',
        "metric": '"loss"',
        "experiments": '["3"]',
        "plot_metric_keys": '["loss","val_loss"]',
        "plot_layout": "{}",
        "x_axis": "step",
        "y_axis_scale": "linear",
        "line_smoothness": "1",
        "show_point": "true",
        "deselected_curves": "[]",
        "last_linear_y_axis_range": "[]",
    }
    # Readable: only the quotes are escaped.
    assert '=["k1","s1"]' not in query and "runs=[%22k1%22,%22s1%22]" in query
    assert ui_address("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"


def test_publish_views_sets_the_experiment_kind_views_and_parent_row(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("views", artifact_location=tmp_path.as_uri())
    parent = client.create_run(experiment_id).info.run_id
    run_ids = {
        "parent_run_id": parent,
        "keras_run_id": client.create_run(experiment_id).info.run_id,
        "sklearn_run_id": client.create_run(experiment_id).info.run_id,
    }
    metrics = parent_metrics(TEST_METRICS, "roc_auc")
    publish_views(client, experiment_id, run_ids, "sklearn, n.s.", metrics, "roc_auc")

    tags = client.get_experiment(experiment_id).tags
    assert tags["mlflow.experimentKind"] == EXPERIMENT_KIND
    runs_view = json.loads(tags[SHARED_VIEW_PREFIX + "mlp-compare"])
    assert (
        runs_view["selectedColumns"]
        == run_list_columns("roc_auc")
        == [
            "tags.`verdict`",
            "metrics.`keras_test_roc_auc`",
            "metrics.`sklearn_test_roc_auc`",
            "metrics.`p_value`",
        ]
    )
    assert runs_view["columnOrder"] == runs_view["selectedColumns"]
    assert runs_view["columnWidths"] == {
        "tags.`verdict`": 7 * len("verdict") + 40,
        "metrics.`keras_test_roc_auc`": 7 * len("keras_test_roc_auc") + 40,
        "metrics.`sklearn_test_roc_auc`": 7 * len("sklearn_test_roc_auc") + 40,
        "metrics.`p_value`": 7 * len("p_value") + 40,
    }
    # Compact JSON: MLflow caps an experiment tag's length.
    assert ", " not in tags[SHARED_VIEW_PREFIX + "mlp-compare"]
    # MLflow caps an experiment tag at 5000 characters.
    assert all(len(value) < 5000 for value in tags.values())
    run = client.get_run(parent)
    assert run.data.tags["verdict"] == "sklearn, n.s."
    assert run.data.metrics == metrics
    assert run.data.metrics["keras_test_roc_auc"] == 0.8263
    # The children's rows are left as they are.
    assert client.get_run(run_ids["keras_run_id"]).data.metrics == {}


# The README's `dvc exp show` recipe: the headline columns and the params that differ.
EXP_SHOW = (
    "dvc exp show --only-changed --drop .*/ "
    "--keep Created|verdict|keras_|sklearn_|p_value|mlflow_run"
)


@pytest.mark.slow
def test_dvc_tables_fit_160_columns_with_the_verdict_and_the_mlflow_run(built_project):
    wide = environment({"COLUMNS": "160"})
    run_ids = json.loads((built_project / paths.MLFLOW_RUNS).read_text())
    # The recipe splits on spaces only: each of its arguments is one word.
    table = execute(built_project, *EXP_SHOW.split(" "), "--no-pager", env=wide).stdout
    metrics = execute(built_project, "dvc", "metrics", "show", env=wide).stdout
    for output in (table, metrics):
        assert max(len(line.rstrip()) for line in output.splitlines()) <= 160
        assert "…" not in output
        for name in ("verdict", "keras_roc_auc", "sklearn_roc_auc", "p_value", "mlflow_run"):
            assert name in output
        assert run_ids["parent_run_id"] in output
    workspace = next(line for line in table.splitlines() if "workspace" in line)
    headline = json.loads((built_project / paths.HEADLINE).read_text())
    assert f"{headline['keras_roc_auc']}" in workspace and headline["verdict"] in workspace
    assert run_ids["parent_run_id"] in workspace


def test_the_readme_documents_the_recipe_and_the_run_list_link():
    readme = (ROOT / "README.md").read_text()
    # The same words, quoted for a shell.
    quoted = EXP_SHOW.replace(".*/", "'.*/'").replace("--keep ", "--keep '") + "'"
    assert f"./run {quoted}" in readme
    assert runs_link("http://127.0.0.1:5000", "1") in readme
