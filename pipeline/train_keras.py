"""Train the Keras MLP, record its per-epoch history and predict the test set
(`data/train_keras/`)."""

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.config import (
    KerasInitializer,
    KerasTrainer,
    ModelSpec,
    check_batch_size,
    load_params,
)
from pipeline.errors import run_stage
from pipeline.files import (
    Table,
    atomic_path,
    read_classes,
    read_table,
    write_csv,
    write_json,
    write_predictions,
)
from pipeline.history import (
    ADAM_BETA_1,
    ADAM_BETA_2,
    ADAM_EPSILON,
    EarlyStopping,
    TrainingSummary,
    class_count,
    history_frame,
    log_epoch,
    predict_in_chunks,
    row_weights,
    training_summary,
)
from pipeline.mlflow_models import PRELOAD_MAX_ROWS, preload_mlflow, save_mlflow_model
from pipeline.tensorflow_import import import_tensorflow

tf, keras = import_tensorflow()

logger = logging.getLogger(__name__)

# Our activation names are scikit-learn's; Keras spells two of them differently.
ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid", "identity": "linear"}
# Below this many rows x epochs, a plain TensorFlow graph finishes before XLA would
# have compiled (measured here: XLA about 3 s to compile, then 1.2M samples/s at batch
# 32; a plain graph 0.5 s to trace, then about 90k samples/s).
XLA_MIN_SAMPLE_EPOCHS = 300_000


@dataclass(frozen=True)
class KerasResult:
    model: keras.Sequential
    history: pd.DataFrame
    summary: TrainingSummary


def build_model(
    n_features: int, spec: ModelSpec, kernel_initializer: KerasInitializer, n_classes: int = 2
) -> keras.Sequential:
    """n_features -> hidden Dense layers (each followed by Dropout if set) -> the
    output: Dense(1, sigmoid) for two classes, Dense(n_classes, softmax) for more;
    compiled with the matching cross-entropy."""
    # scikit-learn penalizes every weight matrix, the output layer's included, and
    # no bias; the same here. L1 and dropout are Keras only.
    regularizer = (
        keras.regularizers.L1L2(l1=spec.l1, l2=spec.l2) if spec.l1 > 0 or spec.l2 > 0 else None
    )
    layers: list[keras.layers.Layer] = [keras.Input(shape=(n_features,))]
    for units in spec.hidden_layers:
        layers.append(
            keras.layers.Dense(
                units,
                activation=ACTIVATIONS[spec.activation],
                kernel_initializer=kernel_initializer,
                kernel_regularizer=regularizer,
            )
        )
        if spec.dropout > 0:
            # Active only while training; at inference Keras passes values through.
            layers.append(keras.layers.Dropout(spec.dropout))
    binary = n_classes == 2
    layers.append(
        keras.layers.Dense(
            1 if binary else n_classes,
            activation="sigmoid" if binary else "softmax",
            kernel_initializer=kernel_initializer,
            kernel_regularizer=regularizer,
        )
    )
    model = keras.Sequential(layers, name="mlp")
    model.compile(
        optimizer=build_optimizer(spec),
        loss=(
            keras.losses.BinaryCrossentropy()
            if binary
            else keras.losses.SparseCategoricalCrossentropy()
        ),
        metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy")
            if binary
            else keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        ],
    )
    return model


def keras_targets(labels: np.ndarray, binary: bool) -> np.ndarray:
    """Labels as the loss wants them: a float column for two classes, codes for more."""
    return labels.astype(np.float32)[:, None] if binary else labels.astype(np.int32)


def build_optimizer(spec: ModelSpec) -> keras.optimizers.Optimizer:
    if spec.optimizer == "adam":
        return keras.optimizers.Adam(
            learning_rate=spec.learning_rate,
            beta_1=ADAM_BETA_1,
            beta_2=ADAM_BETA_2,
            epsilon=ADAM_EPSILON,
        )
    return keras.optimizers.SGD(
        learning_rate=spec.learning_rate, momentum=spec.momentum, nesterov=spec.nesterov
    )


