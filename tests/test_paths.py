"""Tests that `pipeline/paths.py`, `dvc.yaml` and `params.yaml` agree."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import paths

DVC_FILE = Path("dvc.yaml")
PARAMS_FILE = Path("params.yaml")

STAGE_OUTPUTS = {
    "DATASET": paths.DATASET,
    "TRAIN": paths.TRAIN,
    "VALIDATION": paths.VALIDATION,
    "TEST": paths.TEST,
    "CLASSES": paths.CLASSES,
    "PREPROCESSING": paths.PREPROCESSING,
    "PREPROCESSOR": paths.PREPROCESSOR,
    "SPLIT_REPLICATES": paths.SPLIT_REPLICATES,
    "KERAS_REPLICATE_MODELS": paths.KERAS_REPLICATE_MODELS,
    "KERAS_REPLICATE_HISTORIES": paths.KERAS_REPLICATE_HISTORIES,
    "SKLEARN_REPLICATE_MODELS": paths.SKLEARN_REPLICATE_MODELS,
    "SKLEARN_REPLICATE_HISTORIES": paths.SKLEARN_REPLICATE_HISTORIES,
    "REPLICATE_METRICS": paths.REPLICATE_METRICS,
    "CLASS_REPORT": paths.CLASS_REPORT,
    "KERAS_MODEL": paths.KERAS_MODEL,
    "KERAS_HISTORY": paths.KERAS_HISTORY,
    "KERAS_SUMMARY": paths.KERAS_SUMMARY,
    "KERAS_PREDICTIONS": paths.KERAS_PREDICTIONS,
    "KERAS_MLFLOW_MODEL": paths.KERAS_MLFLOW_MODEL,
    "SKLEARN_MODEL": paths.SKLEARN_MODEL,
    "SKLEARN_HISTORY": paths.SKLEARN_HISTORY,
    "SKLEARN_SUMMARY": paths.SKLEARN_SUMMARY,
    "SKLEARN_PREDICTIONS": paths.SKLEARN_PREDICTIONS,
    "SKLEARN_MLFLOW_MODEL": paths.SKLEARN_MLFLOW_MODEL,
    "CURVES": paths.CURVES,
    "FIGURES": paths.FIGURES,
    "METRICS": paths.METRICS,
    "MLFLOW_RUNS": paths.MLFLOW_RUNS,
    "VERDICT": paths.VERDICT,
    "HEADLINE": paths.HEADLINE,
    "DESCRIPTION": paths.DESCRIPTION,
    "PUBLISHED": paths.PUBLISHED,
}
# The report is for people, so it sits in reports/ rather than under data/compare/.
REPORT_OUTPUTS = {
    "REPORT_MARKDOWN": paths.REPORT_MARKDOWN,
    "REPORT_HTML": paths.REPORT_HTML,
}


# Each data/ folder is written by the stage of its name, but data/evaluate/: the
# compare stage evaluates both families (pipeline.evaluate) before the verdict.
STAGE_OF_FOLDER = {"evaluate": "compare"}


@pytest.fixture(scope="module")
def dvc() -> dict[str, Any]:
    return yaml.safe_load(DVC_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def stages(dvc: dict[str, Any]) -> dict[str, Any]:
    return dvc["stages"]


def entry_path(entry: str | dict[str, Any]) -> str:
    """An `outs`/`metrics`/`params` entry is a path, or a one-key mapping with options."""
    if isinstance(entry, dict):
        (name,) = entry
        return name
    return entry


def produced(stage: dict[str, Any]) -> set[Path]:
    """The files and directories a stage writes, as DVC tracks them."""
    entries = [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]
    return {Path(entry_path(entry)) for entry in entries}


def all_produced(stages: dict[str, Any]) -> set[Path]:
    return set().union(*(produced(stage) for stage in stages.values()))


def plot_files(dvc: dict[str, Any]) -> set[Path]:
    """Every file that the top-level `plots:` section reads."""
    files: set[Path] = set()
    for plot in dvc["plots"]:
        (identifier, options) = next(iter(plot.items()))
        y = (options or {}).get("y")
        if isinstance(y, dict):
            files.update(Path(name) for name in y)
        else:
            # Without a mapping of files under `y`, the plot's id is the file.
            files.add(Path(identifier))
    return files


@pytest.mark.parametrize(("name", "path"), STAGE_OUTPUTS.items())
def test_path_is_an_output_of_its_stage(stages: dict[str, Any], name: str, path: Path) -> None:
    data, folder, *_ = path.parts
    stage_name = STAGE_OF_FOLDER.get(folder, folder)

    assert data == str(paths.DATA)
    assert stage_name in stages, f"{name} = {path}: no stage {stage_name!r} in dvc.yaml"
    assert path in produced(stages[stage_name]), f"{name} = {path} is not an output"


@pytest.mark.parametrize(("name", "path"), REPORT_OUTPUTS.items())
def test_report_is_an_output_of_compare(stages: dict[str, Any], name: str, path: Path) -> None:
    assert path.parent == paths.REPORTS
    assert path in produced(stages["compare"]), f"{name} = {path} is not an output of compare"


def test_every_stage_output_has_a_constant(stages: dict[str, Any]) -> None:
    assert all_produced(stages) == set(STAGE_OUTPUTS.values()) | set(REPORT_OUTPUTS.values())


def test_reports_are_ignored_by_git() -> None:
    ignored = Path(".gitignore").read_text(encoding="utf-8").splitlines()
    assert f"/{paths.REPORTS}/" in ignored
    assert f"/{paths.DATA}/" in ignored


def test_stage_runs_its_own_module(stages: dict[str, Any]) -> None:
    assert set(stages) == {
        "dataset",
        "split",
        "train_keras",
        "train_sklearn",
        "compare",
        "track",
    }
    for stage_name, stage in stages.items():
        # Through the warm worker's client (pipeline/client.py).
        assert stage["cmd"] == f"python -m pipeline.client pipeline.{stage_name}"
        assert Path("pipeline", f"{stage_name}.py").is_file()
        assert f"pipeline/{stage_name}.py" in stage["deps"]


def test_stage_lists_its_own_params_section(stages: dict[str, Any]) -> None:
    sections = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
    for stage_name, stage in stages.items():
        if stage_name not in sections:
            continue
        listed = stage.get("params", [])
        # `params.yaml:` with no keys means every param, which includes the section.
        every_param = any(
            isinstance(entry, dict) and entry.get(str(PARAMS_FILE), "") is None for entry in listed
        )
        assert every_param or stage_name in listed, f"stage {stage_name} misses its params"


def test_compare_evaluates_with_the_evaluate_params(stages: dict[str, Any]) -> None:
    """The evaluation runs inside compare: its module and its params section are
    compare's, so that a new threshold reruns it."""
    compare = stages["compare"]
    assert "pipeline/evaluate.py" in compare["deps"]
    assert "evaluate" in compare["params"]
    assert paths.METRICS not in {Path(dependency) for dependency in compare["deps"]}


