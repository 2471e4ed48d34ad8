"""Publish the comparison to MLflow: one parent run per pipeline execution with one
child run per model, and their ids in `data/track/mlflow_runs.json`."""

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import mlflow
import pandas as pd
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, DataType, Schema

from pipeline import paths
from pipeline.config import Params, flatten, load_params
from pipeline.errors import PipelineError, run_stage
from pipeline.files import (
    Table,
    atomic_path,
    file_md5,
    read_classes,
    read_json,
    read_table,
    verify_recorded_hash,
    write_json,
)
from pipeline.history import read_history, read_summary, split_histories
from pipeline.mlflow_models import log_saved_model

logger = logging.getLogger(__name__)

TRACKING_URI_VARIABLE = "MLFLOW_TRACKING_URI"
# MLflow's default HTTP retry policy blocks about 4 minutes on an unreachable server.
# Ours gives up after 3 tries about 1 s and 2 s apart, or 3 timeouts of 10 s for a
# server that accepts connections but never answers: under a minute in all.
# Any of them set in the environment wins.
HTTP_RETRY_POLICY = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
# Tags every run carries, so that each MLflow run leads back to its DVC experiment.
TAG_FAMILY = "model_family"
TAG_PARAMS_HASH = "params_hash"
TAG_DVC_EXPERIMENT = "dvc.experiment"
TAG_DVC_BASELINE = "dvc.baseline_rev"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_GIT_DIRTY = "git.dirty"
TAG_PUBLISH_KEY = "publish_key"
TAG_MODEL_ID = "model_id"
TAG_REPLICATE = "replicate"
TAG_HOST = "pipeline.host"
TAG_PID = "pipeline.pid"
DATASET_CONTEXTS = {"train": "training", "validation": "validation", "test": "testing"}


@dataclass(frozen=True)
class Store:
    """Where runs go: an explicit tracking URI, or the embedded SQLite store."""

    tracking_uri: str
    artifact_location: str | None  # None: the tracking server decides
    lock_path: Path | None = None  # held while writing to an embedded SQLite store


@dataclass(frozen=True)
class Revision:
    commit: str
    dirty: bool
    experiment: str | None  # the DVC experiment, under `dvc exp run`
    baseline: str | None


def repository_root() -> Path:
    """The main repository, also from inside a `dvc exp run --queue/--temp` copy.

    DVC sets DVC_ROOT to the main repository for those runs; the copy itself is
    deleted afterwards, so nothing may be stored relative to it.
    """
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def resolve_store(environment: dict[str, str], root: Path) -> Store:
    uri = environment.get(TRACKING_URI_VARIABLE, "").strip()
    if uri:
        return Store(tracking_uri=uri, artifact_location=None)
    database = root / paths.MLFLOW_DATABASE
    return Store(
        tracking_uri=f"sqlite:///{database}",
        artifact_location=(root / paths.MLFLOW_ARTIFACTS).as_uri(),
        lock_path=database.with_name(database.name + ".lock"),
    )


def failure_reason(error: Exception) -> str:
    """The gist of a connection failure, without URLs that could carry credentials."""
    text = str(error)
    system_error = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    if system_error:
        return system_error.group(0).strip()
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return re.sub(r"//[^/@\s]+@", "//", first_line)[:200]


def redact(uri: str) -> str:
    """The URI without a user name or password, for messages."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _git(*arguments: str) -> str | None:
    try:
        completed = subprocess.run(["git", *arguments], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return completed.stdout.strip()


def current_revision(environment: dict[str, str]) -> Revision:
    experiment = environment.get("DVC_EXP_NAME") or None
    baseline = environment.get("DVC_EXP_BASELINE_REV") or None
    commit = baseline or _git("rev-parse", "HEAD") or "unknown"
    # Under `dvc exp run` the changes are the experiment's params, recorded anyway.
    # dvc.lock is left out: DVC itself rewrites it during every `dvc repro`.
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock")
    return Revision(
        commit=commit,
        dirty=bool(status) and experiment is None,
        experiment=experiment,
        baseline=baseline,
    )


def parent_run_name(revision: Revision) -> str:
    if revision.experiment:
        return revision.experiment
    name = revision.commit[:7]
    return f"{name}-dirty" if revision.dirty else name


def params_hash(params: Params) -> str:
    canonical = json.dumps(flatten(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


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


def ensure_experiment(client: MlflowClient, name: str, store: Store) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=store.artifact_location)
    except MlflowException:
        # Another process (a parallel queued experiment) created it first.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


MLFLOW_MODELS = {"keras": paths.KERAS_MLFLOW_MODEL, "sklearn": paths.SKLEARN_MLFLOW_MODEL}


@dataclass(frozen=True)
class FamilyResults:
    """One family's results, as its training stage wrote them."""

    flavor: str
    history_path: Path  # the replicates' mean per epoch
    history: pd.DataFrame
    summary: dict[str, Any]
    mlflow_model: Path  # the archive from pipeline.mlflow_models.save_mlflow_model
    replicate_histories: list[pd.DataFrame]
    replicate_metrics: list[dict[str, float]]  # test metrics of each replicate


