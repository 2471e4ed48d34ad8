"""Publish the comparison to MLflow: one parent run per pipeline execution with one
child run per model, and their ids in `data/track/mlflow_runs.json`."""

import hashlib
import json
import logging
import os
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, DataType, Schema

from pipeline import paths
from pipeline.config import Params, flatten, load_params
from pipeline.errors import run_stage
from pipeline.files import Table, read_json, read_table, write_json
from pipeline.history import read_history

logger = logging.getLogger(__name__)

TRACKING_URI_VARIABLE = "MLFLOW_TRACKING_URI"
# Tags every run carries, so that each MLflow run leads back to its DVC experiment.
TAG_FAMILY = "model_family"
TAG_PARAMS_HASH = "params_hash"
TAG_DVC_EXPERIMENT = "dvc.experiment"
TAG_DVC_BASELINE = "dvc.baseline_rev"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_GIT_DIRTY = "git.dirty"
DATASET_CONTEXTS = {"train": "training", "validation": "validation", "test": "testing"}


@dataclass(frozen=True)
class Store:
    """Where runs go: an explicit tracking URI, or the embedded SQLite store."""

    tracking_uri: str
    artifact_location: str | None  # None: the tracking server decides


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
    return Store(
        tracking_uri=f"sqlite:///{root / paths.MLFLOW_DATABASE}",
        artifact_location=(root / paths.MLFLOW_ARTIFACTS).as_uri(),
    )


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


def file_md5(path: Path) -> str:
    """The content hash DVC records for the same file in `dvc.lock`."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    return client.create_experiment(name, artifact_location=store.artifact_location)


def log_keras_model(sample: np.ndarray) -> str:
    import keras
    import tensorflow as tf

    from pipeline.train_keras import load_model

    model = load_model(paths.KERAS_MODEL)
    signature = infer_signature(sample, model.predict(sample, verbose=0))
    # No input_example: with one, MLflow 3.17 raised FileNotFoundError while saving
    # a Keras 3 model. Explicit requirements also skip MLflow's slow inference.
    info = mlflow.keras.log_model(
        model,
        name="model",
        signature=signature,
        pip_requirements=[
            f"keras=={keras.__version__}",
            f"tensorflow=={tf.__version__}",
        ],
    )
    return info.model_id


def log_sklearn_model(sample: np.ndarray) -> str:
    import sklearn
    import skops

    from pipeline.train_sklearn import SKOPS_TRUSTED_TYPES, load_model

    model = load_model(paths.SKLEARN_MODEL)
    signature = infer_signature(sample, model.predict_proba(sample))
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=signature,
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
        # Probabilities, like the Keras model, not hard labels.
        pyfunc_predict_fn="predict_proba",
        pip_requirements=[
            f"scikit-learn=={sklearn.__version__}",
            f"skops=={skops.__version__}",
        ],
    )
    return info.model_id


FAMILY_FILES = {
    "keras": (paths.KERAS_HISTORY, paths.KERAS_SUMMARY, log_keras_model),
    "sklearn": (paths.SKLEARN_HISTORY, paths.SKLEARN_SUMMARY, log_sklearn_model),
}


def publish(params: Params, store: Store, revision: Revision) -> dict[str, str]:
    """Log the parent run and both child runs; return their ids."""
    mlflow.set_tracking_uri(store.tracking_uri)
    client = MlflowClient()
    experiment_id = ensure_experiment(client, params.track.experiment_name, store)
    test_metrics = read_json(paths.METRICS)
    splits = {
        "train": (paths.TRAIN, read_table(paths.TRAIN)),
        "validation": (paths.VALIDATION, read_table(paths.VALIDATION)),
        "test": (paths.TEST, read_table(paths.TEST)),
    }
    sample = splits["test"][1].features[:5]
    flat_params = {key: str(value) for key, value in flatten(params).items()}
    common_tags = {
        TAG_PARAMS_HASH: params_hash(params),
        TAG_GIT_COMMIT: revision.commit,
        TAG_GIT_DIRTY: str(revision.dirty).lower(),
        **({TAG_DVC_EXPERIMENT: revision.experiment} if revision.experiment else {}),
        **({TAG_DVC_BASELINE: revision.baseline} if revision.baseline else {}),
    }
    run_ids = {"experiment_id": experiment_id}
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=parent_run_name(revision),
        tags=common_tags,
    ) as parent:
        run_ids["parent_run_id"] = parent.info.run_id
        mlflow.log_params(flat_params)
        mlflow.log_artifacts(str(paths.FIGURES), "figures")
        mlflow.log_artifact(str(paths.METRICS))
        mlflow.log_artifact(str(paths.SCALER))
        for family, (history_path, summary_path, log_model) in FAMILY_FILES.items():
            with mlflow.start_run(
                experiment_id=experiment_id,
                run_name=family,
                nested=True,
                tags={**common_tags, TAG_FAMILY: family},
            ) as child:
                run_ids[f"{family}_run_id"] = child.info.run_id
                mlflow.log_params(flat_params)
                summary = read_json(summary_path)
                final_metrics = {
                    f"test_{name}": value for name, value in test_metrics[family].items()
                }
                final_metrics.update(
                    {
                        name: float(value)
                        for name, value in summary.items()
                        if name != "stopped_early"
                    }
                )
                client.log_batch(
                    child.info.run_id,
                    metrics=epoch_metrics(read_history(history_path))
                    + [
                        Metric(name, value, int(time.time() * 1000), 0)
                        for name, value in final_metrics.items()
                    ],
                )
                for name, (path, table) in splits.items():
                    mlflow.log_input(
                        dataset_input(name, path, table), context=DATASET_CONTEXTS[name]
                    )
                mlflow.log_artifact(str(history_path))
                run_ids[f"{family}_model_id"] = log_model(sample)
    return run_ids


def main() -> None:
    params = load_params()
    environment = dict(os.environ)
    store = resolve_store(environment, repository_root())
    run_ids = publish(params, store, current_revision(environment))
    write_json(run_ids, paths.MLFLOW_RUNS)
    logger.info(
        "track: parent run %s in experiment %r at %s",
        run_ids["parent_run_id"],
        params.track.experiment_name,
        store.tracking_uri,
    )


if __name__ == "__main__":
    run_stage(main)
