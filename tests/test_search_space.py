"""Tests for `pipeline.search_space` and the search's storage URL: the committed
search.yaml, one-line errors for bad search files, and sampling with conditions."""

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from pipeline.config import flatten, parse_params
from pipeline.errors import PipelineError
from pipeline.search_space import (
    decoded_params,
    load_search,
    parse_search,
    suggest,
    with_overrides,
)
from pipeline.search_storage import redact, storage_url

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path("search.yaml")


@pytest.fixture(scope="module")
def params_raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def search_raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "search.yaml").read_text(encoding="utf-8"))


def test_committed_search_file_is_valid() -> None:
    config, params_raw = load_search(ROOT / "search.yaml", ROOT / "params.yaml")
    assert config.sampler == "tpe"
    assert config.budget.trials == 20
    assert config.trial_params == {"replicates.count": 1}
    assert config.space["model.learning_rate"].log is True
    assert config.space["model.momentum"].when == {"model.optimizer": "sgd"}
    assert params_raw["compare"]["primary_metric"] == "roc_auc"
    assert config.pruner.model_dump() == {"type": "median", "startup_trials": 5, "warmup_epochs": 2}


def test_pruner_is_optional_and_defaults_to_the_median(
    search_raw: dict[str, Any], params_raw: dict[str, Any]
) -> None:
    config = parse_search(edited(search_raw, ("pruner",), None), params_raw, SOURCE)
    assert config.pruner.model_dump() == {"type": "median", "startup_trials": 5, "warmup_epochs": 0}


