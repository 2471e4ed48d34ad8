"""Tests for `pipeline.rank`: ranking, de-duplication and the params that vary, on records
and on a real MLflow store; end to end on a tiny queued grid."""

import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.errors import PipelineError
from pipeline.rank import (
    RunRecord,
    collect_runs,
    format_ranking,
    latest_per_params,
    lower_is_better,
    main,
    rank,
    varying_params,
)
from tests.endtoend import environment, execute, tiny_project, wait_for_queue


def record(
    family: str,
    name: str,
    auc: float,
    learning_rate: str,
    start_time: int = 0,
    **metrics: float,
) -> RunRecord:
    return RunRecord(
        family=family,
        run_name=name,
        run_id=f"{name}-{family}",
        parent_run_id=f"{name}-parent",
        start_time=start_time,
        params_hash=f"hash-{learning_rate}",
        metrics={"test_roc_auc": auc, **metrics},
        params={"model.learning_rate": learning_rate, "model.l2": "0.0", "seed": "42"},
        winner="keras",
        significant="true",
    )


RECORDS = [
    record("keras", "slow", 0.81, "0.001", start_time=1, test_log_loss=0.50),
    record("sklearn", "slow", 0.84, "0.001", start_time=1, test_log_loss=0.45),
    record("keras", "fast", 0.88, "0.01", start_time=2, test_log_loss=0.40),
    record("sklearn", "fast", 0.83, "0.01", start_time=2, test_log_loss=0.47),
    record("keras", "faster", 0.79, "0.1", start_time=3, test_log_loss=0.60),
    record("sklearn", "faster", 0.86, "0.1", start_time=3, test_log_loss=0.41),
]


@pytest.mark.parametrize(
    ("metric", "lower"),
    [("test_roc_auc", False), ("test_log_loss", True), ("val_loss", True),
     ("train_seconds", True), ("samples_per_second", False)],
)  # fmt: skip
def test_metric_direction(metric: str, lower: bool):
    assert lower_is_better(metric) is lower


def test_best_per_family_first():
    ranking = rank(RECORDS, "test_roc_auc", top=2)

    assert list(ranking) == ["keras", "sklearn"]
    assert [item.run_name for item in ranking["keras"]] == ["fast", "slow"]
    assert [item.run_name for item in ranking["sklearn"]] == ["faster", "slow"]


def test_a_loss_ranks_lowest_first():
    ranking = rank(RECORDS, "test_log_loss", top=1)
    assert ranking["keras"][0].run_name == "fast"
    assert ranking["sklearn"][0].run_name == "faster"


def test_a_rerun_of_the_same_params_counts_once():
    rerun = record("keras", "fast-again", 0.88, "0.01", start_time=9)
    kept = latest_per_params([*RECORDS, rerun])
    assert len(kept) == len(RECORDS)
    assert rerun in kept
    assert [item.run_name for item in rank([*RECORDS, rerun], "test_roc_auc", 3)["keras"]] == [
        "fast-again",
        "slow",
        "faster",
    ]


def test_only_params_that_differ_are_shown():
    assert varying_params(RECORDS) == ["model.learning_rate"]
    assert varying_params(RECORDS[:2]) == []


def test_unknown_metric_lists_the_available_ones():
    with pytest.raises(PipelineError, match=r"no finished run has the metric 'test_auc' \(avail"):
        rank(RECORDS, "test_auc", top=1)


def test_table_has_the_ranked_values_and_params():
    text = format_ranking(rank(RECORDS, "test_roc_auc", top=1), "test_roc_auc", ["model.l2"])
    keras_section, sklearn_section = text.split("\n\n")
    assert keras_section.splitlines()[0] == "keras"
    header, row = keras_section.splitlines()[1:]
    assert header.split() == [
        "rank", "test_roc_auc", "run", "model.l2", "verdict", "parent", "run", "id",
    ]  # fmt: skip
    assert row.split() == ["1", "0.8800", "fast", "0.0", "keras", "wins", "fast-parent"]
    assert "0.8600" in sklearn_section and "faster" in sklearn_section


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> MlflowClient:
    """A real SQLite store with two comparisons, one unfinished run and a stray run."""
    root = tmp_path_factory.mktemp("store")
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.create_experiment("grid", artifact_location=(root / "art").as_uri())
    for name, learning_rate, aucs in (
        ("lr-small", "0.001", (0.8, 0.9)),
        ("lr-big", "0.1", (0.85, 0.7)),
    ):
        parent = client.create_run(experiment, run_name=name, tags={"winner": "sklearn"})
        for family, auc in zip(("keras", "sklearn"), aucs, strict=True):
            child = client.create_run(
                experiment,
                run_name=family,
                tags={
                    "mlflow.parentRunId": parent.info.run_id,
                    "model_family": family,
                    "params_hash": f"hash-{learning_rate}",
                },
            )
            client.log_param(child.info.run_id, "model.learning_rate", learning_rate)
            client.log_metric(child.info.run_id, "test_roc_auc", auc)
            client.set_terminated(child.info.run_id)
        client.set_terminated(parent.info.run_id)
    # A comparison that crashed: its parent never finished.
    crashed = client.create_run(experiment, run_name="crashed")
    child = client.create_run(
        experiment,
        run_name="keras",
        tags={"mlflow.parentRunId": crashed.info.run_id, "model_family": "keras"},
    )
    client.log_metric(child.info.run_id, "test_roc_auc", 0.99)
    client.set_terminated(child.info.run_id)
    return client


