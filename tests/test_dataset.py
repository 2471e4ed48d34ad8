"""Tests for `pipeline.dataset`: generated data (shapes, balance, signal), the bundled
sets, and users' files with every bad case as one clear line."""

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from pipeline import dataset, paths
from pipeline.config import DatasetConfig
from pipeline.dataset import (
    bundled_dataset,
    class_counts,
    class_counts_summary,
    generate_dataset,
    load_file,
)
from pipeline.errors import PipelineError
from tests.factories import synthetic_config

REPOSITORY = Path(__file__).resolve().parents[1]
KINDS = ["classification", "moons", "circles", "xor", "random_labels"]
# The kinds whose labels are drawn to exact class counts.
EXACT_KINDS = ["moons", "circles", "xor", "random_labels"]


def make_config(**changes: Any) -> DatasetConfig:
    fields = {
        "kind": "classification",
        "n_samples": 200,
        "n_features": 5,
        "n_informative": 3,
        "noise": 0.05,
        "class_sep": 1.0,
        "positive_fraction": 0.5,
    }
    return synthetic_config(**{**fields, **changes})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n_samples", "n_features"), [(200, 5), (301, 2)])
def test_shape_types_and_names(kind: str, n_samples: int, n_features: int) -> None:
    config = make_config(kind=kind, n_samples=n_samples, n_features=n_features, n_informative=2)

    dataset = generate_dataset(config, seed=0)

    assert dataset.features.shape == (n_samples, n_features)
    assert dataset.features.dtype == np.float32
    assert dataset.labels.shape == (n_samples,)
    assert dataset.labels.dtype == np.int32
    assert set(np.unique(dataset.labels).tolist()) == {0, 1}
    assert dataset.feature_names == tuple(f"x{index}" for index in range(1, n_features + 1))
    assert np.isfinite(dataset.features).all()


@pytest.mark.parametrize(
    ("n_samples", "n_features", "n_informative", "noise", "positive_fraction", "chunk_rows"),
    [
        (2000, 8, 4, 0.05, 0.5, 1 << 20),  # the defaults
        (3001, 5, 1, 0.0, 0.3, 1000),  # noise features in several chunks, a last short one
        (1000, 6, 6, 0.2, 0.5, 1 << 20),  # no noise features at all
        (999, 2, 1, 0.1, 0.1, 7),
    ],
)
def test_classification_is_make_classifications_data_value_for_value(
    monkeypatch: pytest.MonkeyPatch,
    n_samples: int,
    n_features: int,
    n_informative: int,
    noise: float,
    positive_fraction: float,
    chunk_rows: int,
) -> None:
    # The noise features are drawn in chunks straight into the float32 array: every
    # value must still be what make_classification gives with every feature.
    monkeypatch.setattr(dataset, "GENERATED_CHUNK_ROWS", chunk_rows)
    config = make_config(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative,
        noise=noise,
        positive_fraction=positive_fraction,
        class_sep=0.7,
    )

    generated = generate_dataset(config, seed=11)

    features, labels = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative,
        n_redundant=0,
        n_clusters_per_class=1 if n_informative == 1 else 2,
        weights=[1 - positive_fraction],
        flip_y=noise,
        class_sep=0.7,
        shuffle=False,
        random_state=11,
    )
    assert generated.features.tobytes() == features.astype(np.float32).tobytes()
    assert generated.labels.tolist() == labels.tolist()
    assert generated.features.flags.owndata  # one array, not a view of a larger one


@pytest.mark.parametrize("kind", EXACT_KINDS)
@pytest.mark.parametrize(("n_samples", "positive_fraction"), [(200, 0.5), (500, 0.3), (333, 0.1)])
def test_exact_class_counts(kind: str, n_samples: int, positive_fraction: float) -> None:
    config = make_config(kind=kind, n_samples=n_samples, positive_fraction=positive_fraction)

    labels = generate_dataset(config, seed=1).labels

    negatives, positives = class_counts(n_samples, positive_fraction)
    assert int((labels == 0).sum()) == negatives
    assert int((labels == 1).sum()) == positives
    assert positives == round(n_samples * positive_fraction)


