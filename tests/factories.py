"""Config objects for tests, with every required key filled in, and other stand-ins."""

import atexit
import functools
import http.server
import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import DatasetConfig
from pipeline.files import Table

# The keys that only `dataset.source: file` reads, as the committed params.yaml has them.
FILE_KEYS = {
    "path": "examples/loans.csv",
    "target": "approved",
    "categorical": "one_hot",
    "missing": "impute",
}


def synthetic_config(**fields: Any) -> DatasetConfig:
    """A `dataset` section for generated data with these synthetic settings."""
    return DatasetConfig(source="synthetic", **FILE_KEYS, **fields)


# 30 rows of classes 0, 1, 2 in 15, 10 and 5 rows. Balanced, a row weighs
# n_rows / (n_classes x rows of its class): 30 / 45, 30 / 30 and 30 / 15.
IMBALANCED_COUNTS = (15, 10, 5)
BALANCED_WEIGHTS = np.array([2 / 3, 1.0, 2.0])


def imbalanced_table() -> Table:
    """Random features for `IMBALANCED_COUNTS` rows of each class, classes interleaved."""
    labels = np.repeat(np.arange(3), IMBALANCED_COUNTS).astype(np.int32)
    labels = labels[np.random.default_rng(0).permutation(len(labels))]
    features = np.random.default_rng(1).normal(size=(len(labels), 4)).astype(np.float32)
    return Table(features, labels, ("a", "b", "c", "d"))


class StoreStandIn:
    """A local HTTP server standing in for a tracking server: it counts the requests it
    gets, and either drops each connection or answers MLflow's first request (an empty
    experiment search, a POST) after `delay` seconds."""

    def __init__(self, answer: bool, delay: float = 0.0) -> None:
        requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                requests.append(self.path)
                if not answer:
                    self.close_connection = True
                    return
                time.sleep(delay)
                body = b'{"experiments": []}'
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting, as it should

            def log_message(self, *arguments: object) -> None:
                pass

        self.requests = requests
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "StoreStandIn":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exception: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# Hand-made outputs of every stage before `track`, as small as the stages could write
# them, so that publishing runs in-process in a second, without training.
STAGE_EPOCHS = 3
STAGE_FEATURES = ("a", "b", "c")
# Test metrics by family, as evaluate writes them (metrics.json) for replicate 0 and
# the mean over the replicates.
STAGE_TEST_METRICS = {
    "keras": {"roc_auc": 0.8125, "accuracy": 0.75, "log_loss": 0.5, "f1": 0.625},
    "sklearn": {"roc_auc": 0.875, "accuracy": 0.8125, "log_loss": 0.4375, "f1": 0.75},
}
STAGE_SEEDS = {"keras": (11, 12), "sklearn": (21, 22)}


def stage_loss(family: str, replicate: int, epoch: int) -> float:
    """Replicate `replicate`'s training loss at `epoch`: different for each family,
    replicate and epoch, and exact in the CSV files' 9 significant digits."""
    offset = 0.0 if family == "keras" else 0.5
    return offset + 1.0 - 0.125 * epoch + 0.015625 * replicate


def stage_history(family: str, replicate: int) -> pd.DataFrame:
    epochs = np.arange(1, STAGE_EPOCHS + 1)
    loss = np.array([stage_loss(family, replicate, epoch) for epoch in epochs])
    return pd.DataFrame(
        {
            "epoch": epochs,
            "loss": loss,
            "accuracy": 0.5 + 0.0625 * epochs,
            "val_loss": loss + 0.0625,
            "val_accuracy": 0.5 + 0.03125 * epochs,
        }
    )


def stage_table(n_rows: int, seed: int) -> Table:
    features = np.random.default_rng(seed).normal(size=(n_rows, len(STAGE_FEATURES)))
    labels = (np.arange(n_rows) % 2).astype(np.int32)
    return Table(features.astype(np.float32), labels, STAGE_FEATURES)


