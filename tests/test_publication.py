"""Tests for `pipeline.publication`: the parent run's name, the params hash, and the
publish key, which follows every file that track publishes."""

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline import paths
from pipeline.config import Params
from pipeline.errors import PipelineError
from pipeline.publication import (
    VERDICT_KEYS,
    Revision,
    current_revision,
    family_results,
    params_hash,
    parent_run_name,
    read_verdict,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("revision", "name"),
    [
        (Revision("0123456789abcdef", False, "tuned-palp", "0123456789abcdef"), "tuned-palp"),
        (Revision("0123456789abcdef", False, None, None), "0123456"),
        (Revision("0123456789abcdef", True, None, None), "0123456-dirty"),
    ],
)
def test_parent_run_name(revision: Revision, name: str):
    assert parent_run_name(revision) == name


def test_params_hash_follows_the_params(default_params: Params):
    same = Params.model_validate(default_params.model_dump())
    changed = default_params.model_copy(
        update={"model": default_params.model.model_copy(update={"learning_rate": 0.01})}
    )
    assert params_hash(default_params) == params_hash(same)
    assert params_hash(default_params) != params_hash(changed)
    assert len(params_hash(default_params)) == 64


def write_published_files(changed: Path | None = None) -> None:
    """Tiny real versions of the files that identify a publication; the file `changed`
    holds one value more than the others."""
    import numpy as np

    from pipeline import paths
    from pipeline.files import Table, write_csv, write_json, write_table, write_text

    def value(path: Path) -> float:
        return 1.0 if path == changed else 0.0

    for path in (paths.TRAIN, paths.VALIDATION, paths.TEST):
        features = np.array([[value(path)], [2.0]], dtype=np.float32)
        write_table(Table(features, np.array([0, 1], dtype=np.int32), ("x",)), path)
    for path in (
        paths.KERAS_HISTORY,
        paths.SKLEARN_HISTORY,
        paths.KERAS_REPLICATE_HISTORIES,
        paths.SKLEARN_REPLICATE_HISTORIES,
    ):
        write_csv(pd.DataFrame({"epoch": [1, 2], "loss": [0.7, 0.6 + value(path)]}), path)
    write_csv(
        pd.DataFrame({"family": ["keras"], "roc_auc": [0.8 + value(paths.REPLICATE_METRICS)]}),
        paths.REPLICATE_METRICS,
    )
    for path in (
        paths.PREPROCESSING,
        paths.CLASSES,
        paths.METRICS,
        paths.VERDICT,
        paths.KERAS_SUMMARY,
        paths.SKLEARN_SUMMARY,
    ):
        write_json({"value": value(path)}, path)
    # The model archives, the report, the run description and the figures: bytes.
    for path in (
        paths.PREPROCESSOR,
        paths.KERAS_MLFLOW_MODEL,
        paths.SKLEARN_MLFLOW_MODEL,
        paths.DESCRIPTION,
        paths.REPORT_MARKDOWN,
        paths.REPORT_HTML,
        FIGURE,
    ):
        write_text(f"{path} {value(path)}", path)


FIGURE = Path("data/evaluate/figures/roc.png")  # one of a published folder's files
# Named one by one, not read from publication.PUBLISHED_FILES, which the test checks.
PUBLISHED_PATHS = [
    "TRAIN",
    "VALIDATION",
    "TEST",
    "PREPROCESSING",
    "PREPROCESSOR",
    "CLASSES",
    "KERAS_HISTORY",
    "SKLEARN_HISTORY",
    "KERAS_REPLICATE_HISTORIES",
    "SKLEARN_REPLICATE_HISTORIES",
    "KERAS_SUMMARY",
    "SKLEARN_SUMMARY",
    "KERAS_MLFLOW_MODEL",
    "SKLEARN_MLFLOW_MODEL",
    "METRICS",
    "REPLICATE_METRICS",
    "VERDICT",
    "DESCRIPTION",
    "REPORT_MARKDOWN",
    "REPORT_HTML",
]