@pytest.mark.parametrize("positive_fraction", [0.5, 0.3, 0.1])
def test_classification_positive_fraction_is_approximate(positive_fraction: float) -> None:
    # Without flipped labels make_classification draws the class weights almost exactly.
    config = make_config(n_samples=2000, noise=0.0, positive_fraction=positive_fraction)

    labels = generate_dataset(config, seed=2).labels

    assert labels.mean() == pytest.approx(positive_fraction, abs=0.01)


def test_classification_flipped_labels_move_fraction_towards_half() -> None:
    # A share `noise` of labels is redrawn uniformly, so E[positives] = p (1 - noise) + noise / 2.
    config = make_config(n_samples=2000, noise=0.2, positive_fraction=0.1)

    labels = generate_dataset(config, seed=3).labels

    assert labels.mean() == pytest.approx(0.1 * 0.8 + 0.1, abs=0.025)


@pytest.mark.parametrize(("n_samples", "positive_fraction"), [(10, 0.01), (10, 0.99), (2, 0.5)])
def test_class_counts_keep_one_row_of_each_class(n_samples: int, positive_fraction: float) -> None:
    negatives, positives = class_counts(n_samples, positive_fraction)

    assert negatives >= 1
    assert positives >= 1
    assert negatives + positives == n_samples


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_data(kind: str) -> None:
    config = make_config(kind=kind)

    first = generate_dataset(config, seed=7)
    second = generate_dataset(config, seed=7)

    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(first.labels, second.labels)


@pytest.mark.parametrize("kind", KINDS)
def test_different_seed_different_data(kind: str) -> None:
    config = make_config(kind=kind)

    first = generate_dataset(config, seed=7)
    second = generate_dataset(config, seed=8)

    assert not np.array_equal(first.features, second.features)
    assert not np.array_equal(first.labels, second.labels)


@pytest.mark.parametrize("n_features", [2, 4])
def test_xor_without_noise_labels_by_quadrant(n_features: int) -> None:
    config = make_config(kind="xor", n_samples=500, n_features=n_features, noise=0.0)

    dataset = generate_dataset(config, seed=4)

    x1, x2 = dataset.features[:, 0], dataset.features[:, 1]
    np.testing.assert_array_equal(dataset.labels, (x1 * x2 > 0).astype(np.int32))
    assert np.abs(dataset.features[:, :2]).max() <= 1.0


