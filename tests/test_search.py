"""The search, end to end: real trials (`dvc exp run` of the tiny pipeline), the
embedded SQLite storage with its fair verdict, two workers sharing the studies on a
real PostgreSQL server, one of them killed mid-trial, Ctrl-C, and a pruned library."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from dvc.api import DVCFileSystem
from mlflow.tracking import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sklearn.metrics import roc_auc_score

from pipeline import paths
from pipeline.files import read_table
from pipeline.pruning import trial_environment
from pipeline.search_storage import storage_url
from pipeline.statistics import compare_replicates
from pipeline.train_sklearn import load_model
from tests import test_team
from tests.endtoend import (
    commit_all,
    environment,
    execute,
    set_nested_params,
    tiny_project,
)

pytestmark = pytest.mark.slow

# A real PostgreSQL server on loopback, as the team-setup tests start it.
postgres = test_team.postgres

STUDY = "tiny"
EXPERIMENT = "search-test"
# Two replicates keep the final verdict cheap; alpha 0.6 lets two be significant.
VERDICT_REPLICATES = 2
SEARCH = {
    "study": STUDY,
    "sampler": "tpe",
    "seed": 0,
    "budget": {"trials": 2, "minutes": 0},
    "heartbeat_seconds": 2,
    "trial_params": {"replicates.count": 1},
    "space": {
        "model.learning_rate": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
        "model.hidden_layers": {"type": "categorical", "choices": [[8], [16, 8]]},
    },
}


def search_project(destination: Path) -> Path:
    """The tiny project (400 rows, 2 epochs) with a two-trial search file."""
    project = tiny_project(destination, EXPERIMENT, epochs=2)
    set_nested_params(project, {"replicates.count": VERDICT_REPLICATES, "compare.alpha": 0.6})
    (project / "search.yaml").write_text(yaml.safe_dump(SEARCH, sort_keys=False))
    commit_all(project, "a tiny search")
    return project


def experiment_revision(project: Path, name: str) -> str | None:
    """The commit of the DVC experiment `name`, or None if there is none."""
    listed = execute(
        project, "git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"
    )
    for line in listed.stdout.splitlines():
        revision, reference = line.split()
        if reference.endswith(f"/{name}"):
            return revision
    return None


def load_studies(url: str) -> dict[str, optuna.Study]:
    """Each library's study: `<study>.keras` and `<study>.sklearn`."""
    return {
        family: optuna.load_study(study_name=f"{STUDY}.{family}", storage=url)
        for family in ("keras", "sklearn")
    }