def save_model_archives(folder: Path, sample: np.ndarray) -> None:
    """Real MLflow model archives of both flavours, as the training stages save them:
    a scikit-learn MLPClassifier fitted for a few iterations on 8 rows, and an
    untrained Keras network of the same shape."""
    import sklearn
    import skops
    from sklearn.neural_network import MLPClassifier

    from pipeline import paths
    from pipeline.mlflow_models import save_mlflow_model
    from pipeline.tensorflow_import import import_tensorflow
    from pipeline.train_sklearn import SKOPS_TRUSTED_TYPES

    labels = np.arange(len(sample)) % 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged after 5 iterations, as intended
        classifier = MLPClassifier((4,), max_iter=5, random_state=0).fit(sample, labels)
    save_mlflow_model(
        "sklearn",
        classifier,
        sample=sample,
        sample_output=classifier.predict_proba(sample),
        requirements=[f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}"],
        path=folder / paths.SKLEARN_MLFLOW_MODEL,
        serialization_format="skops",
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
        pyfunc_predict_fn="predict_proba",
    )
    tensorflow, keras = import_tensorflow()
    keras.utils.set_random_seed(0)
    network = keras.Sequential(
        [
            keras.Input((sample.shape[1],)),
            keras.layers.Dense(4, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    save_mlflow_model(
        "keras",
        network,
        sample=sample,
        sample_output=network(sample, training=False).numpy(),
        requirements=[f"keras=={keras.__version__}", f"tensorflow=={tensorflow.__version__}"],
        path=folder / paths.KERAS_MLFLOW_MODEL,
    )


def stage_verdict(replicates: int) -> dict[str, Any]:
    """data/compare/verdict.json with the keys compare writes: sklearn wins on F1 (a
    primary metric other than the default), approved."""
    verdict: dict[str, Any] = {
        "winner": "sklearn",
        "significant": True,
        "primary_metric": "f1",
        "replicates": replicates,
        "difference": -0.0625123456,
        "difference_low": -0.1,
        "difference_high": -0.02,
        "p_value": 0.0123456789,
        "test": "sign-flip" if replicates > 1 else "bootstrap",
        "findings": "none",
        "promotion": "approved",
        "winner_score": 0.875123456,
    }
    if replicates > 1:
        verdict["p_keras_better"] = 0.0312345678
    return verdict


def write_stage_outputs(folder: Path, replicates: int = 2) -> None:
    """Every file `track` reads, in `folder`, as the stages before it write them, for
    `replicates` replicates of `STAGE_EPOCHS` epochs per family."""
    from pipeline import paths
    from pipeline.files import write_csv, write_json, write_table, write_text
    from pipeline.history import mean_history, replicate_histories

    tables = {
        path: stage_table(8, seed)
        for seed, path in enumerate((paths.TRAIN, paths.VALIDATION, paths.TEST))
    }
    for path, table in tables.items():
        write_table(table, folder / path)
    write_json({"target": "label", "classes": ["no", "yes"]}, folder / paths.CLASSES)
    write_json(
        {"features": list(STAGE_FEATURES), "scaling": "standard"}, folder / paths.PREPROCESSING
    )
    write_text("a fitted preprocessor\n", folder / paths.PREPROCESSOR)
    for family in paths.MODEL_FAMILIES:
        histories = [stage_history(family, replicate) for replicate in range(replicates)]
        write_csv(replicate_histories(histories), folder / paths.REPLICATE_HISTORIES[family])
        write_csv(mean_history(histories), folder / paths.HISTORIES[family])
        summaries = [
            {
                "replicate": replicate,
                "seed": STAGE_SEEDS[family][replicate % 2] + 10 * (replicate // 2),
                "epochs_trained": STAGE_EPOCHS,
                "best_epoch": STAGE_EPOCHS - replicate % 2,
                "stopped_early": False,
            }
            for replicate in range(replicates)
        ]
        write_json(
            {
                "replicate_count": replicates,
                "epochs_trained": STAGE_EPOCHS,
                "best_epoch": STAGE_EPOCHS,
                "stopped_early": False,
                "replicates": summaries,
            },
            folder / paths.SUMMARIES[family],
        )
        write_json(
            {"train_seconds": 2.5, "samples_per_second": 9.6}, folder / paths.TIMINGS[family]
        )
    write_json(STAGE_TEST_METRICS, folder / paths.METRICS)
    write_csv(
        pd.DataFrame(
            [
                {"family": family, "replicate": replicate}
                | {name: value - 0.03125 * replicate for name, value in metrics.items()}
                for family, metrics in STAGE_TEST_METRICS.items()
                for replicate in range(replicates)
            ]
        ),
        folder / paths.REPLICATE_METRICS,
    )
    write_text("fake png\n", folder / paths.FIGURES / "roc.png")
    write_text("fake png\n", folder / paths.FIGURES / "loss.png")
    write_json(stage_verdict(replicates), folder / paths.VERDICT)
    write_text("**sklearn** wins on F1.\n", folder / paths.DESCRIPTION)
    write_text("# Comparison\n\nsklearn wins.\n", folder / paths.REPORT_MARKDOWN)
    write_text("<h1>Comparison</h1>\n", folder / paths.REPORT_HTML)
    save_model_archives(folder, tables[paths.TRAIN].features)


@functools.cache
def built_stage_outputs(replicates: int) -> Path:
    """`write_stage_outputs` in a folder of its own, built once per process: mutmut
    runs each mutant's tests in a fork of the process that ran them first, which so
    keeps the folder instead of saving the models again. Copy it, never change it."""
    folder = Path(tempfile.mkdtemp(prefix=f"stage-outputs-{replicates}-"))
    write_stage_outputs(folder, replicates)
    builder = os.getpid()
    # Removed by the process that built it, not by its forks as they exit.
    atexit.register(lambda: os.getpid() == builder and shutil.rmtree(folder, True))
    return folder
