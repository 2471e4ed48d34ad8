"""The memory estimate of a run, and the memory a machine has available."""

from pathlib import Path

import pytest
import yaml

from pipeline import memory, paths
from pipeline.config import parse_params
from pipeline.errors import PipelineError
from pipeline.memory import (
    GIB,
    IMPORT_BYTES,
    MIB,
    DataShape,
    available_memory,
    check_memory,
    estimate_costs,
    network_weights,
)

ROOT = Path(__file__).resolve().parents[1]


def params_with(**sections: dict):
    raw = yaml.safe_load((ROOT / paths.PARAMS).read_text(encoding="utf-8"))
    for section, values in sections.items():
        raw[section] |= values
    return parse_params(raw)


def test_network_weights_count_kernels_and_biases() -> None:
    # The textbook network: 8 inputs, 10, 10, one sigmoid output.
    assert network_weights(8, [10, 10], 2) == 8 * 10 + 10 + 10 * 10 + 10 + 10 * 1 + 1
    # Three classes: a softmax unit per class.
    assert network_weights(4, [5], 3) == 4 * 5 + 5 + 5 * 3 + 3


def test_the_default_run_costs_little_more_than_its_imports() -> None:
    params = params_with()
    costs = {cost.stage: cost for cost in estimate_costs(params, DataShape(2000, 8, 0, 8, 2))}

    assert set(costs) == {"dataset", "split", "train_keras", "train_sklearn", "compare"}
    for stage, cost in costs.items():
        assert IMPORT_BYTES[stage] <= cost.bytes < IMPORT_BYTES[stage] + 100 * MIB


def test_generated_data_costs_its_float32_features_and_the_informative_float64_ones() -> None:
    # The float32 features, make_classification's float64 informative features (4 by
    # default), and per row the int64 label, the float64 flip draw and its mask.
    params = params_with(dataset={"n_samples": 10_000_000})
    shape = DataShape(10_000_000, 8, 0, 8, 2)

    dataset = next(cost for cost in estimate_costs(params, shape) if cost.stage == "dataset")

    assert dataset.bytes == IMPORT_BYTES["dataset"] + 10_000_000 * (8 * 4 + 4 * 8 + 17)
    assert dataset.key == "dataset.n_samples"


def test_the_weights_of_every_replicate_are_counted() -> None:
    one = params_with(model={"hidden_layers": [4096, 4096]}, replicates={"count": 1})
    six = params_with(model={"hidden_layers": [4096, 4096]})
    shape = DataShape(2000, 8, 0, 8, 2)

    def keras(params):
        return next(cost for cost in estimate_costs(params, shape) if cost.stage == "train_keras")

    weights = network_weights(8, [4096, 4096], 2)
    # Five float32 copies of each weight per replicate: the largest part of the stage.
    assert (
        keras(six).part == f"6 replicates of {weights:,} weights: {6 * weights * 20 / GIB:.1f} GiB"
    )
    assert keras(one).part == f"1 replicate of {weights:,} weights: {weights * 20 / MIB:.0f} MiB"
    assert keras(six).bytes - keras(one).bytes >= 5 * weights * 20


def test_one_hot_width_drives_the_split_and_the_first_layer() -> None:
    params = params_with(dataset={"source": "file"})
    narrow = estimate_costs(params, DataShape(100_000, 3, 1, 12, 2))
    wide = estimate_costs(params, DataShape(100_000, 3, 1, 50_002, 2))

    def split(costs) -> int:
        return next(cost.bytes for cost in costs if cost.stage == "split")

    # The train rows (60%) as the preprocessor's float64 and then as float32.
    assert split(wide) - split(narrow) == 60_000 * (50_002 - 12) * 12


def test_a_run_over_the_limit_is_one_line_naming_key_estimate_and_limit() -> None:
    params = params_with(model={"hidden_layers": [100_000]}, dataset={"n_features": 1000})
    costs = estimate_costs(params, DataShape(2000, 1000, 0, 1000, 2))

    with pytest.raises(PipelineError) as caught:
        check_memory(costs, 16 * GIB, "MemAvailable in /proc/meminfo", params)

    assert str(caught.value) == (
        "model.hidden_layers = [100000]: train_keras would need about 17.4 GiB of memory "
        "(6 replicates of 100,200,001 weights: 11.2 GiB), more than the 16.0 GiB available"
        " (MemAvailable in /proc/meminfo); make the data or the network smaller"
    )
    check_memory(costs, 64 * GIB, "MemAvailable in /proc/meminfo", params)


def test_available_memory_is_the_lower_of_meminfo_and_the_cgroup(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684092 kB\nMemAvailable:    8000000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()

    assert available_memory(meminfo, cgroup) == (8_192_000_000, "MemAvailable in /proc/meminfo")

    (cgroup / "memory.max").write_text("4294967296\n")
    (cgroup / "memory.current").write_text("1073741824\n")
    assert available_memory(meminfo, cgroup) == (
        3 * GIB,
        "the cgroup's memory.max less memory.current",
    )

    # No limit set: the cgroup file says "max".
    (cgroup / "memory.max").write_text("max\n")
    assert available_memory(meminfo, cgroup)[1] == "MemAvailable in /proc/meminfo"
    assert available_memory(tmp_path / "absent", tmp_path / "absent") is None


def test_the_constants_copied_from_the_stages_match_them() -> None:
    # Copied rather than imported: importing train_keras loads TensorFlow.
    import ast

    from pipeline import memory, split

    assert memory.SPLIT_CHUNK_ROWS == split.CHUNK_ROWS
    source = ast.parse((ROOT / "pipeline" / "train_keras.py").read_text(encoding="utf-8"))
    values = {
        target.id: ast.literal_eval(node.value)
        for node in source.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id == "XLA_MIN_SAMPLE_EPOCHS"
    }
    assert values == {"XLA_MIN_SAMPLE_EPOCHS": memory.KERAS_XLA_MIN_SAMPLE_EPOCHS}
    from pipeline import train_sklearn

    assert memory.SKLEARN_PARALLEL_MIN_SAMPLE_EPOCHS == train_sklearn.PARALLEL_MIN_SAMPLE_EPOCHS


def test_scikit_learns_workers_are_counted_only_when_it_starts_them(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    params = params_with(dataset={"n_samples": 10_000_000}, model={"epochs": 1})

    def sklearn(n_rows: int) -> int:
        costs = estimate_costs(params, DataShape(n_rows, 8, 0, 8, 2))
        return next(cost.bytes for cost in costs if cost.stage == "train_sklearn")

    # 600 train rows x 1 epoch x 6 replicates: trained in the stage itself, no worker.
    small = sklearn(1000)
    assert small < IMPORT_BYTES["train_sklearn"] + 2 * MIB
    # 6M train rows: two workers, each importing scikit-learn and binarizing 6M labels.
    large = sklearn(10_000_000)
    n_train = 6_000_000
    expected_workers = 2 * (memory.SKLEARN_WORKER_IMPORT_BYTES + n_train * 48)
    rows = 8_000_000 * 8 * 4 * memory.SKLEARN_ROW_COPIES
    assert large - IMPORT_BYTES["train_sklearn"] == pytest.approx(expected_workers + rows, rel=0.01)