def mean_cross_validated_accuracy(config: DatasetConfig, seed: int) -> float:
    dataset = generate_dataset(config, seed)
    scores = cross_val_score(LogisticRegression(), dataset.features, dataset.labels, cv=5)
    return float(scores.mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_labels_cannot_be_learned(seed: int) -> None:
    config = make_config(kind="random_labels", n_samples=2000, n_features=8)

    accuracy = mean_cross_validated_accuracy(config, seed)

    assert accuracy == pytest.approx(0.5, abs=0.08)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_can_be_learned(seed: int) -> None:
    # Two well-separated informative features: a linear model must beat chance clearly.
    config = make_config(n_samples=2000, n_features=8, n_informative=2, class_sep=2.0)

    accuracy = mean_cross_validated_accuracy(config, seed)

    assert accuracy > 0.7


# Bundled and user data (dataset.source other than synthetic).


@pytest.mark.parametrize(
    ("name", "rows", "features", "classes"),
    [
        ("breast_cancer", 569, 30, ["malignant", "benign"]),
        ("wine", 178, 13, ["class_0", "class_1", "class_2"]),
        ("iris", 150, 4, ["setosa", "versicolor", "virginica"]),
        ("digits", 1797, 64, list(range(10))),
    ],
)
def test_bundled_datasets(name: str, rows: int, features: int, classes: list) -> None:
    data = bundled_dataset(name)
    assert data.features.shape == (rows, features)
    assert (data.features.dtypes == np.float32).all()
    assert data.classes == classes
    np.testing.assert_array_equal(np.unique(data.labels), np.arange(len(classes)))


def file_config(path: Path, target: str = "approved", **changes: Any) -> DatasetConfig:
    return synthetic_config(
        kind="classification",
        n_samples=100,
        n_features=4,
        n_informative=2,
        noise=0.0,
        class_sep=1.0,
        positive_fraction=0.5,
    ).model_copy(update={"source": "file", "path": str(path), "target": target, **changes})


def test_user_csv_with_text_and_gaps_loads() -> None:
    data = load_file(file_config(Path("examples/loans.csv")))
    assert data.classes == ["no", "yes"]
    assert data.target == "approved"
    assert list(data.features.columns) == [
        "age", "income", "region", "employment", "years_employed", "debt_ratio",
    ]  # fmt: skip
    # Text as categories: each distinct value held once, not once per row.
    assert isinstance(data.features["region"].dtype, pd.CategoricalDtype)
    assert data.features["age"].dtype == np.float32
    assert data.features["income"].isna().sum() > 0
    # Codes follow the sorted classes: "no" -> 0, "yes" -> 1.
    raw = pd.read_csv("examples/loans.csv")["approved"]
    np.testing.assert_array_equal(data.labels, (raw == "yes").astype(int))


def test_user_parquet_and_integer_target_load(tmp_path: Path) -> None:
    kinds = [3, 7, 3, 9, 9, 7, 3, 9, 7]
    frame = pd.DataFrame({"a": np.arange(9.0), "b": [1, 0] * 4 + [1], "kind": kinds})
    path = tmp_path / "data.parquet"
    frame.to_parquet(path)
    data = load_file(file_config(path, target="kind"))
    assert data.classes == [3, 7, 9]
    np.testing.assert_array_equal(data.labels, [0, 1, 0, 2, 2, 1, 0, 2, 1])


def test_identifier_like_text_column_is_warned_about(tmp_path: Path, caplog) -> None:
    path = tmp_path / "data.csv"
    rows = [f"customer{index},{'ab'[index % 2]},{index},{'yes' if index % 3 else 'no'}"
            for index in range(10)]  # fmt: skip
    path.write_text("customer,group,a,approved\n" + "\n".join(rows) + "\n")
    with caplog.at_level("WARNING", logger="pipeline.dataset"):
        data = load_file(file_config(path))
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert "text column 'customer' has 10 distinct values in 10 rows" in warnings[0]
    # A warning only: the column is still a feature.
    assert list(data.features.columns) == ["customer", "group", "a"]


BAD_FILES = [
    pytest.param("a,b,approved\n", {}, r"has a header but no rows", id="header only"),
    pytest.param("", {}, r"the file is empty", id="empty file"),
    pytest.param(
        "a,a,approved\n1,2,yes\n3,4,no\n",
        {},
        r"column names appear more than once: a",
        id="duplicate columns",
    ),
    pytest.param(
        "a,b,outcome\n1,2,yes\n3,4,no\n",
        {},
        r"no column dataset\.target = 'approved'",
        id="missing target",
    ),
    pytest.param(
        "a,b,aproved\n1,2,yes\n3,4,no\n",
        {},
        r"no column dataset\.target = 'approved'; did you mean 'aproved'\?",
        id="misspelt target",
    ),
    pytest.param(
        "a,b,class\n1,2,yes\n3,4,no\n",
        {"target": "CLASS"},
        r"no column dataset\.target = 'CLASS'; did you mean 'class'\?",
        id="target in another case",
    ),
    pytest.param(
        "a,b,approved\n1,2,yes\n3,4,yes\n",
        {},
        r"target column 'approved' has one class only",
        id="one class",
    ),
    pytest.param(
        "a,b,approved\n1,2,yes\n3,4,no\n5,6,yes\n7,8,no\n9,1,yes\n2,3,maybe\n4,4,no\n",
        {},
        r"target column 'approved' has 3 classes, 1 of them in fewer than 3 rows "
        r"\('maybe' \(1 row\)\); the stratified split needs 3 rows of each class",
        id="rare class",
    ),
    pytest.param(
        "a,b,price\n1,2,10.5\n3,4,11.25\n5,6,12.0\n7,8,13.5\n9,1,14.0\n",
        {"target": "price"},
        r"target column 'price' has 5 classes, 5 of them in fewer than 3 rows "
        r"\(10\.5 \(1 row\), 11\.25 \(1 row\), 12\.0 \(1 row\), \.\.\.\)",
        id="continuous target",
    ),
    pytest.param(
        "a,b,approved\n1,2,yes\n3,4,\n5,6,no\n",
        {},
        r"target column 'approved' is empty in 1 rows \(first at row 1\)",
        id="empty target cell",
    ),
    pytest.param(
        # A CSV reads the column as text throughout: "1", "yes", "no".
        "a,b,approved\n1,2,yes\n3,4,1\n5,6,no\n7,8,yes\n9,1,no\n2,3,1\n",
        {},
        r"target column 'approved' mixes numbers and text; use one type for every class",
        id="numbers and text in the target",
    ),
    pytest.param(
        "a,b,approved\n1,7,yes\n3,7,no\n",
        {},
        r"column 'b' has a single value \(7\)",
        id="constant column",
    ),
    pytest.param(
        "a,b,approved\n1,,yes\n3,,no\n", {}, r"column 'b' has no values", id="empty column"
    ),
    pytest.param(
        "a,b,approved\n1,inf,yes\n3,4,no\n",
        {},
        r"column 'b' has infinite values",
        id="infinity",
    ),
    pytest.param(
        "a,colour,approved\n1,red,yes\n3,blue,no\n",
        {"categorical": "reject"},
        r"column 'colour' holds text \('red', 'blue', \.\.\.\); set dataset\.categorical: "
        r"one_hot",
        id="text rejected",
    ),
    pytest.param(
        "a,b,approved\n1,,yes\n3,4,no\n5,6,no\n",
        {"missing": "reject"},
        r"column 'b' has 1 empty cells \(first at row 0\); set dataset\.missing: impute",
        id="gap rejected",
    ),
    pytest.param(
        "a,label,approved\n1,2,yes\n3,4,no\n",
        {},
        r"a feature column is named 'label'",
        id="reserved name",
    ),
    pytest.param("approved\nyes\nno\n", {}, r"no columns besides the target", id="no features"),
    pytest.param(
        'a,b,approved\n1,2,"yes\n3,4,no\n', {}, r"cannot be read as csv", id="broken quoting"
    ),
]


@pytest.mark.parametrize(("content", "changes", "message"), BAD_FILES)
def test_bad_user_file_is_one_clear_line(
    tmp_path: Path, content: str, changes: dict, message: str
) -> None:
    path = tmp_path / "data.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PipelineError, match=message) as caught:
        load_file(file_config(path, **changes))
    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("content", "changes", "message"), BAD_FILES)