def test_collect_runs_reads_finished_children(store: MlflowClient):
    records = collect_runs(store, "grid")

    assert sorted((item.run_name, item.family) for item in records) == [
        ("lr-big", "keras"),
        ("lr-big", "sklearn"),
        ("lr-small", "keras"),
        ("lr-small", "sklearn"),
    ]
    by_key = {(item.run_name, item.family): item for item in records}
    assert by_key[("lr-big", "keras")].metrics["test_roc_auc"] == pytest.approx(0.85)
    assert by_key[("lr-big", "keras")].params == {"model.learning_rate": "0.1"}
    assert by_key[("lr-small", "sklearn")].winner == "sklearn"
    ranking = rank(records, "test_roc_auc", top=1)
    assert ranking["keras"][0].run_name == "lr-big"
    assert ranking["sklearn"][0].run_name == "lr-small"


def test_unknown_experiment(store: MlflowClient):
    with pytest.raises(PipelineError, match="no MLflow experiment named 'nope'"):
        collect_runs(store, "nope")


def test_no_store_is_an_error_not_a_new_store(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    with pytest.raises(PipelineError, match="no MLflow store yet"):
        main(["--experiment", "anything"])
    assert not (tmp_path / "mlflow.db").exists()


def ranked_rows(output: str, family: str) -> list[list[str]]:
    """The data rows of one family's table in the command's output."""
    section = output.split(f"\n{family}\n", 1)[1].split("\n\n", 1)[0]
    return [line.split() for line in section.splitlines()[1:]]


@pytest.mark.slow
def test_ranking_a_queued_grid(tmp_path: Path):
    """The README's sweep on a 2 x 1 grid, two at a time, then the ranking command."""
    project = tiny_project(tmp_path / "grid", "grid", epochs=2)
    execute(
        project, "dvc", "exp", "run", "--queue",
        "-S", "model.learning_rate=0.001,0.01", "-S", "model.l2=0.0001",
    )  # fmt: skip
    # No mlflow.db yet: both experiments create the store at once (track's lock).
    execute(project, "dvc", "queue", "start", "-j", "2")
    status = wait_for_queue(project, environment(), timeout=900)
    assert "Failed" not in status, status

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    records = collect_runs(client, "grid")
    assert len(records) == 4
    assert {record.params["model.learning_rate"] for record in records} == {"0.001", "0.01"}
    # track ran inside each queued experiment and left the verdict on the parent.
    assert all(record.winner in ("keras", "sklearn", "tie") for record in records)

    output = execute(project, sys.executable, "-m", "pipeline.rank", "--top", "2").stdout

    assert "MLflow experiment 'grid'" in output
    assert "2 finished comparisons with distinct params, ranked by test_roc_auc" in output
    assert output.rstrip().endswith("Params that differ between these runs: model.learning_rate")
    for family in ("keras", "sklearn"):
        runs = sorted(
            (record for record in records if record.family == family),
            key=lambda record: -record.metrics["test_roc_auc"],
        )
        rows = ranked_rows(output, family)
        assert [row[0] for row in rows] == ["1", "2"]
        assert [row[2] for row in rows] == [record.run_name for record in runs]
        assert [row[1] for row in rows] == [f"{r.metrics['test_roc_auc']:.4f}" for r in runs]
        assert [row[3] for row in rows] == [r.params["model.learning_rate"] for r in runs]

    by_loss = execute(
        project, sys.executable, "-m", "pipeline.rank", "--metric", "test_log_loss", "--top", "1"
    ).stdout
    assert "ranked by test_log_loss (lowest first)" in by_loss
    for family in ("keras", "sklearn"):
        best = min(
            (record for record in records if record.family == family),
            key=lambda record: record.metrics["test_log_loss"],
        )
        (row,) = ranked_rows(by_loss, family)
        assert row[2] == best.run_name