@pytest.mark.parametrize("name", [*PUBLISHED_PATHS, "a figure"])
def test_publish_key_follows_each_published_file(
    name: str, default_params: Params, tmp_path: Path, monkeypatch
):
    from pipeline import paths
    from pipeline.publication import publish_key

    monkeypatch.chdir(tmp_path)
    write_published_files()
    key = publish_key(default_params)
    write_published_files()
    assert publish_key(default_params) == key

    write_published_files(changed=FIGURE if name == "a figure" else getattr(paths, name))

    assert publish_key(default_params) != key
    assert len(key) == 64


def test_publish_key_covers_every_file_that_track_reads():
    """Every stage output that track depends on (and so may log) is in the key: a
    rerun that would publish anything different publishes anew."""
    import yaml

    from pipeline import paths
    from pipeline.publication import PUBLISHED_FILES, PUBLISHED_FOLDERS, REPORT_FILES

    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["track"]["deps"]
    outputs = {Path(dep) for dep in deps if dep.split("/")[0] in ("data", "reports")}
    assert outputs == set(PUBLISHED_FILES) | set(PUBLISHED_FOLDERS)
    assert set(PUBLISHED_FILES) == {getattr(paths, name) for name in PUBLISHED_PATHS}
    assert set(REPORT_FILES) <= set(PUBLISHED_FILES)


def git(folder: Path, *arguments: str) -> str:
    completed = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *arguments],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout.strip()


