"""Config objects for tests, with every required key filled in."""

from typing import Any

from pipeline.config import DatasetConfig

# The keys that only `dataset.source: file` reads, as the committed params.yaml has them.
FILE_KEYS = {
    "path": "examples/loans.csv",
    "target": "approved",
    "categorical": "one_hot",
    "missing": "impute",
}


def synthetic_config(**fields: Any) -> DatasetConfig:
    """A `dataset` section for generated data with these synthetic settings."""
    return DatasetConfig(source="synthetic", **FILE_KEYS, **fields)
