"""Tiny, seeded fixtures shared by the tests."""

import signal
from pathlib import Path

import pytest

from pipeline.config import ModelSpec, Params, SplitConfig, load_params
from pipeline.dataset import generate_dataset
from pipeline.split import Splits, split_dataset
from pipeline.worker import stop as stop_worker
from tests import endtoend
from tests.endtoend import (
    END_TO_END_EPOCHS,
    END_TO_END_EXPERIMENT,
    SECRET,
    copy_repository,
    environment,
    execute,
    initialize_repository,
    set_params,
)
from tests.factories import synthetic_config
from tests.stages import trained_in

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """End-to-end tests report each DVC stage they start, past pytest's capture: a
    test that runs `dvc repro` for minutes is not silent."""

    def report(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or capture is None:
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    endtoend.progress = report
    # A suite started as a background job of a non-interactive shell (`cmd &` in a CI
    # script) inherits SIGINT ignored, and so would every process it starts: the tests
    # of Ctrl-C would then wait out their timeouts. A terminal, where users press
    # Ctrl-C, never ignores it; the children start from the default again.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The end-to-end tests' `dvc repro` starts this environment's warm worker: stop it
    rather than leave it to its idle exit."""
    stop_worker()


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
        synthetic_config(
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


@pytest.fixture(scope="session")
def built_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository with tiny params after one `dvc repro`; copy it, never change it."""
    project = tmp_path_factory.mktemp("built") / "project"
    project.mkdir()
    copy_repository(project)
    set_params(
        project,
        dataset__n_samples=400,
        model__epochs=END_TO_END_EPOCHS,
        track__experiment_name=END_TO_END_EXPERIMENT,
    )
    initialize_repository(project, "tiny params")
    # A password in the environment must never reach the store (checked later).
    execute(project, "dvc", "repro", env=environment({"MLFLOW_TRACKING_PASSWORD": SECRET}))
    return project


@pytest.fixture(scope="session")
def trained_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding every output of the stages before `track` (tiny params), made
    in-process in seconds; copy it, never change it."""
    folder = tmp_path_factory.mktemp("trained")
    trained_in(folder)
    return folder


@pytest.fixture(scope="session")
def three_class_splits() -> Splits:
    """300 rows of three unbalanced classes (60% / 30% / 10%)."""
    from sklearn.datasets import make_classification

    from pipeline.files import Table

    features, labels = make_classification(
        n_samples=300,
        n_features=6,
        n_informative=4,
        n_classes=3,
        weights=[0.6, 0.3, 0.1],
        class_sep=1.5,
        random_state=11,
    )
    table = Table(
        features.astype("float32"), labels.astype("int32"), ("a", "b", "c", "d", "e", "f")
    )
    return split_dataset(table, SplitConfig(test_size=0.2, validation_size=0.2), seed=11)
