"""Publish to MLflow, last and alone: one parent run per pipeline execution with one
child run per model (and per replicate), the verdict, report and description on the
parent, the approved champion in the Model Registry and the run list's views. No
other stage writes to MLflow. The ids and links go to `data/track/mlflow_runs.json`,
the parent run (and champion version) to the DVC metrics `data/track/published.json`."""

import logging
import os
import signal
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, DataType, Schema

from pipeline import paths
from pipeline.config import Params, flatten, load_params
from pipeline.errors import run_stage
from pipeline.files import Table, file_md5, read_json, verify_recorded_hash, write_json
from pipeline.headline import rounded, verdict_text
from pipeline.interruptions import (
    TAG_HOST,
    TAG_PID,
    Terminated,
    checkpoint,
    end_publication,
    install_signal_handlers,
    mark_orphans_killed,
    signals_deferred,
)
from pipeline.mlflow_models import log_saved_model
from pipeline.publication import (
    MLFLOW_MODELS,
    REPORT_FILES,
    FamilyResults,
    Publication,
    Revision,
    current_revision,
    params_hash,
    parent_run_name,
    prepare,
    publish_key,
    read_verdict,
)
from pipeline.registry import promote
from pipeline.report import Code, Heading, Paragraph, to_markdown
from pipeline.store import (
    TAG_FAMILY,
    TAG_PARAMS_HASH,
    Store,
    ensure_experiment,
    open_store,
    redact,
    repository_root,
    resolve_store,
    store_lock,
)
from pipeline.views import curves_link, parent_metrics, publish_views, runs_link, ui_address

logger = logging.getLogger(__name__)

# Tags every run carries, so that each MLflow run leads back to its DVC experiment.
TAG_DVC_EXPERIMENT = "dvc.experiment"
TAG_DVC_BASELINE = "dvc.baseline_rev"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_GIT_DIRTY = "git.dirty"
TAG_PUBLISH_KEY = "publish_key"
TAG_MODEL_ID = "model_id"
TAG_REPLICATE = "replicate"
# The verdict on the parent run.
TAG_WINNER = "winner"
TAG_SIGNIFICANT = "significant"
TAG_VERDICT_LEVEL = "verdict_level"  # what the verdict compares
TAG_NOTE = "mlflow.note.content"  # the run description MLflow's UI shows
DATASET_CONTEXTS = {"train": "training", "validation": "validation", "test": "testing"}


def dataset_input(name: str, path: Path, table: Table) -> MetaDataset:
    """A lineage record of a split file: its path, DVC hash and schema, not its rows."""
    schema = Schema(
        [ColSpec(DataType.float, feature) for feature in table.feature_names]
        + [ColSpec(DataType.integer, "label")]
    )
    with warnings.catch_warnings():
        # MLflow registers two equivalent local-file sources and warns that it picks one.
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(path))
    return MetaDataset(
        source=source,
        name=name,
        digest=file_md5(path),
        schema=schema,
    )


def epoch_metrics(history: pd.DataFrame) -> list[Metric]:
    """Per-epoch metrics with step = epoch, under the same keys for both models."""
    timestamp = int(time.time() * 1000)
    return [
        Metric(
            key=column,
            value=float(row[column]),
            timestamp=timestamp,
            step=int(row["epoch"]),
        )
        for _, row in history.iterrows()
        for column in ("loss", "accuracy", "val_loss", "val_accuracy")
    ]


def find_published(client: MlflowClient, experiment_id: str, key: str) -> dict[str, str] | None:
    """The ids of an earlier, complete publication of the same result, if any."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{TAG_PUBLISH_KEY} = '{key}' and attributes.status = 'FINISHED'",
        # A publication is 3 runs plus one per replicate and family (at most 128).
        max_results=1000,
    )
    for parent in (run for run in runs if "mlflow.parentRunId" not in run.data.tags):
        children = {
            run.data.tags.get(TAG_FAMILY): run
            for run in runs
            if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        }
        if set(children) >= {"keras", "sklearn"}:
            run_ids = {"experiment_id": experiment_id, "parent_run_id": parent.info.run_id}
            for family, child in children.items():
                run_ids[f"{family}_run_id"] = child.info.run_id
                run_ids[f"{family}_model_id"] = child.data.tags[TAG_MODEL_ID]
            return run_ids
    return None


# summary.json's numbers logged on each family's run; the replicates' own epochs go
# to their nested runs.
SUMMARY_METRICS = (
    "replicate_count",
    "epochs_trained",
    "best_epoch",
    "train_seconds",
    "samples_per_second",
)


def publish_replicates(
    results: FamilyResults,
    experiment_id: str,
    tags: dict[str, str],
    client: MlflowClient,
    created: list[str],
) -> None:
    """One nested run per replicate under the family's run (when there are several):
    its own curves, test metrics and a `replicate` tag. Each run's id goes to
    `created` as soon as it exists, so that an interrupted publication can end it
    with the others."""
    count = len(results.replicate_histories)
    if count == 1:
        return
    for replicate, (history, metrics) in enumerate(
        zip(results.replicate_histories, results.replicate_metrics, strict=True)
    ):
        summary = results.summary["replicates"][replicate]
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"{results.flavor}#{replicate}",
            nested=True,
            tags={**tags, TAG_REPLICATE: str(replicate), "seed": str(summary["seed"])},
        )
        created.append(run.info.run_id)
        now = int(time.time() * 1000)
        final = {f"test_{name}": value for name, value in metrics.items()} | {
            "epochs_trained": float(summary["epochs_trained"]),
            "best_epoch": float(summary["best_epoch"]),
        }
        client.log_batch(
            run.info.run_id,
            metrics=epoch_metrics(history)
            + [Metric(name, value, now, 0) for name, value in final.items()],
        )
        mlflow.end_run()
        checkpoint()


def ui_links(address: str, run_ids: dict[str, str]) -> dict[str, str]:
    """Where to look in MLflow's UI, by what each link shows."""
    return {
        "the run list, with the verdict's columns": runs_link(address, run_ids["experiment_id"]),
        "both models' loss and val_loss per epoch": curves_link(
            address, run_ids["experiment_id"], run_ids
        ),
    }


