"""Model archives whose bytes repeat, and a pipeline whose data hashes repeat."""

import copy
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.reproducible import FIXED_TIME, reproducible_archive, rewrite_archive
from tests.endtoend import copy_project, execute


def _archive(members: dict[str, str | bytes], date_time: tuple[int, ...]) -> bytes:
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w") as archive:
        for name, text in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=date_time), text)
    return output.getvalue()


def test_times_ids_and_save_dates_are_replaced():
    def saved(at: tuple[int, ...], first_id: int, second_id: int) -> bytes:
        schema = {
            "a": {"__id__": first_id, "file": f"{second_id}.npy"},
            "b": {"__id__": second_id},
            "c": {"shared_object_id": first_id},
        }
        return _archive(
            {
                f"{second_id}.npy": "array",
                "schema.json": json.dumps(schema),
                "metadata.json": json.dumps({"keras_version": "3", "date_saved": str(at)}),
                "MLmodel": f"flavors: {{}}\nmodel_uuid: {first_id}\nutc_time_created: '{at}'\n",
            },
            at,
        )

    first = reproducible_archive(saved((2026, 1, 2, 3, 4, 6), 140001, 140002))
    second = reproducible_archive(saved((2027, 5, 6, 7, 8, 10), 150007, 150009))
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert archive.namelist() == ["2.npy", "MLmodel", "metadata.json", "schema.json"]
        assert {member.date_time for member in archive.infolist()} == {FIXED_TIME}
        # The ids stay paired: the member the schema names is the member that exists.
        assert json.loads(archive.read("schema.json")) == {
            "a": {"__id__": 1, "file": "2.npy"},
            "b": {"__id__": 2},
            "c": {"shared_object_id": 1},
        }
        assert json.loads(archive.read("metadata.json")) == {"keras_version": "3"}
        assert archive.read("MLmodel") == b"flavors: {}\n"
        assert archive.read("2.npy") == b"array"


def test_archives_inside_an_archive_are_rewritten():
    inner = _archive({"metadata.json": '{"date_saved": "now"}'}, (2026, 1, 1, 0, 0, 0))
    outer = _archive({"data/model.keras": inner}, (2026, 1, 1, 0, 0, 0))
    with zipfile.ZipFile(io.BytesIO(reproducible_archive(outer))) as archive:
        nested = archive.read("data/model.keras")
    with zipfile.ZipFile(io.BytesIO(nested)) as archive:
        assert archive.read("metadata.json") == b"{}"


def test_two_saves_of_the_same_keras_model_are_identical_and_load(tmp_path, tiny_splits):
    import keras

    def network() -> keras.Model:
        # Named explicitly: Keras numbers unnamed layers per process (dense, dense_1).
        keras.utils.set_random_seed(3)
        # One regularizer object in two layers: Keras records it by its id().
        penalty = keras.regularizers.L2(0.01)
        return keras.Sequential(
            [
                keras.Input((8,), name="features"),
                keras.layers.Dense(4, kernel_regularizer=penalty, name="hidden"),
                keras.layers.Dense(1, kernel_regularizer=penalty, name="output"),
            ],
            name="mlp",
        )

    # Two builds hold the same weights in different Python objects (other ids).
    model, twin = network(), network()
    first, second = tmp_path / "first.keras", tmp_path / "second.keras"
    model.save(first)
    twin.save(second)
    with zipfile.ZipFile(first) as archive:
        assert b'"shared_object_id": ' in archive.read("config.json")
    assert first.read_bytes() != second.read_bytes()
    rewrite_archive(first)
    rewrite_archive(second)
    assert first.read_bytes() == second.read_bytes()
    loaded = keras.saving.load_model(first, safe_mode=True)
    features = tiny_splits.test.features[:5]
    np.testing.assert_array_equal(
        loaded.predict(features, verbose=0), model.predict(features, verbose=0)
    )


def test_two_skops_dumps_of_the_same_classifier_are_identical_and_load(tmp_path, tiny_splits):
    import skops.io
    from sklearn.neural_network import MLPClassifier

    from pipeline.train_sklearn import load_model

    train = tiny_splits.train
    classifier = MLPClassifier((4,), max_iter=5, random_state=0)
    with pytest.warns(UserWarning):  # not converged after 5 epochs
        classifier.fit(train.features, train.labels)
    first, second = tmp_path / "first.skops", tmp_path / "second.skops"
    skops.io.dump(classifier, first)
    skops.io.dump(copy.deepcopy(classifier), second)
    assert first.read_bytes() != second.read_bytes()
    rewrite_archive(first)
    rewrite_archive(second)
    assert first.read_bytes() == second.read_bytes()
    np.testing.assert_array_equal(
        load_model(first).predict_proba(train.features),
        classifier.predict_proba(train.features),
    )


def _output_hashes(lock: Path) -> dict[str, str]:
    """Every output's md5 in dvc.lock, by path."""
    stages = yaml.safe_load(lock.read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


@pytest.mark.slow
def test_a_forced_second_repro_leaves_the_data_hashes_unchanged(built_project, tmp_path):
    project = copy_project(built_project, tmp_path / "project")
    before = _output_hashes(project / "dvc.lock")
    completed = execute(project, "dvc", "repro", "--force")
    after = _output_hashes(project / "dvc.lock")
    data = sorted(path for path in before if path.startswith("data/"))
    # Model files and their folders, predictions and the verdict are all among them.
    assert {"data/train_keras/model.keras", "data/train_sklearn/replicates"} <= set(data)
    # Only the files that hold MLflow run ids differ: this copy publishes new runs to
    # its own store.
    changed = [path for path in data if before[path] != after[path]]
    assert changed == ["data/track/mlflow_runs.json", "data/track/published.json"]
    # Timings sit beside summary.json, outside DVC.
    summary = json.loads((project / "data/train_keras/summary.json").read_text())
    timing = json.loads((project / "data/train_keras/timing.json").read_text())
    assert "train_seconds" not in summary
    assert timing["train_seconds"] > 0
    assert "data/train_keras/timing.json" not in after
    # Quiet: the pipeline's own lines only. This copy has no MLflow store yet.
    output = completed.stdout + completed.stderr
    assert "track: first run here: creating the MLflow store" in output
    for noise in ("Creating initial MLflow database", "E0000", "I0000", "Warning", "WARNING"):
        assert noise not in output