def mlflow_client(project: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{project / paths.MLFLOW_DATABASE}")


def check_trials_in_mlflow(project: Path, trials: list[optuna.trial.FrozenTrial]) -> None:
    """Each finished trial's pipeline run is in MLflow, finished, tagged with the study,
    the trial number, and named after its DVC experiment."""
    client = mlflow_client(project)
    for trial in trials:
        run = client.get_run(trial.user_attrs["mlflow_run"])
        number = trial.user_attrs["run"]
        assert run.info.status == "FINISHED"
        assert run.data.tags["search.study"] == STUDY
        assert run.data.tags["search.trial"] == str(number)
        assert run.info.run_name == f"{STUDY}-{number}"
        assert run.data.tags["dvc.experiment"] == f"{STUDY}-{number}"


def test_search_on_the_embedded_storage_ends_with_a_fair_verdict(tmp_path: Path) -> None:
    project = search_project(tmp_path / "project")
    completed = execute(project, sys.executable, "-m", "pipeline.search", "--jobs", "2")
    log = completed.stderr

    # The embedded storage: an SQLite file beside mlflow.db.
    database = project / "optuna.db"
    assert database.exists() and (project / paths.MLFLOW_DATABASE).exists()
    studies = load_studies(f"sqlite:///{database}")
    trials = studies["keras"].get_trials()
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 2
    sklearn_trials = {trial.user_attrs["run"]: trial for trial in studies["sklearn"].get_trials()}
    # Both libraries were scored on the same runs with the same params, each run's
    # params proposed by one library's sampler.
    assert sorted(sklearn_trials) == sorted(trial.number for trial in trials)
    assert {trial.user_attrs["lead"] for trial in trials} == {"keras", "sklearn"}
    for trial in trials:
        assert sklearn_trials[trial.number].params == trial.params
        assert sklearn_trials[trial.number].state == TrialState.COMPLETE
        assert f"search: trial {trial.number} in " in log

    # The objective is each library's ROC AUC on the validation rows: recomputed here
    # from the experiment's own scikit-learn model with scikit-learn's function.
    for trial in trials:
        revision = experiment_revision(project, trial.user_attrs["dvc_experiment"])
        assert revision is not None
        files = DVCFileSystem(str(project), rev=revision)
        files.get_file(str(paths.VALIDATION), str(tmp_path / "validation.parquet"))
        files.get_file(
            "data/train_sklearn/replicates/replicate_0.skops", str(tmp_path / "model.skops")
        )
        validation = read_table(tmp_path / "validation.parquet")
        model = load_model(tmp_path / "model.skops")
        probabilities = model.predict_proba(validation.features)[:, 1]
        expected = roc_auc_score(validation.labels, probabilities)
        assert sklearn_trials[trial.number].value == pytest.approx(expected, abs=1e-6)
        assert 0.0 <= trial.value <= 1.0
        params = yaml.safe_load(files.read_text("params.yaml"))
        assert params["replicates"]["count"] == 1
        assert params["model"]["learning_rate"] == pytest.approx(
            trial.params["model.learning_rate"]
        )
    check_trials_in_mlflow(project, trials)

    # The fair verdict: each library's best trial re-trained with params.yaml's
    # replicates, compared on the test rows, paired by replicate.
    best = {
        family: max(study.get_trials(), key=lambda trial: (trial.value, -trial.user_attrs["run"]))
        for family, study in studies.items()
    }
    values = {}
    for family, trial in best.items():
        name = (
            f"{STUDY}-best-2"
            if best["keras"].user_attrs["run"] == best["sklearn"].user_attrs["run"]
            else f"{STUDY}-best-{family}-2"
        )
        revision = experiment_revision(project, name)
        assert revision is not None, name
        files = DVCFileSystem(str(project), rev=revision)
        params = yaml.safe_load(files.read_text("params.yaml"))
        assert params["replicates"]["count"] == VERDICT_REPLICATES
        assert params["model"]["learning_rate"] == pytest.approx(
            trial.params["model.learning_rate"]
        )
        with files.open(str(paths.REPLICATE_METRICS)) as handle:
            table = pd.read_csv(handle)
        values[family] = table[table["family"] == family].sort_values("replicate")["roc_auc"]
    verdict = compare_replicates("roc_auc", values["keras"], values["sklearn"], 0.6, 0.95)
    report = (project / "reports/search" / STUDY / "report/search.md").read_text()
    assert f"keras {verdict.keras.mean():.4f}, sklearn {verdict.sklearn.mean():.4f}" in report
    assert f"sign-flip p = {verdict.p_value:.3g}" in report
    assert "Budget: 2 trials, no limit on minutes; sampler `tpe`" in report
    assert "| `model.learning_rate` | float | 0.001 to 0.1 | log | - |" in report
    assert "| `model.hidden_layers` | categorical | [[8], [16, 8]] | - | - |" in report

    # The study's own MLflow run: the report and its figures as artifacts. The same
    # verdict asked again finds that run instead of logging a second one.
    again = execute(project, sys.executable, "-m", "pipeline.search", "--verdict-only")
    assert "re-training" not in again.stderr
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (study_run,) = client.search_runs(
        [experiment.experiment_id], filter_string="attributes.run_name = 'search tiny'"
    )
    artifacts = {item.path for item in client.list_artifacts(study_run.info.run_id)}
    assert {"search.md", "history.png"} <= artifacts
    assert study_run.data.metrics["test_roc_auc_keras"] == pytest.approx(verdict.keras.mean())
    assert f"MLflow run {study_run.info.run_id}" in log
    assert f"MLflow run {study_run.info.run_id}" in again.stderr
    assert study_run.data.metrics["trials_complete_keras"] == 2
    assert study_run.data.metrics["trials_pruned_sklearn"] == 0
    assert study_run.data.params["budget.trials"] == "2"


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(1)


def test_workers_share_a_postgresql_study_and_a_killed_workers_trial_is_retried(
    tmp_path: Path, postgres: test_team.Postgres
) -> None:
    project = search_project(tmp_path / "project")
    command = [sys.executable, "-m", "pipeline.search", "--storage", postgres.uri, "--trials-only"]
    url = storage_url(postgres.uri, project)

    def start(name: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        return subprocess.Popen(
            command, cwd=project, env=environment(), stdout=log, stderr=subprocess.STDOUT
        )

    def trials(family: str = "keras") -> list[optuna.trial.FrozenTrial]:
        try:
            return load_studies(url)[family].get_trials()
        except KeyError:  # not created yet
            return []

    first, second = start("first"), start("second")

    def running_in_second() -> optuna.trial.FrozenTrial | None:
        return next(
            (
                trial
                for trial in trials()
                if trial.state == TrialState.RUNNING
                and trial.user_attrs.get("worker", "").endswith(f":{second.pid}")
            ),
            None,
        )

    wait_for(lambda: running_in_second() is not None, 300, "a trial of the second worker")
    killed = running_in_second()
    # Mid-trial: its `dvc exp run` is under way (a trial takes far longer than this).
    time.sleep(5)
    second.send_signal(signal.SIGKILL)
    second.wait()
    restarted = start("restarted")
    assert first.wait(timeout=900) == 0, (tmp_path / "first.log").read_text()
    assert restarted.wait(timeout=900) == 0, (tmp_path / "restarted.log").read_text()

    final = trials()
    states = {trial.number: trial.state for trial in final}
    # The killed worker's trial failed, and exactly one retry of it finished.
    assert states[killed.number] == TrialState.FAIL
    retries = [
        trial
        for trial in final
        if RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) == killed.number
    ]
    assert len(retries) == 1
    assert retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params
    # The other library's study failed and retried the same run alongside.
    sklearn = {trial.user_attrs["run"]: trial for trial in trials("sklearn")}
    assert sklearn[killed.number].state == TrialState.FAIL
    assert sklearn[retries[0].number].state == TrialState.COMPLETE
    assert sklearn[retries[0].number].params == killed.params
    assert len(sklearn) == len(final)
    # None lost: every other trial finished, nothing is left running or waiting.
    complete = [trial for trial in final if trial.state == TrialState.COMPLETE]
    assert len(complete) == SEARCH["budget"]["trials"]
    assert sorted(states.values(), key=str) == sorted(
        [TrialState.FAIL] + [TrialState.COMPLETE] * len(complete), key=str
    )
    # Both surviving workers ran trials of the study.
    workers = {trial.user_attrs["worker"].rsplit(":", 1)[1] for trial in complete}
    assert workers <= {str(first.pid), str(restarted.pid)}
    # The killed trial's pipeline died with its worker: no experiment. If it had got
    # as far as publishing, its runs ended KILLED with it; every other run finished.
    assert experiment_revision(project, f"{STUDY}-{killed.number}") is None
    check_trials_in_mlflow(project, complete)
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    unfinished = [run for run in runs if run.info.status != "FINISHED"]
    assert all(
        run.info.status == "KILLED"
        and run.data.tags.get("dvc.experiment") == f"{STUDY}-{killed.number}"
        for run in unfinished
    ), [(run.info.status, run.data.tags.get("dvc.experiment")) for run in unfinished]
    # The logs name the database without its user name.
    logs = (tmp_path / "first.log").read_text()
    assert f"postgresql+psycopg://127.0.0.1:{postgres.port}/mlflow" in logs
    assert "mlflow@" not in logs


def test_ctrl_c_stops_the_running_trial_and_no_job_starts_another(tmp_path: Path) -> None:
    project = search_project(tmp_path / "project")
    # One trial of budget for two jobs: the second job must wait, not start a trial.
    command = [sys.executable, "-m", "pipeline.search", "--jobs", "2", "--trials", "1"]
    log = tmp_path / "worker.log"
    with open(log, "w") as output:
        worker = subprocess.Popen(
            command,
            cwd=project,
            env=environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"sqlite:///{project / 'optuna.db'}"

    def trials() -> list[optuna.trial.FrozenTrial]:
        try:
            return load_studies(url)["keras"].get_trials()
        except KeyError:  # not created yet
            return []

    wait_for(lambda: any(trial.state == TrialState.RUNNING for trial in trials()), 300, "a trial")
    time.sleep(5)  # its `dvc exp run` is under way
    # Ctrl-C in a terminal: SIGINT to the whole foreground process group.
    os.killpg(worker.pid, signal.SIGINT)
    assert worker.wait(timeout=300) == 130
    lines = log.read_text().splitlines()
    assert lines[-1] == (
        "error: stopped by Ctrl-C (SIGINT); finished trials are kept and the stopped ones "
        "queued again; run the same command to retry them and go on"
    )
    assert not any("Traceback" in line for line in lines)
    trial, queued = trials()
    assert trial.state == TrialState.FAIL
    assert f"search: trial {trial.number} failed: " in log.read_text()
    assert "; queued again" in log.read_text()
    assert experiment_revision(project, f"{STUDY}-{trial.number}") is None
    # Queued again in both studies, so that the same command, run again, retries it.
    assert queued.state == TrialState.WAITING
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(queued) == trial.number
    assert queued.params == trial.params
    sklearn = load_studies(url)["sklearn"].get_trials()
    assert [twin.state for twin in sklearn] == [TrialState.FAIL, TrialState.WAITING]

    # Nothing of the worker's session is left running once its stages have stopped
    # (each one finishes its own clean-up after its `dvc` is gone).
    def session_ended() -> bool:
        listed = ["ps", "-s", str(worker.pid), "-o", "pid="]
        return not subprocess.run(listed, capture_output=True, text=True).stdout.strip()

    wait_for(session_ended, 120, "the worker's processes to end")

    execute(project, *command, "--trials-only")
    retried = trials()[1]
    assert retried.state == TrialState.COMPLETE
    assert retried.params == trial.params
    assert experiment_revision(project, f"{STUDY}-{retried.number}") is not None


def earlier_run(intermediate: float, value: float) -> optuna.trial.FrozenTrial:
    """A finished run 0 of one library, with the same loss at both epochs."""
    return optuna.trial.create_trial(
        params={"model.learning_rate": 0.01, "model.hidden_layers": "[8]"},
        distributions={
            "model.learning_rate": optuna.distributions.FloatDistribution(0.001, 0.1, log=True),
            "model.hidden_layers": optuna.distributions.CategoricalDistribution(["[8]", "[16, 8]"]),
        },
        value=value,
        intermediate_values={1: intermediate, 2: intermediate},
        user_attrs={"run": 0},
    )


def test_a_pruned_library_is_pruned_in_optuna_dvc_and_mlflow_and_the_other_counts(
    tmp_path: Path,
) -> None:
    project = tiny_project(tmp_path / "project", EXPERIMENT, epochs=2)
    pruner = {"type": "median", "startup_trials": 1, "warmup_epochs": 0}
    (project / "search.yaml").write_text(yaml.safe_dump({**SEARCH, "pruner": pruner}))
    commit_all(project, "a tiny search that prunes")
    url = f"sqlite:///{project / 'optuna.db'}"
    # An earlier run whose Keras validation loss was 0 at every epoch (reported as -0:
    # the studies maximize ROC AUC), and whose scikit-learn loss was huge: the median
    # pruner then prunes Keras after epoch 1 of the next run, never scikit-learn.
    for family, intermediate in (("keras", -0.0), ("sklearn", -1e9)):
        study = optuna.create_study(
            study_name=f"{STUDY}.{family}", storage=url, direction="maximize"
        )
        study.add_trial(earlier_run(intermediate, 0.5))

    completed = execute(
        project, sys.executable, "-m", "pipeline.search", "--trials", "2", "--trials-only"
    )

    studies = load_studies(url)
    keras, sklearn = (studies[family].get_trials()[1] for family in ("keras", "sklearn"))
    assert keras.state == TrialState.PRUNED
    assert keras.user_attrs["pruned_epoch"] == 1
    assert list(keras.intermediate_values) == [1]
    assert sklearn.state == TrialState.COMPLETE
    assert 0.0 <= sklearn.value <= 1.0
    assert list(sklearn.intermediate_values) == [1, 2]
    assert f"search: trial {keras.number} in " in completed.stderr
    assert "validation roc_auc keras pruned at epoch 1, sklearn " in completed.stderr

    # DVC: the experiment completed; the pruned trainer's summary and the headline
    # (`dvc exp show`) say so, the other trainer trained every epoch.
    revision = experiment_revision(project, f"{STUDY}-{keras.number}")
    assert revision is not None
    files = DVCFileSystem(str(project), rev=revision)
    summary = json.loads(files.read_text(str(paths.SUMMARIES["keras"])))
    assert summary["pruned"] is True
    assert summary["pruned_epoch"] == 1
    assert summary["epochs_trained"] == 1
    assert "pruned" not in json.loads(files.read_text(str(paths.SUMMARIES["sklearn"])))
    headline = json.loads(files.read_text(str(paths.HEADLINE)))
    assert headline["keras_pruned_epoch"] == 1
    assert "sklearn_pruned_epoch" not in headline

    # MLflow: the Keras run of the trial is tagged pruned, the scikit-learn run not.
    runs = json.loads(files.read_text(str(paths.MLFLOW_RUNS)))
    client = mlflow_client(project)
    keras_run = client.get_run(runs["keras_run_id"])
    assert keras_run.data.tags["search.pruned"] == "true"
    assert keras_run.data.tags["search.pruned_epoch"] == "1"
    assert "search.pruned" not in client.get_run(runs["sklearn_run_id"]).data.tags
    assert client.get_run(keras.user_attrs["mlflow_run"]).info.status == "FINISHED"

    # The run's params name it (`search_trial`). The same params outside the search,
    # in a shell where the run's variable is still set, train every epoch: what a
    # trainer writes depends on its params, as DVC records it, not on the variable.
    name = f"{STUDY}-{keras.number}"
    trial_params = yaml.safe_load(files.read_text("params.yaml"))
    assert trial_params["search_trial"] == name
    (project / "params.yaml").write_text(
        yaml.safe_dump({**trial_params, "search_trial": "none"}, sort_keys=False)
    )
    leftover = trial_environment(
        name,
        url,
        pruner,
        {
            "keras": (f"{STUDY}.keras", keras._trial_id),
            "sklearn": (f"{STUDY}.sklearn", sklearn._trial_id),
        },
    )
    execute(project, "dvc", "repro", env=environment(leftover))
    summary = json.loads((project / paths.SUMMARIES["keras"]).read_text())
    assert "pruned" not in summary
    assert summary["epochs_trained"] == 2