def run_description(description: str, links: dict[str, str]) -> str:
    """compare's short report, then the links to these runs."""
    return (
        description.rstrip("\n")
        + "\n\n"
        + to_markdown(
            [
                Heading("In the MLflow UI", 4),
                Paragraph("With `mlflow ui` running (see the README), open:"),
                Code("\n".join(f"# {name}\n{link}" for name, link in links.items())),
            ]
        )
    )


def publish_verdict(
    client: MlflowClient, publication: Publication, run_ids: dict[str, str], address: str
) -> None:
    """Tags, metrics, description, report files and views of the verdict that
    data/compare/verdict.json holds, on the parent run."""
    verdict = publication.verdict
    parent_run_id = run_ids["parent_run_id"]
    metric, replicates = verdict["primary_metric"], int(verdict["replicates"])
    client.set_tag(parent_run_id, TAG_WINNER, verdict["winner"])
    client.set_tag(parent_run_id, TAG_SIGNIFICANT, str(verdict["significant"]).lower())
    client.set_tag(parent_run_id, "primary_metric", metric)
    client.set_tag(
        parent_run_id,
        TAG_VERDICT_LEVEL,
        "two trained models" if replicates == 1 else f"libraries, {replicates} replicates",
    )
    client.set_tag(
        parent_run_id,
        TAG_NOTE,
        run_description(publication.description, ui_links(address, run_ids)),
    )
    # Rounded: the run list shows these to people.
    metrics = {
        f"test_{metric}_difference": rounded(verdict["difference"]),
        "p_value": rounded(verdict["p_value"]),
    }
    if "p_keras_better" in verdict:
        metrics["p_keras_better"] = rounded(verdict["p_keras_better"])
    now = int(time.time() * 1000)
    client.log_batch(
        parent_run_id, metrics=[Metric(name, value, now, 0) for name, value in metrics.items()]
    )
    for path in REPORT_FILES:
        client.log_artifact(parent_run_id, str(path), artifact_path="report")
    publish_views(
        client,
        run_ids["experiment_id"],
        run_ids,
        verdict_text(verdict["winner"], verdict["significant"]),
        parent_metrics(publication.test_metrics, metric),
        metric,
    )


