"""Promotion to the MLflow Model Registry: the winner that `compare` approved becomes
the `champion` version of `compare.promote.registered_model_name`."""

from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from pipeline.promotion import CHAMPION, Promotion


def register_champion(client: MlflowClient, model_id: str, name: str, tags: dict[str, str]) -> str:
    """Register the logged model (once per parent run and family) and point the
    `champion` alias at it; return the version."""
    existing = [
        version
        for version in client.search_model_versions(f"name = '{name}'")
        if all(version.tags.get(key) == value for key, value in tags.items())
    ]
    if existing:
        # A rerun of this stage for the same runs: no second copy of the model.
        version = existing[0].version
    else:
        version = mlflow.register_model(f"models:/{model_id}", name, tags=tags).version
    client.set_registered_model_alias(name, CHAMPION, str(version))
    return str(version)


def promote(
    client: MlflowClient, model_name: str, verdict: dict[str, Any], run_ids: dict[str, str]
) -> Promotion | None:
    """Register the approved winner of `verdict` (data/compare/verdict.json); None
    when compare did not approve one."""
    if verdict.get("promotion") != "approved":
        return None
    family, metric = verdict["winner"], verdict["primary_metric"]
    tags = {
        "parent_run_id": run_ids["parent_run_id"],
        "model_family": family,
        f"test_{metric}": f"{verdict['winner_score']:.6g}",
    }
    version = register_champion(client, run_ids[f"{family}_model_id"], model_name, tags)
    return Promotion("promoted", (), model_name, family, version)