def family_results(flavor: str, replicate_metrics: pd.DataFrame) -> FamilyResults:
    mlflow_model = MLFLOW_MODELS[flavor]
    # Only what the pipeline produced is published: the archive must be the one
    # dvc.lock recorded for its training stage.
    verify_recorded_hash(mlflow_model)
    rows = replicate_metrics[replicate_metrics["family"] == flavor].sort_values("replicate")
    return FamilyResults(
        flavor,
        paths.HISTORIES[flavor],
        read_history(paths.HISTORIES[flavor]),
        read_summary(flavor),
        mlflow_model,
        split_histories(read_history(paths.REPLICATE_HISTORIES[flavor], replicates=True)),
        [
            {name: float(value) for name, value in row.items()}
            for row in rows.drop(columns=["family", "replicate"]).to_dict("records")
        ],
    )


@dataclass(frozen=True)
class Publication:
    """Everything one pipeline execution publishes."""

    params: Params
    revision: Revision
    key: str
    splits: dict[str, tuple[Path, Table]]
    test_metrics: dict[str, dict[str, float]]
    families: dict[str, FamilyResults]


# The files whose content defines a result. The model files are left out: a
# `.keras` file records when it was saved, so identical training differs in bytes.
PUBLISHED_FILES = (
    paths.TRAIN,
    paths.VALIDATION,
    paths.TEST,
    paths.PREPROCESSING,
    paths.CLASSES,
    paths.KERAS_HISTORY,
    paths.SKLEARN_HISTORY,
    paths.KERAS_REPLICATE_HISTORIES,
    paths.SKLEARN_REPLICATE_HISTORIES,
    paths.METRICS,
    paths.REPLICATE_METRICS,
)


def publish_key(params: Params, files: tuple[Path, ...] = PUBLISHED_FILES) -> str:
    """Identifies a result: the same params and outputs give the same key."""
    digest = hashlib.sha256(params_hash(params).encode())
    for path in files:
        digest.update(f"{path}:{file_md5(path)}".encode())
    return digest.hexdigest()


def prepare(params: Params, revision: Revision, key: str) -> Publication:
    """Read every result before writing anything."""
    n_classes = len(read_classes())
    replicate_metrics = pd.read_csv(paths.REPLICATE_METRICS)
    train = read_table(paths.TRAIN, n_classes=n_classes)
    splits = {
        "train": (paths.TRAIN, train),
        "validation": (
            paths.VALIDATION,
            read_table(paths.VALIDATION, train.feature_names, n_classes),
        ),
        "test": (paths.TEST, read_table(paths.TEST, train.feature_names, n_classes)),
    }
    return Publication(
        params=params,
        revision=revision,
        key=key,
        splits=splits,
        test_metrics=read_json(paths.METRICS),
        families={
            family: family_results(family, replicate_metrics) for family in ("keras", "sklearn")
        },
    )


class Terminated(BaseException):
    """SIGTERM or SIGINT arrived: the runs end as KILLED, not FAILED or FINISHED.

    Its message is the signal's name, e.g. "SIGTERM".
    """


class _Signals:
    """SIGTERM/SIGINT handling that never interrupts a store write halfway.

    A signal raised inside SQLAlchemy can leave its session unusable, and then the
    runs cannot be marked KILLED. While publishing, a signal is only recorded and
    `checkpoint()` raises it between two writes.
    """

    deferring = False
    received: int | None = None


def _on_signal(signal_number: int, frame: object) -> None:
    if _Signals.deferring:
        _Signals.received = signal_number
        return
    raise Terminated(signal.Signals(signal_number).name)


def install_signal_handlers() -> None:
    # MLflow's exit hook does not run on signals; without these, a `dvc queue kill`
    # or Ctrl-C would leave the runs RUNNING forever.
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


@contextmanager
def signals_deferred() -> Iterator[None]:
    _Signals.deferring, _Signals.received = True, None
    try:
        yield
    finally:
        _Signals.deferring = False


def checkpoint() -> None:
    """Raise a signal that arrived during the last write, now that it is complete."""
    if _Signals.received is not None:
        raise Terminated(signal.Signals(_Signals.received).name)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # The pid may have been reused by an unrelated process since.
    command_line = Path(f"/proc/{pid}/cmdline")
    return not command_line.exists() or b"pipeline.track" in command_line.read_bytes()


def mark_orphans_killed(client: MlflowClient) -> list[str]:
    """End as KILLED the runs of this host whose publishing process is gone (kill -9),
    in every experiment: the next publish may well go to another experiment."""
    host = socket.gethostname()
    experiment_ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        experiment_ids += [experiment.experiment_id for experiment in page]
        token = page.token
        if not token:
            break
    running = []
    token = None
    while experiment_ids:
        page = client.search_runs(
            experiment_ids,
            filter_string="attributes.status = 'RUNNING'",
            max_results=1000,
            page_token=token,
        )
        running += page
        token = page.token
        if not token:
            break
    orphans = [
        run.info.run_id
        for run in running
        if run.data.tags.get(TAG_HOST) == host
        and TAG_PID in run.data.tags
        and not _process_alive(int(run.data.tags[TAG_PID]))
    ]
    for run_id in orphans:
        client.set_terminated(run_id, "KILLED")
        logger.warning("track: marked run %s KILLED: its process died without ending it", run_id)
    return orphans


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


