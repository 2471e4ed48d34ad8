"""What a reviewer sees first in MLflow: the run list's columns, the verdict on the
parent run's row, and a link to both models' per-epoch curves.

MLflow's UI keeps the run list's columns in the browser. It also loads them from an
experiment tag `mlflow.sharedViewState.<key>` when a link carries
`viewStateShareKey=<key>` (its "Share" button makes such links): `track` writes
one, so that its link opens the run list with the verdict's columns and nothing to
configure. The curves link opens MLflow's metric page, whose URL names the runs and
metrics it plots.
"""

import json
import time
from typing import Any
from urllib.parse import quote, urlencode

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from pipeline.headline import FAMILIES, rounded

# MLflow 3 opens an experiment on its GenAI overview (traces, prompts) unless the
# experiment says that it holds model training runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
RUNS_VIEW_KEY = "mlp-compare"  # the run list's view, one per experiment
TAG_VERDICT = "verdict"
# Where `mlflow ui` serves by default, for stores that are files.
LOCAL_UI = "http://127.0.0.1:5000"
# The test metrics shown on each parent run, after the primary metric.
SHOWN_METRICS = ("roc_auc", "accuracy", "log_loss")
CURVES = ("loss", "val_loss")  # both models' curves in one chart


def shown_metrics(primary_metric: str) -> tuple[str, ...]:
    return (primary_metric, *(name for name in SHOWN_METRICS if name != primary_metric))


def parent_metric_name(family: str, metric: str) -> str:
    return f"{family}_test_{metric}"


def parent_metrics(
    test_metrics: dict[str, dict[str, float]], primary_metric: str
) -> dict[str, float]:
    """Both families' test metrics for the parent run, rounded: its row in the run list
    shows them without expanding the children."""
    return {
        parent_metric_name(family, metric): rounded(test_metrics[family][metric])
        for metric in shown_metrics(primary_metric)
        for family in FAMILIES
        if metric in test_metrics[family]
    }


def column(kind: str, key: str) -> str:
    """A column of MLflow's run list, as its views name them: metrics.`p_value`."""
    return f"{kind}.`{key}`"


def run_list_columns(primary_metric: str) -> list[str]:
    """Few enough to fit beside the run names: the verdict, then both families' primary
    metric and the p-value on the parent row."""
    return [
        column("tags", TAG_VERDICT),
        *(column("metrics", parent_metric_name(family, primary_metric)) for family in FAMILIES),
        column("metrics", "p_value"),
    ]


def runs_view(primary_metric: str) -> dict[str, Any]:
    """The run list: its columns in this order, each wide enough for its name."""
    columns = run_list_columns(primary_metric)
    return {
        "selectedColumns": columns,
        "columnOrder": columns,
        # About 7 pixels per character of the name (`metrics.`x`` shows as x).
        "columnWidths": {name: 7 * len(name.split("`")[1]) + 40 for name in columns},
    }


def ui_address(tracking_uri: str) -> str:
    """The UI of a tracking server, or where `mlflow ui` serves a store of files."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return LOCAL_UI


def runs_link(address: str, experiment_id: str) -> str:
    """The run list with the verdict's columns, in MLflow's model-training layout."""
    return (
        f"{address}/#/experiments/{experiment_id}/runs"
        f"?viewStateShareKey={RUNS_VIEW_KEY}&workflowType=machine_learning"
    )


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def curves_link(address: str, experiment_id: str, run_ids: dict[str, str]) -> str:
    """MLflow's metric page: both models' loss and val_loss per epoch in one chart."""
    runs = compact([run_ids[f"{family}_run_id"] for family in FAMILIES])
    query = {
        "runs": runs,
        "metric": compact(CURVES[0]),
        "experiments": compact([experiment_id]),
        "plot_metric_keys": compact(list(CURVES)),
        "plot_layout": "{}",
        "x_axis": "step",
        "y_axis_scale": "linear",
        "line_smoothness": "1",
        "show_point": "true",
        "deselected_curves": "[]",
        "last_linear_y_axis_range": "[]",
    }
    # JSON's brackets, commas and colons stay readable; its quotes become %22.
    return f"{address}/#/metric?{urlencode(query, safe='[]{},:', quote_via=quote)}"


def publish_views(
    client: MlflowClient,
    experiment_id: str,
    run_ids: dict[str, str],
    verdict: str,
    metrics: dict[str, float],
    primary_metric: str,
) -> None:
    """The experiment's kind and views, and the parent run's verdict and metrics."""
    parent_run_id = run_ids["parent_run_id"]
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    client.set_experiment_tag(
        experiment_id,
        SHARED_VIEW_PREFIX + RUNS_VIEW_KEY,
        json.dumps(runs_view(primary_metric), separators=(",", ":")),
    )
    client.set_tag(parent_run_id, TAG_VERDICT, verdict)
    now = int(time.time() * 1000)
    client.log_batch(
        parent_run_id, metrics=[Metric(name, value, now, 0) for name, value in metrics.items()]
    )
