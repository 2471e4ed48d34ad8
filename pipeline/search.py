"""Hyperparameter search with Optuna: trials as DVC experiments scored on the validation
rows, shared by any number of workers through the study's storage, then a fair verdict
between each library's best params (`reports/search/<study>/`, an MLflow run)."""

import argparse
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from pipeline import paths
from pipeline.config import Params, flatten, parse_params
from pipeline.errors import PipelineError, run_stage
from pipeline.pruning import trial_environment
from pipeline.search_publication import publish_search
from pipeline.search_runs import (
    Gate,
    Heartbeat,
    Run,
    RunResult,
    best_trial,
    fail_run,
    fail_stale,
    progress_line,
    requeue,
    start_run,
    tell,
)
from pipeline.search_space import (
    SearchConfig,
    decoded_params,
    load_search,
    parse_search,
    with_overrides,
)
from pipeline.search_storage import (
    count_states,
    finished,
    load_studies,
    open_storage,
    open_studies,
    redact,
    storage_url,
)
from pipeline.search_trials import (
    Experiment,
    TrialFailed,
    family_runs,
    find_experiment,
    mlflow_parent_run,
    pruned_epochs,
    replicate_test_metric,
    run_experiment,
    stop_experiments,
    validation_scores,
)
from pipeline.statistics import LOWER_IS_BETTER, ReplicateVerdict, compare_replicates

logger = logging.getLogger(__name__)

FAMILIES = paths.MODEL_FAMILIES  # one study each
# A worker stops after this many failed trials in a row: the pipeline itself is broken.
MAX_FAILURES_IN_A_ROW = 3
TAG_STUDY = "search.study"
# Set when the worker stops: its jobs then start no further trial.
stopping = threading.Event()
# Taken by a job from its budget check until its trial has started.
_starting = threading.Lock()
TAG_TRIAL = "search.trial"
# On a library's MLflow run when its trainer was pruned in the trial.
TAG_PRUNED = "search.pruned"
TAG_PRUNED_EPOCH = "search.pruned_epoch"


@dataclass(frozen=True)
class Search:
    """Everything a worker needs, read and validated once."""

    root: Path
    config: SearchConfig
    params_raw: dict[str, Any]
    params: Params
    storage_url: str

    @property
    def metric(self) -> str:
        return self.params.compare.primary_metric

    @property
    def direction(self) -> str:
        return "minimize" if self.metric in LOWER_IS_BETTER else "maximize"

    @property
    def logs(self) -> Path:
        return self.root / paths.SEARCH_REPORTS / self.config.study / "logs"


def run_pipeline(search: Search, run: Run) -> RunResult:
    """The run's pipeline with its params as a DVC experiment, whose trainers report
    to their trials; scored on the validation rows."""
    config = search.config
    sampled = decoded_params(config, run.trials["keras"].params)
    name = f"{config.study}-{run.number}"
    # `search_trial` lets the trainers follow the pruner, and keeps their outputs,
    # perhaps pruned, out of every other run's reach in DVC's run cache.
    overrides = {**config.trial_params, **sampled, "search_trial": name}
    try:
        params = parse_params(with_overrides(search.params_raw, overrides))
    except PipelineError as error:
        # A combination that params.yaml's rules refuse, such as a schedule without sgd.
        raise TrialFailed(str(error)) from None
    channel = trial_environment(
        name,
        search.storage_url,
        config.pruner.model_dump(),
        {family: (trial.study.study_name, trial._trial_id) for family, trial in run.trials.items()},
    )
    experiment = run_experiment(
        search.root,
        name,
        overrides,
        search.logs / f"{name}.log",
        channel,
    )
    pruned = pruned_epochs(search.root, experiment)
    scores = validation_scores(search.root, experiment, params, search.metric)
    run_id = mlflow_parent_run(search.root, experiment)
    for trial in run.trials.values():
        trial.set_user_attr("mlflow_run", run_id)
    tags = {run_id: {TAG_STUDY: config.study, TAG_TRIAL: str(run.number)}}
    family_run = family_runs(search.root, experiment)
    for family, epoch in pruned.items():
        if epoch is not None:
            tags[family_run[family]] = {TAG_PRUNED: "true", TAG_PRUNED_EPOCH: str(epoch)}
    publish_search(search.root, params.track.experiment_name, tags)
    return RunResult(scores=scores, pruned=pruned)


