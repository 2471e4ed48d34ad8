"""Promises of docs/reliability.md that no module's own tests cover."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_every_stage_output_is_persistent() -> None:
    # DVC deletes a stage's outputs before running it unless they persist: a stage that
    # then fails or is killed would leave nothing of the last good results.
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    outputs = [
        (name, output)
        for name, stage in stages.items()
        for kind in ("outs", "metrics", "plots")
        for output in stage.get(kind) or []
    ]
    assert outputs
    for name, output in outputs:
        assert isinstance(output, dict), f"{name}: {output} is not persistent"
        (path, options), *_ = output.items()
        assert options.get("persist") is True, f"{name}: {path} is not persistent"
