"""Train the Keras MLP and record its per-epoch history (`data/train_keras/`)."""

import logging
import os
import time
from dataclasses import asdict, dataclass

# Hide TensorFlow's C++ start-up banners; this must be set before TensorFlow loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline import paths  # noqa: E402
from pipeline.config import KerasInitializer, ModelSpec, feature_names, load_params  # noqa: E402
from pipeline.errors import run_stage  # noqa: E402
from pipeline.files import Table, atomic_path, read_table, write_csv, write_json  # noqa: E402
from pipeline.history import (  # noqa: E402
    TrainingSummary,
    best_epoch,
    history_frame,
    log_epoch,
)

logger = logging.getLogger(__name__)

# Our activation names are scikit-learn's; Keras spells two of them differently.
ACTIVATIONS = {
    "relu": "relu",
    "tanh": "tanh",
    "logistic": "sigmoid",
    "identity": "linear",
}
# Keras' Adam defaults; the scikit-learn trainer uses the same values.
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7


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


class EpochProgress(keras.callbacks.Callback):
    """One terminal line per epoch, the same format as the scikit-learn trainer."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        log_epoch("keras", {"epoch": epoch + 1, **(logs or {})}, self.epochs)


def set_deterministic(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and ask TensorFlow for deterministic ops."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train(
    train_set: Table,
    validation_set: Table,
    spec: ModelSpec,
    kernel_initializer: KerasInitializer,
    seed: int,
) -> KerasResult:
    """Fit the network with `model.fit`, keeping the best weights when early stopping."""
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
        validation_data=(
            validation_set.features,
            validation_set.labels.astype(np.float32),
        ),
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
    history = history_frame(records)
    epochs_trained = len(history)
    summary = TrainingSummary(
        epochs_trained=epochs_trained,
        best_epoch=(
            best_epoch(history["val_loss"].tolist()) if spec.patience > 0 else epochs_trained
        ),
        stopped_early=epochs_trained < spec.epochs,
        train_seconds=train_seconds,
        samples_per_second=len(train_set.labels) * epochs_trained / train_seconds,
    )
    return KerasResult(model=model, history=history, summary=summary)


def load_model(path: os.PathLike = paths.KERAS_MODEL) -> keras.Model:
    """Load a model this stage saved; `safe_mode` refuses embedded Python code."""
    return keras.saving.load_model(path, safe_mode=True)


def main() -> None:
    params = load_params()
    columns = feature_names(params.generate.n_features)
    train_set = read_table(paths.TRAIN, columns)
    validation_set = read_table(paths.VALIDATION, columns)
    result = train(
        train_set,
        validation_set,
        params.model,
        params.train_keras.kernel_initializer,
        params.seed,
    )
    with atomic_path(paths.KERAS_MODEL) as temporary:
        result.model.save(temporary)
    write_csv(result.history, paths.KERAS_HISTORY)
    write_json(asdict(result.summary), paths.KERAS_SUMMARY)
    logger.info(
        "train_keras: %d epochs in %.1f s (best epoch %d) -> %s",
        result.summary.epochs_trained,
        result.summary.train_seconds,
        result.summary.best_epoch,
        paths.KERAS,
    )


if __name__ == "__main__":
    run_stage(main)
