"""Rank the finished experiments in MLflow: the best runs of each model family by a
test metric, with the params that differ between runs.

    python -m pipeline.rank [--metric test_roc_auc] [--top 3] [--experiment NAME]
"""

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from pipeline import paths
from pipeline.config import load_params
from pipeline.errors import PipelineError, run_stage
from pipeline.store import (
    TAG_FAMILY,
    TAG_PARAMS_HASH,
    connect,
    redact,
    repository_root,
    resolve_store,
)

DEFAULT_METRIC = "test_roc_auc"
PARENT_TAG = "mlflow.parentRunId"
SEARCH_PAGE = 1000


@dataclass(frozen=True)
class RunRecord:
    """One child run (one model of one pipeline execution) and its parent's verdict."""

    family: str
    run_name: str  # the parent's name: the DVC experiment, or the git revision
    run_id: str
    parent_run_id: str
    start_time: int  # milliseconds since the epoch
    params_hash: str
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    winner: str = ""  # the verdict that track sets on the parent
    significant: str = ""


def lower_is_better(metric: str) -> bool:
    """Losses and times are better small; scores, rates and throughput big."""
    return metric.endswith("loss") or metric.endswith("seconds")


def latest_per_params(records: list[RunRecord]) -> list[RunRecord]:
    """One record per family and params: a rerun of the same params is not another
    candidate (the pipeline is deterministic, so it would only repeat itself)."""
    latest: dict[tuple[str, str], RunRecord] = {}
    for record in sorted(records, key=lambda record: record.start_time):
        latest[(record.family, record.params_hash)] = record
    return list(latest.values())


def varying_params(records: list[RunRecord]) -> list[str]:
    """The param keys whose values are not the same in every record, in key order."""
    keys = sorted(set().union(*(record.params for record in records))) if records else []
    return [key for key in keys if len({record.params.get(key, "") for record in records}) > 1]


def rank(records: list[RunRecord], metric: str, top: int) -> dict[str, list[RunRecord]]:
    """family -> its best `top` records by `metric`, best first."""
    scored = [record for record in latest_per_params(records) if metric in record.metrics]
    if not scored:
        available = sorted(set().union(*(record.metrics for record in records))) if records else []
        raise PipelineError(
            f"no finished run has the metric {metric!r}"
            + (f" (available: {', '.join(available)})" if available else "")
        )
    ranking: dict[str, list[RunRecord]] = {}
    for family in sorted({record.family for record in scored}):
        candidates = [record for record in scored if record.family == family]
        candidates.sort(
            key=lambda record: (
                record.metrics[metric] if lower_is_better(metric) else -record.metrics[metric],
                -record.start_time,
            )
        )
        ranking[family] = candidates[:top]
    return ranking


def verdict_text(record: RunRecord) -> str:
    if not record.winner:
        return "-"
    if record.winner == "tie":
        return "tie"
    return f"{record.winner} wins" if record.significant == "true" else f"{record.winner}, n.s."


def format_ranking(
    ranking: dict[str, list[RunRecord]], metric: str, shown_params: list[str]
) -> str:
    """A plain-text table per family."""
    sections = []
    for family, records in ranking.items():
        frame = pd.DataFrame(
            {
                "rank": range(1, len(records) + 1),
                metric: [f"{record.metrics[metric]:.4f}" for record in records],
                "run": [record.run_name for record in records],
                **{key: [record.params.get(key, "") for record in records] for key in shown_params},
                "verdict": [verdict_text(record) for record in records],
                "parent run id": [record.parent_run_id for record in records],
            }
        )
        sections.append(f"{family}\n{frame.to_string(index=False)}")
    return "\n\n".join(sections)


def search_all(client: MlflowClient, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string="attributes.status = 'FINISHED'",
            max_results=SEARCH_PAGE,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def collect_runs(client: MlflowClient, experiment_name: str) -> list[RunRecord]:
    """Every finished child run whose parent finished too."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise PipelineError(f"no MLflow experiment named {experiment_name!r}")
    runs = search_all(client, experiment.experiment_id)
    parents = {run.info.run_id: run for run in runs if PARENT_TAG not in run.data.tags}
    records = []
    for run in runs:
        tags = run.data.tags
        parent = parents.get(tags.get(PARENT_TAG, ""))
        if parent is None or TAG_FAMILY not in tags:
            continue
        records.append(
            RunRecord(
                family=tags[TAG_FAMILY],
                run_name=parent.info.run_name,
                run_id=run.info.run_id,
                parent_run_id=parent.info.run_id,
                start_time=run.info.start_time,
                params_hash=tags.get(TAG_PARAMS_HASH, run.info.run_id),
                metrics=dict(run.data.metrics),
                params=dict(run.data.params),
                winner=parent.data.tags.get("winner", ""),
                significant=parent.data.tags.get("significant", ""),
            )
        )
    return records


def parse_arguments(arguments: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.rank",
        description="Rank the finished runs in MLflow: the best per model family.",
    )
    parser.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        help=f"child-run metric to rank by (default {DEFAULT_METRIC}); losses and "
        "*_seconds rank lowest first",
    )
    parser.add_argument(
        "--top", type=int, default=3, help="runs to show per model family (default 3)"
    )
    parser.add_argument(
        "--experiment",
        help="MLflow experiment (default: track.experiment_name in params.yaml)",
    )
    parsed = parser.parse_args(arguments)
    if parsed.top < 1:
        parser.error(f"--top {parsed.top}: must be at least 1")
    return parsed


def main(arguments: Sequence[str] | None = None) -> None:
    options = parse_arguments(arguments)
    experiment_name = options.experiment or load_params().track.experiment_name
    root = repository_root()
    store = resolve_store(dict(os.environ), root)
    database = root / paths.MLFLOW_DATABASE
    if store.tracking_uri.startswith("sqlite:") and not Path(database).exists():
        # MlflowClient would silently create an empty store here.
        raise PipelineError(f"{database}: no MLflow store yet; run `dvc repro` first")
    records = collect_runs(connect(store), experiment_name)
    ranking = rank(records, options.metric, options.top)
    candidates = latest_per_params(records)
    shown = varying_params(candidates)
    order = "lowest first" if lower_is_better(options.metric) else "highest first"
    comparisons = len({record.parent_run_id for record in candidates})
    sys.stdout.write(
        f"MLflow experiment {experiment_name!r} at {redact(store.tracking_uri)}: {comparisons} "
        f"finished comparison{'s' if comparisons != 1 else ''} with distinct params, "
        f"ranked by {options.metric} ({order})\n\n"
        + format_ranking(ranking, options.metric, shown)
        + "\n\nParams that differ between these runs: "
        + (", ".join(shown) if shown else "none")
        + "\n"
    )


if __name__ == "__main__":
    # rank only reads MLflow: nothing to finish, nothing half-written.
    run_stage(main, "rank writes nothing; run the same command again")
