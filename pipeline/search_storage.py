"""Where studies live: the embedded SQLite file or a shared PostgreSQL database, with
heartbeats so that a dead worker's trial is retried, and the study itself."""

import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.search_space import SearchConfig
from pipeline.statistics import LOWER_IS_BETTER

# Heartbeats a worker may miss before its running trial is failed and retried.
GRACE_HEARTBEATS = 3
# A killed worker's trial is retried this often (a trial that kills workers, no more).
MAX_RETRIES = 2


def storage_url(given: str | None, root: Path) -> str:
    """The SQLAlchemy URL of the study storage: SQLite beside mlflow.db by default;
    a PostgreSQL URL without a password (libpq reads PGPASSWORD or ~/.pgpass)."""
    if not given:
        return f"sqlite:///{root / paths.OPTUNA_DATABASE}"
    parts = urlsplit(given)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg", "sqlite"):
        raise PipelineError(
            f"--storage {redact(given)!r}: allowed: postgresql://user@host:port/database "
            "or sqlite:///path"
        )
    if parts.password is not None:
        raise PipelineError(
            f"--storage {redact(given)!r}: contains a password, which logs and the process "
            "list would show; put it in PGPASSWORD or ~/.pgpass instead"
        )
    if parts.scheme.startswith("postgres"):
        # psycopg 3 is the PostgreSQL driver this project installs.
        return urlunsplit(parts._replace(scheme="postgresql+psycopg"))
    return given


def redact(url: str) -> str:
    """The URL without a user name or password, for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname or ""
    return urlunsplit(parts._replace(netloc=host))


def open_storage(url: str, heartbeat: int) -> RDBStorage:
    """The storage with heartbeats: a worker silent for GRACE_HEARTBEATS heartbeats has
    its running trial failed by the next worker that looks, and re-queued."""
    sqlite = url.startswith("sqlite")
    try:
        with warnings.catch_warnings():
            # Heartbeats and their retry callback are marked experimental since 2.8.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                # SQLite: writers in several threads wait for the lock instead of failing.
                engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else None,
                heartbeat_interval=heartbeat,
                grace_period=GRACE_HEARTBEATS * heartbeat,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                    max_retry=MAX_RETRIES
                ),
            )
    except Exception as error:  # SQLAlchemy's and the driver's errors alike
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise PipelineError(
            f"study storage {redact(url)} is unreachable: {type(error).__name__} {redact(reason)}"
        ) from None


def open_study(
    storage: RDBStorage,
    config: SearchConfig,
    metric: str,
    objectives: int,
    sampler_seed: int | None,
) -> optuna.Study:
    """The study by name, created by the first worker; a worker with another search
    space or objective is refused, so that no study mixes two."""
    if config.sampler == "tpe":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(seed=sampler_seed)
    else:
        sampler = optuna.samplers.RandomSampler(seed=sampler_seed)
    study = optuna.create_study(
        storage=storage,
        study_name=config.study,
        directions=["minimize" if metric in LOWER_IS_BETTER else "maximize"] * objectives,
        sampler=sampler,
        load_if_exists=True,
    )
    definition = {
        "space": config.model_dump(mode="json")["space"],
        "trial_params": config.trial_params,
        "metric": metric,
    }
    recorded = study.user_attrs.get("definition")
    if recorded is None:
        study.set_user_attr("definition", definition)
        study.set_user_attr("budget", config.budget.model_dump(mode="json"))
    elif recorded != definition:
        raise PipelineError(
            f"study {config.study!r} in {redact(storage.url)} was started with another "
            "search space, trial_params or compare.primary_metric; name a new study"
        )
    return study


def count_states(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def finished(counts: dict[TrialState, int]) -> int:
    return counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
