"""The calibration benchmark's arithmetic and table, on hand-made verdicts (no training)."""

import numpy as np
import pytest

from benchmarks.calibration import (
    CONFIGURATIONS,
    FALSE_SIGNIFICANT_TARGET,
    SeedOutcome,
    configured_params,
    format_row,
    format_table,
    share,
    summarize,
    target_text,
)
from pipeline.config import Params
from pipeline.errors import PipelineError


def outcome(
    seed: int,
    significant: bool,
    winner: str = "sklearn",
    difference: float = -0.01,
    single_significant: bool = False,
) -> SeedOutcome:
    return SeedOutcome(
        seed=seed,
        significant=significant,
        winner=winner,
        p_value=0.03 if significant else 0.5,
        difference=difference,
        keras=[0.9] * 6,
        sklearn=[0.91] * 6,
        single_significant=single_significant,
        single_winner=winner,
        single_p_value=0.01 if single_significant else 0.4,
        seconds=2.0,
    )


def test_share_counts_true_flags():
    assert share([True, False, False, True]) == 0.5
    assert share([]) == 0.0


def test_summarize_counts_both_verdicts_over_seeds():
    outcomes = [
        outcome(0, significant=True, winner="keras", difference=0.02, single_significant=True),
        outcome(1, significant=False, difference=-0.01, single_significant=True),
        outcome(2, significant=False, difference=0.0),
        outcome(3, significant=True, winner="sklearn", difference=-0.03),
    ]
    row = summarize(CONFIGURATIONS["defaults"], outcomes, count=6, confidence=0.95)
    assert row["seeds"] == 4
    assert row["replicates"] == 6
    assert row["significant_share"] == 0.5
    # Only seed 3 is significant in scikit-learn's favour.
    assert row["significant_sklearn_share"] == 0.25
    assert row["single_model_significant_share"] == 0.5
    assert row["mean_difference"] == pytest.approx(np.mean([0.02, -0.01, 0.0, -0.03]))
    assert row["significant_low"] < 0.5 < row["significant_high"]
    assert row["seconds"] == 8.0


def test_target_is_met_up_to_the_threshold_on_no_difference_configurations():
    seeds = 100
    at_target = round(FALSE_SIGNIFICANT_TARGET * seeds)
    flags = [index < at_target for index in range(seeds)]
    row = summarize(
        CONFIGURATIONS["defaults"],
        [outcome(seed, flag) for seed, flag in enumerate(flags)],
        count=6,
        confidence=0.95,
    )
    assert target_text(row).endswith("met")
    flags[at_target] = True
    row = summarize(
        CONFIGURATIONS["defaults"],
        [outcome(seed, flag) for seed, flag in enumerate(flags)],
        count=6,
        confidence=0.95,
    )
    assert target_text(row).endswith("NOT met")


def test_real_difference_rows_report_power():
    row = summarize(CONFIGURATIONS["l1"], [outcome(0, True), outcome(1, False)], 6, 0.95)
    assert target_text(row) == "power reported: 50% significant for sklearn"


def test_format_row_and_table():
    row = summarize(
        CONFIGURATIONS["defaults"],
        [outcome(0, False, single_significant=True), outcome(1, False)],
        count=6,
        confidence=0.95,
    )
    line = format_row(row)
    assert line.startswith("| defaults | none | 2 | 6 | 0.0% (0%-")
    assert "| 50.0% | -0.0100 | <= 7% false: met |" in line
    table = format_table([row], "roc_auc").splitlines()
    assert len(table) == 3
    assert "roc_auc" in table[0]
    assert table[0].count("|") == table[1].count("|") == line.count("|")


def test_configured_params_applies_updates_and_validates(default_params: Params):
    params = configured_params(default_params, CONFIGURATIONS["dropout_small"].updates, 3, 8)
    assert (params.seed, params.replicates.count) == (3, 8)
    assert params.model.dropout == 0.5
    assert params.dataset.n_samples == 300
    assert params.model.hidden_layers == default_params.model.hidden_layers
    # K = 2 can never reach p < 0.05: refused as params.yaml would refuse it.
    with pytest.raises(PipelineError, match="replicates.count = 2"):
        configured_params(default_params, {}, 0, 2)
