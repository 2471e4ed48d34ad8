"""The trainers' pruning hook against a real Optuna study in an SQLite file: a study
whose pruner prunes at epoch 2 stops each trainer after exactly 2 epochs."""

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from pipeline import train_keras, train_sklearn
from pipeline.config import ModelSpec
from pipeline.pruning import TRIAL_VARIABLE, from_environment, trial_environment
from tests.conftest import Splits

EPOCHS = 5
# The median pruner: after one finished trial, from epoch 2 (epoch 1 is warm-up).
PRUNER = {"type": "median", "startup_trials": 1, "warmup_epochs": 1}
# The search run, as its `search_trial` param names it.
RUN = "hook-3"


def study_with_a_perfect_trial(tmp_path: Path, name: str) -> str:
    """A maximizing study whose one finished trial had a validation loss of 0 at every
    epoch: any real trial trails it, so the pruner prunes it once warm-up is over."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.add_trial(
        create_trial(
            value=1.0,
            params={"x": 0.5},
            distributions={"x": FloatDistribution(0, 1)},
            intermediate_values={epoch: -0.0 for epoch in range(1, EPOCHS + 1)},
        )
    )
    return url


def running_trial(url: str, name: str, pruner: dict) -> dict[str, str]:
    """A running trial of the study, and the variable that points a trainer at it."""
    trial = optuna.load_study(study_name=name, storage=url).ask()
    return trial_environment(
        RUN, url, pruner, {"keras": (name, trial._trial_id), "sklearn": (name, trial._trial_id)}
    )


def test_sklearn_stops_at_the_epoch_the_pruner_prunes(
    tmp_path: Path, tiny_spec: ModelSpec, tiny_splits: Splits
) -> None:
    url = study_with_a_perfect_trial(tmp_path, "hook")
    pruning = from_environment("sklearn", RUN, running_trial(url, "hook", PRUNER))
    assert pruning is not None
    spec = tiny_spec.model_copy(update={"epochs": EPOCHS, "patience": 0})

    result = train_sklearn.train(
        tiny_splits.train, tiny_splits.validation, spec, "constant", seed=1, pruning=pruning
    )

    assert list(result.history["epoch"]) == [1, 2]
    assert pruning.summary() == {"pruned": True, "pruned_epoch": 2}
    assert result.summary.epochs_trained == 2
    # The trial heard -val_loss per epoch (the study maximizes), and nothing after.
    (trial,) = optuna.load_study(study_name="hook", storage=url).get_trials(
        states=(TrialState.RUNNING,)
    )
    assert trial.intermediate_values == pytest.approx(
        {epoch: -loss for epoch, loss in zip([1, 2], result.history["val_loss"], strict=True)}
    )


@pytest.mark.parametrize("trainer", ["auto", "fit"])
def test_keras_stops_every_replicate_at_the_epoch_the_pruner_prunes(
    tmp_path: Path, tiny_spec: ModelSpec, tiny_splits: Splits, trainer: str
) -> None:
    url = study_with_a_perfect_trial(tmp_path, "hook")
    pruning = from_environment("keras", RUN, running_trial(url, "hook", PRUNER))
    spec = tiny_spec.model_copy(update={"epochs": EPOCHS, "patience": 0})

    results = train_keras.train_replicates(
        [tiny_splits.train],
        [tiny_splits.validation],
        spec,
        "glorot_uniform",
        [1, 2],
        trainer=trainer,
        pruning=pruning,
    )

    assert [list(result.history["epoch"]) for result in results] == [[1, 2], [1, 2]]
    assert pruning.pruned_epoch == 2
    (trial,) = optuna.load_study(study_name="hook", storage=url).get_trials(
        states=(TrialState.RUNNING,)
    )
    # The stacked loop reports the replicates' mean; `fit` trains them one after the
    # other and reports the first one's.
    reported = [result.history["val_loss"].iloc[1] for result in results]
    expected = sum(reported) / 2 if trainer == "auto" else reported[0]
    assert trial.intermediate_values[2] == pytest.approx(-expected)


def test_no_pruner_trains_every_epoch_and_records_nothing(
    tmp_path: Path, tiny_spec: ModelSpec, tiny_splits: Splits
) -> None:
    url = study_with_a_perfect_trial(tmp_path, "hook")
    pruner = {"type": "none", "startup_trials": 0, "warmup_epochs": 0}
    pruning = from_environment("sklearn", RUN, running_trial(url, "hook", pruner))
    spec = tiny_spec.model_copy(update={"epochs": 3, "patience": 0})

    result = train_sklearn.train(
        tiny_splits.train, tiny_splits.validation, spec, "constant", seed=1, pruning=pruning
    )

    assert list(result.history["epoch"]) == [1, 2, 3]
    assert pruning.summary() == {}


def test_outside_a_search_there_is_no_trial(tmp_path: Path) -> None:
    assert from_environment("keras", "none", {}) is None
    assert from_environment("keras", RUN, {TRIAL_VARIABLE: ""}) is None
    url = study_with_a_perfect_trial(tmp_path, "hook")
    channel = running_trial(url, "hook", PRUNER)
    assert from_environment("keras", RUN, channel) is not None
    # The variable left over in a shell, or meant for another run: the trainers train
    # as params.yaml says, and DVC may cache what they write.
    assert from_environment("keras", "none", channel) is None
    assert from_environment("keras", "hook-4", channel) is None
