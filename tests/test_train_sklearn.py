import functools
import os

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import log_loss
from skops.io.exceptions import UntrustedTypesFoundException

from pipeline import paths, train_sklearn
from pipeline.config import ModelSpec
from pipeline.errors import PipelineError
from pipeline.split import Splits
from pipeline.train_keras import build_model
from pipeline.train_sklearn import (
    build_classifier,
    keras_only_settings,
    l2_penalty,
    load_model,
    save_model,
    sklearn_alpha,
    train,
)
from tests.factories import BALANCED_WEIGHTS, imbalanced_table
from tests.stages import SOURCES_CHECKED_BY_THE_STAGES, split_in, write_params


def test_every_epoch_gets_a_fresh_shuffle(tiny_spec: ModelSpec, tiny_splits: Splits):
    """partial_fit with an integer random_state re-seeds on every call and so shuffles
    every epoch identically; the trainer must not."""
    spec = tiny_spec.model_copy(update={"epochs": 3})
    result = train(tiny_splits.train, tiny_splits.validation, spec, "constant", seed=5)

    # scikit-learn's own fit: the same initialization and first shuffle as ours.
    reference = build_classifier(spec, "constant", seed=5).set_params(random_state=5, max_iter=1)
    with pytest.warns(ConvergenceWarning):
        reference.fit(tiny_splits.train.features, tiny_splits.train.labels)
    assert result.history["loss"].iloc[0] == pytest.approx(reference.loss_curve_[0], rel=1e-6)

    # The naive loop: identical first epoch, then the same order again and again.
    naive = build_classifier(spec, "constant", seed=5).set_params(random_state=5)
    for _ in range(spec.epochs):
        naive.partial_fit(tiny_splits.train.features, tiny_splits.train.labels, classes=[0, 1])
    assert naive.loss_curve_[0] == pytest.approx(result.history["loss"].iloc[0], rel=1e-6)
    assert naive.loss_curve_[1] != pytest.approx(result.history["loss"].iloc[1], rel=1e-6)


def test_l2_penalty_matches_keras(tiny_spec: ModelSpec, tiny_splits: Splits):
    """alpha = 2 * l2 * batch_size gives scikit-learn's batch loss Keras' L2(l2) loss."""
    features = tiny_splits.train.features[:64]
    labels = tiny_splits.train.labels[:64]
    # One full batch and a learning rate so small the weights do not move: the epoch
    # loss is then the loss of the initial weights.
    spec = tiny_spec.model_copy(update={"l2": 0.01, "batch_size": 64, "learning_rate": 1e-12})
    classifier = build_classifier(spec, "constant", seed=0)
    classifier.partial_fit(features, labels, classes=[0, 1])
    assert classifier.alpha == pytest.approx(2 * 0.01 * 64)

    model = build_model(features.shape[1], spec, "glorot_uniform")
    model.set_weights(
        [
            array
            for pair in zip(classifier.coefs_, classifier.intercepts_, strict=True)
            for array in pair
        ]
    )
    keras_loss = model.evaluate(features, labels.astype(np.float32), batch_size=64, verbose=0)[0]
    assert classifier.loss_curve_[0] == pytest.approx(keras_loss, rel=1e-5)
    # And the penalty alone is what Keras adds: l2 * sum ||W||^2.
    penalty = sum(float(loss) for loss in model.losses)
    assert l2_penalty(classifier, spec.l2) == pytest.approx(penalty, rel=1e-5)
    assert penalty > 0.01  # large enough that a wrong alpha would fail the test


def test_alpha_formula():
    assert sklearn_alpha(0.0, 32) == 0.0
    assert sklearn_alpha(0.001, 32) == pytest.approx(0.064)


