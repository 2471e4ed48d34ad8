"""One pipeline run of the search: a DVC experiment with the trial's params, and the
scores read back from that experiment's outputs (validation rows for trials, test rows
for the final verdict)."""

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from dvc.api import DVCFileSystem

from pipeline import paths
from pipeline.config import MetricName, Params
from pipeline.errors import PipelineError
from pipeline.files import read_table
from pipeline.paired_tests import point_metrics
from pipeline.replicates import split_path

# prctl(2): the signal the kernel sends a child when the thread that started it dies.
PR_SET_PDEATHSIG = 1
MODEL_SUFFIXES = {"keras": ".keras", "sklearn": ".skops"}
# Loading Keras models from several threads at once races on Keras' global state.
_models_lock = threading.Lock()
# The `dvc exp run` processes of this worker's trials, for `stop_experiments`.
_running: set[subprocess.Popen] = set()
_running_lock = threading.Lock()


class TrialFailed(Exception):
    """The pipeline run of a trial failed: its params or its training."""


@dataclass(frozen=True)
class Experiment:
    name: str
    revision: str  # the experiment's commit, under refs/exps/


def dvc_override(key: str, value: Any) -> str:
    """`-S` syntax: DVC parses the value as YAML, and JSON is YAML."""
    return f"{key}={json.dumps(value)}"


def _die_with_parent() -> None:
    """In the child: SIGTERM when the worker dies, even by SIGKILL, so that a killed
    worker leaves no experiment running on (its stages stop with `dvc`)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the experiment finishes on its own


def _git(root: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def failure_line(log: str) -> str:
    """The line that says why a pipeline run failed: a stage's own `error:` line,
    else DVC's last one."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    stage_errors = [line for line in lines if line.startswith("error:")]
    return (stage_errors or lines or ["no output"])[-1]


def find_experiment(root: Path, name: str) -> Experiment | None:
    """The experiment `name` of the current commit, if it was run already."""
    baseline = _git(root, "rev-parse", "HEAD")
    listed = _git(root, "for-each-ref", "--format=%(objectname)", _reference(baseline, name))
    return Experiment(name=name, revision=listed) if listed else None


def _reference(baseline: str, name: str) -> str:
    """Where DVC keeps the experiment `name` of commit `baseline`."""
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"


def run_experiment(
    root: Path,
    name: str,
    overrides: dict[str, Any],
    log_path: Path,
    environment: dict[str, str] | None = None,
) -> Experiment:
    """Run the pipeline once as the DVC experiment `name` in a temporary copy
    (`dvc exp run --temp`, so several run at once), with `environment` added to ours;
    its output goes to `log_path`."""
    baseline = _git(root, "rev-parse", "HEAD")
    command = ["dvc", "exp", "run", "--temp", "--name", name]
    for key, value in overrides.items():
        command += ["--set-param", dvc_override(key, value)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(environment or {})},
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        with _running_lock:
            _running.add(process)
        try:
            returncode = process.wait()
        finally:
            with _running_lock:
                _running.discard(process)
    if returncode != 0:
        reason = failure_line(log_path.read_text(encoding="utf-8", errors="replace"))
        raise TrialFailed(f"dvc exp run exited with {returncode}: {reason}")
    return Experiment(name=name, revision=_git(root, "rev-parse", _reference(baseline, name)))


def stop_experiments() -> None:
    """SIGTERM to every running experiment of this worker: DVC stops its stage, which
    keeps its previous outputs, and the trial fails."""
    with _running_lock:
        for process in _running:
            process.send_signal(signal.SIGTERM)


def read_text(root: Path, experiment: Experiment, path: Path) -> str:
    return DVCFileSystem(str(root), rev=experiment.revision).read_text(str(path))


def mlflow_parent_run(root: Path, experiment: Experiment) -> str:
    """The MLflow parent run the experiment's `track` stage published."""
    return json.loads(read_text(root, experiment, paths.PUBLISHED))["mlflow_run"]


def family_runs(root: Path, experiment: Experiment) -> dict[str, str]:
    """Each library's MLflow run under the experiment's parent run."""
    runs = json.loads(read_text(root, experiment, paths.MLFLOW_RUNS))
    return {family: runs[f"{family}_run_id"] for family in paths.MODEL_FAMILIES}


def pruned_epochs(root: Path, experiment: Experiment) -> dict[str, int | None]:
    """The epoch at which each library's trainer was pruned, None where it was not."""
    return {
        family: json.loads(read_text(root, experiment, paths.SUMMARIES[family])).get("pruned_epoch")
        for family in paths.MODEL_FAMILIES
    }


def validation_scores(
    root: Path, experiment: Experiment, params: Params, metric: MetricName
) -> dict[str, float]:
    """Each family's `metric` on the validation rows, averaged over its replicates:
    the trial's objective. The test rows are never read."""
    # Imported here, not at the top: validating search.yaml must not wait for TensorFlow.
    from pipeline import train_keras, train_sklearn

    predict = {
        "keras": train_keras.predict_probabilities,
        "sklearn": train_sklearn.predict_probabilities,
    }
    load = {"keras": train_keras.load_model, "sklearn": train_sklearn.load_model}
    files = DVCFileSystem(str(root), rev=experiment.revision)
    n_classes = len(json.loads(files.read_text(str(paths.CLASSES)))["classes"])
    scores: dict[str, list[float]] = {family: [] for family in paths.MODEL_FAMILIES}
    with tempfile.TemporaryDirectory(prefix="search-trial-") as folder:
        for replicate in range(params.replicates.count):
            source = split_path("validation", replicate if params.replicates.resample_split else 0)
            local = Path(folder) / f"validation_{replicate}.parquet"
            files.get_file(str(source), str(local))
            validation = read_table(local, n_classes=n_classes)
            for family in paths.MODEL_FAMILIES:
                name = f"replicate_{replicate}{MODEL_SUFFIXES[family]}"
                model_path = Path(folder) / f"{family}_{name}"
                files.get_file(f"{paths.DATA}/train_{family}/replicates/{name}", str(model_path))
                with _models_lock:
                    probabilities = predict[family](load[family](model_path), validation.features)
                threshold = params.evaluate.threshold
                scores[family].append(
                    point_metrics(validation.labels, probabilities, threshold)[metric]
                )
    return {family: float(np.mean(values)) for family, values in scores.items()}


def replicate_test_metric(
    root: Path, experiment: Experiment, family: str, metric: MetricName
) -> np.ndarray:
    """(K,) the test `metric` of each of the family's replicates, in replicate order."""
    files = DVCFileSystem(str(root), rev=experiment.revision)
    with files.open(str(paths.REPLICATE_METRICS)) as handle:
        table = pd.read_csv(handle)
    rows = table[table["family"] == family].sort_values("replicate")
    if rows.empty:
        raise PipelineError(f"{experiment.name}: {paths.REPLICATE_METRICS} has no {family} rows")
    return rows[metric].to_numpy(dtype=np.float64)
