"""Tests for `pipeline.search_storage`: a study remembers what it searches, and a
worker with another search space is refused."""

from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from pipeline.errors import PipelineError
from pipeline.search_space import parse_search
from pipeline.search_storage import (
    count_states,
    finished,
    load_studies,
    open_storage,
    open_studies,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def search_raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "search.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def params_raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def test_studies_are_shared_by_name_and_refuse_another_space(
    tmp_path: Path, search_raw: dict[str, Any], params_raw: dict[str, Any]
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    config = parse_search(search_raw, params_raw)
    storage = open_storage(url, config.heartbeat_seconds)
    first = open_studies(storage, config, "roc_auc", [1, 2])
    # One single-objective study per library, so that Optuna's pruners work.
    assert {family: study.study_name for family, study in first.items()} == {
        "keras": "mlp-search.keras",
        "sklearn": "mlp-search.sklearn",
    }
    assert [study.direction.name for study in first.values()] == ["MAXIMIZE", "MAXIMIZE"]
    assert isinstance(first["keras"].pruner, optuna.pruners.MedianPruner)
    trial = first["keras"].ask()
    # A second worker (its own samplers) joins the same studies by name.
    second = open_studies(open_storage(url, 30), config, "roc_auc", [3, 4])
    assert count_states(second["keras"])[TrialState.RUNNING] == 1
    first["keras"].tell(trial, state=TrialState.PRUNED)
    assert finished(count_states(second["keras"])) == 1
    assert load_studies(storage, config)["keras"].trials[0].state == TrialState.PRUNED

    search_raw["space"]["model.learning_rate"]["high"] = 0.5
    other = parse_search(search_raw, params_raw)
    with pytest.raises(
        PipelineError,
        match="^study 'mlp-search' in sqlite:///.* was started with another search space",
    ):
        open_studies(storage, other, "roc_auc", [5, 6])
    with pytest.raises(PipelineError, match="was started with another search space"):
        open_studies(storage, config, "log_loss", None)


def test_log_loss_is_minimized_and_no_pruner_is_allowed(
    tmp_path: Path, search_raw: dict[str, Any], params_raw: dict[str, Any]
) -> None:
    config = parse_search({**search_raw, "pruner": {"type": "none"}}, params_raw)
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", 30)
    studies = open_studies(storage, config, "log_loss", None)
    assert [study.direction.name for study in studies.values()] == ["MINIMIZE", "MINIMIZE"]
    assert isinstance(studies["sklearn"].pruner, optuna.pruners.NopPruner)


def test_a_study_of_the_old_layout_is_refused_in_one_line(
    tmp_path: Path, search_raw: dict[str, Any], params_raw: dict[str, Any]
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="mlp-search", storage=url, directions=["maximize"] * 2)
    config = parse_search(search_raw, params_raw)
    storage = open_storage(url, 30)
    for opened in (
        lambda: open_studies(storage, config, "roc_auc", None),
        lambda: load_studies(storage, config),
    ):
        with pytest.raises(PipelineError, match="^study 'mlp-search' in sqlite:///.* has the old"):
            opened()


def test_verdict_without_trials_names_the_study(
    tmp_path: Path, search_raw: dict[str, Any], params_raw: dict[str, Any]
) -> None:
    config = parse_search(search_raw, params_raw)
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", 30)
    with pytest.raises(PipelineError, match="^no study 'mlp-search' in sqlite:///.*; run trials"):
        load_studies(storage, config)


def test_unreachable_storage_is_one_line() -> None:
    with pytest.raises(PipelineError) as raised:
        open_storage("postgresql+psycopg://optuna@127.0.0.1:1/studies", 30)
    message = str(raised.value)
    assert message.startswith(
        "study storage postgresql+psycopg://127.0.0.1:1/studies is unreachable: "
    )
    assert "\n" not in message
    assert "optuna@" not in message
