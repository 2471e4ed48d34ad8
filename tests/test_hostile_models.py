"""A tampered or hostile model in an MLflow store is refused by `load_logged_model`
before anything in it runs; MLflow 3.17.2 on its own loads it."""

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.neural_network import MLPClassifier

from pipeline.errors import PipelineError
from pipeline.mlflow_models import check_logged_model, save_mlflow_model
from pipeline.train_sklearn import SKOPS_TRUSTED_TYPES

ROOT = Path(__file__).resolve().parents[1]


class WritesMarker:
    """Unpickling this creates a file: the proof that loading ran the artifact's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def sklearn_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MLflow model folder as train_sklearn saves it, of a tiny classifier."""
    work = tmp_path_factory.mktemp("model")
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 3)).astype(np.float32)
    labels = (features[:, 0] > 0).astype(np.int32)
    classifier = MLPClassifier(hidden_layer_sizes=(4,), max_iter=20, random_state=0)
    classifier.fit(features, labels)
    archive = work / "mlflow_model.zip"
    save_mlflow_model(
        "sklearn",
        classifier,
        sample=features[:2],
        sample_output=classifier.predict_proba(features[:2]),
        requirements=["scikit-learn"],
        path=archive,
        serialization_format="skops",
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
        pyfunc_predict_fn="predict_proba",
    )
    directory = work / "model"
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(directory)
    return directory


def copy_model(source: Path, destination: Path) -> Path:
    import shutil

    shutil.copytree(source, destination)
    return destination


def edit_mlmodel(directory: Path, edit) -> None:
    meta = yaml.safe_load((directory / "MLmodel").read_text())
    edit(meta["flavors"])
    (directory / "MLmodel").write_text(yaml.safe_dump(meta))


def make_pickled(directory: Path, marker: Path) -> None:
    """The folder's skops model replaced by a pickle that runs code when loaded, and
    the MLmodel file saying so, as an attacker with write access to the store would."""
    (directory / "model.skops").unlink()
    (directory / "model.pkl").write_bytes(pickle.dumps(WritesMarker(marker)))

    def to_pickle(flavors: dict) -> None:
        flavors["sklearn"] |= {"pickled_model": "model.pkl", "serialization_format": "pickle"}
        flavors["python_function"]["model_path"] = "model.pkl"

    edit_mlmodel(directory, to_pickle)


def test_the_pipeline_s_own_model_passes(sklearn_model: Path) -> None:
    assert check_logged_model(sklearn_model, "runs:/x/model") == "sklearn"


def test_a_pickle_is_refused_before_it_is_read(sklearn_model: Path, tmp_path: Path) -> None:
    directory = copy_model(sklearn_model, tmp_path / "model")
    marker = tmp_path / "code-ran"
    make_pickled(directory, marker)

    with pytest.raises(PipelineError) as caught:
        check_logged_model(directory, "runs:/x/model")

    assert str(caught.value) == (
        "runs:/x/model: serialization format 'pickle'; allowed: 'skops'; refusing to load "
        "it (not a model this pipeline logged)"
    )
    assert not marker.exists()


def test_a_skops_file_with_a_function_is_refused_even_if_mlmodel_trusts_it(
    sklearn_model: Path, tmp_path: Path
) -> None:
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    directory = copy_model(sklearn_model, tmp_path / "model")
    skops.io.dump(FunctionTransformer(func=os.system), directory / "model.skops")
    hostile = skops.io.get_untrusted_types(file=directory / "model.skops")
    # The MLmodel file's own list, which MLflow passes to skops, trusts everything in it.
    edit_mlmodel(directory, lambda flavors: flavors["sklearn"].update(skops_trusted_types=hostile))

    with pytest.raises(PipelineError, match=r"the skops file holds untrusted types \(.*system"):
        check_logged_model(directory, "runs:/x/model")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda flavors: flavors["python_function"].update(loader_module="os"),
            "loader module 'os'",
        ),
        (
            lambda flavors: flavors["python_function"].update(code="code"),
            r"code to run with the model \(code\)",
        ),
        (
            lambda flavors: flavors.update(
                python_function={
                    "loader_module": "mlflow.pyfunc.model",
                    "python_model": "python_model.pkl",
                }
            ),
            "loader module 'mlflow.pyfunc.model'",
        ),
        (
            lambda flavors: flavors["sklearn"].update(pickled_model="../../etc/passwd"),
            "points outside the model",
        ),
        (lambda flavors: flavors.pop("sklearn"), r"flavours \['python_function'\]"),
    ],
    ids=["loader module", "code path", "python model", "path outside", "no flavour"],
)
def test_an_edited_mlmodel_is_refused(
    sklearn_model: Path, tmp_path: Path, edit, message: str
) -> None:
    directory = copy_model(sklearn_model, tmp_path / "model")
    edit_mlmodel(directory, edit)

    with pytest.raises(PipelineError, match=message) as caught:
        check_logged_model(directory, "runs:/x/model")
    assert "\n" not in str(caught.value)


# The README's way to load a logged model, then MLflow's own.
LOAD = """
import sys
from pipeline.errors import PipelineError
from pipeline.mlflow_models import load_logged_model

try:
    load_logged_model(sys.argv[1])
except PipelineError as error:
    print(error)
    sys.exit(2)
"""
MLFLOW_LOAD = "import sys, mlflow.pyfunc; mlflow.pyfunc.load_model(sys.argv[1])"


def test_a_pickle_logged_to_the_store_is_refused_where_mlflow_runs_it(
    sklearn_model: Path, tmp_path: Path
) -> None:
    import mlflow

    directory = copy_model(sklearn_model, tmp_path / "model")
    marker = tmp_path / "code-ran"
    make_pickled(directory, marker)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    # Artifacts in the test's folder, not MLflow's default ./mlruns.
    mlflow.create_experiment("hostile", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment("hostile")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(directory), "model")
    uri = f"runs:/{run.info.run_id}/model"
    variables = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MLFLOW_TRACKING_URI": store,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    variables.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", None)

    refused = subprocess.run(
        [sys.executable, "-c", LOAD, uri], env=variables, capture_output=True, text=True
    )

    assert refused.returncode == 2, refused.stderr
    assert refused.stdout == (
        f"{uri}: serialization format 'pickle'; allowed: 'skops'; refusing to load it "
        "(not a model this pipeline logged)\n"
    )
    assert not marker.exists()

    # MLflow 3.17.2 alone, with MLFLOW_ALLOW_PICKLE_DESERIALIZATION unset (its default
    # is true), unpickles the file and so runs the attacker's code.
    subprocess.run(
        [sys.executable, "-c", MLFLOW_LOAD, uri], env=variables, capture_output=True, text=True
    )
    assert marker.exists()


def test_a_keras_model_with_python_code_is_refused(tmp_path: Path) -> None:
    # A Lambda layer holds Python bytecode; Keras' safe_mode, which MLflow's loader
    # keeps on, refuses to deserialize it.
    from mlflow.keras import save_model

    from pipeline.mlflow_models import load_logged_model
    from pipeline.tensorflow_import import import_tensorflow

    _, keras = import_tensorflow()
    inputs = keras.Input(shape=(3,))
    outputs = keras.layers.Dense(1)(keras.layers.Lambda(lambda values: values * 2)(inputs))
    save_model(keras.Model(inputs, outputs), str(tmp_path / "model"))

    with pytest.raises(PipelineError) as caught:
        load_logged_model(str(tmp_path / "model"))

    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'model'}: ")
    assert "Lambda" in message and "safe_mode" in message
    assert message.endswith("refusing to load it (not a model this pipeline logged)")
    assert "\n" not in message
