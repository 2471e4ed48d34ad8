import numpy as np
import pytest

from pipeline.history import EarlyStopping, class_count, row_weights


def test_balanced_weights_give_every_class_the_same_total():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    weights = row_weights(labels, 3, "balanced")
    totals = [weights[labels == code].sum() for code in range(3)]
    assert totals == pytest.approx([10 / 3] * 3)
    assert weights.sum() == pytest.approx(len(labels))
    np.testing.assert_array_equal(row_weights(labels, 3, "none"), np.ones(10))


def test_class_count_from_codes():
    class Labels:
        def __init__(self, labels):
            self.labels = np.array(labels)

    assert class_count(Labels([0, 1, 1]), Labels([0, 2])) == 3


def test_early_stopping_rule():
    stopping = EarlyStopping(patience=2)
    decisions = []
    for epoch, val_loss in enumerate([0.9, 0.8, 0.85, 0.8, 0.79, 0.81, 0.82], start=1):
        improved = stopping.improved(epoch, val_loss)
        decisions.append((improved, stopping.should_stop(epoch)))
    # 0.8 at epoch 4 ties the best (epoch 2): not an improvement, as in Keras.
    assert [improved for improved, _ in decisions] == [True, True, False, False, True, False, False]
    assert decisions[3][1] is True  # epochs 3 and 4 without improvement: stop
    assert stopping.best_epoch == 5
