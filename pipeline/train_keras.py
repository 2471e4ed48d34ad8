"""Train the Keras MLP's replicates together, record their per-epoch histories and
predict the test set (`data/train_keras/`)."""

import gc
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.config import (
    Activation,
    Initialization,
    KerasInitializer,
    KerasTrainer,
    ModelSpec,
    check_batch_size,
    load_params,
)
from pipeline.errors import run_stage
from pipeline.files import (
    TENSOR_ALIGNMENT,
    Table,
    aligned_empty,
    atomic_directory,
    atomic_path,
    read_classes,
    write_predictions,
)
from pipeline.history import (
    ADAM_BETA_1,
    ADAM_BETA_2,
    ADAM_EPSILON,
    PREDICTION_CHUNK,
    EarlyStopping,
    TrainingSummary,
    class_count,
    family_summary,
    family_timing,
    history_frame,
    log_epoch,
    predict_in_chunks,
    replicate_label,
    row_weights,
    training_summary,
    write_training_records,
)
from pipeline.memory import check_stage_memory
from pipeline.mlflow_models import PRELOAD_MAX_ROWS, preload_mlflow, save_mlflow_model
from pipeline.pruning import EpochPruning, from_environment
from pipeline.replicates import (
    layer_units,
    own_epoch_orders,
    read_split,
    replicate_seeds,
    shared_start,
)
from pipeline.reproducible import rewrite_archive
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
    return labels.astype(np.float32)[..., None] if binary else labels.astype(np.int32)


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


def as_tensor(values: np.ndarray | tf.Tensor) -> tf.Tensor:
    """A tensor over the array's own memory where TensorFlow can use it as it is (C
    order, aligned, writable: `files.aligned_empty`), else a copy. `tf.constant` holds
    a temporary copy besides its own: three times a large array at once."""
    if (
        isinstance(values, np.ndarray)
        and values.flags.c_contiguous
        and values.flags.writeable
        and values.ctypes.data % TENSOR_ALIGNMENT == 0
    ):
        return tf.experimental.dlpack.from_dlpack(values.__dlpack__())
    return tf.constant(values)


def regularization_loss(model: keras.Model) -> tf.Tensor:
    """The penalty Keras adds to the loss (l2 * sum ||W||^2), zero without one."""
    return tf.add_n(model.losses) if model.losses else tf.constant(0.0)


def dense_layers(model: keras.Model) -> list[keras.layers.Dense]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


# n_rows -> one permutation of the rows per epoch.
OrderStream = Callable[[int], Iterator[np.ndarray]]


def initial_models(
    n_features: int,
    spec: ModelSpec,
    kernel_initializer: KerasInitializer,
    n_classes: int,
    seeds: list[int],
    initialization: Initialization,
) -> tuple[list[keras.Sequential], list[OrderStream]]:
    """One plain Keras model per replicate at its starting weights, and for each
    replicate the stream of its epoch orders (called with the number of rows).

    `library`: Keras' own initializer seeded with the replicate's seed (zero biases)
    and Keras' own shuffles. `shared`: the weights and shuffles scikit-learn's
    MLPClassifier draws from the same seed, so both libraries start alike.
    """
    models, orders = [], []
    for seed in seeds:
        set_deterministic(seed)
        model = build_model(n_features, spec, kernel_initializer, n_classes)
        if initialization == "shared":
            units = layer_units(n_features, spec.hidden_layers, n_classes)
            start = shared_start(seed, units, spec.activation)
            model.set_weights(start.weights)
            orders.append(start.epoch_orders)
        else:
            orders.append(partial(own_epoch_orders, seed))
        models.append(model)
    return models, orders


