"""What a reviewer sees first: the DVC metrics row (`data/compare/headline.json`), the
MLflow run list's columns, and a link to both models' per-epoch curves.

MLflow's UI keeps its columns and charts in the browser. It also loads them from an
experiment tag `mlflow.sharedViewState.<key>` when a link carries
`viewStateShareKey=<key>` (its "Share" button makes such links). `compare` writes two
of these views, so that the links it prints open on the right columns and charts
with nothing to configure: the run list with the verdict and both families' test
metrics, and the two models of one comparison with their loss curves overlaid.
"""

import json
import time
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

FAMILIES = ("keras", "sklearn")
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
CURVES = (("loss", "val_loss"), ("accuracy", "val_accuracy"))
DIGITS = 4  # significant digits of every number shown to people


def rounded(value: float, digits: int = DIGITS) -> float:
    """`value` to `digits` significant digits: -0.0016, not -0.00160000000000000458."""
    return float(f"{value:.{digits}g}")


def verdict_text(winner: str, significant: bool) -> str:
    """`keras wins`, `sklearn, n.s.` or `tie`, as `pipeline.rank` writes it."""
    if winner == "tie":
        return "tie"
    return f"{winner} wins" if significant else f"{winner}, n.s."


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


def headline_record(
    verdict: str,
    primary_metric: str,
    test_metrics: dict[str, dict[str, float]],
    p_value: float,
    parent_run_id: str,
) -> dict[str, Any]:
    """data/compare/headline.json, the pipeline's DVC metrics: one short row per
    experiment in `dvc exp show` and `dvc metrics show`."""
    return {
        "verdict": verdict,
        **{
            f"{family}_{primary_metric}": rounded(test_metrics[family][primary_metric])
            for family in FAMILIES
        },
        "p_value": rounded(p_value, 3),
        "mlflow_run": parent_run_id,
    }


def column(kind: str, key: str) -> str:
    """A column of MLflow's run list, as its views name them: metrics.`p_value`."""
    return f"{kind}.`{key}`"


def run_list_columns(primary_metric: str) -> list[str]:
    return [
        column("tags", TAG_VERDICT),
        *(
            column("metrics", parent_metric_name(family, metric))
            for metric in shown_metrics(primary_metric)
            for family in FAMILIES
        ),
        column("metrics", "p_value"),
        # The children's own test metrics, for a parent's expanded rows.
        *(column("metrics", f"test_{metric}") for metric in shown_metrics(primary_metric)),
        column("attributes", "Models"),
    ]


def runs_view(primary_metric: str) -> dict[str, Any]:
    """The run list: the verdict and both families' test metrics as its columns."""
    return {"selectedColumns": run_list_columns(primary_metric)}


def line_chart(metrics: tuple[str, ...], section: str) -> dict[str, Any]:
    """One chart of MLflow's chart view: `metrics` per epoch (step), every run overlaid."""
    return {
        "type": "LINE",
        "uuid": f"curves-{metrics[0]}",
        "metricSectionId": section,
        "displayName": f"{' and '.join(metrics)} per epoch",
        "metricKey": metrics[0],
        "selectedMetricKeys": list(metrics),
        "xAxisKey": "step",
        "xAxisScaleType": "linear",
        "scaleType": "linear",
        "selectedXAxisMetricKey": "",
        "lineSmoothness": 0,
        "useGlobalXaxisKey": False,
        "useGlobalLineSmoothing": False,
        "runsCountToCompare": 10,
        "deleted": False,
        "isGenerated": False,
    }


def curves_view(run_ids: dict[str, str], primary_metric: str) -> dict[str, Any]:
    """The two models of one comparison, their per-epoch curves overlaid in one chart
    per metric (train and validation together)."""
    section = "training-curves"
    listed = ", ".join(f"'{run_ids[family]}'" for family in FAMILIES)
    return {
        "searchFilter": f"attributes.run_id IN ({listed})",
        "selectedColumns": run_list_columns(primary_metric),
        "compareRunCharts": [line_chart(metrics, section) for metrics in CURVES],
        "compareRunSections": [
            {
                "uuid": section,
                "name": "Both models, per epoch",
                "display": True,
                "isReordered": True,
                "deleted": False,
                "isGenerated": False,
            }
        ],
        # Keeps this section first, above the charts MLflow adds for other metrics.
        "isAccordionReordered": True,
    }


def curves_view_key(parent_run_id: str) -> str:
    return f"curves-{parent_run_id}"


def ui_address(tracking_uri: str) -> str:
    """The UI of a tracking server, or where `mlflow ui` serves a store of files."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return LOCAL_UI


def runs_link(address: str, experiment_id: str) -> str:
    """The run list with the verdict's columns."""
    return f"{address}/#/experiments/{experiment_id}/runs?viewStateShareKey={RUNS_VIEW_KEY}"


def curves_link(address: str, experiment_id: str, parent_run_id: str) -> str:
    """Both models of this comparison, their curves overlaid in the chart view."""
    return (
        f"{address}/#/experiments/{experiment_id}/runs"
        f"?viewStateShareKey={curves_view_key(parent_run_id)}&compareRunsMode=CHART"
    )


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
    family_runs = {family: run_ids[f"{family}_run_id"] for family in FAMILIES}
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    views = {
        RUNS_VIEW_KEY: runs_view(primary_metric),
        curves_view_key(parent_run_id): curves_view(family_runs, primary_metric),
    }
    for key, view in views.items():
        client.set_experiment_tag(
            experiment_id, SHARED_VIEW_PREFIX + key, json.dumps(view, separators=(",", ":"))
        )
    client.set_tag(parent_run_id, TAG_VERDICT, verdict)
    now = int(time.time() * 1000)
    client.log_batch(
        parent_run_id, metrics=[Metric(name, value, now, 0) for name, value in metrics.items()]
    )
