"""Hyperparameter search with Optuna: trials as DVC experiments scored on the validation
rows, shared by any number of workers through the study's storage, then a fair verdict
between each library's best params (`reports/search/<study>/`, an MLflow run)."""

import argparse
import logging
import os
import socket
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from pipeline import paths
from pipeline.config import Params, flatten, parse_params
from pipeline.errors import PipelineError, run_stage
from pipeline.pruning import trial_environment
from pipeline.search_publication import publish_search
from pipeline.search_space import (
    SearchConfig,
    decoded_params,
    load_search,
    parse_search,
    short,
    suggest,
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


@dataclass(frozen=True)
class Run:
    """One pipeline run of the search: a trial of each library's study, same params."""

    number: int  # the Keras trial's number, in the DVC experiment's name
    lead: str  # the library whose sampler proposed the params
    trials: dict[str, optuna.Trial]


@dataclass(frozen=True)
class RunResult:
    """Each library's validation score, or the epoch at which it was pruned."""

    scores: dict[str, float]
    pruned: dict[str, int | None]


def _claim_waiting(study: optuna.Study, run: Any) -> int | None:
    """The id of the waiting retry of run `run` in `study`, now running; None if none."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if trial.user_attrs.get("run") != run:
            continue
        try:
            if study._storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                return trial._trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def start_run(search: Search, studies: dict[str, optuna.Study]) -> Run:
    """Start a run: the lead library's sampler proposes (a waiting retry first), the
    other library's study gets the same params. Leads alternate with the run count."""
    waiting = [
        family
        for family in FAMILIES
        if studies[family].get_trials(deepcopy=False, states=(TrialState.WAITING,))
    ]
    count = len(studies["keras"].get_trials(deepcopy=False))
    lead = waiting[0] if waiting else FAMILIES[count % len(FAMILIES)]
    (other,) = (family for family in FAMILIES if family != lead)
    with warnings.catch_warnings():
        # Our own `Heartbeat` records both trials' heartbeats, which Optuna cannot know.
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        lead_trial = studies[lead].ask()
    trial_flat = flatten(
        parse_params(with_overrides(search.params_raw, search.config.trial_params))
    )
    suggest(lead_trial, search.config, trial_flat)
    # A retry's twin waits in the other study under the same run; a new run's twin is
    # created running, its params fixed to the lead's.
    storage = studies[other]._storage
    twin_id = _claim_waiting(studies[other], lead_trial.user_attrs.get("run"))
    if twin_id is None:
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING, system_attrs={"fixed_params": lead_trial.params}
        )
        study_id = storage.get_study_id_from_name(studies[other].study_name)
        twin_id = storage.create_new_trial(study_id, template_trial=template)
    twin = optuna.trial.Trial(studies[other], twin_id)
    suggest(twin, search.config, trial_flat)
    trials = {lead: lead_trial, other: twin}
    number = trials["keras"].number
    for trial in trials.values():
        trial.set_user_attr("run", number)
        trial.set_user_attr("lead", lead)
        trial.set_user_attr("dvc_experiment", f"{search.config.study}-{number}")
        # Which machine and process runs it: a stale trial's worker is the one to look at.
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    return Run(number=number, lead=lead, trials=trials)