class StackedNetwork:
    """K replicates of one network as stacked weights: each layer's kernels of all
    replicates as one (K, fan_in, fan_out) variable, its biases as (K, fan_out).

    One batched matrix product then computes a layer for all K replicates: K small
    networks cost about what one does, where K separate ones would cost K times.
    """

    def __init__(self, models: list[keras.Model], activation: Activation, dropout: float = 0.0):
        self.count = len(models)
        self.binary = models[0].output_shape[-1] == 1
        layers = [dense_layers(model) for model in models]
        self.kernels = [
            keras.Variable(np.stack([replicate[index].kernel.numpy() for replicate in layers]))
            for index in range(len(layers[0]))
        ]
        self.biases = [
            keras.Variable(np.stack([replicate[index].bias.numpy() for replicate in layers]))
            for index in range(len(layers[0]))
        ]
        self.variables = [
            item for pair in zip(self.kernels, self.biases, strict=True) for item in pair
        ]
        self.hidden_activation = keras.activations.get(ACTIVATIONS[activation])
        # Seeded by keras.utils.set_random_seed; each replicate's masks are its slice.
        self.dropout = keras.layers.Dropout(dropout) if dropout > 0 else None
        self._inference = tf.function(lambda features: self.forward(features, training=False))

    def forward(self, features: tf.Tensor, training: bool) -> tf.Tensor:
        """(K or 1, rows, F) -> (K, rows, outputs): a_j = f(sum_i w_ij x_i + b_j)."""
        outputs = features
        last = len(self.kernels) - 1
        for index, (kernel, bias) in enumerate(zip(self.kernels, self.biases, strict=True)):
            # (1, rows, F) broadcasts against (K, F, U): shared rows are never copied.
            pre_activation = tf.matmul(outputs, kernel) + bias[:, None, :]
            if index == last:
                # Keras' own activations: its losses then work from the logits, as
                # for a Dense layer's output in model.fit.
                if self.binary:
                    return keras.activations.sigmoid(pre_activation)
                return keras.activations.softmax(pre_activation)
            outputs = self.hidden_activation(pre_activation)
            if self.dropout is not None and training:
                outputs = self.dropout(outputs, training=True)
        raise AssertionError("a network has at least its output layer")

    def probabilities(self, table: "StackedTable") -> np.ndarray:
        """(K, rows, n_classes) class probabilities of every replicate on its rows,
        in chunks of rows; for two classes the columns [1 - P(1), P(1)]."""
        features = table.features if table.per_replicate else table.features[None]
        n_rows = int(features.shape[1])
        outputs = np.concatenate(
            [
                self._inference(features[:, start : start + PREDICTION_CHUNK]).numpy()
                for start in range(0, n_rows, PREDICTION_CHUNK)
            ],
            axis=1,
        )
        return np.concatenate([1 - outputs, outputs], axis=2) if self.binary else outputs

    def replicate_weights(self, replicate: int) -> list[np.ndarray]:
        """Replicate r's weights in Keras' `get_weights()` order."""
        return [variable.numpy()[replicate] for variable in self.variables]