def work(search: Search, studies: dict[str, optuna.Study], deadline: float | None) -> None:
    """One job's loop: start runs until the budget is spent, then wait until no run of
    any worker is under way (a killed worker's run is failed, re-queued and run)."""
    budget = search.config.budget.trials
    failures_in_a_row = 0
    while not stopping.is_set():
        # Held from the budget check until the run's trials are in the storage, so that
        # this worker's jobs never start more runs than the budget leaves.
        gate = Gate(_starting)
        with gate:
            fail_stale(studies)
            # Every run has one Keras trial, in the same state but for pruning.
            counts = count_states(studies["keras"])
            waiting = sum(count_states(study)[TrialState.WAITING] for study in studies.values())
            done, running = finished(counts), counts[TrialState.RUNNING]
            out_of_time = deadline is not None and time.monotonic() >= deadline
            if out_of_time or (budget and done >= budget):
                if not running:
                    return
            elif waiting or not budget or done + running < budget:
                # A re-queued run first: its params are waiting in the studies.
                failures_in_a_row = run_one(search, studies, failures_in_a_row, gate)
                continue
        # Runs of other jobs or workers are under way and may yet fail: theirs to
        # finish, or ours to retry once their heartbeat stops.
        time.sleep(min(search.config.heartbeat_seconds, 5))


def run_one(
    search: Search, studies: dict[str, optuna.Study], failures_in_a_row: int, gate: Gate
) -> int:
    """Run one run (a re-queued one first), opening `gate` once it is under way; return
    the failures in a row since."""
    trial_flat = flatten(
        parse_params(with_overrides(search.params_raw, search.config.trial_params))
    )
    run = start_run(search.config, trial_flat, studies)
    storage = studies["keras"]._storage
    heartbeat = Heartbeat(
        storage, [trial._trial_id for trial in run.trials.values()], search.config.heartbeat_seconds
    )
    gate.release()
    started = time.monotonic()
    result, reason = None, ""
    try:
        result = run_pipeline(search, run)
        tell(studies, run, result)
    except TrialFailed as error:
        reason = str(error)
        if stopping.is_set():
            # Stopped with the worker (Ctrl-C, SIGTERM), not failed by its params: the
            # same command, run again, takes these params first.
            fail_run(studies, run, reason)
            requeue(studies, run)
            logger.info(progress_line(search, studies, run, None, f"{reason}; queued again", 0))
            return failures_in_a_row
    except BaseException as error:
        # Ctrl-C or a crash: the run fails with its reason, and the worker stops.
        reason = f"stopped: {type(error).__name__}"
        fail_run(studies, run, reason)
        logger.info(progress_line(search, studies, run, None, reason, 0.0))
        raise
    finally:
        heartbeat.stop()
    if result is None:
        fail_run(studies, run, reason)
    logger.info(progress_line(search, studies, run, result, reason, time.monotonic() - started))
    failures_in_a_row = failures_in_a_row + 1 if result is None else 0
    if failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
        raise PipelineError(
            f"search: {MAX_FAILURES_IN_A_ROW} trials in a row failed; their logs are in "
            f"{search.logs}"
        )
    return failures_in_a_row


def run_trials(search: Search, jobs: int, minutes: float) -> None:
    """`jobs` trials at a time on this machine, each job with its own sampler seed so
    that parallel jobs and workers do not propose the same params."""
    storage = open_storage(search.storage_url, search.config.heartbeat_seconds)
    deadline = time.monotonic() + minutes * 60 if minutes else None
    seeds = np.random.SeedSequence([search.config.seed, os.getpid()]).spawn(jobs)
    job_studies = [
        open_studies(
            storage,
            search.config,
            search.metric,
            [int(value) for value in seed.generate_state(len(FAMILIES))],
        )
        for seed in seeds
    ]
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="search-job")
    futures = [pool.submit(work, search, studies, deadline) for studies in job_studies]
    try:
        for future in futures:
            future.result()
    except BaseException:
        # Ctrl-C, SIGTERM or a failed job: no job starts another trial, and the running
        # ones stop now (their trials are recorded as failed).
        stopping.set()
        stop_experiments()
        raise
    finally:
        pool.shutdown(wait=True)


@dataclass(frozen=True)
class Outcome:
    """The fair verdict: each library's best params, re-trained over replicates."""

    best: dict[str, FrozenTrial]
    experiments: dict[str, Experiment]
    verdict: ReplicateVerdict
    counts: dict[str, dict[TrialState, int]]  # per library


def decide(search: Search, studies: dict[str, optuna.Study], jobs: int) -> Outcome:
    """Re-train each library's best trial with params.yaml's replicates (not the
    trial params) and compare them on the test rows, paired by replicate."""
    best = {}
    for family, study in studies.items():
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise PipelineError(
                f"study {search.config.study!r}: no finished trial of {family} to decide on "
                "(none yet, or all pruned or failed)"
            )
        best[family] = best_trial(complete, search.direction)
    runs = finished(count_states(studies["keras"]))
    names = {family: f"{search.config.study}-best-{family}-{runs}" for family in FAMILIES}
    if best["keras"].user_attrs["run"] == best["sklearn"].user_attrs["run"]:
        names["sklearn"] = names["keras"] = f"{search.config.study}-best-{runs}"

    def retrain(family: str) -> Experiment:
        # A verdict asked again on the same trials reuses its experiments.
        existing = find_experiment(search.root, names[family])
        if existing is not None:
            return existing
        overrides = decoded_params(search.config, best[family].params)
        logger.info("search: re-training %s's best params as %s", family, names[family])
        try:
            return run_experiment(
                search.root, names[family], overrides, search.logs / f"{names[family]}.log"
            )
        except TrialFailed as error:
            raise PipelineError(f"search: {names[family]}: {error}") from None

    # One experiment per distinct name: the same trial may be best for both.
    plans = {names[family]: family for family in reversed(FAMILIES)}
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(plans)))) as pool:
        runs = dict(zip(plans, pool.map(retrain, plans.values()), strict=True))
    experiments = {family: runs[names[family]] for family in FAMILIES}
    metric = search.metric
    verdict = compare_replicates(
        metric,
        replicate_test_metric(search.root, experiments["keras"], "keras", metric),
        replicate_test_metric(search.root, experiments["sklearn"], "sklearn", metric),
        search.params.compare.alpha,
        search.params.compare.confidence,
    )
    counts = {family: count_states(study) for family, study in studies.items()}
    return Outcome(best=best, experiments=experiments, verdict=verdict, counts=counts)