class Heartbeat:
    """Records that this worker's run is alive, for both of its trials, until stopped:
    when the worker dies the records stop and another worker fails and retries them."""

    def __init__(self, storage: Any, trial_ids: list[int], seconds: int) -> None:
        self._storage, self._trial_ids, self._seconds = storage, trial_ids, seconds
        self._stopped = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")
        self._thread.start()

    def _beat(self) -> None:
        for trial_id in self._trial_ids:
            self._storage.record_heartbeat(trial_id)

    def _run(self) -> None:
        while not self._stopped.wait(self._seconds):
            self._beat()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def run_pipeline(search: Search, run: Run) -> RunResult:
    """The run's pipeline with its params as a DVC experiment, whose trainers report
    to their trials; scored on the validation rows."""
    config = search.config
    sampled = decoded_params(config, run.trials["keras"].params)
    try:
        params = parse_params(with_overrides(search.params_raw, {**config.trial_params, **sampled}))
    except PipelineError as error:
        # A combination that params.yaml's rules refuse, such as a schedule without sgd.
        raise TrialFailed(str(error)) from None
    name = f"{config.study}-{run.number}"
    channel = trial_environment(
        search.storage_url,
        config.pruner.model_dump(),
        {family: (trial.study.study_name, trial._trial_id) for family, trial in run.trials.items()},
    )
    experiment = run_experiment(
        search.root,
        name,
        {**config.trial_params, **sampled},
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


def best_trial(trials: list[FrozenTrial], direction: str) -> FrozenTrial:
    """The finished trial with the best value; the earliest run wins ties."""
    sign = -1 if direction == "maximize" else 1
    return min(trials, key=lambda trial: (sign * trial.value, trial.user_attrs["run"]))


def progress_line(
    search: Search,
    studies: dict[str, optuna.Study],
    run: Run,
    result: RunResult | None,
    reason: str,
    seconds: float,
) -> str:
    """One line per finished run: its params, each library's value and the best so far."""
    params = decoded_params(search.config, run.trials["keras"].params)
    shown = ", ".join(f"{key}={short(value)}" for key, value in params.items())
    if result is None:
        return f"search: trial {run.number} failed: {shown}: {reason}"
    values = ", ".join(
        f"{family} pruned at epoch {result.pruned[family]}"
        if result.pruned[family] is not None
        else f"{family} {result.scores[family]:.4f}"
        for family in FAMILIES
    )
    leaders = []
    for family in FAMILIES:
        complete = studies[family].get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if complete:
            leader = best_trial(complete, search.direction)
            leaders.append(f"{family} {leader.value:.4f} (trial {leader.user_attrs['run']})")
        else:
            leaders.append(f"{family} none yet")
    return (
        f"search: trial {run.number} in {seconds:.0f} s ({run.lead}'s sampler): {shown}; "
        f"validation {search.metric} {values}; best so far {', '.join(leaders)}"
    )


def fail_stale(studies: dict[str, optuna.Study]) -> None:
    """Fail and re-queue the runs of workers whose heartbeats stopped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for study in studies.values():
            fail_stale_trials(study)


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


class Gate:
    """A lock that the trial it lets through releases as soon as it has started, or
    the `with` block at its end, whichever comes first."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._held = False

    def __enter__(self) -> "Gate":
        self._lock.acquire()
        self._held = True
        return self

    def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()

    def __exit__(self, *exception: object) -> None:
        self.release()


def tell(studies: dict[str, optuna.Study], run: Run, result: RunResult) -> None:
    """Each library's trial: its validation score, or pruned (no value: the other
    library's score still counts)."""
    for family, trial in run.trials.items():
        if result.pruned[family] is not None:
            trial.set_user_attr("pruned_epoch", result.pruned[family])
            studies[family].tell(trial, state=TrialState.PRUNED)
        else:
            studies[family].tell(trial, result.scores[family])


def run_one(
    search: Search, studies: dict[str, optuna.Study], failures_in_a_row: int, gate: Gate
) -> int:
    """Run one run (a re-queued one first), opening `gate` once it is under way; return
    the failures in a row since."""
    run = start_run(search, studies)
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
    except BaseException as error:
        # Ctrl-C or a crash: the run fails with its reason, and the worker stops.
        reason = f"stopped: {type(error).__name__}"
        _fail(studies, run, reason)
        logger.info(progress_line(search, studies, run, None, reason, 0.0))
        raise
    finally:
        heartbeat.stop()
    if result is None:
        _fail(studies, run, reason)
    logger.info(progress_line(search, studies, run, result, reason, time.monotonic() - started))
    failures_in_a_row = failures_in_a_row + 1 if result is None else 0
    if failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
        raise PipelineError(
            f"search: {MAX_FAILURES_IN_A_ROW} trials in a row failed; their logs are in "
            f"{search.logs}"
        )
    return failures_in_a_row


def _fail(studies: dict[str, optuna.Study], run: Run, reason: str) -> None:
    for family, trial in run.trials.items():
        trial.set_user_attr("error", reason)
        studies[family].tell(trial, state=TrialState.FAIL, skip_if_finished=True)


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


if __name__ == "__main__":
    run_stage(main)
