import numpy as np
import pytest

from pipeline import history
from pipeline.history import (
    EarlyStopping,
    class_count,
    predict_in_chunks,
    row_weights,
    training_summary,
)


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


def test_predictions_in_chunks_cover_every_row_in_order(monkeypatch):
    monkeypatch.setattr(history, "PREDICTION_CHUNK", 4)
    features = np.arange(10.0).reshape(10, 1)
    calls = []

    def predict(chunk):
        calls.append(len(chunk))
        return np.hstack([chunk, 2 * chunk])

    predicted = predict_in_chunks(predict, features)
    assert calls == [4, 4, 2]
    np.testing.assert_array_equal(predicted, np.hstack([features, 2 * features]))


def test_training_summary_with_and_without_early_stopping():
    stopping = EarlyStopping(patience=2)
    for epoch, val_loss in enumerate([0.9, 0.5, 0.6, 0.7], start=1):
        stopping.improved(epoch, val_loss)
    stopped = training_summary(10, 4, stopping, train_seconds=2.0, n_rows=100)
    assert (stopped.best_epoch, stopped.stopped_early) == (2, True)
    assert stopped.samples_per_second == pytest.approx(200.0)
    # Without patience the weights of the last epoch are kept, whatever val_loss did.
    complete = training_summary(4, 4, EarlyStopping(patience=0), train_seconds=1.0, n_rows=10)
    assert (complete.best_epoch, complete.stopped_early) == (4, False)
