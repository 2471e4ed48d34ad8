"""MLflow models: saved by the training stages, logged by `track` without reloading them.

Each training stage saves its model with the MLflow flavour's own `save_model` into a
zip archive (one file, so it can be replaced atomically). `track` then logs that
archive as it is. This way TensorFlow loads in `train_keras` only, not again in
`track` just to call `mlflow.keras.log_model`.
"""

import importlib
import logging
import os
import shutil
import tempfile
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.files import atomic_path
from pipeline.reproducible import rewrite_archive

# MLflow (about 2 s and 150 MB) is imported in the background during training, when
# the training set is small enough for that memory not to matter.
PRELOAD_MAX_ROWS = 1_000_000
_preloading: threading.Thread | None = None


def quiet_mlflow_import() -> None:
    """No warning from urllib3, as MLflow imports it, that a SOCKS proxy set in the
    environment (ALL_PROXY=socks5://...) would need PySocks: the pipeline's store is
    local or named by MLFLOW_TRACKING_URI, and a proxy that is needed fails loudly."""
    warnings.filterwarnings("ignore", message="SOCKS support in urllib3")


def load_logged_model(uri: str) -> Any:
    """`mlflow.pyfunc.load_model(uri)` (`models:/<model_id>`, `runs:/<run_id>/model`)
    without TensorFlow's start-up lines or Keras' progress bar on each prediction."""
    quiet_mlflow_import()
    # MLflow draws a progress bar for each folder it copies out of the store.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # The saved Keras model holds only Adam's step count and learning rate (it trained
    # outside `model.fit`), and Keras warns that the rest is missing; predicting never
    # needs the optimizer.
    warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
    from mlflow.models import get_model_info

    if "keras" in get_model_info(uri).flavors:
        from pipeline.tensorflow_import import import_tensorflow

        _, keras = import_tensorflow()
        keras.utils.disable_interactive_logging()
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(uri)


def preload_mlflow(flavor: str) -> None:
    """Start importing MLflow (about 2 s) in the background while the model trains."""
    global _preloading
    quiet_mlflow_import()
    _preloading = threading.Thread(
        target=importlib.import_module, args=(f"mlflow.{flavor}",), daemon=True
    )
    _preloading.start()


def save_mlflow_model(
    flavor: str,
    model: Any,
    sample: np.ndarray,
    sample_output: np.ndarray,
    requirements: list[str],
    path: Path,
    **options: Any,
) -> None:
    """`mlflow.<flavor>.save_model(model, ...)` with a signature, zipped to `path`."""
    if _preloading is not None:
        _preloading.join()
    quiet_mlflow_import()
    from mlflow.models import infer_signature

    # MLflow warns that it cannot find pip's version (uv environments have no pip);
    # the requirements below are explicit, so pip's version does not matter.
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
    module = importlib.import_module(f"mlflow.{flavor}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".mlflow-") as work:
        directory = Path(work) / "model"
        module.save_model(
            model,
            str(directory),
            signature=infer_signature(sample, sample_output),
            # Given explicitly: inferring them costs MLflow seconds per model.
            pip_requirements=requirements,
            **options,
        )
        with atomic_path(path) as temporary:
            with zipfile.ZipFile(temporary, "w") as archive:
                for file in sorted(directory.rglob("*")):
                    if file.is_file():
                        archive.write(file, file.relative_to(directory))
            rewrite_archive(temporary)


class _SavedModel:
    """A flavour for `mlflow.models.Model.log` that copies an already saved model."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save_model(self, path: str, mlflow_model: Any, **_: Any) -> None:
        from mlflow.models import Model

        shutil.copytree(self.directory, path)
        saved = Model.load(path)
        # Everything the training stage recorded stays; the identity is this run's.
        for field in ("run_id", "artifact_path", "model_uuid", "model_id"):
            setattr(saved, field, getattr(mlflow_model, field))
        saved.save(str(Path(path) / "MLmodel"))


def log_saved_model(archive: Path, flavor: str) -> str:
    """Log a model archive from `save_mlflow_model` into the active run; its model id."""
    from mlflow.models import Model

    # The archive holds the model's own requirements; MLflow would otherwise mark the
    # model as using this repository's uv project.
    os.environ.setdefault("MLFLOW_UV_AUTO_DETECT", "false")
    with tempfile.TemporaryDirectory() as work:
        directory = Path(work) / "model"
        with zipfile.ZipFile(archive) as opened:
            opened.extractall(directory)
        info = Model.log(
            artifact_path=None, name="model", flavor=_SavedModel(directory), flavor_name=flavor
        )
    return info.model_id
