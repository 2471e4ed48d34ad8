"""The search's trial channel: a trainer run by a search trial reports each epoch's
validation loss to its library's Optuna trial and stops when the pruner says so
(docs/search.md). Outside a search nothing here runs and Optuna is never imported."""

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

# Set by the search worker on the `dvc exp run` of a trial; DVC and the warm worker's
# client pass it on to the stages. JSON: the run's name, the storage URL (never with a
# password), the pruner, and per library its study's name and the trial's id. A
# trainer follows it only when params.yaml's `search_trial` names the same run, so
# that what a trainer writes depends on its params, as dvc.lock records it.
TRIAL_VARIABLE = "PIPELINE_SEARCH_TRIAL"


def sqlite_engine_arguments(url: str) -> dict[str, Any] | None:
    """SQLite: writers in several processes wait for the lock instead of failing."""
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None


def build_pruner(spec: Mapping[str, Any]) -> "optuna.pruners.BasePruner":
    """search.yaml's `pruner` as an Optuna pruner. Epochs are the trial's steps, from 1:
    epochs up to `warmup_epochs` are never pruned."""
    import optuna

    if spec["type"] == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=spec["startup_trials"], n_warmup_steps=spec["warmup_epochs"] + 1
    )


def trial_environment(
    run: str,
    storage_url: str,
    pruner: Mapping[str, Any],
    trials: Mapping[str, tuple[str, int]],
) -> dict[str, str]:
    """The variable that tells each library's trainer of the search run `run` (its
    `search_trial` param) its trial: `trials` maps a library to (study name, trial id)."""
    channel = {
        "run": run,
        "storage": storage_url,
        "pruner": dict(pruner),
        "trials": {
            family: {"study": study, "trial_id": trial_id}
            for family, (study, trial_id) in trials.items()
        },
    }
    return {TRIAL_VARIABLE: json.dumps(channel)}


@dataclass
class EpochPruning:
    """One library's trial, epoch by epoch: `should_stop` reports the mean validation
    loss of the replicates and says whether to stop training now."""

    trial: "optuna.Trial"
    # Reported as -loss to a study that maximizes its objective (ROC AUC), so that for
    # the pruner, as for the study, higher is better.
    sign: float
    pruned_epoch: int | None = None
    _last_reported: int = field(default=0, repr=False)

    def should_stop(self, epoch: int, validation_losses: Sequence[float]) -> bool:
        """True when training stops after `epoch`. Trainers that train their replicates
        one after another report the first one's epochs; the later ones stop at the
        epoch the first one was pruned at."""
        if self.pruned_epoch is not None:
            return epoch >= self.pruned_epoch
        if epoch <= self._last_reported:
            return False
        loss = sum(validation_losses) / len(validation_losses)
        self.trial.report(self.sign * loss, epoch)
        self._last_reported = epoch
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            logger.info("pruned by the search's pruner after epoch %d", epoch)
            return True
        return False

    def summary(self) -> dict[str, Any]:
        """What summary.json records: nothing unless the trial was pruned."""
        if self.pruned_epoch is None:
            return {}
        return {"pruned": True, "pruned_epoch": self.pruned_epoch}


def epoch_pruning(trial: "optuna.Trial") -> EpochPruning:
    import optuna

    maximize = trial.study.direction == optuna.study.StudyDirection.MAXIMIZE
    return EpochPruning(trial=trial, sign=-1.0 if maximize else 1.0)


def from_environment(
    family: str, search_trial: str, environment: Mapping[str, str] = os.environ
) -> EpochPruning | None:
    """The trial of `family` when the search run named by params.yaml's `search_trial`
    runs this trainer, else None: outside a search, and where the variable is left
    over from another run."""
    text = environment.get(TRIAL_VARIABLE)
    if not text or search_trial == "none":
        return None
    channel = json.loads(text)
    if channel.get("run") != search_trial:
        logger.warning(
            "%s is set for another search run than search_trial = %r: not pruned",
            TRIAL_VARIABLE,
            search_trial,
        )
        return None
    import optuna

    address = channel["trials"][family]
    storage = optuna.storages.RDBStorage(
        channel["storage"], engine_kwargs=sqlite_engine_arguments(channel["storage"])
    )
    study = optuna.load_study(
        study_name=address["study"], storage=storage, pruner=build_pruner(channel["pruner"])
    )
    return epoch_pruning(optuna.trial.Trial(study, address["trial_id"]))
