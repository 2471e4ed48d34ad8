"""Tests for the scoring of benchmarks/pathologies.py: which first suggestion counts
as the right change, how it is applied, and what counts as an improvement."""

import pytest

from benchmarks.pathologies import totals
from benchmarks.pathology_cases import (
    HEALTHY,
    PATHOLOGIES,
    findings_for,
    improved,
    right_change,
    with_suggestion,
)
from pipeline.diagnosis import Finding, Suggestion


@pytest.mark.parametrize(
    ("suggestion", "fixes", "expected"),
    [
        (Suggestion("model.l1", 0.01, 0.1), {"model.l1": "down"}, True),
        (Suggestion("model.l1", 1.0, 0.1), {"model.l1": "down"}, False),
        (Suggestion("model.hidden_layers", [20, 20], [10, 10]), {"model.l1": "down"}, False),
        (Suggestion("model.hidden_layers", [4], [2]), {"model.hidden_layers": "up"}, True),
        (Suggestion("model.hidden_layers", [10], []), {"model.hidden_layers": "up"}, True),
        (Suggestion("model.class_weight", "balanced", "none"), {"model.class_weight": "set"}, True),
        (Suggestion("model.patience", 3, 0), {"model.l2": "up", "model.patience": "up"}, True),
    ],
)
def test_right_change(suggestion: Suggestion, fixes, expected: bool):
    assert right_change(suggestion, fixes) is expected


def test_with_suggestion_keeps_the_pathology_and_adds_the_change():
    updates = {"dataset": {"kind": "xor"}, "model": {"hidden_layers": [2], "epochs": 60}}
    applied = with_suggestion(updates, Suggestion("model.hidden_layers", [4], [2]))
    assert applied == {"dataset": {"kind": "xor"}, "model": {"hidden_layers": [4], "epochs": 60}}
    assert updates["model"]["hidden_layers"] == [2]  # the pathology itself is unchanged


@pytest.mark.parametrize(
    ("before", "after", "metric", "expected"),
    [
        (0.60, 0.70, "val_roc_auc", True),
        (0.60, 0.603, "val_roc_auc", False),  # within the margin of 0.005: noise
        (0.70, 0.60, "val_log_loss", True),  # lower is better
        (0.60, 0.70, "val_log_loss", False),
        (0.50, 0.65, "val_balanced_accuracy", True),
    ],
)
def test_improved(before: float, after: float, metric, expected: bool):
    assert improved(before, after, metric) is expected


def test_a_finding_about_both_libraries_counts_for_each():
    both = Finding("no_signal", "both", "", (Suggestion("dataset.kind", "classification", "x"),))
    keras = Finding("overfitting", "keras", "", (Suggestion("model.l2", 1e-4, 0.0),))
    assert findings_for([both, keras], "sklearn") == [both]
    assert findings_for([both, keras], "keras") == [both, keras]


def test_totals_are_shares_of_runs():
    pathology_rows = [
        {"pathology": "a", "named": True, "right_change": True, "improved": False},
        {"pathology": "a", "named": False, "right_change": False, "improved": False},
        {"pathology": "b", "named": True, "right_change": True, "improved": True},
        {"pathology": "b", "named": True, "right_change": False, "improved": True},
    ]
    healthy_rows = [{"found": []}, {"found": []}, {"found": ["keras: overfitting 1/3"]}]
    summary = totals(pathology_rows, healthy_rows)
    assert summary["named"] == pytest.approx(0.75)
    assert summary["right_change"] == pytest.approx(0.5)
    assert summary["improved"] == pytest.approx(0.5)
    assert summary["healthy_silent"] == pytest.approx(2 / 3)
    assert (summary["pathology_runs"], summary["pathologies"]) == (4, 2)


def test_every_case_names_known_kinds_and_params():
    """A typo in a case would score it as never named."""
    kinds = {"no_signal", "diverged", "over_regularized", "imbalance", "overfitting"}
    kinds |= {"underfitting", "not_converged", "plateau"}
    for pathology in PATHOLOGIES.values():
        assert set(pathology.kinds) <= kinds, pathology.name
        for param in pathology.fixes:
            section, key = param.split(".")
            assert section in ("model", "dataset") and key, pathology.name
    assert not set(PATHOLOGIES) & set(HEALTHY)