def publish(
    publication: Publication, experiment_id: str, client: MlflowClient, address: str
) -> dict[str, str]:
    """Log the parent run with the verdict, one child run per model (and per
    replicate), and the run list's views; return their ids. `address`: MLflow's UI."""
    revision = publication.revision
    flat_params = {key: str(value) for key, value in flatten(publication.params).items()}
    common_tags = {
        TAG_PARAMS_HASH: params_hash(publication.params),
        TAG_PUBLISH_KEY: publication.key,
        TAG_GIT_COMMIT: revision.commit,
        TAG_GIT_DIRTY: str(revision.dirty).lower(),
        TAG_HOST: socket.gethostname(),
        TAG_PID: str(os.getpid()),
        **({TAG_DVC_EXPERIMENT: revision.experiment} if revision.experiment else {}),
        **({TAG_DVC_BASELINE: revision.baseline} if revision.baseline else {}),
    }
    run_ids = {"experiment_id": experiment_id}
    # Every run this publication creates: runs end as soon as they are logged, and if
    # the publication is then interrupted, they end as KILLED (or FAILED) with it.
    created_runs: list[str] = []
    try:
        with signals_deferred():
            parent = mlflow.start_run(
                experiment_id=experiment_id, run_name=parent_run_name(revision), tags=common_tags
            )
            run_ids["parent_run_id"] = parent.info.run_id
            created_runs.append(parent.info.run_id)
            mlflow.log_params(flat_params)
            checkpoint()
            mlflow.log_artifacts(str(paths.FIGURES), "figures")
            mlflow.log_artifact(str(paths.METRICS))
            for path in (paths.PREPROCESSING, paths.PREPROCESSOR, paths.CLASSES):
                mlflow.log_artifact(str(path))
            checkpoint()
            for family, results in publication.families.items():
                child = mlflow.start_run(
                    experiment_id=experiment_id,
                    run_name=family,
                    nested=True,
                    tags={**common_tags, TAG_FAMILY: family},
                )
                run_ids[f"{family}_run_id"] = child.info.run_id
                created_runs.append(child.info.run_id)
                mlflow.log_params(flat_params)
                checkpoint()
                final_metrics = {
                    f"test_{name}": value
                    for name, value in publication.test_metrics[family].items()
                }
                final_metrics.update(
                    {
                        name: float(results.summary[name])
                        for name in SUMMARY_METRICS
                        if name in results.summary  # no timings after `dvc pull`
                    }
                )
                now = int(time.time() * 1000)
                # One batch instead of hundreds of single calls.
                client.log_batch(
                    child.info.run_id,
                    metrics=epoch_metrics(results.history)
                    + [Metric(name, value, now, 0) for name, value in final_metrics.items()],
                )
                for name, (path, table) in publication.splits.items():
                    mlflow.log_input(
                        dataset_input(name, path, table), context=DATASET_CONTEXTS[name]
                    )
                mlflow.log_artifact(str(results.history_path))
                checkpoint()
                model_id = log_saved_model(results.mlflow_model, results.flavor)
                run_ids[f"{family}_model_id"] = model_id
                mlflow.set_tag(TAG_MODEL_ID, model_id)
                checkpoint()
                publish_replicates(
                    results,
                    experiment_id,
                    {**common_tags, TAG_FAMILY: family},
                    client,
                    created_runs,
                )
                mlflow.end_run()
            # The verdict on the parent, while it is open: a FINISHED parent has it.
            publish_verdict(client, publication, run_ids, address)
            checkpoint()
            mlflow.end_run()
        # A signal after the last write: the runs are complete, but the user asked to stop.
        checkpoint()
    except Terminated:
        end_publication("KILLED", created_runs, client)
        raise
    except BaseException:
        end_publication("FAILED", created_runs, client)
        raise
    return run_ids


def publish_once(
    params: Params, store: Store, revision: Revision, client: MlflowClient, address: str
) -> tuple[dict[str, str], bool]:
    """The run ids of this result in the store, publishing it unless it already is.

    Returns the ids and whether this call created them.
    """
    key = publish_key(params)
    experiment_id = ensure_experiment(client, params.track.experiment_name, store)
    run_ids = find_published(client, experiment_id, key)
    if run_ids is not None:
        return run_ids, False
    publication = prepare(params, revision, key)
    with store_lock(store):
        mark_orphans_killed(client)
        # Checked again under the lock: a parallel process may have just published it.
        run_ids = find_published(client, experiment_id, key)
        if run_ids is not None:
            return run_ids, False
        return publish(publication, experiment_id, client, address), True


def main() -> None:
    params = load_params()
    environment = dict(os.environ)
    store = resolve_store(environment, repository_root())
    address = ui_address(redact(store.tracking_uri))
    install_signal_handlers()
    # A model archive changed since its stage recorded it is refused before the store
    # is opened (or created): a refusal leaves no trace in it.
    for archive in MLFLOW_MODELS.values():
        verify_recorded_hash(archive)
    verdict = read_verdict()
    try:
        client = open_store(store)
        revision = current_revision(environment)
        run_ids, created = publish_once(params, store, revision, client, address)
        with store_lock(store), signals_deferred():
            if not created:
                # Another experiment may have pointed the run list's view elsewhere.
                publish_views(
                    client,
                    run_ids["experiment_id"],
                    run_ids,
                    verdict_text(verdict["winner"], verdict["significant"]),
                    parent_metrics(read_json(paths.METRICS), verdict["primary_metric"]),
                    verdict["primary_metric"],
                )
            # After the runs are FINISHED: a champion never comes from a KILLED run.
            promotion = promote(
                client, params.compare.promote.registered_model_name, verdict, run_ids
            )
        checkpoint()
    except Terminated as stop:
        logger.error("track: stopped by %s; unfinished runs are marked KILLED", stop)
        sys.exit(128 + signal.Signals[str(stop)].value)
    links = ui_links(address, run_ids)
    write_json({**run_ids, "links": links}, paths.MLFLOW_RUNS)
    published: dict[str, Any] = {"mlflow_run": run_ids["parent_run_id"]}
    if promotion is not None:
        published["champion_version"] = int(promotion.version)
    write_json(published, paths.PUBLISHED)
    logger.info(
        "track: %s parent run %s in experiment %r at %s",
        "published" if created else "already published (same params and results) as",
        run_ids["parent_run_id"],
        params.track.experiment_name,
        redact(store.tracking_uri),
    )
    if promotion is not None:
        logger.info("track: %s", promotion.describe().replace("`", "").replace("**", ""))
    for name, link in links.items():
        logger.info("track: MLflow UI, %s: %s", name, link)


if __name__ == "__main__":
    run_stage(main)