def test_history_and_summary(tiny_spec: ModelSpec, tiny_splits: Splits):
    result = train(tiny_splits.train, tiny_splits.validation, tiny_spec, "constant", seed=1)
    history = result.history
    assert list(history.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert history["epoch"].tolist() == [1, 2, 3]
    probabilities = result.model.predict_proba(tiny_splits.validation.features)[:, 1]
    labels = tiny_splits.validation.labels
    expected_val_loss = -np.mean(
        labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities)
    )
    assert history["val_loss"].iloc[-1] == pytest.approx(expected_val_loss, rel=1e-5)
    assert history["val_accuracy"].iloc[-1] == pytest.approx(
        np.mean((probabilities > 0.5) == labels)
    )
    assert result.summary.epochs_trained == 3
    assert result.model.random_state == 1


def test_same_seed_same_training(tiny_spec: ModelSpec, tiny_splits: Splits):
    first = train(tiny_splits.train, tiny_splits.validation, tiny_spec, "constant", seed=3)
    second = train(tiny_splits.train, tiny_splits.validation, tiny_spec, "constant", seed=3)
    other = train(tiny_splits.train, tiny_splits.validation, tiny_spec, "constant", seed=4)
    assert first.history.equals(second.history)
    assert not first.history.equals(other.history)


def test_early_stopping_keeps_the_best_epoch(tiny_spec: ModelSpec, tiny_splits: Splits):
    spec = tiny_spec.model_copy(update={"epochs": 30, "patience": 2, "learning_rate": 0.5})
    result = train(tiny_splits.train, tiny_splits.validation, spec, "constant", seed=0)
    history, summary = result.history, result.summary
    assert summary.stopped_early
    assert summary.best_epoch == int(history["val_loss"].idxmin()) + 1
    assert summary.epochs_trained - summary.best_epoch == 2
    probabilities = result.model.predict_proba(tiny_splits.validation.features)[:, 1]
    labels = tiny_splits.validation.labels
    restored_val_loss = log_loss(labels, probabilities)
    assert restored_val_loss == pytest.approx(history["val_loss"].min(), rel=1e-5)


def test_skops_round_trip_and_trusted_types(tmp_path, tiny_spec: ModelSpec, tiny_splits: Splits):
    result = train(tiny_splits.train, tiny_splits.validation, tiny_spec, "constant", seed=1)
    path = tmp_path / "model.skops"
    save_model(result.model, path)
    loaded = load_model(path)
    features = tiny_splits.test.features
    np.testing.assert_array_equal(
        loaded.predict_proba(features), result.model.predict_proba(features)
    )
    import skops.io

    # Without our explicit list, skops refuses the optimizer object.
    with pytest.raises(UntrustedTypesFoundException):
        skops.io.load(path, trusted=[])


def test_keras_only_settings_warn_by_key_and_value(tiny_spec: ModelSpec):
    assert keras_only_settings(tiny_spec) == []
    warnings = keras_only_settings(tiny_spec.model_copy(update={"l1": 0.001, "dropout": 0.2}))
    assert len(warnings) == 2
    assert warnings[0].startswith("model.l1 = 0.001 has no scikit-learn equivalent")
    assert warnings[1].startswith("model.dropout = 0.2 has no scikit-learn equivalent")
    assert all("the baseline trains without it" in warning for warning in warnings)


def test_keras_only_settings_leave_the_classifier_unchanged(tiny_spec: ModelSpec):
    plain = build_classifier(tiny_spec, "constant", seed=0).get_params()
    regularized = build_classifier(
        tiny_spec.model_copy(update={"l1": 0.001, "dropout": 0.2}), "constant", seed=0
    ).get_params()
    plain.pop("random_state"), regularized.pop("random_state")
    assert plain == regularized


def test_three_classes(tiny_spec: ModelSpec, three_class_splits: Splits):
    splits = three_class_splits
    result = train(splits.train, splits.validation, tiny_spec, "constant", seed=2)
    probabilities = result.model.predict_proba(splits.validation.features)
    assert probabilities.shape == (len(splits.validation.labels), 3)
    expected = log_loss(splits.validation.labels, probabilities, labels=[0, 1, 2])
    assert result.history["val_loss"].iloc[-1] == pytest.approx(expected, rel=1e-5)
    assert result.history["val_accuracy"].iloc[-1] == pytest.approx(
        np.mean(probabilities.argmax(axis=1) == splits.validation.labels)
    )


