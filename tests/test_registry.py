"""Tests for `pipeline.registry`: track registers the winner that compare approved,
once, against a real SQLite store."""

from pathlib import Path

import mlflow
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from pipeline.registry import promote

NAME = "mlp-compare-test"


@pytest.fixture
def store(tmp_path: Path) -> tuple[MlflowClient, dict[str, str]]:
    """A store with a parent run and one logged model per family, and their ids;
    `mlflow.register_model` writes to the global tracking URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("registry", artifact_location=tmp_path.as_uri())
    run_ids = {
        "experiment_id": experiment_id,
        "parent_run_id": client.create_run(experiment_id).info.run_id,
    }
    for family in ("keras", "sklearn"):
        run_id = client.create_run(experiment_id).info.run_id
        model = client.create_logged_model(experiment_id, source_run_id=run_id, name=family)
        client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        run_ids[f"{family}_run_id"] = run_id
        run_ids[f"{family}_model_id"] = model.model_id
    yield client, run_ids
    mlflow.set_tracking_uri(None)


def approved(winner: str) -> dict:
    return {"winner": winner, "primary_metric": "roc_auc", "promotion": "approved",
            "winner_score": 0.9123456789}  # fmt: skip


def test_an_approved_winner_becomes_the_champion_once(store):
    client, run_ids = store
    promotion = promote(client, NAME, approved("sklearn"), run_ids)
    assert promotion is not None and promotion.status == "promoted"
    assert promotion.family == "sklearn" and promotion.version == "1"
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert int(champion.version) == 1
    assert champion.source == f"models:/{run_ids['sklearn_model_id']}"
    assert champion.tags == {
        "parent_run_id": run_ids["parent_run_id"],
        "model_family": "sklearn",
        "test_roc_auc": "0.912346",
    }
    # Publishing again for the same runs: the same version, no copy.
    again = promote(client, NAME, approved("sklearn"), run_ids)
    assert again is not None and again.version == "1"
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1
    assert promotion.describe().startswith(
        f"Promoted **sklearn** to the Model Registry as `{NAME}` version 1, alias `champion`"
    )


@pytest.mark.parametrize("status", ["refused", "disabled"])
def test_nothing_is_registered_unless_approved(store, status: str):
    client, run_ids = store
    verdict = approved("keras") | {"promotion": status}
    assert promote(client, NAME, verdict, run_ids) is None
    assert client.search_registered_models() == []


def test_another_registered_model_name_gets_its_own_version(store):
    client, run_ids = store
    promote(client, NAME, approved("sklearn"), run_ids)
    # The same runs, after compare.promote.registered_model_name changed.
    promotion = promote(client, "renamed", approved("sklearn"), run_ids)
    assert promotion is not None and promotion.version == "1"
    champion = client.get_model_version_by_alias("renamed", "champion")
    assert champion.source == f"models:/{run_ids['sklearn_model_id']}"
    assert [version.name for version in client.search_model_versions()] in (
        [NAME, "renamed"],
        ["renamed", NAME],
    )