class StackedLoop:
    """Training a `StackedNetwork`: every replicate's epoch in one compiled program.

    Replicates stay independent: each has its own rows, loss and gradient (the
    gradient of the summed loss with respect to replicate r's weights is that of r's
    own loss), and Adam and SGD update every weight on its own. The training set
    stays on the device; each epoch gathers batches through permutations, so
    shuffling copies no data. Per epoch it reports what `model.fit` reports: the
    mean batch loss, penalty included, measured on each batch before its update.
    """

    def __init__(
        self,
        network: StackedNetwork,
        spec: ModelSpec,
        train_data: "StackedTable",
        weights: np.ndarray,
        jit_compile: bool,
    ) -> None:
        self.network = network
        self.count = network.count
        self.binary = network.binary
        self.l1, self.l2 = spec.l1, spec.l2
        # (n, F) rows shared by every replicate, or (K, n, F): each its own split.
        self.features = train_data.features
        self.per_replicate = train_data.per_replicate
        self.targets = tf.constant(keras_targets(train_data.labels, self.binary))
        self.weights = tf.constant(weights.astype(np.float32, copy=False))
        self.batch_size = spec.batch_size
        self.n_rows = len(train_data.labels.T)
        self.full_batches = self.n_rows // spec.batch_size
        self.optimizer = build_optimizer(spec)
        self.optimizer.build(network.variables)
        # Full batches share one shape: one compilation for all of them. The last,
        # partial batch (rows % batch_size) has its own, compiled once.
        self._full_epoch = tf.function(self._run_full_batches, jit_compile=jit_compile)
        self._last_batch = tf.function(self._step, jit_compile=jit_compile)
        self._evaluate = tf.function(self._evaluate_rows)

    def penalties(self) -> tf.Tensor:
        """(K,): each replicate's l1 * sum |W| + l2 * sum W^2 over its kernels."""
        total = tf.zeros((self.count,))
        for kernel in self.network.kernels:
            if self.l1 > 0:
                total += self.l1 * tf.reduce_sum(tf.abs(kernel), axis=(1, 2))
            if self.l2 > 0:
                total += self.l2 * tf.reduce_sum(tf.square(kernel), axis=(1, 2))
        return total

    def row_losses(self, targets: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
        """(K, rows) cross-entropy, as Keras' compiled loss computes it per row."""
        if self.binary:
            return keras.losses.binary_crossentropy(targets, probabilities)
        return keras.losses.sparse_categorical_crossentropy(targets, probabilities)

    def _gather(self, values: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
        return tf.gather(values, rows, batch_dims=1 if self.per_replicate else 0)

    def _step(self, rows: tf.Tensor) -> tf.Tensor:
        """One gradient step of every replicate on its (K, batch) rows: (K,) loss * rows."""
        features = self._gather(self.features, rows)
        targets = self._gather(self.targets, rows)
        weights = self._gather(self.weights, rows)
        count = tf.cast(tf.shape(rows)[1], tf.float32)
        with tf.GradientTape() as tape:
            probabilities = self.network.forward(features, training=True)
            # Keras' "sum over batch size": sum(w * loss) / rows in the batch.
            losses = tf.reduce_sum(weights * self.row_losses(targets, probabilities), axis=1)
            losses = losses / count + self.penalties()
            total = tf.reduce_sum(losses)
        variables = self.network.variables
        gradients = tape.gradient(total, variables)
        self.optimizer.apply(gradients, variables)
        return losses * count

    def _run_full_batches(self, batches: tf.Tensor) -> tf.Tensor:
        """Every full batch, (batches, K, batch_size) rows: one step each."""
        total = tf.zeros((self.count,))
        for index in tf.range(self.full_batches):
            total += self._step(batches[index])
        return total

    def run_epoch(self, orders: list[Iterator[np.ndarray]]) -> np.ndarray:
        """Train every replicate on each of its rows once, in the next order of its
        stream; return each replicate's mean batch loss."""
        split = self.full_batches * self.batch_size
        # The batches as the compiled epoch reads them, batch b of replicate r at [b, r],
        # filled one replicate's order at a time and handed to TensorFlow as they are:
        # no (K, n) array of all the orders, no transposed copy and no tensor copy is
        # held besides (each 140 MB at 6M rows and K = 6).
        full = aligned_empty((self.full_batches, self.count, self.batch_size), np.int32)
        last = np.empty((self.count, self.n_rows - split), dtype=np.int32)
        for replicate, stream in enumerate(orders):
            order = next(stream)
            full[:, replicate] = order[:split].reshape(self.full_batches, self.batch_size)
            last[replicate] = order[split:]
        del order
        total = np.zeros(self.count)
        if self.full_batches:
            total += self._full_epoch(as_tensor(full)).numpy()
        if split < self.n_rows:
            total += self._last_batch(tf.constant(last)).numpy()
        return total / self.n_rows

    def _evaluate_rows(self, features: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """(K,) summed loss and correct predictions of every replicate on these rows."""
        probabilities = self.network.forward(features, training=False)
        labels = tf.broadcast_to(labels, tf.shape(probabilities)[:2])
        targets = labels[..., None] if self.binary else labels
        losses = tf.reduce_sum(self.row_losses(targets, probabilities), axis=-1)
        if self.binary:
            predicted = tf.cast(probabilities[..., 0] > 0.5, labels.dtype)
        else:
            predicted = tf.argmax(probabilities, axis=-1, output_type=labels.dtype)
        correct = tf.reduce_sum(tf.cast(predicted == labels, tf.float32), axis=-1)
        return losses, correct

    def loss_and_accuracy(self, table: "StackedTable") -> tuple[np.ndarray, np.ndarray]:
        """(K,) loss (penalty included) and accuracy of every replicate on its rows,
        `PREDICTION_CHUNK` rows at a time: K replicates' activations of a whole large
        split would take K times its memory."""
        features = table.features if table.per_replicate else table.features[None]
        labels = keras_targets(table.labels, self.binary).reshape(table.labels.shape)
        labels = labels if table.per_replicate else labels[None]
        n_rows = labels.shape[1]
        loss_sum, correct = np.zeros(self.count), np.zeros(self.count)
        for start in range(0, n_rows, PREDICTION_CHUNK):
            rows = slice(start, start + PREDICTION_CHUNK)
            chunk_loss, chunk_correct = self._evaluate(
                features[:, rows], tf.constant(labels[:, rows])
            )
            loss_sum += chunk_loss.numpy()
            correct += chunk_correct.numpy()
        return loss_sum / n_rows + self.penalties().numpy(), correct / n_rows


@dataclass(frozen=True)
class StackedTable:
    """Rows for every replicate: one shared (n, F) table, or one split per replicate
    stacked as (K, n, F) features and (K, n) labels."""

    features: tf.Tensor | np.ndarray
    labels: np.ndarray

    @property
    def per_replicate(self) -> bool:
        return len(self.features.shape) == 3


def stack_tables(tables: list[Table]) -> StackedTable:
    if len(tables) == 1:
        return StackedTable(as_tensor(tables[0].features), tables[0].labels)
    return StackedTable(
        tf.constant(np.stack([table.features for table in tables])),
        np.stack([table.labels for table in tables]),
    )


def forward_function(model: keras.Model):
    """A compiled inference pass, traced once per input shape."""
    return tf.function(lambda features: model(features, training=False))


def predict_probabilities(model: keras.Model, features: np.ndarray, forward=None) -> np.ndarray:
    """(n_rows, n_classes) class probabilities, computed in chunks; for two classes
    the sigmoid's P(1) becomes the columns [1 - P(1), P(1)]."""
    forward = forward or forward_function(model)
    outputs = predict_in_chunks(lambda chunk: forward(tf.constant(chunk)).numpy(), features)
    return np.hstack([1 - outputs, outputs]) if outputs.shape[1] == 1 else outputs


class ReplicateRecorder:
    """Each replicate's history and early stopping, epoch by epoch."""

    def __init__(self, count: int, spec: ModelSpec) -> None:
        self.spec = spec
        self.records: list[list[dict[str, float]]] = [[] for _ in range(count)]
        self.stopping = [EarlyStopping(spec.patience) for _ in range(count)]
        self.active = [True] * count
        self.best_weights: list[list[np.ndarray] | None] = [None] * count

    def record(
        self, replicate: int, record: dict[str, float], weights: Callable[[], list[np.ndarray]]
    ) -> None:
        self.records[replicate].append(record)
        if self.spec.patience == 0:
            return
        stopping = self.stopping[replicate]
        if stopping.improved(int(record["epoch"]), record["val_loss"]):
            self.best_weights[replicate] = weights()
        elif stopping.should_stop(int(record["epoch"])):
            self.active[replicate] = False

    def results(
        self, models: list[keras.Model], train_seconds: float, n_rows: int
    ) -> list[KerasResult]:
        """The replicates' models at their best epoch, with histories and summaries."""
        results = []
        for model, records, stopping, best in zip(
            models, self.records, self.stopping, self.best_weights, strict=True
        ):
            if best is not None:
                model.set_weights(best)
            summary = training_summary(
                self.spec.epochs, len(records), stopping, train_seconds, n_rows
            )
            results.append(KerasResult(model, history_frame(records), summary))
        return results


def train_stacked(
    train_tables: list[Table],
    validation_tables: list[Table],
    spec: ModelSpec,
    kernel_initializer: KerasInitializer,
    seeds: list[int],
    initialization: Initialization = "library",
    jit_compile: bool | None = None,
    pruning: EpochPruning | None = None,
) -> list[KerasResult]:
    """Train K replicates with `StackedLoop`: one table shared by all of them, or one
    per replicate. XLA by default when the training repays its compile. A search
    trial's `pruning` hears the replicates' mean validation loss after each epoch."""
    n_classes = class_count(*train_tables, *validation_tables)
    n_rows = len(train_tables[0].labels)
    n_features = train_tables[0].features.shape[1]
    models, order_streams = initial_models(
        n_features, spec, kernel_initializer, n_classes, seeds, initialization
    )
    if jit_compile is None:
        jit_compile = n_rows * spec.epochs * len(seeds) >= XLA_MIN_SAMPLE_EPOCHS
    train_data = stack_tables(train_tables)
    validation_data = stack_tables(validation_tables)
    weights = np.stack(
        [row_weights(table.labels, n_classes, spec.class_weight) for table in train_tables]
    )
    # Seeds the dropout masks; every replicate's masks are its own slice of them.
    set_deterministic(seeds[0])
    network = StackedNetwork(models, spec.activation, spec.dropout)
    loop = StackedLoop(
        network,
        spec,
        train_data,
        weights if train_data.per_replicate else weights[0],
        jit_compile,
    )
    orders = [stream(n_rows) for stream in order_streams]
    recorder = ReplicateRecorder(len(seeds), spec)
    started = time.perf_counter()
    for epoch in range(1, spec.epochs + 1):
        if not any(recorder.active):
            break
        losses = loop.run_epoch(orders)
        # Train accuracy after the epoch, as scikit-learn's trainer measures it.
        _, accuracies = loop.loss_and_accuracy(train_data)
        val_losses, val_accuracies = loop.loss_and_accuracy(validation_data)
        for replicate in range(len(seeds)):
            if not recorder.active[replicate]:
                continue
            record = {
                "epoch": epoch,
                "loss": float(losses[replicate]),
                "accuracy": float(accuracies[replicate]),
                "val_loss": float(val_losses[replicate]),
                "val_accuracy": float(val_accuracies[replicate]),
            }
            recorder.record(replicate, record, partial(network.replicate_weights, replicate))
            log_epoch(replicate_label("keras", replicate, len(seeds)), record, spec.epochs)
        # The replicates that trained this epoch (early stopping may have ended some).
        trained = [rows[-1]["val_loss"] for rows in recorder.records if rows[-1]["epoch"] == epoch]
        if pruning is not None and pruning.should_stop(epoch, trained):
            break
    train_seconds = time.perf_counter() - started
    for replicate, model in enumerate(models):
        model.set_weights(network.replicate_weights(replicate))
        # The stacked loop trained with its own optimizer. Built here, each model's
        # own optimizer is saved with its slots, so that loading a `.keras` file does
        # not warn that the saved optimizer lacks them.
        model.optimizer.build(model.trainable_variables)
    return recorder.results(models, train_seconds, n_rows)


def model_loss_and_accuracy(model: keras.Model, table: Table) -> tuple[float, float]:
    """The compiled loss (penalty included) and accuracy of `model` on these rows."""
    binary = model.output_shape[-1] == 1
    loss, accuracy = model.evaluate(
        table.features, keras_targets(table.labels, binary), batch_size=65536, verbose=0
    )
    return float(loss), float(accuracy)


def train_fit(
    train_tables: list[Table],
    validation_tables: list[Table],
    spec: ModelSpec,
    kernel_initializer: KerasInitializer,
    seeds: list[int],
    initialization: Initialization = "library",
    pruning: EpochPruning | None = None,
) -> list[KerasResult]:
    """Train each replicate with Keras' own `model.fit`, one call per epoch on the
    same shuffled orders as the stacked loop: the reference that loop is held to."""
    n_classes = class_count(*train_tables, *validation_tables)
    models, order_streams = initial_models(
        train_tables[0].features.shape[1],
        spec,
        kernel_initializer,
        n_classes,
        seeds,
        initialization,
    )
    results = []
    for replicate, (model, stream) in enumerate(zip(models, order_streams, strict=True)):
        train_set = train_tables[replicate % len(train_tables)]
        validation_set = validation_tables[replicate % len(validation_tables)]
        features = np.asarray(train_set.features)
        targets = keras_targets(train_set.labels, binary=n_classes == 2)
        weights = row_weights(train_set.labels, n_classes, spec.class_weight)
        orders = stream(len(targets))
        recorder = ReplicateRecorder(1, spec)
        started = time.perf_counter()
        for epoch in range(1, spec.epochs + 1):
            if not recorder.active[0]:
                break
            order = next(orders)
            logs = model.fit(
                features[order],
                targets[order],
                sample_weight=weights[order],
                batch_size=spec.batch_size,
                epochs=1,
                shuffle=False,
                verbose=0,
            ).history
            _, accuracy = model_loss_and_accuracy(model, train_set)
            val_loss, val_accuracy = model_loss_and_accuracy(model, validation_set)
            record = {
                "epoch": epoch,
                "loss": float(logs["loss"][-1]),
                "accuracy": accuracy,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
            }
            recorder.record(0, record, model.get_weights)
            log_epoch(replicate_label("keras", replicate, len(seeds)), record, spec.epochs)
            if pruning is not None and pruning.should_stop(epoch, [val_loss]):
                break
        results += recorder.results([model], time.perf_counter() - started, len(targets))
    return results


TRAINERS: dict[KerasTrainer, Callable[..., list[KerasResult]]] = {
    "auto": train_stacked,
    "xla": partial(train_stacked, jit_compile=True),
    "graph": partial(train_stacked, jit_compile=False),
    "fit": train_fit,
}


def train_replicates(
    train_tables: list[Table],
    validation_tables: list[Table],
    spec: ModelSpec,
    kernel_initializer: KerasInitializer,
    seeds: list[int],
    initialization: Initialization = "library",
    trainer: KerasTrainer = "auto",
    pruning: EpochPruning | None = None,
) -> list[KerasResult]:
    """One trained model per seed. `train_tables` holds one table that every
    replicate trains on, or one per replicate (re-drawn splits); likewise
    `validation_tables`."""
    return TRAINERS[trainer](
        train_tables,
        validation_tables,
        spec,
        kernel_initializer,
        seeds,
        initialization,
        pruning=pruning,
    )


def train(
    train_set: Table,
    validation_set: Table,
    spec: ModelSpec,
    kernel_initializer: KerasInitializer,
    seed: int,
    trainer: KerasTrainer = "auto",
    initialization: Initialization = "library",
) -> KerasResult:
    """One replicate: a single model trained with this seed."""
    (result,) = train_replicates(
        [train_set], [validation_set], spec, kernel_initializer, [seed], initialization, trainer
    )
    return result


def load_model(path: os.PathLike = paths.KERAS_MODEL) -> keras.Model:
    """Load a model this stage saved; `safe_mode` refuses embedded Python code."""
    return keras.saving.load_model(path, safe_mode=True)


def save_model(model: keras.Model, path: Path) -> None:
    with atomic_path(path) as temporary:
        model.save(temporary)
        rewrite_archive(temporary)


def to_device(table: Table) -> Table:
    """The table with its features as a TensorFlow tensor, over the same memory where
    it can be (`as_tensor`): the compiled loop uses the tensor as it is."""
    return replace(table, features=as_tensor(table.features))


def save_replicate_models(models: list[keras.Model], folder: Path) -> None:
    """Every replicate as a plain Keras model, `replicate_<r>.keras`."""
    with atomic_directory(folder) as temporary:
        for replicate, model in enumerate(models):
            model.save(temporary / f"replicate_{replicate}.keras")
            rewrite_archive(temporary / f"replicate_{replicate}.keras")


def main() -> None:
    params = load_params()
    replicates = params.replicates
    seeds = replicate_seeds(params.seed, replicates.count)
    n_classes = len(read_classes())
    train_tables = read_split("train", replicates, params.seed, n_classes)
    columns = train_tables[0].feature_names
    n_rows = len(train_tables[0].labels)
    on_device = params.train_keras.trainer != "fit"
    if on_device:
        # Held once, on the device, instead of once there and once in NumPy.
        train_tables = [to_device(table) for table in train_tables]
    if n_rows <= PRELOAD_MAX_ROWS:
        preload_mlflow("keras")
    check_batch_size(params.model, n_rows)
    check_stage_memory(params, n_rows, len(columns), n_classes, "train_keras")
    validation_tables = read_split("validation", replicates, params.seed, n_classes, columns)
    if on_device:
        validation_tables = [to_device(table) for table in validation_tables]
    pruning = from_environment("keras", params.search_trial)
    started = time.perf_counter()
    results = train_replicates(
        train_tables,
        validation_tables,
        params.model,
        params.train_keras.kernel_initializer,
        seeds,
        replicates.initialization,
        params.train_keras.trainer,
        pruning,
    )
    train_seconds = time.perf_counter() - started
    del train_tables, validation_tables
    # The compiled functions and the loop that holds the rows refer to each other: only
    # the cycle collector frees the train and validation tensors, before the test rows
    # come in.
    gc.collect()
    # The test set is predicted here, while TensorFlow is loaded, so that no other
    # stage has to load it (about 6 s per process).
    test_tables = read_split("test", replicates, params.seed, n_classes, columns)
    models = [result.model for result in results]
    probabilities = StackedNetwork(models, params.model.activation).probabilities(
        stack_tables(test_tables)
    )
    model = models[0]
    save_model(model, paths.KERAS_MODEL)
    save_replicate_models(models, paths.KERAS_REPLICATE_MODELS)
    write_predictions(probabilities, paths.KERAS_PREDICTIONS)
    write_training_records(
        "keras",
        [result.history for result in results],
        family_summary([result.summary for result in results], seeds)
        | (pruning.summary() if pruning is not None else {}),
        family_timing([result.summary for result in results], train_seconds, n_rows),
    )
    sample = test_tables[0].features[:5]
    save_mlflow_model(
        "keras",
        model,
        sample=sample,
        sample_output=model(sample, training=False).numpy(),
        requirements=[f"keras=={keras.__version__}", f"tensorflow=={tf.__version__}"],
        path=paths.KERAS_MLFLOW_MODEL,
    )
    logger.info(
        "train_keras: %d replicate(s), %d epochs each at most, in %.1f s -> %s",
        len(results),
        params.model.epochs,
        train_seconds,
        paths.KERAS,
    )


if __name__ == "__main__":
    run_stage(main)
