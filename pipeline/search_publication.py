"""Every MLflow write of the search, in one place: tags on the trials' runs, and the
study's own run. The pipeline's runs are published by `track`; a study is not a DVC
stage, so its run is written here, through the same store and lock."""

import os
from pathlib import Path
from typing import Any

import mlflow

from pipeline.errors import PipelineError
from pipeline.store import resolve_store, store_lock


def publish_search(
    root: Path,
    experiment_name: str,
    run_tags: dict[str, dict[str, str]],
    study_run: dict[str, Any] | None = None,
) -> str | None:
    """Set `run_tags` on existing runs and, given `study_run`, create the study's run
    (params, metrics, tags, the report folder as artifacts). Returns its id."""
    store = resolve_store(dict(os.environ), root)
    client = mlflow.MlflowClient(store.tracking_uri)
    with store_lock(store):
        for run_id, tags in run_tags.items():
            for key, value in tags.items():
                client.set_tag(run_id, key, value)
        if study_run is None:
            return None
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            raise PipelineError(f"MLflow experiment {experiment_name!r} is missing")
        existing = same_study_run(client, experiment.experiment_id, study_run)
        if existing is not None:
            return existing
        run = client.create_run(
            experiment.experiment_id, run_name=study_run["name"], tags=study_run["tags"]
        )
        for key, value in study_run["params"].items():
            client.log_param(run.info.run_id, key, value)
        for key, value in study_run["metrics"].items():
            client.log_metric(run.info.run_id, key, value)
        client.log_artifacts(run.info.run_id, str(study_run["artifacts"]))
        client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id


def same_study_run(
    client: mlflow.MlflowClient, experiment_id: str, study_run: dict[str, Any]
) -> str | None:
    """The finished study run whose `identity` tags say it recorded this very verdict
    already, if any: a verdict asked again on the same trials logs no second run.
    Study and experiment names hold letters, digits, '_' and '-' only, so the tags
    need no quoting here."""
    tags = study_run["tags"]
    conditions = " and ".join(f"tags.`{key}` = '{tags[key]}'" for key in study_run["identity"])
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"{conditions} and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None
