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
import yaml

from pipeline.errors import PipelineError
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


# What a model this pipeline logged holds: the flavour, and the loader MLflow imports
# for it (`python_function.loader_module`, a module name that MLflow imports as given).
LOADERS = {"keras": "mlflow.keras", "sklearn": "mlflow.sklearn"}
# The python_function keys a logged model of ours has; any other one (`code`,
# `python_model`, `artifacts`, ...) makes MLflow run code from the artifact.
PYFUNC_KEYS = {"loader_module", "env", "python_version", "predict_fn", "model_path", "data"}


def _refuse(uri: str, problem: str) -> PipelineError:
    return PipelineError(
        f"{uri}: {problem}; refusing to load it (not a model this pipeline logged)"
    )


def _inside(directory: Path, relative: object, uri: str) -> Path:
    """A path that the MLmodel file names, which must stay inside the model folder."""
    if not isinstance(relative, str):
        raise _refuse(uri, f"a model path {relative!r} that is not a file name")
    path = (directory / relative).resolve()
    if not path.is_relative_to(directory.resolve()):
        raise _refuse(uri, f"the model path {relative!r} points outside the model")
    return path


def check_logged_model(directory: Path, uri: str) -> str:
    """The flavour of a downloaded model, once it is known to load without running code
    from the artifact, or one `PipelineError` line saying what is wrong.

    MLflow's own guard, `MLFLOW_ALLOW_PICKLE_DESERIALIZATION`, defaults to true in
    MLflow 3.17.2, and the skops trusted-types list it uses comes from the artifact's
    own MLmodel file: neither protects against a tampered model. This checks what the
    artifact says against what this pipeline logs: a Keras model (loaded with
    `safe_mode`, no custom objects) or a skops file holding only the types of
    `train_sklearn.SKOPS_TRUSTED_TYPES`.
    """
    try:
        meta = yaml.safe_load((directory / "MLmodel").read_text(encoding="utf-8"))
        flavors = dict(meta["flavors"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        raise _refuse(uri, "no readable MLmodel file") from None
    flavor = next((name for name in flavors if name in LOADERS), None)
    if flavor is None or set(flavors) != {flavor, "python_function"}:
        raise _refuse(uri, f"flavours {sorted(flavors)}; allowed: keras or sklearn")
    pyfunc, own = dict(flavors["python_function"] or {}), dict(flavors[flavor] or {})
    if pyfunc.get("loader_module") != LOADERS[flavor]:
        raise _refuse(uri, f"loader module {pyfunc.get('loader_module')!r}")
    extra = sorted(set(pyfunc) - PYFUNC_KEYS)
    if extra or own.get("code"):
        raise _refuse(uri, f"code to run with the model ({', '.join(extra) or 'code'})")
    if flavor == "keras":
        if own.get("save_exported_model"):
            raise _refuse(uri, "a TensorFlow SavedModel, which can hold any TensorFlow code")
        data = _inside(directory, own.get("data", "data"), uri)
        if any(path.suffix in (".pkl", ".pickle", ".cloudpickle") for path in data.rglob("*")):
            raise _refuse(uri, "pickled custom objects")
        return flavor
    if own.get("serialization_format") != "skops":
        raise _refuse(
            uri, f"serialization format {own.get('serialization_format')!r}; allowed: 'skops'"
        )
    import skops.io

    from pipeline.train_sklearn import SKOPS_TRUSTED_TYPES

    model_file = _inside(directory, own.get("pickled_model"), uri)
    try:
        untrusted = skops.io.get_untrusted_types(file=model_file)
    except Exception as error:  # skops raises many types for a file that is not its own
        raise _refuse(uri, f"an unreadable skops file ({type(error).__name__})") from None
    unexpected = sorted(set(untrusted) - set(SKOPS_TRUSTED_TYPES))
    if unexpected:
        raise _refuse(uri, f"the skops file holds untrusted types ({', '.join(unexpected[:3])})")
    return flavor


def load_logged_model(uri: str) -> Any:
    """`mlflow.pyfunc.load_model(uri)` (`models:/<model_id>`, `runs:/<run_id>/model`)
    for a model that `check_logged_model` accepts, without TensorFlow's start-up lines
    or Keras' progress bar on each prediction; a hostile model is refused in one line."""
    quiet_mlflow_import()
    # MLflow draws a progress bar for each folder it copies out of the store.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # The saved Keras model holds only Adam's step count and learning rate (it trained
    # outside `model.fit`), and Keras warns that the rest is missing; predicting never
    # needs the optimizer.
    warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
    import mlflow.artifacts
    import mlflow.pyfunc

    # Downloaded once and loaded from this copy: what is checked is what is loaded.
    with tempfile.TemporaryDirectory(prefix="mlflow-model-") as work:
        directory = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=work))
        flavor = check_logged_model(directory, uri)
        if flavor == "keras":
            from pipeline.tensorflow_import import import_tensorflow

            _, keras = import_tensorflow()
            keras.utils.disable_interactive_logging()
        try:
            return mlflow.pyfunc.load_model(str(directory))
        except ValueError as error:
            # Keras' safe_mode: a layer that would deserialize Python code (Lambda).
            raise _refuse(uri, str(error).strip().splitlines()[0]) from None


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
