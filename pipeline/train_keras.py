"""Train the Keras MLP, record its per-epoch history and predict the test set
(`data/train_keras/`)."""

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.config import KerasInitializer, KerasTrainer, ModelSpec, feature_names, load_params
from pipeline.errors import run_stage
from pipeline.files import Table, atomic_path, read_table, write_csv, write_json, write_parquet
from pipeline.history import (
    EarlyStopping,
    TrainingSummary,
    best_epoch,
    history_frame,
    log_epoch,
)
from pipeline.mlflow_models import preload_mlflow, save_mlflow_model
from pipeline.tensorflow_import import import_tensorflow

tf, keras = import_tensorflow()

logger = logging.getLogger(__name__)

# Our activation names are scikit-learn's; Keras spells two of them differently.
ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid", "identity": "linear"}
# Keras' Adam defaults; the scikit-learn trainer uses the same values.
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7
# Below this many rows x epochs, a plain TensorFlow graph finishes before XLA would
# have compiled (measured here: XLA about 3 s to compile, then 1.2M samples/s at batch
# 32; a plain graph 0.5 s to trace, then about 90k samples/s).
XLA_MIN_SAMPLE_EPOCHS = 300_000
# Rows per forward pass when predicting: large enough to amortize the call, small
# enough that a big test set never sits in memory as activations.
PREDICTION_CHUNK = 65536


@dataclass(frozen=True)
class KerasResult:
    model: keras.Sequential
    history: pd.DataFrame
    summary: TrainingSummary


