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
from pipeline.pruning import build_pruner, sqlite_engine_arguments
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
    try:
        with warnings.catch_warnings():
            # Heartbeats and their retry callback are marked experimental since 2.8.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=sqlite_engine_arguments(url),
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


def study_name(config: SearchConfig, family: str) -> str:
    """The study of one library: `<study>.<family>` (a search's name has no dot)."""
    return f"{config.study}.{family}"


def _refuse_old_layout(storage: RDBStorage, config: SearchConfig) -> None:
    """Searches before pruning kept one study with two objectives under the plain name."""
    try:
        storage.get_study_id_from_name(config.study)
    except KeyError:
        return
    raise PipelineError(
        f"study {config.study!r} in {redact(storage.url)} has the old layout (one study with "
        "two objectives, before pruning); name a new study"
    )


def open_studies(
    storage: RDBStorage,
    config: SearchConfig,
    metric: str,
    sampler_seeds: list[int] | None,
) -> dict[str, optuna.Study]:
    """Each library's study, created by the first worker; a worker with another search
    space or objective is refused, so that no study mixes two."""
    _refuse_old_layout(storage, config)
    definition = {
        "space": config.model_dump(mode="json")["space"],
        "trial_params": config.trial_params,
        "metric": metric,
    }
    studies = {}
    for index, family in enumerate(paths.MODEL_FAMILIES):
        seed = sampler_seeds[index] if sampler_seeds else None
        if config.sampler == "tpe":
            sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(seed=seed)
        else:
            sampler = optuna.samplers.RandomSampler(seed=seed)
        study = optuna.create_study(
            storage=storage,
            study_name=study_name(config, family),
            direction="minimize" if metric in LOWER_IS_BETTER else "maximize",
            sampler=sampler,
            pruner=build_pruner(config.pruner.model_dump()),
            load_if_exists=True,
        )
        recorded = study.user_attrs.get("definition")
        if recorded is None:
            study.set_user_attr("definition", definition)
            study.set_user_attr("budget", config.budget.model_dump(mode="json"))
        elif recorded != definition:
            raise PipelineError(
                f"study {config.study!r} in {redact(storage.url)} was started with another "
                "search space, trial_params or compare.primary_metric; name a new study"
            )
        studies[family] = study
    return studies


def load_studies(storage: RDBStorage, config: SearchConfig) -> dict[str, optuna.Study]:
    """Each library's study as the trials left it, for the verdict."""
    _refuse_old_layout(storage, config)
    try:
        return {
            family: optuna.load_study(study_name=study_name(config, family), storage=storage)
            for family in paths.MODEL_FAMILIES
        }
    except KeyError:
        raise PipelineError(
            f"no study {config.study!r} in {redact(storage.url)}; run trials first"
        ) from None


def count_states(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def finished(counts: dict[TrialState, int]) -> int:
    return counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
