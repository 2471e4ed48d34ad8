"""Tests for `pipeline.headline`: the row `dvc exp show` lists per experiment."""

from pipeline.headline import headline_record

TEST_METRICS = {"keras": {"roc_auc": 0.912345}, "sklearn": {"roc_auc": 0.90111}}


def test_headline_is_short_and_rounded() -> None:
    assert headline_record("keras, n.s.", "roc_auc", TEST_METRICS, 0.0612345) == {
        "verdict": "keras, n.s.",
        "keras_roc_auc": 0.9123,
        "sklearn_roc_auc": 0.9011,
        "p_value": 0.0612,
    }


def test_a_pruned_library_adds_its_epoch_and_nothing_else_changes() -> None:
    plain = headline_record("tie", "roc_auc", TEST_METRICS, 0.5)
    pruned = headline_record("tie", "roc_auc", TEST_METRICS, 0.5, {"keras": 3})
    assert pruned == {**plain, "keras_pruned_epoch": 3}
    assert headline_record("tie", "roc_auc", TEST_METRICS, 0.5, {}) == plain