def end_active_runs(status: str) -> None:
    while mlflow.active_run() is not None:
        mlflow.end_run(status)


def end_publication(status: str, created_runs: list[str], client: MlflowClient) -> None:
    """End an interrupted publication: its open runs, and the runs it had already
    finished (a family's, a replicate's), all with `status`: a publication is
    complete, or none of its runs says FINISHED."""
    end_active_runs(status)
    for run_id in created_runs:
        client.set_terminated(run_id, status)


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


def publish(publication: Publication, experiment_id: str, client: MlflowClient) -> dict[str, str]:
    """Log the parent run and one child run per model; return their ids."""
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


@contextmanager
def store_lock(store: Store) -> Iterator[None]:
    """Serialize writers of the embedded SQLite store.

    Parallel queued experiments (`dvc queue start -j 2`) would otherwise race to
    create a new database ("table already exists") and contend for SQLite's lock.
    """
    if store.lock_path is None:
        yield
        return
    store.lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(store.lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def connect(store: Store) -> MlflowClient:
    """A client whose store answers, or one line naming the unreachable URI."""
    for variable, value in HTTP_RETRY_POLICY.items():
        os.environ.setdefault(variable, value)
    mlflow.set_tracking_uri(store.tracking_uri)
    client = MlflowClient()
    try:
        client.search_experiments(max_results=1)
    except Exception as error:
        raise PipelineError(
            f"MLflow tracking store {redact(store.tracking_uri)} is unreachable "
            f"({failure_reason(error)}); the training outputs are complete, "
            "run `dvc repro` again to publish them once it is back"
        ) from None
    return client


def publish_once(params: Params, store: Store, revision: Revision) -> tuple[dict[str, str], bool]:
    """The run ids of this result in the store, publishing it unless it already is.

    Returns the ids and whether this call created them.
    """
    key = publish_key(params)
    # A model archive changed since its stage recorded it is refused before the store
    # is opened (or created): a refusal leaves no trace in it.
    for archive in MLFLOW_MODELS.values():
        verify_recorded_hash(archive)
    client = open_store(store)
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
        return publish(publication, experiment_id, client), True


def store_template() -> Path:
    """An empty, fully migrated MLflow database for this MLflow version, kept in the
    environment: creating one runs some 70 schema migrations (about 7 s here)."""
    return Path(sys.prefix) / "share" / "mlp-compare" / f"mlflow-{mlflow.__version__}-empty.db"


def open_store(store: Store) -> MlflowClient:
    """Connect, creating a new SQLite database safely when parallel runs start at once."""
    with store_lock(store):
        if store.lock_path is None:
            return connect(store)
        database = Path(store.tracking_uri.removeprefix("sqlite:///"))
        template = store_template()
        is_new = not database.exists()
        if is_new:
            logger.info(
                "track: first run here: creating the MLflow store %s (runs) and %s (files)",
                database,
                paths.MLFLOW_ARTIFACTS,
            )
        if is_new and template.exists():
            shutil.copyfile(template, database)
        # MLflow logs each step of creating its tables; the line above says it once.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        client = connect(store)
        if is_new and not template.exists():
            save_template(database, template)
        with closing(sqlite3.connect(database, timeout=30)) as connection:
            # Write-ahead logging lets readers (the MLflow UI, a parallel experiment
            # looking for its runs) read while a publish writes, instead of failing
            # the writer with "database is locked". The setting stays in the file.
            connection.execute("PRAGMA journal_mode=WAL")
            # MLflow's own "Default" experiment points wherever the database was
            # first made; point it at this repository's artifact folder.
            connection.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                (f"{store.artifact_location}/0",),
            )
            connection.commit()
        return client


def save_template(database: Path, template: Path) -> None:
    """Keep a copy of a freshly created, still empty store for the next new one."""
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(template) as temporary:
            shutil.copyfile(database, temporary)
    except OSError:
        pass  # a read-only environment: every new store is created from scratch


def main() -> None:
    params = load_params()
    environment = dict(os.environ)
    store = resolve_store(environment, repository_root())
    install_signal_handlers()
    try:
        run_ids, created = publish_once(params, store, current_revision(environment))
    except Terminated as stop:
        logger.error("track: stopped by %s; unfinished runs are marked KILLED", stop)
        sys.exit(128 + signal.Signals[str(stop)].value)
    write_json(run_ids, paths.MLFLOW_RUNS)
    logger.info(
        "track: %s parent run %s in experiment %r at %s",
        "published" if created else "already published (same params and results) as",
        run_ids["parent_run_id"],
        params.track.experiment_name,
        redact(store.tracking_uri),
    )


if __name__ == "__main__":
    run_stage(main)
