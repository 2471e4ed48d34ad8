"""Config objects for tests, with every required key filled in, and other stand-ins."""

import http.server
import threading
import time
from typing import Any

import numpy as np

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
