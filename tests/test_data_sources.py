"""End to end: the real `dvc repro` on scikit-learn's bundled sets and on a user's own
file, and a bad file that fails in one line and keeps every output."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
from mlflow.tracking import MlflowClient

from pipeline import paths
from pipeline.files import file_md5, read_json, read_table
from tests.endtoend import copy_project, execute, set_params

pytestmark = pytest.mark.slow


@pytest.fixture
def project(built_project: Path, tmp_path: Path) -> Path:
    return copy_project(built_project, tmp_path / "project")


def majority_share(project: Path) -> float:
    """Accuracy of always predicting the most frequent test class."""
    labels = read_table(project / paths.TEST, n_classes=100).labels
    return np.bincount(labels).max() / len(labels)


@pytest.mark.parametrize(
    ("source", "n_classes", "epochs", "margin"),
    [("breast_cancer", 2, 15, 0.2), ("digits", 10, 25, 0.6)],
)
def test_bundled_set_beats_the_majority_class(
    project: Path, source: str, n_classes: int, epochs: int, margin: float
):
    set_params(project, dataset__source=source, model__epochs=epochs, model__learning_rate=0.01)
    execute(project, "dvc", "repro")
    classes = read_json(project / paths.CLASSES)["classes"]
    assert len(classes) == n_classes
    baseline = majority_share(project)
    metrics = read_json(project / paths.METRICS)
    for family in ("keras", "sklearn"):
        assert metrics[family]["accuracy"] >= baseline + margin, (family, metrics[family])
        assert metrics[family]["balanced_accuracy"] > 1 / n_classes + margin / 2
    if n_classes > 2:
        assert {"f1_macro", "f1_weighted", "precision_macro", "roc_auc"} <= set(metrics["keras"])
        report = read_json(project / paths.CLASS_REPORT)
        assert {str(code) for code in range(10)} <= set(report["keras"])


def test_user_csv_with_text_target_categories_and_gaps(project: Path):
    set_params(
        project,
        dataset__source="file",
        dataset__path="examples/loans.csv",
        dataset__target="approved",
        model__epochs=15,
        model__learning_rate=0.01,
        model__class_weight="balanced",
    )
    completed = execute(project, "dvc", "repro")
    assert "dataset: 600 rows, 6 features, 2 classes {'no': 330, 'yes': 270} (file)" in (
        completed.stderr
    )
    preprocessing = read_json(project / paths.PREPROCESSING)
    assert preprocessing["categorical"]["region"]["categories"] == [
        "east",
        "north",
        "south",
        "west",
    ]
    assert "impute_empty_with" in preprocessing["numeric"]["income"]
    assert read_table(project / paths.TRAIN).feature_names == tuple(
        preprocessing["output_features"]
    )
    # Decoded class names in the confusion rows that `dvc plots` draws.
    confusion = (project / paths.confusion("keras")).read_text().splitlines()
    assert {row.split(",")[0] for row in confusion[1:]} == {"no", "yes"}
    metrics = read_json(project / paths.METRICS)
    for family in ("keras", "sklearn"):
        assert metrics[family]["accuracy"] >= majority_share(project) + 0.15
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run_ids = read_json(project / paths.MLFLOW_RUNS)
    artifacts = {item.path for item in client.list_artifacts(run_ids["parent_run_id"])}
    assert {"preprocessing.json", "preprocessor.skops", "classes.json"} <= artifacts
    child = client.get_run(run_ids["keras_run_id"])
    assert child.data.params["dataset.source"] == "file"
    assert child.data.params["model.class_weight"] == "balanced"

    # The saved transformer turns the raw rows into exactly the rows the models saw.
    preprocessor_path = project / paths.PREPROCESSOR
    preprocessor = skops.io.load(
        preprocessor_path, trusted=skops.io.get_untrusted_types(file=preprocessor_path)
    )
    raw = pd.read_csv(project / "examples" / "loans.csv").drop(columns="approved")
    transformed = preprocessor.transform(raw).astype(np.float32)
    model_rows = np.concatenate(
        [
            read_table(project / split).features
            for split in (paths.TRAIN, paths.VALIDATION, paths.TEST)
        ]
    )
    np.testing.assert_allclose(
        np.unique(transformed, axis=0), np.unique(model_rows, axis=0), rtol=1e-6, atol=1e-6
    )

    # Editing the file is a change DVC sees: the pipeline reruns from the dataset stage.
    loans = project / "examples" / "loans.csv"
    loans.write_text(loans.read_text().replace("62.0,116100.0", "63.0,116100.0", 1))
    status = execute(project, "dvc", "status").stdout
    assert "examples/loans.csv" in status


def test_bad_user_file_fails_in_one_line_and_keeps_every_output(project: Path):
    bad = project / "examples" / "bad.csv"
    bad.write_text("a,a,approved\n1,2,yes\n3,4,no\n")
    before = {str(path): file_md5(path) for path in (project / "data").rglob("*") if path.is_file()}
    set_params(project, dataset__source="file", dataset__path="examples/bad.csv")
    failed = execute(project, "dvc", "repro", check=False)
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: examples/bad.csv: column names appear more than once: a; "
        "every column needs its own name"
    ]
    assert "Traceback" not in failed.stderr
    after = {str(path): file_md5(path) for path in (project / "data").rglob("*") if path.is_file()}
    assert after == before


def test_a_target_that_split_would_refuse_is_refused_before_anything_is_written(project: Path):
    # 500 values of 4 rows each: `split` cannot stratify them, and `dataset` says so
    # before it replaces data/dataset/ and before DVC records anything in dvc.lock.
    rng = np.random.default_rng(0)
    prices = pd.DataFrame(
        {
            "size": rng.normal(size=2000),
            "price": rng.permutation(np.repeat(np.arange(500) + 0.5, 4)),
        }
    )
    prices.to_csv(project / "examples" / "prices.csv", index=False)
    outputs = [
        path
        for folder in ("data", "reports")
        for path in (project / folder).rglob("*")
        if path.is_file()
    ]
    before = {str(path): file_md5(path) for path in [*outputs, project / "dvc.lock"]}
    set_params(
        project,
        dataset__source="file",
        dataset__path="examples/prices.csv",
        dataset__target="price",
    )

    failed = execute(project, "dvc", "repro", check=False)

    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert errors[0] == (
        "error: examples/prices.csv: target column 'price' has 500 classes in 2000 rows, but "
        "split.test_size = 0.2 and split.validation_size = 0.2 leave 400 test rows; every "
        "split needs a row of each class (a number to predict rather than classes?)"
    )
    assert "Traceback" not in failed.stderr
    assert "Running stage 'split'" not in failed.stdout
    after = {str(path): file_md5(path) for path in [*outputs, project / "dvc.lock"]}
    assert after == before
    assert not (project / paths.MLFLOW_DATABASE).exists()