def parse_arguments(arguments: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.search", description=__doc__)
    parser.add_argument("--search", type=Path, default=paths.SEARCH, help="the search file")
    parser.add_argument("--study", help="the study's name (default: search.yaml's study)")
    parser.add_argument(
        "--storage",
        help="postgresql://user@host:port/database to share the study between machines "
        "(password in PGPASSWORD or ~/.pgpass); default: sqlite beside mlflow.db",
    )
    parser.add_argument("--jobs", type=int, default=1, help="trials at once on this machine")
    parser.add_argument("--trials", type=int, help="override budget.trials")
    parser.add_argument("--minutes", type=float, help="override budget.minutes")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--trials-only", action="store_true", help="a further worker: run trials, no verdict"
    )
    mode.add_argument(
        "--verdict-only", action="store_true", help="no new trials: decide on the study as it is"
    )
    return parser.parse_args(arguments)


def prepare(arguments: argparse.Namespace, root: Path) -> Search:
    """The validated search, with the command line's overrides applied."""
    if not 1 <= arguments.jobs <= 64:
        raise PipelineError(f"--jobs {arguments.jobs}: allowed: 1 to 64")
    config, params_raw = load_search(arguments.search, paths.PARAMS)
    budget = config.budget.model_copy(
        update={
            key: value
            for key, value in (("trials", arguments.trials), ("minutes", arguments.minutes))
            if value is not None
        }
    )
    raw = config.model_dump(mode="json") | {"budget": budget.model_dump(mode="json")}
    if arguments.study:
        raw["study"] = arguments.study
    config = parse_search(raw, params_raw, Path(f"{arguments.search} (with the options)"))
    return Search(
        root=root,
        config=config,
        params_raw=params_raw,
        params=parse_params(params_raw),
        storage_url=storage_url(arguments.storage, root),
    )


def main(arguments: list[str] | None = None) -> None:
    options = parse_arguments(arguments)
    search = prepare(options, Path.cwd().resolve())
    # Our progress line reports each trial, failed ones included; Optuna would add its
    # own lines, with a traceback for a failed trial.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    config = search.config
    logger.info(
        "search: study %r in %s: budget %s trials, %s minutes; %d job(s); objective: "
        "validation %s of each library",
        config.study,
        redact(search.storage_url),
        config.budget.trials or "no limit on",
        config.budget.minutes or "no limit on",
        options.jobs,
        search.metric,
    )
    if not options.verdict_only:
        run_trials(search, options.jobs, config.budget.minutes)
    if options.trials_only:
        return
    # Imported here: a worker that only runs trials draws no figures.
    from pipeline import search_report

    storage = open_storage(search.storage_url, config.heartbeat_seconds)
    studies = load_studies(storage, config)
    outcome = decide(search, studies, options.jobs)
    folder = search.root / paths.SEARCH_REPORTS / config.study / "report"
    search_report.write_report(search, studies, outcome, folder)
    # One run per re-trained experiment, which may be the best of both libraries.
    best_of: dict[str, list[str]] = {}
    for family, experiment in outcome.experiments.items():
        best_of.setdefault(mlflow_parent_run(search.root, experiment), []).append(family)
    final_runs = {
        run: {TAG_STUDY: config.study, TAG_TRIAL: f"best {', '.join(families)}"}
        for run, families in best_of.items()
    }
    run_id = publish_search(
        search.root,
        search.params.track.experiment_name,
        final_runs,
        search_report.study_run(search, outcome, folder),
    )
    for line in search_report.best_lines(outcome, config):
        logger.info(line)
    logger.info("search: %s", search_report.verdict_sentence(outcome.verdict))
    logger.info("search: report %s; MLflow run %s", folder / "search.md", run_id)


# The search is no stage: `dvc repro` would not go on with it.
AFTER_A_STOPPED_SEARCH = (
    "finished trials are kept and the stopped ones queued again; run the same command "
    "to retry them and go on"
)

if __name__ == "__main__":
    run_stage(main, AFTER_A_STOPPED_SEARCH)
