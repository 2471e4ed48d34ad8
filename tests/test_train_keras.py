import keras
import numpy as np
import pytest

from pipeline import paths, train_keras
from pipeline.config import ModelSpec
from pipeline.errors import PipelineError
from pipeline.split import Splits
from pipeline.train_keras import build_model, load_model, predict_probabilities, train
from tests.factories import BALANCED_WEIGHTS, imbalanced_table
from tests.stages import SOURCES_CHECKED_BY_THE_STAGES, split_in, write_params

NUMPY_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "logistic": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "identity": lambda z: z,
}


def neuron_forward_pass(model, features: np.ndarray, activation: str) -> np.ndarray:
    """a_j = f(sum_i w_ij x_i + b_j), layer by layer, from the model's weights."""
    outputs = features.astype(np.float64)
    # Dropout layers pass values through unchanged at inference.
    dense_layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.Dropout)]
    for index, layer in enumerate(dense_layers):
        weights, biases = (array.astype(np.float64) for array in layer.get_weights())
        pre_activation = outputs @ weights + biases
        is_output = index == len(dense_layers) - 1
        outputs = NUMPY_ACTIVATIONS["logistic" if is_output else activation](pre_activation)
    return outputs[:, 0]


def test_default_network_is_the_textbook_one(default_params):
    model = build_model(8, default_params.model, "glorot_uniform")
    units = [layer.units for layer in model.layers]
    activations = [layer.activation.__name__ for layer in model.layers]
    assert units == [10, 10, 1]
    assert activations == ["relu", "relu", "sigmoid"]
    # 8*10+10 + 10*10+10 + 10*1+1 weights and biases.
    assert model.count_params() == 211
    assert model.loss.name == "binary_crossentropy"
    assert type(model.optimizer).__name__ == "Adam"


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
def test_forward_pass_is_the_neuron_formula(
    activation: str, tiny_spec: ModelSpec, tiny_splits: Splits
):
    spec = tiny_spec.model_copy(update={"activation": activation, "epochs": 2})
    result = train(tiny_splits.train, tiny_splits.validation, spec, "glorot_uniform", seed=1)
    features = tiny_splits.test.features
    expected = neuron_forward_pass(result.model, features, activation)
    predicted = result.model.predict(features, verbose=0)[:, 0]
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)


