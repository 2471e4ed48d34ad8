"""Replicates: seeds, the shared start, the stacked Keras trainer, and the
cross-library oracle (same start and batch order: the same training)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.neural_network import MLPClassifier

from pipeline import paths, replicates, train_keras, train_sklearn
from pipeline.config import Params, ReplicatesConfig, parse_params
from pipeline.dataset import generate_dataset
from pipeline.errors import PipelineError
from pipeline.files import read_json, read_table, write_json, write_table
from pipeline.replicates import layer_units, replicate_seeds, shared_start
from pipeline.split import Splits, split_dataset
from tests.endtoend import copy_project, execute, set_params


@pytest.fixture(scope="module")
def default_splits(default_params: Params) -> Splits:
    """The data the default `dvc repro` trains on: 1200 train, 400 validation, 400 test."""
    dataset = generate_dataset(default_params.dataset, default_params.seed)
    return split_dataset(dataset, default_params.split, default_params.seed)


def test_replicate_zero_keeps_the_seed_and_the_others_differ():
    seeds = replicate_seeds(42, 6)
    assert seeds[0] == 42
    assert len(set(seeds)) == 6
    assert seeds == replicate_seeds(42, 6)
    assert replicate_seeds(42, 3) == seeds[:3]
    assert replicate_seeds(43, 6)[1:] != seeds[1:]


@pytest.mark.parametrize(("activation", "n_classes"), [("relu", 2), ("logistic", 3)])
def test_shared_start_is_where_mlpclassifier_starts(activation: str, n_classes: int):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 5)).astype(np.float32)
    labels = np.arange(60) % n_classes
    # A learning rate too small to move the weights: after one epoch they are the start.
    classifier = MLPClassifier(
        hidden_layer_sizes=(7, 4),
        activation=activation,
        solver="sgd",
        momentum=0.0,
        learning_rate_init=1e-30,
        batch_size=60,
        random_state=np.random.RandomState(9),
    )
    classifier.partial_fit(features, labels, classes=np.arange(n_classes))
    start = shared_start(9, layer_units(5, [7, 4], n_classes), activation)
    expected = [
        array
        for pair in zip(classifier.coefs_, classifier.intercepts_, strict=True)
        for array in pair
    ]
    assert [array.shape for array in start.weights] == [array.shape for array in expected]
    for ours, theirs in zip(start.weights, expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    # The next draw from the same RandomState is the first epoch's order in both.
    state = np.random.RandomState(9)
    for array in expected:
        state.uniform(size=array.shape)
    np.testing.assert_array_equal(next(start.epoch_orders(60)), state.permutation(60))


def test_shared_start_trains_both_libraries_alike(default_params: Params, default_splits: Splits):
    """The cross-library oracle: from the same weights and batch order, Keras and
    MLPClassifier compute the same training, epoch for epoch, on the default data."""
    spec = default_params.model
    seeds = replicate_seeds(default_params.seed, 2)
    keras_results = train_keras.train_replicates(
        [default_splits.train], [default_splits.validation], spec, "glorot_uniform", seeds, "shared"
    )
    sklearn_results = train_sklearn.train_replicates(
        [default_splits.train], [default_splits.validation], spec, "constant", seeds
    )
    for keras_result, sklearn_result in zip(keras_results, sklearn_results, strict=True):
        keras_loss = keras_result.history["loss"].to_numpy()
        sklearn_loss = sklearn_result.history["loss"].to_numpy()
        assert len(keras_loss) == spec.epochs
        np.testing.assert_allclose(keras_loss, sklearn_loss, rtol=0, atol=1e-4)
        np.testing.assert_allclose(
            train_keras.predict_probabilities(keras_result.model, default_splits.test.features),
            sklearn_result.model.predict_proba(default_splits.test.features),
            rtol=0,
            atol=1e-3,
        )


def test_each_library_draws_its_own_start_by_default(default_params, default_splits):
    seeds = [default_params.seed]
    (keras_result,) = train_keras.train_replicates(
        [default_splits.train],
        [default_splits.validation],
        default_params.model,
        "glorot_uniform",
        seeds,
        "library",
    )
    (sklearn_result,) = train_sklearn.train_replicates(
        [default_splits.train], [default_splits.validation], default_params.model, "constant", seeds
    )
    # Different random numbers: the first epoch's loss already differs clearly.
    assert abs(keras_result.history["loss"][0] - sklearn_result.history["loss"][0]) > 1e-3


@pytest.mark.parametrize("initialization", ["library", "shared"])
def test_stacked_replicates_train_as_if_alone(initialization, tiny_spec, tiny_splits: Splits):
    """Trained together, each replicate computes what it computes trained on its own."""
    spec = tiny_spec.model_copy(update={"l2": 0.001})
    seeds = [3, 17, 99]
    together = train_keras.train_replicates(
        [tiny_splits.train],
        [tiny_splits.validation],
        spec,
        "glorot_uniform",
        seeds,
        initialization,
        "graph",
    )
    for seed, result in zip(seeds, together, strict=True):
        alone = train_keras.train(
            tiny_splits.train,
            tiny_splits.validation,
            spec,
            "glorot_uniform",
            seed,
            "graph",
            initialization,
        )
        np.testing.assert_allclose(result.history, alone.history, rtol=1e-5)
    assert not together[0].history.equals(together[1].history)


def test_stacked_replicates_on_their_own_splits_match_model_fit(tiny_spec, default_params):
    """Re-drawn splits: replicate r trains on its own rows, step for step as model.fit."""
    dataset = generate_dataset(default_params.dataset.model_copy(update={"n_samples": 300}), 5)
    splits = [split_dataset(dataset, default_params.split, seed) for seed in (1, 2)]
    arguments = (
        [split.train for split in splits],
        [split.validation for split in splits],
        tiny_spec,
        "glorot_uniform",
        [1, 2],
        "library",
    )
    ours = train_keras.train_replicates(*arguments, "graph")
    reference = train_keras.train_replicates(*arguments, "fit")
    for mine, theirs in zip(ours, reference, strict=True):
        np.testing.assert_allclose(mine.history, theirs.history, rtol=1e-4)


def test_stacked_probabilities_are_each_models_own(tiny_spec, tiny_splits: Splits):
    results = train_keras.train_replicates(
        [tiny_splits.train], [tiny_splits.validation], tiny_spec, "glorot_uniform", [1, 2]
    )
    models = [result.model for result in results]
    stacked = train_keras.StackedNetwork(models, tiny_spec.activation).probabilities(
        train_keras.stack_tables([tiny_splits.test])
    )
    for replicate, model in enumerate(models):
        np.testing.assert_allclose(
            stacked[replicate],
            train_keras.predict_probabilities(model, tiny_splits.test.features),
            rtol=1e-5,
            atol=1e-6,
        )


def raw_params(default_params: Params, **replicates) -> dict:
    raw = default_params.model_dump()
    raw["replicates"] |= replicates
    return raw


def test_a_count_whose_test_can_never_be_significant_is_refused(default_params):
    with pytest.raises(PipelineError) as error:
        parse_params(raw_params(default_params, count=5))
    assert str(error.value) == (
        "params.yaml: replicates.count = 5: with compare.alpha = 0.05 the paired test over 5 "
        "replicates can never be significant (its smallest p-value is 0.0625); allowed: 1, "
        "or 6 to 64"
    )
    assert parse_params(raw_params(default_params, count=1)).replicates.count == 1
    assert parse_params(raw_params(default_params, count=6)).replicates.count == 6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"count": 0}, "replicates.count = 0: must be greater than or equal to 1"),
        ({"count": 65}, "replicates.count = 65: must be less than or equal to 64"),
        ({"count": True}, "replicates.count = True: must be a valid integer"),
        (
            {"initialization": "keras"},
            "replicates.initialization = 'keras': allowed: 'library' or 'shared'",
        ),
        ({"resample_split": "yes"}, "replicates.resample_split = 'yes': must be a valid boolean"),
    ],
)
def test_bad_replicates_params_are_one_line_errors(default_params, change, message):
    with pytest.raises(PipelineError, match="^params.yaml: ") as error:
        parse_params(raw_params(default_params, **change))
    assert message in str(error.value)


# End to end: the real `dvc repro`, with the default 6 replicates.


@pytest.mark.slow
def test_each_replicate_is_a_nested_run_under_its_family(built_project: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{built_project / 'mlflow.db'}")
    run_ids = read_json(built_project / paths.MLFLOW_RUNS)
    per_replicate = pd.read_csv(built_project / paths.REPLICATE_METRICS)
    parent = client.get_run(run_ids["parent_run_id"])
    assert parent.data.tags["verdict_level"] == "libraries, 6 replicates"
    for family in ("keras", "sklearn"):
        child = client.get_run(run_ids[f"{family}_run_id"])
        nested = client.search_runs(
            [child.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{child.info.run_id}'",
        )
        nested.sort(key=lambda run: int(run.data.tags["replicate"]))
        summary = read_json(built_project / paths.SUMMARIES[family])
        rows = per_replicate[per_replicate["family"] == family].sort_values("replicate")
        assert [run.info.run_name for run in nested] == [f"{family}#{r}" for r in range(6)]
        assert [int(run.data.tags["seed"]) for run in nested] == [
            replicate["seed"] for replicate in summary["replicates"]
        ]
        np.testing.assert_allclose(
            [run.data.metrics["test_roc_auc"] for run in nested], rows["roc_auc"], rtol=1e-12
        )
        # The family's run holds the replicates' mean, under the same key.
        assert child.data.metrics["test_roc_auc"] == pytest.approx(rows["roc_auc"].mean())
        losses = client.get_metric_history(nested[3].info.run_id, "loss")
        assert [metric.step for metric in losses] == [1, 2, 3]
        assert all(run.info.status == "FINISHED" for run in nested)


@pytest.mark.slow
def test_shared_start_on_resampled_splits_end_to_end(built_project: Path, tmp_path: Path):
    """`dvc repro` with every replicate on its own split and a shared start: replicate
    r of both libraries trains on the same re-drawn rows and computes the same
    training, so their losses agree replicate by replicate."""
    project = copy_project(built_project, tmp_path / "project")
    set_params(project, replicates__resample_split=True, replicates__initialization="shared")
    execute(project, "dvc", "repro")
    manifest = read_json(project / paths.SPLIT_REPLICATES / "manifest.json")
    assert manifest["resample_split"] is True and len(manifest["seeds"]) == 6
    tests = [read_table(project / paths.TEST)] + [
        read_table(project / paths.SPLIT_REPLICATES / str(replicate) / "test.parquet")
        for replicate in range(1, 6)
    ]
    assert len({len(table.labels) for table in tests}) == 1
    assert not np.array_equal(tests[0].features, tests[1].features)
    histories = {
        family: pd.read_csv(project / paths.REPLICATE_HISTORIES[family])
        for family in ("keras", "sklearn")
    }
    np.testing.assert_allclose(
        histories["keras"]["loss"], histories["sklearn"]["loss"], rtol=0, atol=1e-4
    )
    assert histories["keras"]["replicate"].nunique() == 6
    verdict = read_json(project / paths.VERDICT)
    assert verdict["replicates"] == 6
    # The same training: the two libraries do not differ, whatever the draw.
    assert verdict["significant"] is False
    assert abs(verdict["difference"]) < 1e-3


def replicates_config(count: int = 6, resample_split: bool = False) -> ReplicatesConfig:
    return ReplicatesConfig(count=count, initialization="library", resample_split=resample_split)


def test_replicate_splits_live_beside_the_main_split():
    assert replicates.split_path("test", 0) == paths.TEST
    assert replicates.split_path("train", 3) == paths.SPLIT_REPLICATES / "3" / "train.parquet"


def test_split_paths_follow_the_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match="manifest.json: missing or unreadable"):
        replicates.split_paths("train", replicates_config(), 42)
    write_json(replicates.manifest(replicates_config(), 42), replicates.MANIFEST)
    assert replicates.split_paths("train", replicates_config(), 42) == [paths.TRAIN]
    # Other params than the splits were made for: refused, not silently mispaired.
    for config, seed in ((replicates_config(count=8), 42), (replicates_config(), 43)):
        with pytest.raises(PipelineError, match="made for other `seed` or `replicates`"):
            replicates.split_paths("train", config, seed)
    resampled = replicates_config(count=3, resample_split=True)
    write_json(replicates.manifest(resampled, 42), replicates.MANIFEST)
    assert replicates.split_paths("validation", resampled, 42) == [
        paths.VALIDATION,
        paths.SPLIT_REPLICATES / "1" / "validation.parquet",
        paths.SPLIT_REPLICATES / "2" / "validation.parquet",
    ]


def test_read_split_reads_every_replicates_table(tmp_path, monkeypatch, tiny_splits: Splits):
    monkeypatch.chdir(tmp_path)
    config = replicates_config(count=2, resample_split=True)
    write_json(replicates.manifest(config, 1), replicates.MANIFEST)
    write_table(tiny_splits.test, paths.TEST)
    write_table(tiny_splits.validation, replicates.split_path("test", 1))
    tables = replicates.read_split("test", config, 1, n_classes=2)
    np.testing.assert_array_equal(tables[0].labels, tiny_splits.test.labels)
    np.testing.assert_array_equal(tables[1].features, tiny_splits.validation.features)


def test_keras_own_epoch_orders_are_seeded_permutations():
    first = replicates.own_epoch_orders(5, 10)
    orders = [next(first) for _ in range(3)]
    again = replicates.own_epoch_orders(5, 10)
    for order in orders:
        np.testing.assert_array_equal(order, next(again))
        assert sorted(order) == list(range(10))
    assert not np.array_equal(orders[0], orders[1])
    assert orders[0].dtype == np.int32
