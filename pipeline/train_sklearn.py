"""Train the scikit-learn MLPClassifier baseline and record its per-epoch history
(`data/train_sklearn/`)."""

import copy
import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import sklearn
import skops
import skops.io
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, log_loss
from sklearn.neural_network import MLPClassifier

from pipeline import paths
from pipeline.config import LearningRateSchedule, ModelSpec, check_batch_size, load_params
from pipeline.errors import run_stage
from pipeline.files import (
    Table,
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
from pipeline.replicates import read_split, replicate_seeds
from pipeline.reproducible import rewrite_archive

logger = logging.getLogger(__name__)

# Below this many rows x epochs x replicates, training in this process is quicker
# than starting worker processes (each imports scikit-learn, about 1 s here).
PARALLEL_MIN_SAMPLE_EPOCHS = 1_000_000
# Every type a saved MLPClassifier holds that skops does not trust by default.
# Loading refuses anything else, so a tampered file cannot run code.
SKOPS_TRUSTED_TYPES = [
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
]


@dataclass(frozen=True)
class SklearnResult:
    model: MLPClassifier
    history: pd.DataFrame
    summary: TrainingSummary


def sklearn_alpha(l2: float, batch_size: int) -> float:
    """scikit-learn's `alpha` that penalizes like Keras' `L2(l2)`.

    Keras adds `l2 * ||W||^2` to each batch loss. scikit-learn adds
    `0.5 * alpha * ||W||^2 / n_batch`, where n_batch is the number of rows in the
    batch (`_backprop` in sklearn/neural_network/_multilayer_perceptron.py). They
    match for full batches when alpha = 2 * l2 * batch_size; the last, partial batch
    of an epoch gets a slightly stronger penalty in scikit-learn.
    """
    return 2.0 * l2 * batch_size


def l2_penalty(classifier: MLPClassifier, l2: float) -> float:
    """Keras' regularization loss for the same weights: l2 * sum ||W||^2."""
    return l2 * sum(float(np.sum(weights.astype(np.float64) ** 2)) for weights in classifier.coefs_)


def keras_only_settings(spec: ModelSpec) -> list[str]:
    """One warning per `model` key that MLPClassifier cannot honour (it has no L1
    penalty and no dropout), so that an unequal comparison is never silent."""
    unsupported = {"l1": "an L1 penalty", "dropout": "dropout"}
    return [
        f"model.{key} = {getattr(spec, key)} has no scikit-learn equivalent "
        f"(MLPClassifier has no {feature}): the baseline trains without it, Keras with it"
        for key, feature in unsupported.items()
        if getattr(spec, key) > 0
    ]


def build_classifier(spec: ModelSpec, schedule: LearningRateSchedule, seed: int) -> MLPClassifier:
    return MLPClassifier(
        hidden_layer_sizes=tuple(spec.hidden_layers),
        activation=spec.activation,
        solver=spec.optimizer,
        alpha=sklearn_alpha(spec.l2, spec.batch_size),
        batch_size=spec.batch_size,
        learning_rate_init=spec.learning_rate,
        learning_rate=schedule,
        momentum=spec.momentum,
        nesterovs_momentum=spec.nesterov,
        beta_1=ADAM_BETA_1,
        beta_2=ADAM_BETA_2,
        epsilon=ADAM_EPSILON,
        shuffle=True,
        # `partial_fit` re-creates its random state from `random_state` on every
        # call, so an integer seed would shuffle every epoch identically. One
        # RandomState object, advanced across calls, gives a fresh seeded order.
        random_state=np.random.RandomState(seed),
    )


def train(
    train_set: Table,
    validation_set: Table,
    spec: ModelSpec,
    schedule: LearningRateSchedule,
    seed: int,
    label: str = "sklearn",
    pruning: EpochPruning | None = None,
) -> SklearnResult:
    """One `partial_fit` per epoch, with the same history and early stopping as Keras,
    stopped early too when a search trial's `pruning` says so.

    Seeded with `RandomState(seed)`, MLPClassifier draws its initial weights and then
    each epoch's order from it: the start that `replicates.initialization: shared`
    gives Keras too (pipeline/replicates.py)."""
    classifier = build_classifier(spec, schedule, seed)
    classes = np.arange(class_count(train_set, validation_set))
    # Balanced class weights, if asked for, as sample weights: scikit-learn's loss is
    # then sum(w * loss) / sum(w) per batch, Keras' sum(w * loss) / batch size.
    weights = row_weights(train_set.labels, len(classes), spec.class_weight)
    records: list[dict[str, float]] = []
    stopping = EarlyStopping(spec.patience)
    best_weights = None
    started = time.perf_counter()
    for epoch in range(1, spec.epochs + 1):
        with warnings.catch_warnings():
            # One epoch per call is the point; "not converged yet" is expected.
            warnings.simplefilter("ignore", ConvergenceWarning)
            classifier.partial_fit(
                train_set.features, train_set.labels, sample_weight=weights, classes=classes
            )
        # In chunks of rows, as the test rows are predicted: the whole train set at once
        # would hold every layer's activations of every row (about 500 MB at 6M rows).
        validation_probabilities = predict_probabilities(classifier, validation_set.features)
        record = {
            "epoch": epoch,
            "loss": float(classifier.loss_curve_[-1]),
            "accuracy": accuracy_in_chunks(classifier, train_set),
            "val_loss": float(
                log_loss(validation_set.labels, validation_probabilities, labels=classes)
                + l2_penalty(classifier, spec.l2)
            ),
            "val_accuracy": float(
                accuracy_score(validation_set.labels, validation_probabilities.argmax(axis=1))
            ),
        }
        records.append(record)
        log_epoch(label, record, spec.epochs)
        if pruning is not None and pruning.should_stop(epoch, [record["val_loss"]]):
            break
        if spec.patience == 0:
            continue
        if stopping.improved(epoch, record["val_loss"]):
            best_weights = copy.deepcopy((classifier.coefs_, classifier.intercepts_))
        elif stopping.should_stop(epoch):
            break
    train_seconds = time.perf_counter() - started
    if best_weights is not None:
        classifier.coefs_, classifier.intercepts_ = best_weights
    # Store the plain seed, not the RandomState object used while training.
    classifier.random_state = seed
    summary = training_summary(
        spec.epochs, len(records), stopping, train_seconds, len(train_set.labels)
    )
    return SklearnResult(model=classifier, history=history_frame(records), summary=summary)


def accuracy_in_chunks(classifier: MLPClassifier, table: Table) -> float:
    """`accuracy_score(labels, classifier.predict(features))`, the same float (right
    predictions / rows), a chunk of rows at a time: no array of every row's prediction
    and none of the sorted copies that `accuracy_score`'s checks make (about 200 MB in
    each worker at 6M train rows)."""
    correct = 0
    for start in range(0, len(table.labels), PREDICTION_CHUNK):
        rows = slice(start, start + PREDICTION_CHUNK)
        correct += int(
            np.count_nonzero(classifier.predict(table.features[rows]) == table.labels[rows])
        )
    return correct / len(table.labels)


def _train_replicate(
    train_set: Table,
    validation_set: Table,
    spec: ModelSpec,
    schedule: LearningRateSchedule,
    seed: int,
    label: str,
) -> SklearnResult:
    """`train` in a worker process, which logs its epochs as the stage does."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    return train(train_set, validation_set, spec, schedule, seed, label)


def train_replicates(
    train_tables: list[Table],
    validation_tables: list[Table],
    spec: ModelSpec,
    schedule: LearningRateSchedule,
    seeds: list[int],
    pruning: EpochPruning | None = None,
) -> list[SklearnResult]:
    """One trained classifier per seed, on one shared table or one per replicate.
    Large trainings run on every core, one replicate per process; small ones, and a
    search trial's (its pruning reports from this process), in this process, where
    starting workers would cost more than the training."""
    count = len(seeds)
    jobs = [
        (
            train_tables[replicate % len(train_tables)],
            validation_tables[replicate % len(validation_tables)],
            spec,
            schedule,
            seed,
            replicate_label("sklearn", replicate, count),
        )
        for replicate, seed in enumerate(seeds)
    ]
    workers = parallel_workers(len(train_tables[0].labels), spec.epochs, count)
    if workers == 1 or pruning is not None:
        return [train(*job, pruning=pruning) for job in jobs]
    return joblib.Parallel(n_jobs=workers)(joblib.delayed(_train_replicate)(*job) for job in jobs)


def parallel_workers(n_rows: int, epochs: int, count: int) -> int:
    """How many processes train the replicates: 1 (this one) for small trainings."""
    if n_rows * epochs * count < PARALLEL_MIN_SAMPLE_EPOCHS:
        return 1
    return min(count, os.cpu_count() or 1)


def memory_mapped(table: Table, folder: Path) -> Table:
    """The table's arrays written to files in `folder` and mapped from there, read-only.

    joblib hands a mapped array to its workers as the file's name, and every process
    then maps the same pages. An array in this process's own memory, joblib would
    copy to a file of its own for the workers: the rows held twice.
    """
    arrays = []
    for values in (table.features, table.labels):
        handle, name = tempfile.mkstemp(dir=folder, suffix=".npy")
        os.close(handle)
        path = Path(name)
        np.save(path, values)
        arrays.append(np.load(path, mmap_mode="r"))
    return Table(arrays[0], arrays[1], table.feature_names)


def save_model(classifier: MLPClassifier, path: os.PathLike) -> None:
    """skops, not pickle: loading it back cannot execute code."""
    with atomic_path(path) as temporary:
        skops.io.dump(classifier, temporary)
        rewrite_archive(temporary)


def predict_probabilities(classifier: MLPClassifier, features: np.ndarray) -> np.ndarray:
    """(n_rows, n_classes) class probabilities, in chunks so that activations stay small."""
    return predict_in_chunks(classifier.predict_proba, features)


def load_model(path: os.PathLike = paths.SKLEARN_MODEL) -> MLPClassifier:
    return skops.io.load(path, trusted=SKOPS_TRUSTED_TYPES)


def save_replicate_models(classifiers: list[MLPClassifier], folder: Path) -> None:
    """Every replicate, `replicate_<r>.skops`."""
    with atomic_directory(folder) as temporary:
        for replicate, classifier in enumerate(classifiers):
            skops.io.dump(classifier, temporary / f"replicate_{replicate}.skops")
            rewrite_archive(temporary / f"replicate_{replicate}.skops")


def main() -> None:
    params = load_params()
    for warning in keras_only_settings(params.model):
        logger.warning("train_sklearn: warning: %s", warning)
    replicates = params.replicates
    seeds = replicate_seeds(params.seed, replicates.count)
    n_classes = len(read_classes())
    train_tables = read_split("train", replicates, params.seed, n_classes)
    columns = train_tables[0].feature_names
    n_rows = len(train_tables[0].labels)
    if n_rows <= PRELOAD_MAX_ROWS:
        preload_mlflow("sklearn")
    check_batch_size(params.model, n_rows)
    check_stage_memory(params, n_rows, len(columns), n_classes, "train_sklearn")
    validation_tables = read_split("validation", replicates, params.seed, n_classes, columns)
    pruning = from_environment("sklearn", params.search_trial)
    with tempfile.TemporaryDirectory(prefix="train_sklearn-") as folder:
        workers = parallel_workers(n_rows, params.model.epochs, replicates.count)
        if workers > 1 and pruning is None:
            # The workers and this process share one copy of the rows.
            train_tables = [memory_mapped(table, Path(folder)) for table in train_tables]
            validation_tables = [memory_mapped(table, Path(folder)) for table in validation_tables]
        started = time.perf_counter()
        results = train_replicates(
            train_tables,
            validation_tables,
            params.model,
            params.train_sklearn.learning_rate_schedule,
            seeds,
            pruning,
        )
        train_seconds = time.perf_counter() - started
        del train_tables, validation_tables
    test_tables = read_split("test", replicates, params.seed, n_classes, columns)
    classifiers = [result.model for result in results]
    probabilities = np.stack(
        [
            predict_probabilities(classifier, test_tables[replicate % len(test_tables)].features)
            for replicate, classifier in enumerate(classifiers)
        ]
    )
    model = classifiers[0]
    save_model(model, paths.SKLEARN_MODEL)
    save_replicate_models(classifiers, paths.SKLEARN_REPLICATE_MODELS)
    write_predictions(probabilities, paths.SKLEARN_PREDICTIONS)
    write_training_records(
        "sklearn",
        [result.history for result in results],
        family_summary([result.summary for result in results], seeds)
        | (pruning.summary() if pruning is not None else {}),
        family_timing([result.summary for result in results], train_seconds, n_rows),
    )
    sample = test_tables[0].features[:5]
    save_mlflow_model(
        "sklearn",
        model,
        sample=sample,
        sample_output=model.predict_proba(sample),
        requirements=[f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}"],
        path=paths.SKLEARN_MLFLOW_MODEL,
        serialization_format="skops",
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
        # Probabilities, like the Keras model, not hard labels.
        pyfunc_predict_fn="predict_proba",
    )
    logger.info(
        "train_sklearn: %d replicate(s), %d epochs each at most, in %.1f s -> %s",
        len(results),
        params.model.epochs,
        train_seconds,
        paths.SKLEARN,
    )


if __name__ == "__main__":
    run_stage(main)
