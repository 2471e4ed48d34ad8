"""The default DVC remote, end to end: `dvc push`, a fresh clone, `dvc pull`, and then
nothing left to reproduce, with models that predict exactly like the originals."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import paths
from pipeline.files import read_table
from tests.endtoend import ROOT, commit_all, execute, tiny_project

pytestmark = pytest.mark.slow

# The default remote's directory, beside the repository (see .dvc/config).
STORAGE = "mlp-compare-dvc-storage"


def test_default_remote_is_a_directory_beside_the_repository():
    # --project: what .dvc/config says, whatever a developer set in config.local.
    assert execute(ROOT, "dvc", "remote", "default", "--project").stdout.strip() == "local"
    listed = execute(ROOT, "dvc", "remote", "list", "--project").stdout.split()
    assert listed[:2] == ["local", str(ROOT.parent / STORAGE)]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project that ran once and pushed its outputs to the default remote.

    The project sits in its own temporary folder, so the default remote beside it is
    in that folder too.
    """
    project = tiny_project(tmp_path_factory.mktemp("remote") / "mlp-compare", "remote", epochs=2)
    execute(project, "dvc", "repro")
    commit_all(project, "dvc.lock of the tiny run")
    execute(project, "dvc", "push")
    return project


@pytest.fixture(scope="module")
def pulled(pushed: Path) -> Path:
    """A fresh clone beside the project, after `dvc pull` from the same default remote."""
    clone = pushed.parent / "clone"
    execute(pushed.parent, "git", "clone", "-q", str(pushed), str(clone))
    assert not (clone / paths.KERAS_MODEL).exists()
    execute(clone, "dvc", "pull")
    return clone


def test_pull_into_a_fresh_clone_leaves_nothing_to_reproduce(pushed: Path, pulled: Path):
    # Every output dvc.lock records is in the default remote beside the project.
    lock = yaml.safe_load((pushed / "dvc.lock").read_text())
    hashes = {out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    storage = pushed.parent / STORAGE / "files" / "md5"
    assert len(hashes) >= 14
    for digest in hashes:
        assert (storage / digest[:2] / digest[2:]).is_file(), digest
    for output in (paths.KERAS_MODEL, paths.SKLEARN_MODEL, paths.METRICS, paths.MLFLOW_RUNS):
        assert (pulled / output).read_bytes() == (pushed / output).read_bytes(), output
    status = execute(pulled, "dvc", "status").stdout
    assert status.strip() == "Data and pipelines are up to date."
    reproduced = execute(pulled, "dvc", "repro").stdout
    assert "Running stage" not in reproduced


def test_pulled_models_predict_like_the_originals(pushed: Path, pulled: Path):
    from pipeline.train_keras import load_model as load_keras_model
    from pipeline.train_sklearn import load_model as load_sklearn_model

    features = read_table(pulled / paths.TEST).features
    np.testing.assert_array_equal(
        load_keras_model(pulled / paths.KERAS_MODEL).predict(features, verbose=0),
        load_keras_model(pushed / paths.KERAS_MODEL).predict(features, verbose=0),
    )
    np.testing.assert_array_equal(
        load_sklearn_model(pulled / paths.SKLEARN_MODEL).predict_proba(features),
        load_sklearn_model(pushed / paths.SKLEARN_MODEL).predict_proba(features),
    )