def set_deterministic(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and ask TensorFlow for deterministic ops."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def regularization_loss(model: keras.Model) -> tf.Tensor:
    """The penalty Keras adds to the loss (l2 * sum ||W||^2), zero without one."""
    return tf.add_n(model.losses) if model.losses else tf.constant(0.0)


class CompiledLoop:
    """Training without Keras' per-step overhead: one compiled function per epoch.

    The training set stays on the device; each epoch gathers its batches through a
    seeded permutation, so shuffling costs no copy of the data. The model remains an
    ordinary Keras model (layers, optimizer, loss, `.keras` file); only the loop
    around its train step is ours. Per epoch it reports what `model.fit` reports:
    the mean batch loss (penalty included) and the running accuracy, both measured
    on each batch before its update.
    """

    def __init__(
        self,
        model: keras.Model,
        train_set: Table,
        batch_size: int,
        jit_compile: bool = True,
        weights: np.ndarray | None = None,
    ) -> None:
        self.model = model
        n_rows = len(train_set.labels)
        self.binary = model.output_shape[-1] == 1
        self.features = tf.convert_to_tensor(train_set.features)  # no copy if a tensor
        self.targets = tf.constant(keras_targets(train_set.labels, self.binary))
        self.weights = tf.constant(
            np.ones(n_rows, np.float32) if weights is None else weights.astype(np.float32)
        )
        self.batch_size = batch_size
        self.full_batches = n_rows // batch_size
        model.optimizer.build(model.trainable_variables)
        # Full batches share one shape: one compilation for all of them. The last,
        # partial batch (rows % batch_size) has its own, compiled once.
        self._full_epoch = tf.function(self._run_full_batches, jit_compile=jit_compile)
        self._last_batch = tf.function(self._step, jit_compile=jit_compile)

    def _step(self, rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One gradient step on the given rows: (loss * rows, correct predictions), as
        Keras' loss tracker and (unweighted) accuracy metric count them."""
        features = tf.gather(self.features, rows)
        targets = tf.gather(self.targets, rows)
        weights = tf.gather(self.weights, rows)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            probabilities = self.model(features, training=True)
            loss = self.model.loss(targets, probabilities, sample_weight=weights)
            loss += regularization_loss(self.model)
        gradients = tape.gradient(loss, variables)
        self.model.optimizer.apply(gradients, variables)
        if self.binary:
            correct = tf.cast(probabilities > 0.5, tf.float32)[:, 0] == targets[:, 0]
        else:
            correct = tf.argmax(probabilities, axis=1, output_type=tf.int32) == targets
        count = tf.cast(tf.shape(rows)[0], tf.float32)
        return loss * count, tf.reduce_sum(tf.cast(correct, tf.float32))

    def _run_full_batches(self, order: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batches = tf.reshape(order, (self.full_batches, self.batch_size))
        totals = (tf.constant(0.0), tf.constant(0.0))
        for index in tf.range(self.full_batches):
            step = self._step(batches[index])
            totals = tuple(total + part for total, part in zip(totals, step, strict=True))
        return totals

    def run_epoch(self, order: np.ndarray) -> tuple[float, float]:
        """Train on every row once, in `order`; return (mean loss, accuracy)."""
        split = self.full_batches * self.batch_size
        loss_sum, correct = 0.0, 0.0
        parts = []
        if self.full_batches:
            parts.append(self._full_epoch(tf.constant(order[:split])))
        if split < len(order):
            parts.append(self._last_batch(tf.constant(order[split:])))
        for part_loss, part_correct in parts:
            loss_sum += float(part_loss)
            correct += float(part_correct)
        return loss_sum / len(order), correct / len(order)


def forward_function(model: keras.Model):
    """A compiled inference pass, traced once per input shape."""
    return tf.function(lambda features: model(features, training=False))


def predict_probabilities(model: keras.Model, features: np.ndarray, forward=None) -> np.ndarray:
    """(n_rows, n_classes) class probabilities, computed in chunks; for two classes
    the sigmoid's P(1) becomes the columns [1 - P(1), P(1)]."""
    forward = forward or forward_function(model)
    outputs = predict_in_chunks(lambda chunk: forward(tf.constant(chunk)).numpy(), features)
    return np.hstack([1 - outputs, outputs]) if outputs.shape[1] == 1 else outputs


def keras_loss(model: keras.Model, labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The compiled loss of `model` on these rows, plus its regularization penalty."""
    if probabilities.shape[1] == 2 and model.output_shape[-1] == 1:
        loss = model.loss(keras_targets(labels, binary=True), probabilities[:, 1:])
    else:
        loss = model.loss(labels.astype(np.int32), probabilities)
    return float(loss + regularization_loss(model))


def validation_metrics(model: keras.Model, validation_set: Table, forward) -> tuple[float, float]:
    """(val_loss, val_accuracy) as `model.fit` reports them: loss with the penalty."""
    probabilities = predict_probabilities(model, validation_set.features, forward)
    labels = validation_set.labels
    accuracy = np.mean(np.argmax(probabilities, axis=1) == labels)
    return keras_loss(model, labels, probabilities), float(accuracy)


EpochRunner = Callable[[np.ndarray], tuple[float, float]]


def train_epochs(
    model: keras.Model,
    run_epoch: EpochRunner,
    n_rows: int,
    validation_set: Table,
    spec: ModelSpec,
    seed: int,
) -> KerasResult:
    """The epoch loop both Keras trainers share: a seeded shuffle per epoch, the
    validation metrics, progress, and early stopping that keeps the best weights."""
    forward = forward_function(model)
    rng = np.random.default_rng(seed)
    stopping = EarlyStopping(spec.patience)
    best_weights = None
    records: list[dict[str, float]] = []
    started = time.perf_counter()
    for epoch in range(1, spec.epochs + 1):
        order = rng.permutation(n_rows).astype(np.int32)
        loss, accuracy = run_epoch(order)
        val_loss, val_accuracy = validation_metrics(model, validation_set, forward)
        record = {
            "epoch": epoch,
            "loss": loss,
            "accuracy": accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
        }
        records.append(record)
        log_epoch("keras", record, spec.epochs)
        if spec.patience == 0:
            continue
        if stopping.improved(epoch, val_loss):
            best_weights = model.get_weights()
        elif stopping.should_stop(epoch):
            break
    train_seconds = time.perf_counter() - started
    if best_weights is not None:
        model.set_weights(best_weights)
    summary = training_summary(spec.epochs, len(records), stopping, train_seconds, n_rows)
    return KerasResult(model=model, history=history_frame(records), summary=summary)


def train_compiled(
    train_set: Table,
    validation_set: Table,
    spec: ModelSpec,
    kernel_initializer: KerasInitializer,
    seed: int,
    jit_compile: bool | None = None,
) -> KerasResult:
    """Train with `CompiledLoop`; XLA by default when the training repays its compile."""
    set_deterministic(seed)
    n_classes = class_count(train_set, validation_set)
    model = build_model(train_set.features.shape[1], spec, kernel_initializer, n_classes)
    n_rows = len(train_set.labels)
    if jit_compile is None:
        jit_compile = n_rows * spec.epochs >= XLA_MIN_SAMPLE_EPOCHS
    weights = row_weights(train_set.labels, n_classes, spec.class_weight)
    loop = CompiledLoop(model, train_set, spec.batch_size, jit_compile, weights)
    return train_epochs(model, loop.run_epoch, n_rows, validation_set, spec, seed)


def train_fit(
    train_set: Table,
    validation_set: Table,
    spec: ModelSpec,
    kernel_initializer: KerasInitializer,
    seed: int,
) -> KerasResult:
    """Train with Keras' own `model.fit`, one call per epoch on the same shuffled
    order as the compiled loop: the reference that loop is held to."""
    set_deterministic(seed)
    n_classes = class_count(train_set, validation_set)
    model = build_model(train_set.features.shape[1], spec, kernel_initializer, n_classes)
    features = np.asarray(train_set.features)
    targets = keras_targets(train_set.labels, binary=n_classes == 2)
    weights = row_weights(train_set.labels, n_classes, spec.class_weight)

    def run_epoch(order: np.ndarray) -> tuple[float, float]:
        logs = model.fit(
            features[order],
            targets[order],
            sample_weight=weights[order],
            batch_size=spec.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
        ).history
        return float(logs["loss"][-1]), float(logs["accuracy"][-1])

    return train_epochs(model, run_epoch, len(targets), validation_set, spec, seed)


TRAINERS: dict[KerasTrainer, Callable[..., KerasResult]] = {
    "auto": train_compiled,
    "xla": partial(train_compiled, jit_compile=True),
    "graph": partial(train_compiled, jit_compile=False),
    "fit": train_fit,
}


def train(
    train_set: Table,
    validation_set: Table,
    spec: ModelSpec,
    kernel_initializer: KerasInitializer,
    seed: int,
    trainer: KerasTrainer = "auto",
) -> KerasResult:
    return TRAINERS[trainer](train_set, validation_set, spec, kernel_initializer, seed)


def load_model(path: os.PathLike = paths.KERAS_MODEL) -> keras.Model:
    """Load a model this stage saved; `safe_mode` refuses embedded Python code."""
    return keras.saving.load_model(path, safe_mode=True)


def save_model(model: keras.Model, path: Path) -> None:
    with atomic_path(path) as temporary:
        model.save(temporary)


def to_device(table: Table) -> Table:
    """The table with its features as a TensorFlow tensor. The compiled loop uses the
    tensor as it is, and the NumPy copy is freed once nothing else holds it."""
    return replace(table, features=tf.constant(table.features))


def main() -> None:
    params = load_params()
    n_classes = len(read_classes())
    train_set = read_table(paths.TRAIN, n_classes=n_classes)
    columns = train_set.feature_names
    if params.train_keras.trainer != "fit":
        # Held once, on the device, instead of once there and once in NumPy.
        train_set = to_device(train_set)
    if len(train_set.labels) <= PRELOAD_MAX_ROWS:
        preload_mlflow("keras")
    check_batch_size(params.model, len(train_set.labels))
    validation_set = read_table(paths.VALIDATION, columns, n_classes)
    result = train(
        train_set,
        validation_set,
        params.model,
        params.train_keras.kernel_initializer,
        params.seed,
        params.train_keras.trainer,
    )
    del train_set, validation_set
    # The test set is predicted here, while TensorFlow is loaded, so that no other
    # stage has to load it (about 6 s per process).
    test_set = read_table(paths.TEST, columns, n_classes)
    probabilities = predict_probabilities(result.model, test_set.features)
    save_model(result.model, paths.KERAS_MODEL)
    write_predictions(probabilities, paths.KERAS_PREDICTIONS)
    write_csv(result.history, paths.KERAS_HISTORY)
    write_json(asdict(result.summary), paths.KERAS_SUMMARY)
    sample = test_set.features[:5]
    save_mlflow_model(
        "keras",
        result.model,
        sample=sample,
        sample_output=result.model(sample, training=False).numpy(),
        requirements=[f"keras=={keras.__version__}", f"tensorflow=={tf.__version__}"],
        path=paths.KERAS_MLFLOW_MODEL,
    )
    logger.info(
        "train_keras: %d epochs in %.1f s, %.0f samples/s (best epoch %d) -> %s",
        result.summary.epochs_trained,
        result.summary.train_seconds,
        result.summary.samples_per_second,
        result.summary.best_epoch,
        paths.KERAS,
    )


if __name__ == "__main__":
    run_stage(main)