def test_history_has_one_row_per_epoch(tiny_spec: ModelSpec, tiny_splits: Splits):
    result = train(tiny_splits.train, tiny_splits.validation, tiny_spec, "glorot_uniform", seed=1)
    history = result.history
    assert list(history.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert history["epoch"].tolist() == [1, 2, 3]
    assert history[["accuracy", "val_accuracy"]].stack().between(0, 1).all()
    assert result.summary.epochs_trained == 3
    assert result.summary.best_epoch == 3
    assert not result.summary.stopped_early
    # The last val_loss is the loss of the returned model on the validation set.
    val_loss = result.model.evaluate(
        tiny_splits.validation.features,
        tiny_splits.validation.labels.astype(np.float32),
        verbose=0,
    )[0]
    assert val_loss == pytest.approx(history["val_loss"].iloc[-1], rel=1e-5)


def test_same_seed_same_training(tiny_spec: ModelSpec, tiny_splits: Splits):
    first = train(tiny_splits.train, tiny_splits.validation, tiny_spec, "glorot_uniform", seed=3)
    second = train(tiny_splits.train, tiny_splits.validation, tiny_spec, "glorot_uniform", seed=3)
    other = train(tiny_splits.train, tiny_splits.validation, tiny_spec, "glorot_uniform", seed=4)
    assert first.history.equals(second.history)
    assert not first.history.equals(other.history)


def test_early_stopping_keeps_the_best_epoch(tiny_spec: ModelSpec, tiny_splits: Splits):
    # A learning rate this large makes the validation loss bounce, so training stops.
    spec = tiny_spec.model_copy(update={"epochs": 30, "patience": 2, "learning_rate": 0.5})
    result = train(tiny_splits.train, tiny_splits.validation, spec, "glorot_uniform", seed=0)
    history, summary = result.history, result.summary
    assert summary.stopped_early
    assert summary.epochs_trained < 30
    assert summary.best_epoch == int(history["val_loss"].idxmin()) + 1
    assert summary.epochs_trained - summary.best_epoch == 2
    restored_val_loss = result.model.evaluate(
        tiny_splits.validation.features,
        tiny_splits.validation.labels.astype(np.float32),
        verbose=0,
    )[0]
    assert restored_val_loss == pytest.approx(history["val_loss"].min(), rel=1e-5)


def test_saved_model_loads_in_safe_mode(tmp_path, tiny_spec: ModelSpec, tiny_splits: Splits):
    result = train(tiny_splits.train, tiny_splits.validation, tiny_spec, "glorot_uniform", seed=1)
    path = tmp_path / "model.keras"
    result.model.save(path)
    loaded = load_model(path)
    features = tiny_splits.test.features
    np.testing.assert_array_equal(
        loaded.predict(features, verbose=0), result.model.predict(features, verbose=0)
    )


def test_dropout_follows_every_hidden_layer(default_params):
    spec = default_params.model.model_copy(update={"dropout": 0.25})
    model = build_model(8, spec, "glorot_uniform")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Dense", "Dropout", "Dense", "Dropout", "Dense"]
    assert [layer.rate for layer in model.layers if type(layer).__name__ == "Dropout"] == [
        0.25,
        0.25,
    ]
    # Dropout has no weights: the textbook network's 211 parameters.
    assert model.count_params() == 211


def test_dropout_is_off_at_inference_and_on_in_training(tiny_spec: ModelSpec, tiny_splits: Splits):
    spec = tiny_spec.model_copy(update={"dropout": 0.5, "epochs": 2})
    result = train(tiny_splits.train, tiny_splits.validation, spec, "glorot_uniform", seed=1)
    features = tiny_splits.test.features
    expected = neuron_forward_pass(result.model, features, spec.activation)
    np.testing.assert_allclose(
        result.model.predict(features, verbose=0)[:, 0], expected, rtol=1e-5, atol=1e-6
    )
    training_outputs = result.model(features, training=True).numpy()[:, 0]
    assert not np.allclose(training_outputs, expected, atol=1e-3)
    without = train(
        tiny_splits.train,
        tiny_splits.validation,
        tiny_spec.model_copy(update={"epochs": 2}),
        "glorot_uniform",
        seed=1,
    )
    assert not result.history.equals(without.history)


@pytest.mark.parametrize(("l1", "l2"), [(0.01, 0.0), (0.0, 0.01), (0.003, 0.02)])
def test_penalty_is_l1_plus_l2_on_every_weight_matrix(default_params, l1: float, l2: float):
    spec = default_params.model.model_copy(update={"l1": l1, "l2": l2})
    model = build_model(8, spec, "glorot_uniform")
    kernels = [layer.get_weights()[0].astype(np.float64) for layer in model.layers]
    expected = sum(l1 * np.abs(kernel).sum() + l2 * np.square(kernel).sum() for kernel in kernels)
    penalty = sum(float(loss) for loss in model.losses)
    assert penalty == pytest.approx(expected, rel=1e-5)
    assert penalty > 0.01  # large enough that a missing term would fail the test


def test_no_penalty_by_default(default_params):
    model = build_model(8, default_params.model, "glorot_uniform")
    assert model.losses == []


def test_compiled_loop_reports_what_fit_reports(tiny_spec: ModelSpec, tiny_splits: Splits):
    """With a learning rate too small to move the weights, the epoch's mean batch loss
    and running accuracy are the loss and accuracy of the initial model on all rows."""
    spec = tiny_spec.model_copy(update={"epochs": 1, "batch_size": 16, "learning_rate": 1e-12})
    result = train(tiny_splits.train, tiny_splits.validation, spec, "glorot_uniform", seed=2)
    loss, accuracy = result.model.evaluate(
        tiny_splits.train.features, tiny_splits.train.labels.astype(np.float32), verbose=0
    )
    assert result.history["loss"].iloc[0] == pytest.approx(loss, rel=1e-5)
    assert result.history["accuracy"].iloc[0] == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.parametrize("trainer", ["xla", "graph"])
def test_compiled_loop_trains_like_model_fit(
    trainer: str, tiny_spec: ModelSpec, tiny_splits: Splits
):
    """Same network, seed and shuffled order: the compiled loop computes what Keras'
    own model.fit computes, step for step, up to floating-point rounding."""
    spec = tiny_spec.model_copy(update={"epochs": 3, "l2": 0.001})
    ours = train(tiny_splits.train, tiny_splits.validation, spec, "glorot_uniform", 11, trainer)
    reference = train(tiny_splits.train, tiny_splits.validation, spec, "glorot_uniform", 11, "fit")
    columns = ["loss", "accuracy", "val_loss", "val_accuracy"]
    np.testing.assert_allclose(ours.history[columns], reference.history[columns], rtol=1e-4)
    for mine, theirs in zip(ours.model.get_weights(), reference.model.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-5)


def test_more_than_two_classes_use_softmax(tiny_spec: ModelSpec, three_class_splits: Splits):
    model = build_model(6, tiny_spec, "glorot_uniform", n_classes=3)
    assert model.layers[-1].units == 3
    assert model.layers[-1].activation.__name__ == "softmax"
    assert model.loss.name == "sparse_categorical_crossentropy"
    result = train(
        three_class_splits.train, three_class_splits.validation, tiny_spec, "glorot_uniform", 1
    )
    probabilities = predict_probabilities(result.model, three_class_splits.test.features)
    assert probabilities.shape == (len(three_class_splits.test.labels), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("class_weight", ["none", "balanced"])
def test_compiled_loop_trains_like_model_fit_on_three_classes(
    class_weight: str, tiny_spec: ModelSpec, three_class_splits: Splits
):
    """Softmax, sparse cross-entropy and class weights: still step for step model.fit."""
    spec = tiny_spec.model_copy(update={"epochs": 2, "class_weight": class_weight})
    splits = three_class_splits
    ours = train(splits.train, splits.validation, spec, "glorot_uniform", 5, "graph")
    reference = train(splits.train, splits.validation, spec, "glorot_uniform", 5, "fit")
    columns = ["loss", "accuracy", "val_loss", "val_accuracy"]
    np.testing.assert_allclose(ours.history[columns], reference.history[columns], rtol=1e-4)


@pytest.mark.parametrize(("source", "train_rows"), SOURCES_CHECKED_BY_THE_STAGES)
def test_a_batch_larger_than_the_train_split_is_refused(
    tmp_path, monkeypatch, source: dict, train_rows: int
):
    """`dataset` refuses such a batch before writing anything; this is the trainer's own
    check, for when only `model.batch_size` changed and DVC reruns the trainers alone."""
    split_in(tmp_path, monkeypatch, source)
    write_params(tmp_path, monkeypatch, {**source, "model.batch_size": train_rows + 1})

    with pytest.raises(PipelineError) as caught:
        train_keras.main()

    assert str(caught.value) == (
        f"model.batch_size = {train_rows + 1}: larger than the {train_rows} training rows; "
        f"allowed: 1 to {train_rows}"
    )
    assert not paths.KERAS.exists()


@pytest.mark.parametrize("trainer", ["auto", "fit"])
@pytest.mark.parametrize("class_weight", ["none", "balanced"])
def test_class_weights_reach_the_loss_with_their_values(
    tiny_spec: ModelSpec, class_weight: str, trainer: str
):
    """One full batch at a learning rate too small to move the weights: the epoch's loss
    is the cross-entropy of the untrained network, each row weighted by hand."""
    table = imbalanced_table()
    spec = tiny_spec.model_copy(
        update={"epochs": 1, "batch_size": 30, "learning_rate": 1e-12, "l2": 0.0,
                "class_weight": class_weight}
    )  # fmt: skip
    result = train(table, table, spec, "glorot_uniform", 3, trainer)

    weights = BALANCED_WEIGHTS[table.labels] if class_weight == "balanced" else np.ones(30)
    probabilities = predict_probabilities(result.model, table.features)
    row_losses = -np.log(probabilities[np.arange(30), table.labels])
    assert result.history["loss"].iloc[0] == pytest.approx(np.mean(weights * row_losses), rel=1e-5)


def test_a_model_holding_python_code_is_refused(tmp_path, tiny_spec: ModelSpec):
    """A `.keras` file with a Lambda layer carries Python code: safe mode loads nothing."""
    network = build_model(8, tiny_spec, "glorot_uniform")
    inputs = keras.Input((8,))
    tampered = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(network(inputs)))
    path = tmp_path / "model.keras"
    tampered.save(path)

    with pytest.raises(ValueError, match=r"`Lambda` layer .* arbitrary code execution"):
        load_model(path)


def test_as_tensor_shares_aligned_arrays_and_copies_the_others():
    from pipeline.files import aligned_empty

    aligned = aligned_empty((4, 3), np.float32)
    aligned[...] = np.arange(12, dtype=np.float32).reshape(4, 3)
    shared = train_keras.as_tensor(aligned)
    # One buffer: TensorFlow sees a later write to the array (no copy was made).
    aligned[0, 0] = 42.0
    assert float(shared[0, 0]) == 42.0
    np.testing.assert_array_equal(shared.numpy(), aligned)

    unaligned = np.arange(13, dtype=np.float32)[1:].reshape(4, 3)  # 4 bytes off
    copied = train_keras.as_tensor(unaligned)
    unaligned[0, 0] = -1.0
    assert float(copied[0, 0]) == 1.0
    # A tensor passes through as it is.
    assert train_keras.as_tensor(copied) is copied