@pytest.mark.parametrize(("source", "train_rows"), SOURCES_CHECKED_BY_THE_STAGES)
def test_a_batch_larger_than_the_train_split_is_refused(
    tmp_path, monkeypatch, source: dict, train_rows: int
):
    """`dataset` refuses such a batch before writing anything; this is the trainer's own
    check, for when only `model.batch_size` changed and DVC reruns the trainers alone."""
    split_in(tmp_path, monkeypatch, source)
    write_params(tmp_path, monkeypatch, {**source, "model.batch_size": train_rows + 1})

    with pytest.raises(PipelineError) as caught:
        train_sklearn.main()

    assert str(caught.value) == (
        f"model.batch_size = {train_rows + 1}: larger than the {train_rows} training rows; "
        f"allowed: 1 to {train_rows}"
    )
    assert not paths.SKLEARN.exists()


@pytest.mark.parametrize("class_weight", ["none", "balanced"])
def test_class_weights_reach_partial_fit_with_their_values(tiny_spec: ModelSpec, class_weight: str):
    """One full batch at a learning rate too small to move the weights: the epoch's loss
    is the cross-entropy of the untrained network, each row weighted by hand."""
    table = imbalanced_table()
    spec = tiny_spec.model_copy(
        update={"epochs": 1, "batch_size": 30, "learning_rate": 1e-12, "l2": 0.0,
                "class_weight": class_weight}
    )  # fmt: skip
    result = train(table, table, spec, "constant", seed=3)

    weights = BALANCED_WEIGHTS[table.labels] if class_weight == "balanced" else np.ones(30)
    probabilities = result.model.predict_proba(table.features)
    row_losses = -np.log(probabilities[np.arange(30), table.labels])
    assert result.history["loss"].iloc[0] == pytest.approx(np.mean(weights * row_losses), rel=1e-6)


def test_a_model_holding_an_extra_type_is_refused(tmp_path, tiny_spec: ModelSpec, tiny_splits):
    """A tampered file that would call `os.system` on loading: skops names the types and
    loads nothing."""
    result = train(tiny_splits.train, tiny_splits.validation, tiny_spec, "constant", seed=1)
    result.model.on_load = functools.partial(os.system, "echo tampered")
    path = tmp_path / "model.skops"
    save_model(result.model, path)

    with pytest.raises(
        UntrustedTypesFoundException, match=r"\['functools\.partial', 'posix\.system'\]"
    ):
        load_model(path)


def test_workers_on_memory_mapped_rows_train_what_this_process_trains(
    tmp_path, monkeypatch, tiny_spec: ModelSpec, tiny_splits: Splits
):
    """Large trainings run in joblib's workers on rows mapped from files that this
    process shares with them: the same classifiers and histories as in-process."""
    spec = tiny_spec.model_copy(update={"epochs": 2})
    seeds = [3, 4]
    in_process = train_sklearn.train_replicates(
        [tiny_splits.train], [tiny_splits.validation], spec, "constant", seeds
    )
    train_rows = train_sklearn.memory_mapped(tiny_splits.train, tmp_path)
    validation_rows = train_sklearn.memory_mapped(tiny_splits.validation, tmp_path)
    assert isinstance(train_rows.features, np.memmap) and not train_rows.features.flags.writeable
    np.testing.assert_array_equal(train_rows.features, tiny_splits.train.features)
    np.testing.assert_array_equal(validation_rows.labels, tiny_splits.validation.labels)
    monkeypatch.setattr(train_sklearn, "PARALLEL_MIN_SAMPLE_EPOCHS", 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert train_sklearn.parallel_workers(len(train_rows.labels), 2, 2) == 2

    in_workers = train_sklearn.train_replicates(
        [train_rows], [validation_rows], spec, "constant", seeds
    )

    for ours, theirs in zip(in_process, in_workers, strict=True):
        assert ours.history.equals(theirs.history)
        for mine, other in zip(ours.model.coefs_, theirs.model.coefs_, strict=True):
            assert mine.tobytes() == other.tobytes()