def test_bad_user_file_keeps_the_previous_outputs(
    tmp_path: Path, monkeypatch, content: str, changes: dict, message: str
) -> None:
    params = yaml.safe_load((REPOSITORY / paths.PARAMS).read_text())
    params["dataset"] |= {"source": "file", "path": "table.csv", **changes}
    monkeypatch.chdir(tmp_path)
    paths.PARAMS.write_text(yaml.safe_dump(params))
    Path("table.csv").write_text(content, encoding="utf-8")
    paths.DATASET.parent.mkdir(parents=True)
    paths.DATASET.write_bytes(b"the previous data set")
    paths.CLASSES.write_text('{"target": "approved", "classes": ["no", "yes"]}')
    with pytest.raises(PipelineError, match=message):
        dataset.main()
    assert paths.DATASET.read_bytes() == b"the previous data set"
    assert paths.CLASSES.read_text() == '{"target": "approved", "classes": ["no", "yes"]}'
    # Nothing half-written beside them either.
    assert sorted(path.name for path in paths.DATASET.parent.iterdir()) == [
        "classes.json",
        "dataset.parquet",
    ]


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "absent.csv"
    with pytest.raises(PipelineError, match=r"absent\.csv: no such file \(dataset\.path\)"):
        load_file(file_config(missing))
    binary = tmp_path / "data.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage\x81")
    with pytest.raises(PipelineError, match=r"cannot be read as csv"):
        load_file(file_config(binary))
    corrupt = tmp_path / "data.parquet"
    corrupt.write_bytes(b"PAR1 not really")
    with pytest.raises(PipelineError, match=r"cannot be read as parquet"):
        load_file(file_config(corrupt))


def test_the_success_line_lists_few_classes_and_summarizes_many() -> None:
    assert class_counts_summary(["no", "yes"], [330, 270]) == "{'no': 330, 'yes': 270}"
    many = [f"class {number}" for number in range(11)]
    counts = [4] + [12] * 9 + [1200]
    assert class_counts_summary(many, counts) == "of 4 to 1,200 rows each"
    # Ten classes are still listed one by one.
    assert class_counts_summary(many[:10], counts[:10]).count("class ") == 10
