"""The first stages run in-process in a temporary folder, as `dvc repro` runs them."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import dataset, paths, split

REPOSITORY = Path(__file__).resolve().parents[1]


def split_in(folder: Path, monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any]) -> None:
    """Work in `folder` with the committed params changed by `changes` (dotted keys),
    then run the dataset and split stages there."""
    params = yaml.safe_load((REPOSITORY / paths.PARAMS).read_text(encoding="utf-8"))
    for key_path, value in changes.items():
        *parents, last = key_path.split(".")
        section = params
        for key in parents:
            section = section[key]
        section[last] = value
    monkeypatch.chdir(folder)
    paths.PARAMS.write_text(yaml.safe_dump(params), encoding="utf-8")
    dataset.main()
    split.main()


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
