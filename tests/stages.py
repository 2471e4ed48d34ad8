"""The stages before `track`, run in-process in a temporary folder as `dvc repro` runs them."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import compare, dataset, paths, split, train_keras, train_sklearn

REPOSITORY = Path(__file__).resolve().parents[1]


def split_in(folder: Path, monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any]) -> None:
    """Work in `folder` with the committed params changed by `changes` (dotted keys),
    then run the dataset and split stages there."""
    write_params(folder, monkeypatch, changes)
    dataset.main()
    split.main()


# A small, quick pipeline: 200 rows, one replicate of 2 epochs per library.
TINY = {"dataset.n_samples": 200, "model.epochs": 2, "replicates.count": 1}


def trained_in(folder: Path) -> None:
    """Run every stage before `track` in `folder`, with `TINY` params; the working
    directory is left as it was."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        split_in(folder, monkeypatch, TINY)
        train_sklearn.main()
        train_keras.main()
        compare.main()


def write_params(folder: Path, monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any]) -> None:
    """Work in `folder`, with the committed params changed by `changes`."""
    params = yaml.safe_load((REPOSITORY / paths.PARAMS).read_text(encoding="utf-8"))
    for key_path, value in changes.items():
        *parents, last = key_path.split(".")
        section = params
        for key in parents:
            section = section[key]
        section[last] = value
    monkeypatch.chdir(folder)
    paths.PARAMS.write_text(yaml.safe_dump(params), encoding="utf-8")


# The sources whose rows only the stages know, with the train rows a split of 20% test
# and 20% validation leaves: iris has 150 rows, examples/loans.csv 600.
SOURCES_CHECKED_BY_THE_STAGES = [
    pytest.param({"dataset.source": "iris"}, 90, id="bundled"),
    pytest.param(
        # An absolute dataset.path, read from another working directory.
        {"dataset.source": "file", "dataset.path": str(REPOSITORY / "examples" / "loans.csv")},
        360,
        id="file",
    ),
]