def edited(raw: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A deep copy of `raw` with the key at `path` set to `value` (None: removed)."""
    result = copy.deepcopy(raw)
    section = result
    for key in path[:-1]:
        section = section[key]
    if value is None:
        del section[path[-1]]
    else:
        section[path[-1]] = value
    return result


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("sampler",), "grid", "sampler = 'grid': allowed: 'tpe' or 'random'"),
        (("budget", "trials"), -1, "budget.trials = -1: must be greater than or equal to 0"),
        (
            ("budget",),
            {"trials": 0, "minutes": 0},
            "budget: budget.trials = 0 and budget.minutes = 0: set at least one limit",
        ),
        (("budget", "trails"), 3, "unknown key budget.trails"),
        (("heartbeat_seconds",), None, "heartbeat_seconds is missing"),
        (
            ("study",),
            "a/b\x1b[2J",
            "study = 'a/b\\x1b[2J': allowed: up to 64 letters, digits, '_' and '-'",
        ),
        (
            ("space", "model.learning_rate"),
            {"type": "float", "low": 0.1, "high": 0.01},
            "space.model.learning_rate: low = 0.1, high = 0.01: low must be below high",
        ),
        (
            ("space", "model.learning_rate"),
            {"type": "float", "low": 0.0, "high": 0.1, "log": True},
            "space.model.learning_rate: low = 0.0: a log scale needs low > 0",
        ),
        (
            ("space", "model.learning_rate"),
            {"type": "uniform", "low": 0.001, "high": 0.1},
            "space.model.learning_rate.type = 'uniform': allowed: float, int, categorical",
        ),
        (
            ("space", "model.learning_rate"),
            {"type": "float", "low": 0.001, "hihg": 0.1},
            "unknown key space.model.learning_rate.hihg",
        ),
        (
            ("space", "model.batch_size"),
            {"type": "int", "low": 16.5, "high": 128},
            "space.model.batch_size.low = 16.5: must be a valid integer",
        ),
        (
            ("space", "model.dropout"),
            {"type": "float", "low": 0.0, "high": 1.5},
            "space.model.dropout.high = 1.5: model.dropout = 1.5: must be less than 1",
        ),
        (
            ("space", "model.activation"),
            {"type": "categorical", "choices": ["relu", "sigmoid"]},
            "space.model.activation.choices[1] = 'sigmoid': model.activation = 'sigmoid': "
            "allowed: 'relu', 'tanh', 'logistic' or 'identity'",
        ),
        (
            ("space", "model.activation"),
            {"type": "categorical", "choices": ["relu", "relu"]},
            "space.model.activation: choices = ['relu', 'relu']: each choice may appear once",
        ),
        (
            ("space", "model.learning_rte"),
            {"type": "float", "low": 0.001, "high": 0.1},
            "space.model.learning_rte: no such key in params.yaml; did you mean "
            "'model.learning_rate'?",
        ),
        (
            ("space", "model"),
            {"type": "categorical", "choices": [1, 2]},
            "space.model: no such key in params.yaml",
        ),
        (
            ("trial_params", "replicates.count"),
            2,
            "trial_params: replicates.count = 2: with compare.alpha = 0.05 the paired test",
        ),
        (
            ("space", "model.momentum", "when"),
            {"model.optimiser": "sgd"},
            "space.model.momentum.when.model.optimiser: no such key in params.yaml",
        ),
        (
            ("trial_params", "search_trial"),
            "mine",
            "trial_params.search_trial: set by the search to each run's name; it cannot "
            "be searched or set",
        ),
        (("space",), {}, "space is empty; name at least one param"),
        (("pruner", "type"), "hyperband", "pruner.type = 'hyperband': allowed: 'median' or 'none'"),
        (("pruner", "warmup_epochs"), -1, "pruner.warmup_epochs = -1: must be greater than"),
        (("pruner", "patience"), 3, "unknown key pruner.patience"),
    ],
)
def test_bad_search_file_is_one_line(
    search_raw: dict[str, Any],
    params_raw: dict[str, Any],
    path: tuple[str, ...],
    value: Any,
    message: str,
) -> None:
    with pytest.raises(PipelineError) as raised:
        parse_search(edited(search_raw, path, value), params_raw, SOURCE)
    text = str(raised.value)
    assert text.startswith(f"{SOURCE}: ")
    assert message in text
    assert "\n" not in text


def test_a_key_in_both_trial_params_and_space_is_refused(
    search_raw: dict[str, Any], params_raw: dict[str, Any]
) -> None:
    raw = edited(search_raw, ("trial_params", "model.dropout"), 0.1)
    with pytest.raises(PipelineError, match="model.dropout is in both trial_params and space"):
        parse_search(raw, params_raw, SOURCE)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("study: [unclosed", "search.yaml: malformed YAML at line 1"),
        ("- a list\n", "search.yaml: expected a mapping of keys at the top level, got list"),
    ],
)
def test_malformed_search_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "search.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PipelineError) as raised:
        load_search(path, ROOT / "params.yaml")
    assert str(raised.value).startswith(str(path.parent / message.split(": ", 1)[0]))
    assert message.split(": ", 1)[1] in str(raised.value)


def test_command_refuses_a_bad_file_in_one_line_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "search.yaml"
    raw = yaml.safe_load((ROOT / "search.yaml").read_text(encoding="utf-8"))
    raw["space"]["model.dropout"]["high"] = 1.5
    bad.write_text(yaml.safe_dump(raw), encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline.search", "--search", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        f"error: {bad}: space.model.dropout.high = 1.5: model.dropout = 1.5: must be less than 1"
    ]
    assert not (tmp_path / "optuna.db").exists()


def test_sampling_honours_conditions_and_decodes_lists(
    search_raw: dict[str, Any], params_raw: dict[str, Any]
) -> None:
    config = parse_search(search_raw, params_raw, SOURCE)
    base = flatten(parse_params(with_overrides(params_raw, config.trial_params)))
    fixed = {
        "model.learning_rate": 0.01,
        "model.hidden_layers": "[32, 32]",  # Optuna stores list choices as JSON text
        "model.activation": "tanh",
        "model.batch_size": 64,
        "model.l2": 0.001,
        "model.dropout": 0.2,
    }
    adam = suggest(optuna.trial.FixedTrial({**fixed, "model.optimizer": "adam"}), config, base)
    assert "model.momentum" not in adam
    assert adam["model.hidden_layers"] == [32, 32]
    sgd = suggest(
        optuna.trial.FixedTrial({**fixed, "model.optimizer": "sgd", "model.momentum": 0.9}),
        config,
        base,
    )
    assert sgd["model.momentum"] == 0.9
    params = parse_params(with_overrides(params_raw, {**config.trial_params, **sgd}))
    assert params.model.hidden_layers == [32, 32]
    assert params.model.momentum == 0.9
    assert params.replicates.count == 1
    stored = {**fixed, "model.optimizer": "sgd", "model.momentum": 0.9}
    assert decoded_params(config, stored)["model.hidden_layers"] == [32, 32]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "postgresql://optuna@db.example.org:5432/studies",
            "postgresql+psycopg://optuna@db.example.org:5432/studies",
        ),
        ("postgres://optuna@db/studies", "postgresql+psycopg://optuna@db/studies"),
        ("sqlite:////tmp/studies.db", "sqlite:////tmp/studies.db"),
    ],
)
def test_storage_url(given: str, expected: str) -> None:
    assert storage_url(given, Path("/repo")) == expected


def test_default_storage_is_sqlite_beside_mlflow_db() -> None:
    assert storage_url(None, Path("/repo")) == "sqlite:////repo/optuna.db"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            "postgresql://optuna:hunter2@db/studies",
            "--storage 'postgresql://db/studies': contains a password",
        ),
        ("mysql://optuna@db/studies", "--storage 'mysql://db/studies': allowed: postgresql://"),
    ],
)
def test_storage_url_refusals_never_show_the_password(given: str, message: str) -> None:
    with pytest.raises(PipelineError) as raised:
        storage_url(given, Path("/repo"))
    assert str(raised.value).startswith(message)
    assert "hunter2" not in str(raised.value)
    assert "optuna@" not in str(raised.value)


def test_redact() -> None:
    assert redact("postgresql+psycopg://optuna@db:5432/s") == "postgresql+psycopg://db:5432/s"
    assert redact("sqlite:////repo/optuna.db") == "sqlite:////repo/optuna.db"