def test_every_params_section_is_read_by_a_stage(stages: dict[str, Any]) -> None:
    """A section no stage lists would change nothing when edited: `dvc repro` and
    `dvc exp run -S` would rerun no stage for it."""
    sections = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
    listed = {
        entry.split(".")[0]
        for stage in stages.values()
        for entry in stage.get("params", [])
        if isinstance(entry, str)
    }
    assert set(sections) <= listed


def test_stage_params_exist_in_params_yaml(stages: dict[str, Any]) -> None:
    sections = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
    for stage in stages.values():
        for entry in stage.get("params", []):
            if isinstance(entry, str):
                assert entry.split(".")[0] in sections, entry


def test_stage_deps_are_produced_upstream_or_in_the_repo(stages: dict[str, Any]) -> None:
    outputs = all_produced(stages)
    params = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
    for stage_name, stage in stages.items():
        # DVC fills ${dataset.path} from params.yaml: the user's file, or the example.
        deps = [dep.replace("${dataset.path}", params["dataset"]["path"]) for dep in stage["deps"]]
        for dependency in map(Path, deps):
            if dependency in outputs:
                continue  # `track` also reads the reports that `compare` writes
            assert dependency.parts[0] != str(paths.DATA), (
                f"{stage_name}: {dependency} is never produced"
            )
            assert dependency.exists(), f"{stage_name}: {dependency} is missing"


def test_every_plot_file_is_produced(dvc: dict[str, Any], stages: dict[str, Any]) -> None:
    outputs = all_produced(stages)
    files = plot_files(dvc)

    assert files
    for file in files:
        inside_output = any(file == output or output in file.parents for output in outputs)
        assert inside_output, f"plot file {file} is not produced by any stage"


def test_plot_files_are_the_curve_and_history_paths(dvc: dict[str, Any]) -> None:
    expected = {paths.KERAS_HISTORY, paths.SKLEARN_HISTORY}
    for family in paths.MODEL_FAMILIES:
        expected |= {
            paths.roc_curve(family),
            paths.precision_recall_curve(family),
            paths.confusion(family),
        }

    assert plot_files(dvc) == expected


def test_each_familys_curves_are_its_own_files_inside_curves() -> None:
    """Both families' curves go to the one folder the evaluation writes, never to the same
    file: a family's curve cannot overwrite the other's."""
    kinds = (paths.roc_curve, paths.precision_recall_curve, paths.confusion)
    curves = {family: [curve(family) for curve in kinds] for family in paths.MODEL_FAMILIES}
    every_curve = [path for family_curves in curves.values() for path in family_curves]
    assert len(set(every_curve)) == len(kinds) * len(paths.MODEL_FAMILIES)
    assert {path.parent for path in every_curve} == {paths.CURVES}
    for family, family_curves in curves.items():
        assert all(family in path.name for path in family_curves)


def test_every_output_persists(stages: dict[str, Any]) -> None:
    """`persist: true` everywhere: DVC would otherwise delete an output before its stage
    runs, and a stage that then fails would lose the last good results."""
    for stage_name, stage in stages.items():
        for entry in [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]:
            options = entry[entry_path(entry)] if isinstance(entry, dict) else {}
            assert options.get("persist") is True, f"{stage_name}: {entry_path(entry)}"