def test_the_revision_is_the_commit_and_whether_tracked_files_changed(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert current_revision({}) == Revision("unknown", False, None, None)  # not a repository
    git(tmp_path, "init", "-q")
    # No commit yet: git answers `rev-parse HEAD` with an error (and "HEAD" on stdout).
    assert current_revision({}).commit == "unknown"
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "dvc.lock").write_text("stages: {}\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "first")
    commit = git(tmp_path, "rev-parse", "HEAD")
    assert current_revision({}) == Revision(commit, False, None, None)

    # DVC rewrites dvc.lock during every run, and untracked files are not the code's.
    (tmp_path / "dvc.lock").write_text("stages: {changed: 1}\n")
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert current_revision({}) == Revision(commit, False, None, None)

    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert current_revision({}) == Revision(commit, True, None, None)
    # Under `dvc exp run`, the changes are the experiment's params: recorded, not dirty.
    experiment = {"DVC_EXP_NAME": "tuned-palp", "DVC_EXP_BASELINE_REV": "0123456789abcdef"}
    assert current_revision(experiment) == Revision(
        "0123456789abcdef", False, "tuned-palp", "0123456789abcdef"
    )
    assert current_revision({"DVC_EXP_NAME": "", "DVC_EXP_BASELINE_REV": ""}) == Revision(
        commit, True, None, None
    )


def test_a_missing_or_incomplete_verdict_is_one_line(tmp_path: Path):
    path = tmp_path / "verdict.json"
    with pytest.raises(PipelineError) as caught:
        read_verdict(path)
    assert str(caught.value) == f"{path}: missing; run the compare stage first"
    path.write_text(json.dumps({"winner": "keras", "significant": True, "p_value": 0.5}))
    with pytest.raises(PipelineError) as caught:
        read_verdict(path)
    assert str(caught.value) == (
        f"{path}: missing keys ['primary_metric', 'replicates', 'difference']"
    )
    complete = {key: 1 for key in VERDICT_KEYS} | {"extra": "kept"}
    path.write_text(json.dumps(complete))
    assert read_verdict(path) == complete


def test_each_replicate_gets_its_own_test_metrics_whatever_the_row_order(
    tmp_path: Path, monkeypatch
):
    from tests.factories import built_stage_outputs

    shutil.copytree(built_stage_outputs(2), tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    rows = pd.DataFrame(
        {
            "family": ["sklearn", "keras", "keras", "sklearn"],
            "replicate": [1, 1, 0, 0],
            "roc_auc": [0.4, 0.3, 0.2, 0.1],
        }
    )
    results = family_results("keras", rows)
    assert results.replicate_metrics == [{"roc_auc": 0.2}, {"roc_auc": 0.3}]
    assert family_results("sklearn", rows).replicate_metrics == [
        {"roc_auc": 0.1},
        {"roc_auc": 0.4},
    ]
    assert results.flavor == "keras"
    assert results.mlflow_model == paths.KERAS_MLFLOW_MODEL
    assert results.history_path == paths.KERAS_HISTORY
    assert [list(history["epoch"]) for history in results.replicate_histories] == [
        [1, 2, 3],
        [1, 2, 3],
    ]


@pytest.mark.parametrize(
    ("split", "labels", "features"),
    [
        pytest.param(paths.TRAIN, [0, 1, 2, 1], ("a", "b", "c"), id="train-third-class"),
        pytest.param(
            paths.VALIDATION, [0, 1, 2, 1], ("a", "b", "c"), id="validation-third-class"
        ),  # fmt: skip
        pytest.param(paths.TEST, [0, 1, 2, 1], ("a", "b", "c"), id="test-third-class"),
        pytest.param(paths.VALIDATION, [0, 1, 0, 1], ("a", "b", "x"), id="validation-features"),
        pytest.param(paths.TEST, [0, 1, 0, 1], ("a", "b", "x"), id="test-features"),
    ],
)
def test_splits_that_do_not_match_are_refused_before_anything_is_published(
    split: Path, labels: list[int], features: tuple[str, ...], default_params: Params,
    tmp_path: Path, monkeypatch,
):  # fmt: skip
    import numpy as np

    from pipeline.files import Table, write_table
    from pipeline.publication import prepare
    from tests.factories import built_stage_outputs

    shutil.copytree(built_stage_outputs(2), tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    # classes.json names two classes; the train split's features are a, b and c.
    table = Table(np.zeros((4, 3), dtype=np.float32), np.array(labels, dtype=np.int32), features)
    write_table(table, split)
    with pytest.raises(PipelineError, match=f"^{split}: "):
        prepare(default_params, Revision("0123456", False, None, None), "key")


def test_every_class_that_the_dataset_recorded_is_accepted(
    default_params: Params, tmp_path: Path, monkeypatch
):
    import numpy as np

    from pipeline.files import Table, write_json, write_table
    from pipeline.publication import prepare
    from tests.factories import built_stage_outputs

    shutil.copytree(built_stage_outputs(2), tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    write_json({"target": "grade", "classes": ["a", "b", "c"]}, paths.CLASSES)
    for split in (paths.TRAIN, paths.VALIDATION, paths.TEST):
        labels = np.array([0, 1, 2, 1], dtype=np.int32)
        write_table(Table(np.zeros((4, 3), dtype=np.float32), labels, ("a", "b", "c")), split)
    publication = prepare(default_params, Revision("0123456", False, None, None), "key")
    assert [list(table.labels) for _, table in publication.splits.values()] == [[0, 1, 2, 1]] * 3
    assert list(publication.splits) == ["train", "validation", "test"]


def test_a_family_whose_files_were_changed_since_its_stage_is_refused(tmp_path: Path, monkeypatch):
    from pipeline.files import file_md5, write_csv
    from tests.factories import built_stage_outputs

    shutil.copytree(built_stage_outputs(2), tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    rows = pd.read_csv(paths.REPLICATE_METRICS)
    # dvc.lock records another archive than the one there now.
    recorded = {"path": str(paths.KERAS_MLFLOW_MODEL), "md5": "0" * 32}
    Path("dvc.lock").write_text(
        yaml.safe_dump({"schema": "2.0", "stages": {"train_keras": {"outs": [recorded]}}})
    )
    with pytest.raises(PipelineError, match=f"^{paths.KERAS_MLFLOW_MODEL}: MD5 "):
        family_results("keras", rows)
    recorded["md5"] = file_md5(paths.KERAS_MLFLOW_MODEL)
    Path("dvc.lock").write_text(
        yaml.safe_dump({"schema": "2.0", "stages": {"train_keras": {"outs": [recorded]}}})
    )
    assert family_results("keras", rows).flavor == "keras"

    # A replicate_histories.csv without its replicate column is named, not guessed at.
    histories = pd.read_csv(paths.KERAS_REPLICATE_HISTORIES).drop(columns="replicate")
    write_csv(histories, paths.KERAS_REPLICATE_HISTORIES)
    with pytest.raises(PipelineError) as caught:
        family_results("keras", rows)
    assert str(caught.value) == f"{paths.KERAS_REPLICATE_HISTORIES}: missing columns ['replicate']"
