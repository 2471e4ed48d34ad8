"""Tiny, seeded fixtures shared by the tests."""

from pathlib import Path

import pytest

from pipeline.config import GenerateConfig, ModelSpec, Params, SplitConfig, load_params
from pipeline.generate import generate_dataset
from pipeline.split import Splits, split_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def default_params() -> Params:
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def tiny_spec(default_params: Params) -> ModelSpec:
    """The textbook network, trained briefly."""
    return default_params.model.model_copy(update={"epochs": 3, "batch_size": 16})


@pytest.fixture(scope="session")
def tiny_splits() -> Splits:
    """300 rows of learnable data: 180 train, 60 validation, 60 test."""
    dataset = generate_dataset(
        GenerateConfig(
            kind="classification",
            n_samples=300,
            n_features=8,
            n_informative=4,
            noise=0.0,
            class_sep=1.5,
            positive_fraction=0.5,
        ),
        seed=7,
    )
    return split_dataset(dataset, SplitConfig(test_size=0.2, validation_size=0.2), seed=7)
