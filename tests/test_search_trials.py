"""Tests for `pipeline.search_trials` and the search's choice of best trials: what a
failed trial reports, how params reach `dvc exp run -S`, and the verdict's sentence."""

import numpy as np
import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from pipeline.search_report import verdict_sentence
from pipeline.search_runs import best_trial
from pipeline.search_trials import dvc_override, failure_line
from pipeline.statistics import compare_replicates


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model.learning_rate", 1e-05),
        ("model.learning_rate", 0.0012345678901234567),
        ("model.hidden_layers", [32, 16]),
        ("model.activation", "tanh"),
        ("model.nesterov", True),
        ("model.batch_size", 64),
        ("dataset.target", "a b, c"),
    ],
)
def test_dvc_override_parses_back_as_the_same_yaml_value(key: str, value: object) -> None:
    text = dvc_override(key, value)
    # DVC parses -S with Hydra's override grammar.
    (override,) = OverridesParser.create().parse_overrides([text])
    assert override.key_or_group == key
    assert override.value() == value


def test_failure_line_prefers_the_stage_error() -> None:
    log = (
        "Running stage 'train_keras':\n"
        "error: params.yaml: model.batch_size = 999: larger than the 240 training rows\n"
        "ERROR: failed to reproduce 'train_keras': failed to run: python -m pipeline.train_keras\n"
    )
    assert failure_line(log) == (
        "error: params.yaml: model.batch_size = 999: larger than the 240 training rows"
    )
    assert failure_line("ERROR: Experiment conflicts with existing experiment 'a-1'\n") == (
        "ERROR: Experiment conflicts with existing experiment 'a-1'"
    )
    assert failure_line("") == "no output"


def finished_trial(run: int, value: float) -> optuna.trial.FrozenTrial:
    """A finished trial of one library's study, of pipeline run `run`."""
    return create_trial(
        params={"x": 0.5},
        distributions={"x": FloatDistribution(0, 1)},
        value=value,
        user_attrs={"run": run},
        state=TrialState.COMPLETE,
    )


def test_best_trial_by_direction_and_earliest_run_on_ties() -> None:
    trials = [finished_trial(2, 0.85), finished_trial(0, 0.80), finished_trial(1, 0.85)]
    assert best_trial(trials, "maximize").user_attrs["run"] == 1
    assert best_trial(trials, "minimize").user_attrs["run"] == 0


def test_verdict_sentence_states_the_replicate_verdict() -> None:
    keras = np.array([0.91, 0.92, 0.93, 0.90, 0.94, 0.92])
    sklearn = keras - np.array([0.01, 0.02, 0.01, 0.03, 0.02, 0.01])
    verdict = compare_replicates("roc_auc", keras, sklearn, alpha=0.05, confidence=0.95)
    assert verdict_sentence(verdict) == (
        "keras better (significant at alpha 0.05): mean test roc_auc keras 0.9200, "
        "sklearn 0.9033 over 6 replicates each, paired by seed; difference keras - sklearn "
        "+0.0167, sign-flip p = 0.0312"
    )
