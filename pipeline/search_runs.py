"""A run of the search: one trial in each library's study with the same params, the
lead library's sampler proposing them, kept alive by heartbeats, told its outcome and
reported in one line."""

import os
import socket
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from pipeline import paths
from pipeline.search_space import SearchConfig, decoded_params, short, suggest
from pipeline.search_storage import MAX_RETRIES

if TYPE_CHECKING:
    from pipeline.search import Search

FAMILIES = paths.MODEL_FAMILIES  # one study each


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


def claim_waiting(study: optuna.Study, run: Any) -> int | None:
    """The id of the waiting retry of run `run` in `study`, now running; None if none
    (always for a new run: `run` is None)."""
    if run is None:
        return None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if trial.user_attrs.get("run") != run:
            continue
        try:
            if study._storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                return trial._trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def start_run(
    config: SearchConfig, trial_flat: dict[str, Any], studies: dict[str, optuna.Study]
) -> Run:
    """Start a run: the lead library's sampler proposes (a waiting retry first), the
    other library's study gets the same params. Leads alternate with the run count.
    `trial_flat` holds the flattened trial params that `when` conditions fall back on."""
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
    suggest(lead_trial, config, trial_flat)
    # A retry's twin waits in the other study under the same run; a new run's twin is
    # created running, its params fixed to the lead's.
    storage = studies[other]._storage
    twin_id = claim_waiting(studies[other], lead_trial.user_attrs.get("run"))
    if twin_id is None:
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING, system_attrs={"fixed_params": lead_trial.params}
        )
        study_id = storage.get_study_id_from_name(studies[other].study_name)
        twin_id = storage.create_new_trial(study_id, template_trial=template)
    twin = optuna.trial.Trial(studies[other], twin_id)
    suggest(twin, config, trial_flat)
    trials = {lead: lead_trial, other: twin}
    number = trials["keras"].number
    for trial in trials.values():
        trial.set_user_attr("run", number)
        trial.set_user_attr("lead", lead)
        trial.set_user_attr("dvc_experiment", f"{config.study}-{number}")
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


def tell(studies: dict[str, optuna.Study], run: Run, result: RunResult) -> None:
    """Each library's trial: its validation score, or pruned (no value: the other
    library's score still counts)."""
    for family, trial in run.trials.items():
        if result.pruned[family] is not None:
            trial.set_user_attr("pruned_epoch", result.pruned[family])
            studies[family].tell(trial, state=TrialState.PRUNED)
        else:
            studies[family].tell(trial, result.scores[family])


def fail_run(studies: dict[str, optuna.Study], run: Run, reason: str) -> None:
    for family, trial in run.trials.items():
        trial.set_user_attr("error", reason)
        studies[family].tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def fail_stale(studies: dict[str, optuna.Study]) -> None:
    """Fail and re-queue the runs of workers whose heartbeats stopped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for study in studies.values():
            fail_stale_trials(study)


def requeue(studies: dict[str, optuna.Study], run: Run) -> None:
    """Queue a failed run's params again in both studies, as a dead worker's run is
    (at most `MAX_RETRIES` times), so that the next run of any worker takes them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
        for family, trial in run.trials.items():
            retry(studies[family], studies[family]._storage.get_trial(trial._trial_id))


class Gate:
    """A lock that the run it lets through releases as soon as it has started, or the
    `with` block at its end, whichever comes first."""

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


def best_trial(trials: list[FrozenTrial], direction: str) -> FrozenTrial:
    """The finished trial with the best value; the earliest run wins ties."""
    sign = -1 if direction == "maximize" else 1
    return min(trials, key=lambda trial: (sign * trial.value, trial.user_attrs["run"]))


def progress_line(
    search: "Search",
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
