import numpy as np
import pandas as pd
import pytest

from pipeline import history
from pipeline.errors import PipelineError
from pipeline.history import (
    EarlyStopping,
    class_count,
    log_epoch,
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
    # float32, the training dtype: no float64 copy of a large train split's weights.
    assert weights.dtype == row_weights(labels, 3, "none").dtype == np.float32


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
    assert (stopped.epochs_trained, stopped.best_epoch, stopped.stopped_early) == (4, 2, True)
    assert (stopped.train_seconds, stopped.samples_per_second) == (2.0, pytest.approx(200.0))
    # A patience of 1 is early stopping too: the best epoch's weights are kept.
    one = EarlyStopping(patience=1)
    for epoch, val_loss in enumerate([0.9, 0.5, 0.6], start=1):
        one.improved(epoch, val_loss)
    assert training_summary(10, 3, one, train_seconds=1.0, n_rows=10).best_epoch == 2
    # Without patience the weights of the last epoch are kept, whatever val_loss did.
    complete = training_summary(4, 4, EarlyStopping(patience=0), train_seconds=1.0, n_rows=10)
    assert (complete.best_epoch, complete.stopped_early) == (4, False)


def history_of(losses: list[float]) -> pd.DataFrame:
    return history.history_frame(
        [
            {
                "epoch": epoch,
                "loss": loss,
                "accuracy": 0.5 + epoch / 100,
                "val_loss": loss + 0.1,
                "val_accuracy": 0.4 + epoch / 100,
            }
            for epoch, loss in enumerate(losses, start=1)
        ]
    )


def test_replicate_label_names_a_replicate_only_when_there_are_several():
    assert history.replicate_label("keras", 0, 1) == "keras"
    assert history.replicate_label("sklearn", 2, 6) == "sklearn#2"


def test_replicate_histories_round_trip():
    histories = [history_of([0.7, 0.6, 0.5]), history_of([0.8, 0.75])]
    table = history.replicate_histories(histories)
    assert list(table.columns) == ["replicate", *history.COLUMNS]
    assert table["replicate"].tolist() == [0, 0, 0, 1, 1]
    for restored, original in zip(history.split_histories(table), histories, strict=True):
        pd.testing.assert_frame_equal(restored, original)


def test_mean_history_averages_the_replicates_that_trained_each_epoch():
    # The second replicate stopped early after two epochs.
    mean = history.mean_history([history_of([0.7, 0.6, 0.5]), history_of([0.9, 0.8])])
    assert mean["epoch"].tolist() == [1, 2, 3]
    assert mean["loss"].tolist() == pytest.approx([0.8, 0.7, 0.5])
    assert mean["val_loss"].tolist() == pytest.approx([0.9, 0.8, 0.6])
    assert list(mean.columns) == list(history.COLUMNS)


def test_family_summary_keeps_replicate_zero_and_each_replicate():
    stopping = history.EarlyStopping(patience=2)
    stopping.improved(3, 0.4)
    summaries = [
        training_summary(10, 10, history.EarlyStopping(0), 2.0, 100),
        training_summary(10, 5, stopping, 2.0, 100),
    ]
    summary = history.family_summary(summaries, [42, 7])
    assert summary["replicate_count"] == 2
    assert (summary["epochs_trained"], summary["best_epoch"]) == (10, 10)
    assert summary["stopped_early"] is False
    # Timings go to timing.json, not to summary.json, whose hash must repeat.
    assert "train_seconds" not in summary and "samples_per_second" not in summary
    timing = history.family_timing(summaries, train_seconds=4.0, n_rows=100)
    # 100 rows x (10 + 5) epochs in 4 s.
    assert timing == {"train_seconds": 4.0, "samples_per_second": pytest.approx(375.0)}
    assert summary["replicates"][1] == {
        "replicate": 1,
        "seed": 7,
        "epochs_trained": 5,
        "best_epoch": 3,
        "stopped_early": True,
    }


def test_training_records_are_written_for_the_family(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    histories = [history_of([0.7, 0.6]), history_of([0.9, 0.8])]
    history.write_training_records(
        "sklearn", histories, {"replicate_count": 2}, {"train_seconds": 1.5}
    )
    from pipeline import paths
    from pipeline.files import read_json

    mean = history.read_history(paths.SKLEARN_HISTORY)
    assert mean["loss"].tolist() == pytest.approx([0.8, 0.7])
    each = history.read_history(paths.SKLEARN_REPLICATE_HISTORIES, replicates=True)
    assert each["replicate"].tolist() == [0, 0, 1, 1]
    assert read_json(paths.SKLEARN_SUMMARY) == {"replicate_count": 2}
    assert read_json(paths.TIMINGS["sklearn"]) == {"train_seconds": 1.5}
    # read_summary merges the two, and works without timing.json (after `dvc pull`).
    assert history.read_summary("sklearn") == {"replicate_count": 2, "train_seconds": 1.5}
    paths.TIMINGS["sklearn"].unlink()
    assert history.read_summary("sklearn") == {"replicate_count": 2}


def test_a_replicate_history_needs_its_replicate_column(tmp_path):
    path = tmp_path / "replicate_histories.csv"
    history_of([0.7]).to_csv(path, index=False)
    assert history.read_history(path)["loss"].tolist() == [0.7]
    with pytest.raises(PipelineError, match=r"missing columns \['replicate'\]"):
        history.read_history(path, replicates=True)


def test_each_epoch_is_logged_as_one_aligned_line(caplog):
    record = {
        "epoch": 7,
        "loss": 0.123456,
        "accuracy": 0.5,
        "val_loss": 1.0,
        "val_accuracy": 0.98765,
    }
    with caplog.at_level("INFO", logger="pipeline.history"):
        log_epoch("keras", record, 40)
    assert [(entry.name, entry.levelname) for entry in caplog.records] == [
        ("pipeline.history", "INFO")
    ]
    # Columns in a fixed order: loss, val_loss, then the accuracies.
    assert caplog.records[0].getMessage() == (
        "keras   epoch   7/40  loss 0.1235  val_loss 1.0000  accuracy 0.5000  val_accuracy 0.9877"
    )


@pytest.mark.parametrize(("patience", "stops_at"), [(0, None), (1, 3), (3, 5)])
def test_early_stopping_waits_patience_epochs_and_never_without_patience(
    patience: int, stops_at: int | None
):
    stopping = EarlyStopping(patience=patience)
    stopped = None
    # Best at epoch 2, no improvement after it.
    for epoch, val_loss in enumerate([0.9, 0.8, 0.85, 0.85, 0.85, 0.85], start=1):
        stopping.improved(epoch, val_loss)
        if stopping.should_stop(epoch):
            stopped = epoch
            break
    assert stopped == stops_at


def test_replicates_are_split_in_replicate_order_whatever_the_row_order():
    table = history.replicate_histories([history_of([0.7, 0.6]), history_of([0.9, 0.8])])
    shuffled = table.iloc[[2, 0, 3, 1]]
    losses = [part["loss"].tolist() for part in history.split_histories(shuffled)]
    assert losses == [[0.7, 0.6], [0.9, 0.8]]


def test_a_summary_needs_a_seed_for_each_replicate():
    summaries = [training_summary(10, 10, EarlyStopping(0), 2.0, 100)] * 2
    with pytest.raises(ValueError, match="zip"):
        history.family_summary(summaries, [42, 7, 9])


def test_a_missing_history_says_to_train_first(tmp_path):
    path = tmp_path / "history.csv"
    with pytest.raises(PipelineError) as caught:
        history.read_history(path)
    assert str(caught.value) == f"{path}: missing; run the training stages first"
