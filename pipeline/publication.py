"""What one pipeline execution publishes to MLflow, read from the stages' files, and
the key that identifies it (the same params and files give the same key)."""

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import paths
from pipeline.config import Params, flatten
from pipeline.errors import PipelineError
from pipeline.files import (
    Table,
    file_md5,
    read_classes,
    read_json,
    read_table,
    verify_recorded_hash,
)
from pipeline.history import read_history, read_summary, split_histories

FAMILIES = ("keras", "sklearn")
MLFLOW_MODELS = {"keras": paths.KERAS_MLFLOW_MODEL, "sklearn": paths.SKLEARN_MLFLOW_MODEL}

# Every file a publication logs or whose content it logs: a rerun whose files are all
# identical to an earlier publication's (and whose params are) publishes nothing new.
# The report's training times are among them: a forced retraining is a new publication.
PUBLISHED_FILES = (
    paths.TRAIN,
    paths.VALIDATION,
    paths.TEST,
    paths.PREPROCESSING,
    paths.PREPROCESSOR,
    paths.CLASSES,
    paths.KERAS_HISTORY,
    paths.SKLEARN_HISTORY,
    paths.KERAS_REPLICATE_HISTORIES,
    paths.SKLEARN_REPLICATE_HISTORIES,
    paths.KERAS_SUMMARY,
    paths.SKLEARN_SUMMARY,
    paths.KERAS_MLFLOW_MODEL,
    paths.SKLEARN_MLFLOW_MODEL,
    paths.METRICS,
    paths.REPLICATE_METRICS,
    paths.VERDICT,
    paths.DESCRIPTION,
    paths.REPORT_MARKDOWN,
    paths.REPORT_HTML,
)
PUBLISHED_FOLDERS = (paths.FIGURES,)
# The report files logged on the parent run, under `report/`.
REPORT_FILES = (paths.REPORT_MARKDOWN, paths.REPORT_HTML, paths.VERDICT)
# What `track` reads of data/compare/verdict.json.
VERDICT_KEYS = ("winner", "significant", "primary_metric", "replicates", "difference", "p_value")


@dataclass(frozen=True)
class Revision:
    commit: str
    dirty: bool
    experiment: str | None  # the DVC experiment, under `dvc exp run`
    baseline: str | None


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


def published_files(
    files: tuple[Path, ...] = PUBLISHED_FILES, folders: tuple[Path, ...] = PUBLISHED_FOLDERS
) -> list[Path]:
    """The files, then every file in the folders, in a stable order."""
    inside = sorted(path for folder in folders for path in folder.rglob("*") if path.is_file())
    return [*files, *inside]


def publish_key(params: Params) -> str:
    """Identifies a result: the same params and published files give the same key."""
    digest = hashlib.sha256(params_hash(params).encode())
    for path in published_files():
        digest.update(f"{path}:{file_md5(path)}".encode())
    return digest.hexdigest()


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


def read_verdict(path: Path = paths.VERDICT) -> dict[str, Any]:
    """The compare stage's verdict, with the keys that publishing sets as tags."""
    try:
        verdict = read_json(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; run the compare stage first") from None
    missing = [key for key in VERDICT_KEYS if key not in verdict]
    if missing:
        raise PipelineError(f"{path}: missing keys {missing}")
    return verdict


@dataclass(frozen=True)
class Publication:
    """Everything one pipeline execution publishes."""

    params: Params
    revision: Revision
    key: str
    splits: dict[str, tuple[Path, Table]]
    test_metrics: dict[str, dict[str, float]]
    families: dict[str, FamilyResults]
    verdict: dict[str, Any]  # data/compare/verdict.json
    description: str  # data/compare/description.md: the parent run's description


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
        families={family: family_results(family, replicate_metrics) for family in FAMILIES},
        verdict=read_verdict(),
        description=paths.DESCRIPTION.read_text(encoding="utf-8"),
    )
