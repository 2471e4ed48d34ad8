"""Tests for `pipeline.search_storage`: a study remembers what it searches, and a
worker with another search space is refused."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from optuna.trial import TrialState

from pipeline.errors import PipelineError
from pipeline.search_space import parse_search
from pipeline.search_storage import count_states, finished, open_storage, open_study

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def search_raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "search.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def params_raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def test_study_is_shared_by_name_and_refuses_another_space(
    tmp_path: Path, search_raw: dict[str, Any], params_raw: dict[str, Any]
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    config = parse_search(search_raw, params_raw)
    storage = open_storage(url, config.heartbeat_seconds)
    first = open_study(storage, config, "roc_auc", 2, sampler_seed=1)
    assert [direction.name for direction in first.directions] == ["MAXIMIZE", "MAXIMIZE"]
    trial = first.ask()
    # A second worker (its own sampler) joins the same study by name.
    second = open_study(open_storage(url, 30), config, "roc_auc", 2, sampler_seed=2)
    assert second.study_name == first.study_name == "mlp-search"
    assert count_states(second)[TrialState.RUNNING] == 1
    first.tell(trial, [0.9, 0.8])
    assert finished(count_states(second)) == 1

    search_raw["space"]["model.learning_rate"]["high"] = 0.5
    other = parse_search(search_raw, params_raw)
    with pytest.raises(
        PipelineError,
        match="^study 'mlp-search' in sqlite:///.* was started with another search space",
    ):
        open_study(storage, other, "roc_auc", 2, sampler_seed=3)
    with pytest.raises(PipelineError, match="was started with another search space"):
        open_study(storage, config, "log_loss", 2, sampler_seed=3)


def test_log_loss_is_minimized(
    tmp_path: Path, search_raw: dict[str, Any], params_raw: dict[str, Any]
) -> None:
    config = parse_search(search_raw, params_raw)
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", 30)
    study = open_study(storage, config, "log_loss", 2, sampler_seed=None)
    assert [direction.name for direction in study.directions] == ["MINIMIZE", "MINIMIZE"]


def test_unreachable_storage_is_one_line() -> None:
    with pytest.raises(PipelineError) as raised:
        open_storage("postgresql+psycopg://optuna@127.0.0.1:1/studies", 30)
    message = str(raised.value)
    assert message.startswith(
        "study storage postgresql+psycopg://127.0.0.1:1/studies is unreachable: "
    )
    assert "\n" not in message
    assert "optuna@" not in message
