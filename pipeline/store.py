"""The MLflow store: where runs go, how to reach it, and the lock its writers share.

Used by `track` (the only stage that writes to MLflow) and `rank` (which reads it).
"""

import fcntl
import logging
import os
import re
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.files import atomic_path

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
# Tags that `track` sets on every child run and `rank` reads.
TAG_FAMILY = "model_family"
TAG_PARAMS_HASH = "params_hash"


@dataclass(frozen=True)
class Store:
    """Where runs go: an explicit tracking URI, or the embedded SQLite store."""

    tracking_uri: str
    artifact_location: str | None  # None: the tracking server decides
    lock_path: Path | None = None  # held while writing to an embedded SQLite store


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