def build_model(
    n_features: int, spec: ModelSpec, kernel_initializer: KerasInitializer
) -> keras.Sequential:
    """n_features -> hidden Dense layers (each followed by Dropout if set) ->
    Dense(1, sigmoid), compiled."""
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
    layers.append(
        keras.layers.Dense(
            1,
            activation="sigmoid",
            kernel_initializer=kernel_initializer,
            kernel_regularizer=regularizer,
        )
    )
    model = keras.Sequential(layers, name="mlp")
    model.compile(
        optimizer=build_optimizer(spec),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    return model


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
        self, model: keras.Model, train_set: Table, batch_size: int, jit_compile: bool = True
    ) -> None:
        self.model = model
        self.features = tf.constant(train_set.features)
        self.targets = tf.constant(train_set.labels.astype(np.float32)[:, None])
        self.batch_size = batch_size
        self.full_batches = len(train_set.labels) // batch_size
        model.optimizer.build(model.trainable_variables)
        # Full batches share one shape: one compilation for all of them. The last,
        # partial batch (rows % batch_size) has its own, compiled once.
        self._full_epoch = tf.function(self._run_full_batches, jit_compile=jit_compile)
        self._last_batch = tf.function(self._step, jit_compile=jit_compile)

    def _step(self, rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One gradient step on the given rows: (loss * rows, correct predictions)."""
        features = tf.gather(self.features, rows)
        targets = tf.gather(self.targets, rows)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            probabilities = self.model(features, training=True)
            loss = self.model.loss(targets, probabilities) + regularization_loss(self.model)
        gradients = tape.gradient(loss, variables)
        self.model.optimizer.apply(gradients, variables)
        predicted = tf.cast(probabilities > 0.5, tf.float32)
        count = tf.cast(tf.shape(rows)[0], tf.float32)
        return loss * count, tf.reduce_sum(tf.cast(predicted == targets, tf.float32))

    def _run_full_batches(self, order: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batches = tf.reshape(order, (self.full_batches, self.batch_size))
        loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
        for index in tf.range(self.full_batches):
            batch_loss, batch_correct = self._step(batches[index])
            loss_sum += batch_loss
            correct += batch_correct
        return loss_sum, correct

    def run_epoch(self, order: np.ndarray) -> tuple[float, float]:
        """Train on every row once, in `order`; return (mean loss, accuracy)."""
        split = self.full_batches * self.batch_size
        loss_sum, correct = 0.0, 0.0
        if self.full_batches:
            full_loss, full_correct = self._full_epoch(tf.constant(order[:split]))
            loss_sum, correct = float(full_loss), float(full_correct)
        if split < len(order):
            last_loss, last_correct = self._last_batch(tf.constant(order[split:]))
            loss_sum += float(last_loss)
            correct += float(last_correct)
        return loss_sum / len(order), correct / len(order)


def forward_function(model: keras.Model):
    """A compiled inference pass, traced once per input shape."""
    return tf.function(lambda features: model(features, training=False))


def predict_probabilities(model: keras.Model, features: np.ndarray, forward=None) -> np.ndarray:
    """P(label = 1) for every row, computed in chunks."""
    forward = forward or forward_function(model)
    return np.concatenate(
        [
            forward(tf.constant(features[start : start + PREDICTION_CHUNK])).numpy()[:, 0]
            for start in range(0, len(features), PREDICTION_CHUNK)
        ]
    )


def validation_metrics(model: keras.Model, validation_set: Table, forward) -> tuple[float, float]:
    """(val_loss, val_accuracy) as `model.fit` reports them: loss with the penalty."""
    probabilities = predict_probabilities(model, validation_set.features, forward)
    labels = validation_set.labels.astype(np.float32)
    loss = model.loss(labels[:, None], probabilities[:, None]) + regularization_loss(model)
    accuracy = np.mean((probabilities > 0.5) == (labels > 0.5))
    return float(loss), float(accuracy)


def train_compiled(
    train_set: Table,
    validation_set: Table,
    spec: ModelSpec,
    kernel_initializer: KerasInitializer,
    seed: int,
) -> KerasResult:
    """Train with `CompiledLoop`, keeping the best weights when early stopping."""
    set_deterministic(seed)
    model = build_model(train_set.features.shape[1], spec, kernel_initializer)
    # XLA compilation costs about 3 s here and then runs 10x faster: worth it only
    # when there is enough training to pay it back.
    jit_compile = len(train_set.labels) * spec.epochs >= XLA_MIN_SAMPLE_EPOCHS
    loop = CompiledLoop(model, train_set, spec.batch_size, jit_compile)
    forward = forward_function(model)
    rng = np.random.default_rng(seed)
    stopping = EarlyStopping(spec.patience)
    best_weights = None
    records: list[dict[str, float]] = []
    started = time.perf_counter()
    for epoch in range(1, spec.epochs + 1):
        order = rng.permutation(len(train_set.labels)).astype(np.int32)
        loss, accuracy = loop.run_epoch(order)
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
    return KerasResult(
        model=model,
        history=history_frame(records),
        summary=summarize(records, spec, stopping.best_epoch, train_seconds, train_set),
    )


class EpochProgress(keras.callbacks.Callback):
    """One terminal line per epoch, the same format as the other trainers."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        log_epoch("keras", {"epoch": epoch + 1, **(logs or {})}, self.epochs)


def train_fit(
    train_set: Table,
    validation_set: Table,
    spec: ModelSpec,
    kernel_initializer: KerasInitializer,
    seed: int,
) -> KerasResult:
    """Train with Keras' own `model.fit`: the reference the compiled loop is held to."""
    set_deterministic(seed)
    model = build_model(train_set.features.shape[1], spec, kernel_initializer)
    callbacks: list[keras.callbacks.Callback] = [EpochProgress(spec.epochs)]
    if spec.patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=spec.patience, restore_best_weights=True
            )
        )
    started = time.perf_counter()
    fitted = model.fit(
        train_set.features,
        train_set.labels.astype(np.float32),
        batch_size=spec.batch_size,
        epochs=spec.epochs,
        validation_data=(validation_set.features, validation_set.labels.astype(np.float32)),
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    train_seconds = time.perf_counter() - started
    records = [
        {
            "epoch": epoch + 1,
            **{key: float(values[epoch]) for key, values in fitted.history.items()},
        }
        for epoch in range(len(fitted.history["loss"]))
    ]
    best = best_epoch([record["val_loss"] for record in records])
    return KerasResult(
        model=model,
        history=history_frame(records),
        summary=summarize(records, spec, best, train_seconds, train_set),
    )


def summarize(
    records: list[dict[str, float]],
    spec: ModelSpec,
    best: int,
    train_seconds: float,
    train_set: Table,
) -> TrainingSummary:
    epochs_trained = len(records)
    return TrainingSummary(
        epochs_trained=epochs_trained,
        best_epoch=best if spec.patience > 0 else epochs_trained,
        stopped_early=epochs_trained < spec.epochs,
        train_seconds=train_seconds,
        samples_per_second=len(train_set.labels) * epochs_trained / train_seconds,
    )


TRAINERS = {"compiled": train_compiled, "fit": train_fit}


def train(
    train_set: Table,
    validation_set: Table,
    spec: ModelSpec,
    kernel_initializer: KerasInitializer,
    seed: int,
    trainer: KerasTrainer = "compiled",
) -> KerasResult:
    return TRAINERS[trainer](train_set, validation_set, spec, kernel_initializer, seed)


def load_model(path: os.PathLike = paths.KERAS_MODEL) -> keras.Model:
    """Load a model this stage saved; `safe_mode` refuses embedded Python code."""
    return keras.saving.load_model(path, safe_mode=True)


def save_model(model: keras.Model, path: Path) -> None:
    with atomic_path(path) as temporary:
        model.save(temporary)


def main() -> None:
    params = load_params()
    preload_mlflow("keras")
    columns = feature_names(params.generate.n_features)
    train_set = read_table(paths.TRAIN, columns)
    validation_set = read_table(paths.VALIDATION, columns)
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
    test_set = read_table(paths.TEST, columns)
    probabilities = predict_probabilities(result.model, test_set.features)
    save_model(result.model, paths.KERAS_MODEL)
    write_parquet(pd.DataFrame({"probability": probabilities}), paths.KERAS_PREDICTIONS)
    write_csv(result.history, paths.KERAS_HISTORY)
    write_json(asdict(result.summary), paths.KERAS_SUMMARY)
    save_mlflow_model(
        "keras",
        result.model,
        sample=test_set.features[:5],
        sample_output=probabilities[:5, None],
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
