"""Tests for `pipeline.config`: the committed params, and one-line errors for bad ones."""

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import (
    check_batch_size,
    flatten,
    load_params,
    parse_params,
    shown,
    shown_key,
)
from pipeline.errors import PipelineError

PARAMS_FILE = Path("params.yaml")


@pytest.fixture(scope="module")
def default_raw() -> dict[str, Any]:
    """The committed params.yaml, parsed but not validated."""
    return yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))


def changed(raw: dict[str, Any], key_path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `raw` with the dotted `key_path` set to `value`."""
    result = copy.deepcopy(raw)
    *parents, last = key_path.split(".")
    section = result
    for key in parents:
        section = section[key]
    section[last] = value
    return result


def removed(raw: dict[str, Any], key_path: str) -> dict[str, Any]:
    """A deep copy of `raw` without the dotted `key_path`."""
    result = copy.deepcopy(raw)
    *parents, last = key_path.split(".")
    section = result
    for key in parents:
        section = section[key]
    del section[last]
    return result


def parse_error(raw: Any, match: str) -> PipelineError:
    """The `PipelineError` that `parse_params(raw)` raises, checked to be one line."""
    with pytest.raises(PipelineError, match=match) as caught:
        parse_params(raw)
    assert "\n" not in str(caught.value)
    return caught.value


def test_default_dict_parses(default_raw: dict[str, Any]) -> None:
    assert parse_params(default_raw) == load_params(PARAMS_FILE)


@pytest.mark.parametrize(
    ("key_path", "suggestion"),
    [
        ("model.learning_rte", "learning_rate"),
        ("dataset.n_sample", "n_samples"),
        ("split.tests_size", "test_size"),
        ("modell", "model"),
    ],
)
def test_unknown_key_suggests_the_closest(
    default_raw: dict[str, Any], key_path: str, suggestion: str
) -> None:
    raw = changed(default_raw, key_path, 1)

    error = parse_error(raw, re.escape(f"unknown key {key_path}; did you mean {suggestion!r}?"))

    assert "allowed here:" in str(error)
    assert str(error).startswith("params.yaml: ")


@pytest.mark.parametrize(
    ("meant", "typed"),
    [
        ("model.learning_rate", "learning_rte"),
        ("model.epochs", "Epochs"),
        ("compare.promote.min_test_roc_auc", "min_test_auc"),
    ],
)
def test_renamed_key_names_the_unknown_key_not_the_missing_one(
    default_raw: dict[str, Any], meant: str, typed: str
) -> None:
    *section, key = meant.split(".")
    value = default_raw
    for part in [*section, key]:
        value = value[part]
    raw = changed(removed(default_raw, meant), ".".join([*section, typed]), value)

    error = parse_error(
        raw,
        "^"
        + re.escape(
            f"params.yaml: unknown key {'.'.join([*section, typed])}; did you mean {key!r}?"
        ),
    )

    assert "missing" not in str(error)


def test_unknown_key_without_close_match_lists_allowed(default_raw: dict[str, Any]) -> None:
    raw = changed(default_raw, "model.zzzz", 1)

    error = parse_error(raw, r"^params\.yaml: unknown key model\.zzzz \(allowed here: ")

    assert "did you mean" not in str(error)
    assert "learning_rate" in str(error)


@pytest.mark.parametrize(
    ("key_path", "largest"),
    [
        ("dataset.n_samples", 100_000_000),
        ("dataset.n_features", 100_000),
        ("model.epochs", 1_000_000),
        ("compare.n_bootstrap", 100_000),
    ],
)
def test_sizes_have_an_upper_bound(default_raw: dict[str, Any], key_path: str, largest: int):
    raw = changed(default_raw, "dataset.source", "breast_cancer")  # no rows x features limit

    assert parse_params(changed(raw, key_path, largest))
    parse_error(
        changed(raw, key_path, largest * 10),
        "^"
        + re.escape(
            f"params.yaml: {key_path} = {largest * 10}: must be less than or equal to {largest}"
        )
        + "$",
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"model.hidden_layers": [1_000_000]},
            "model.hidden_layers.0 = 1000000: must be less than or equal to 100000",
        ),
        (
            {"model.hidden_layers": [1] * 101},
            "model.hidden_layers has 101 items; allowed: at most 100",
        ),
        (
            {"model.hidden_layers": [20_000, 10_000]},
            "model.hidden_layers = [20000, 10000]: 200000000 weights between hidden layers; "
            "allowed: at most 100000000",
        ),
        (
            {"dataset.n_samples": 100_000_000, "dataset.n_features": 11},
            "dataset.n_samples x dataset.n_features = 100000000 x 11 = 1100000000 values; "
            "allowed: at most 1000000000",
        ),
    ],
)
def test_network_and_data_sizes_have_an_upper_bound(
    default_raw: dict[str, Any], changes: dict[str, Any], message: str
) -> None:
    raw = copy.deepcopy(default_raw)
    for key_path, value in changes.items():
        raw = changed(raw, key_path, value)

    parse_error(raw, f"^{re.escape(f'params.yaml: {message}')}$")


@pytest.mark.parametrize("hidden_layers", [[10_000, 10_000], [1] * 100, [100_000]])
def test_largest_network_and_data_are_allowed(
    default_raw: dict[str, Any], hidden_layers: list[int]
) -> None:
    raw = changed(default_raw, "model.hidden_layers", hidden_layers)
    raw = changed(raw, "dataset.n_samples", 100_000_000)
    raw = changed(raw, "dataset.n_features", 10)

    params = parse_params(raw)

    assert params.model.hidden_layers == hidden_layers
    assert params.dataset.n_samples * params.dataset.n_features == 1_000_000_000


@pytest.mark.parametrize("key_path", ["model.epochs", "dataset.kind", "seed", "split.test_size"])
def test_missing_key(default_raw: dict[str, Any], key_path: str) -> None:
    parse_error(
        removed(default_raw, key_path),
        rf"^params\.yaml: {re.escape(key_path)} is missing \(every key must be set",
    )


@pytest.mark.parametrize("section", ["model", "evaluate", "track"])
def test_missing_section(default_raw: dict[str, Any], section: str) -> None:
    parse_error(removed(default_raw, section), rf"^params\.yaml: {section} is missing")


@pytest.mark.parametrize(
    ("key_path", "value", "message"),
    [
        ("model.epochs", "10", "model.epochs = '10': must be a valid integer"),
        ("model.epochs", True, "model.epochs = True: must be a valid integer"),
        ("dataset.n_samples", 10.0, "dataset.n_samples = 10.0: must be a valid integer"),
        ("model.learning_rate", True, "model.learning_rate = True: must be a valid number"),
        ("model.learning_rate", "0.01", "model.learning_rate = '0.01': must be a valid number"),
        ("model.hidden_layers", 10, "model.hidden_layers = 10: must be a valid list"),
        ("model.hidden_layers", [10, "8"], "model.hidden_layers.1 = '8': must be a valid integer"),
    ],
)
def test_wrong_type(default_raw: dict[str, Any], key_path: str, value: Any, message: str) -> None:
    parse_error(changed(default_raw, key_path, value), f"^{re.escape(f'params.yaml: {message}')}$")


@pytest.mark.parametrize(
    ("key_path", "value"),
    [
        ("dataset.n_samples", 0),
        ("dataset.n_features", -3),
        ("model.batch_size", 0),
        ("model.batch_size", -1),
        ("model.epochs", 0),
        ("model.learning_rate", 0.0),
        ("model.hidden_layers", [10, 0]),
    ],
)
def test_non_positive_sizes(default_raw: dict[str, Any], key_path: str, value: Any) -> None:
    raw = changed(default_raw, key_path, value)
    shown_key = "model.hidden_layers.1" if key_path == "model.hidden_layers" else key_path
    shown_value = 0 if key_path == "model.hidden_layers" else value

    parse_error(
        raw, f"^{re.escape(f'params.yaml: {shown_key} = {shown_value!r}')}: must be greater than 0$"
    )


@pytest.mark.parametrize(
    ("key_path", "value", "allowed"),
    [
        ("model.activation", "sigmoid", "'relu', 'tanh', 'logistic' or 'identity'"),
        ("model.optimizer", "rmsprop", "'adam' or 'sgd'"),
        (
            "dataset.kind",
            "blobs",
            "'classification', 'moons', 'circles', 'xor' or 'random_labels'",
        ),
        (
            "train_sklearn.learning_rate_schedule",
            "cosine",
            "'constant', 'invscaling' or 'adaptive'",
        ),
    ],
)
def test_unknown_choice_lists_allowed_values(
    default_raw: dict[str, Any], key_path: str, value: str, allowed: str
) -> None:
    parse_error(
        changed(default_raw, key_path, value),
        f"^{re.escape(f'params.yaml: {key_path} = {value!r}: allowed: {allowed}')}$",
    )


@pytest.mark.parametrize(("test_size", "validation_size"), [(0.5, 0.5), (0.6, 0.5), (0.9, 0.3)])
def test_split_fractions_must_leave_training_rows(
    default_raw: dict[str, Any], test_size: float, validation_size: float
) -> None:
    raw = changed(default_raw, "split.test_size", test_size)
    raw = changed(raw, "split.validation_size", validation_size)

    parse_error(
        raw,
        re.escape(
            f"params.yaml: split.test_size + split.validation_size = "
            f"{test_size + validation_size:g}: must be below 1"
        ),
    )


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_split_fraction_out_of_range(default_raw: dict[str, Any], fraction: float) -> None:
    parse_error(
        changed(default_raw, "split.test_size", fraction),
        rf"^params\.yaml: split\.test_size = {re.escape(repr(fraction))}: must be (greater|less)",
    )


def test_n_informative_above_n_features(default_raw: dict[str, Any]) -> None:
    raw = changed(default_raw, "dataset.n_informative", 9)
    raw = changed(raw, "dataset.n_features", 8)

    parse_error(
        raw,
        "^"
        + re.escape(
            "params.yaml: dataset.n_informative = 9: must be at most dataset.n_features (8)"
        )
        + "$",
    )


def test_momentum_with_adam(default_raw: dict[str, Any]) -> None:
    raw = changed(default_raw, "model.momentum", 0.9)

    parse_error(
        raw,
        re.escape("model.momentum = 0.9, model.nesterov = False: momentum applies only to")
        + r".*'sgd'",
    )


@pytest.mark.parametrize("value", ["no", "yes", "true", 1, 0, None])
def test_nesterov_must_be_a_boolean(default_raw: dict[str, Any], value: Any) -> None:
    raw = changed(default_raw, "model.optimizer", "sgd")
    raw = changed(raw, "model.momentum", 0.9)

    parse_error(
        changed(raw, "model.nesterov", value),
        "^" + re.escape(f"params.yaml: model.nesterov = {value!r}: must be a valid boolean") + "$",
    )


def test_momentum_with_sgd_is_allowed(default_raw: dict[str, Any]) -> None:
    raw = changed(default_raw, "model.optimizer", "sgd")
    raw = changed(raw, "model.momentum", 0.9)
    raw = changed(raw, "model.nesterov", True)

    params = parse_params(raw)

    assert params.model.momentum == pytest.approx(0.9)
    assert params.model.nesterov is True


@pytest.mark.parametrize("schedule", ["invscaling", "adaptive"])
def test_learning_rate_schedule_with_adam(default_raw: dict[str, Any], schedule: str) -> None:
    raw = changed(default_raw, "train_sklearn.learning_rate_schedule", schedule)

    parse_error(
        raw,
        "^"
        + re.escape(
            f"params.yaml: train_sklearn.learning_rate_schedule = {schedule!r}: applies only "
            "to model.optimizer = 'sgd'; allowed with 'adam': 'constant'"
        )
        + "$",
    )


def test_learning_rate_schedule_with_sgd_is_allowed(default_raw: dict[str, Any]) -> None:
    raw = changed(default_raw, "train_sklearn.learning_rate_schedule", "invscaling")
    raw = changed(raw, "model.optimizer", "sgd")

    assert parse_params(raw).train_sklearn.learning_rate_schedule == "invscaling"


@pytest.mark.parametrize(
    ("raw", "type_name"), [([1, 2], "list"), (None, "NoneType"), ("seed: 1", "str")]
)
def test_top_level_not_a_mapping(raw: Any, type_name: str) -> None:
    parse_error(
        raw,
        f"^params\\.yaml: expected a mapping of sections at the top level, got {type_name}$",
    )


def test_section_not_a_mapping(default_raw: dict[str, Any]) -> None:
    parse_error(changed(default_raw, "dataset", [1, 2]), r"^params\.yaml: dataset = \[1, 2\]: ")


def test_error_names_the_source_file(default_raw: dict[str, Any]) -> None:
    with pytest.raises(PipelineError, match=r"^elsewhere\.yaml: model\.epochs = 0: "):
        parse_params(changed(default_raw, "model.epochs", 0), Path("elsewhere.yaml"))


def test_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 42\ndataset:\n  kind: moons\n   n_samples: 10\n", encoding="utf-8")

    with pytest.raises(PipelineError) as caught:
        load_params(path)

    # Line and column as an editor counts them: the colon after `n_samples`.
    assert str(caught.value) == (
        f"{path}: malformed YAML at line 4, column 13: mapping values are not allowed here"
    )


def test_a_control_character_is_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 42\nsplit:\n  test_size: 0.2\x07\n", encoding="utf-8")

    with pytest.raises(PipelineError) as caught:
        load_params(path)

    # The position, and the character as a code point: never the raw byte.
    assert str(caught.value) == (
        f"{path}: malformed YAML at line 3, column 17: "
        "character U+0007 is not allowed (a control or special character)"
    )
    # A first line that is empty counts as line 1, as an editor counts it.
    path.write_text("\nseed: 4\x1b\n", encoding="utf-8")
    with pytest.raises(PipelineError) as caught:
        load_params(path)
    assert str(caught.value).startswith(f"{path}: malformed YAML at line 2, column 8: ")


def test_errors_name_the_params_file_that_was_read(
    tmp_path: Path, default_raw: dict[str, Any]
) -> None:
    path = tmp_path / "elsewhere.yaml"
    path.write_text(yaml.safe_dump(changed(default_raw, "seed", -1)), encoding="utf-8")

    with pytest.raises(PipelineError) as caught:
        load_params(path)

    assert str(caught.value).startswith(f"{path}: seed = -1: ")


@pytest.mark.parametrize(("batch_size", "refused"), [(90, False), (91, True)])
def test_a_batch_may_hold_every_training_row_but_no_more(
    default_raw: dict[str, Any], batch_size: int, refused: bool
) -> None:
    spec = parse_params(changed(default_raw, "model.batch_size", batch_size)).model
    if not refused:
        check_batch_size(spec, 90)
        return
    with pytest.raises(PipelineError, match=r"^model\.batch_size = 91: larger than the 90 "):
        check_batch_size(spec, 90)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(PipelineError, match="cannot read the params file") as caught:
        load_params(path)

    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("text", "expected"), [("1e-3", 0.001), ("2.5E+2", 250.0), ("3e1", 30.0)])
def test_exponent_without_dot_is_a_float(tmp_path: Path, text: str, expected: float) -> None:
    # PyYAML (YAML 1.1) reads `1e-3` as a string; DVC (YAML 1.2) reads a float.
    path = tmp_path / "params.yaml"
    content = PARAMS_FILE.read_text(encoding="utf-8").replace(
        "learning_rate: 0.001", f"learning_rate: {text}"
    )
    assert f"learning_rate: {text}" in content
    path.write_text(content, encoding="utf-8")

    learning_rate = load_params(path).model.learning_rate

    assert isinstance(learning_rate, float)
    assert learning_rate == pytest.approx(expected)


def test_flatten_covers_every_leaf(default_raw: dict[str, Any]) -> None:
    flat = flatten(parse_params(default_raw))

    def leaves(prefix: str, value: Any) -> set[str]:
        if not isinstance(value, dict):
            return {prefix}
        return set().union(
            *(leaves(f"{prefix}.{key}" if prefix else key, item) for key, item in value.items())
        )

    assert set(flat) == leaves("", default_raw)


def test_every_value_of_the_file_reaches_the_params(default_raw: dict[str, Any]) -> None:
    """No value is replaced by a default or changed on the way in, at any depth."""
    flat = flatten(load_params(PARAMS_FILE))

    def leaf_values(prefix: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            return {prefix: value}
        found: dict[str, Any] = {}
        for key, item in value.items():
            found |= leaf_values(f"{prefix}.{key}" if prefix else key, item)
        return found

    for key, value in leaf_values("", default_raw).items():
        # PyYAML reads `1e-3` (no dot) as text; the params read it as the number.
        expected = float(value) if isinstance(flat[key], float) else value
        assert flat[key] == expected, key
        assert type(flat[key]) is type(expected), key


@pytest.mark.parametrize("name", ["", "   "])
def test_blank_experiment_name_is_rejected(default_raw: dict[str, Any], name: str) -> None:
    parse_error(
        changed(default_raw, "track.experiment_name", name),
        r"^params\.yaml: track\.experiment_name = '\s*': must contain a non-space character$",
    )


@pytest.mark.parametrize(
    ("key_path", "value", "message"),
    [
        ("model.l1", -0.1, "model.l1 = -0.1: must be greater than or equal to 0"),
        ("model.dropout", 1.0, "model.dropout = 1.0: must be less than 1"),
        ("model.dropout", -0.2, "model.dropout = -0.2: must be greater than or equal to 0"),
        ("model.dropout", True, "model.dropout = True: must be a valid number"),
    ],
)
def test_regularization_ranges(
    default_raw: dict[str, Any], key_path: str, value: Any, message: str
) -> None:
    parse_error(changed(default_raw, key_path, value), f"^{re.escape(f'params.yaml: {message}')}$")


def test_regularization_values_are_kept(default_raw: dict[str, Any]) -> None:
    raw = changed(default_raw, "model.l1", 0.001)
    raw = changed(raw, "model.dropout", 0.5)

    params = parse_params(raw)

    assert params.model.l1 == pytest.approx(0.001)
    assert params.model.dropout == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("key_path", "value", "message"),
    [
        (
            "compare.primary_metric",
            "auc",
            "compare.primary_metric = 'auc': allowed: 'accuracy', 'precision', 'recall', "
            "'f1', 'roc_auc' or 'log_loss'",
        ),
        (
            "compare.n_bootstrap",
            50,
            "compare.n_bootstrap = 50: must be greater than or equal to 100",
        ),
        ("compare.n_bootstrap", 1000.0, "compare.n_bootstrap = 1000.0: must be a valid integer"),
        ("compare.confidence", 1.0, "compare.confidence = 1.0: must be less than 1"),
        ("compare.alpha", 0.0, "compare.alpha = 0.0: must be greater than 0"),
        (
            "compare.promote.enabled",
            "yes",
            "compare.promote.enabled = 'yes': must be a valid boolean",
        ),
        ("compare.promote.enabled", 1, "compare.promote.enabled = 1: must be a valid boolean"),
        (
            "compare.promote.min_test_roc_auc",
            1.5,
            "compare.promote.min_test_roc_auc = 1.5: must be less than or equal to 1",
        ),
        (
            "compare.promote.min_test_accuracy",
            -0.1,
            "compare.promote.min_test_accuracy = -0.1: must be greater than or equal to 0",
        ),
        (
            "compare.promote.registered_model_name",
            "  ",
            "compare.promote.registered_model_name = '  ': allowed: letters, digits, '_', '.' "
            "and '-', starting with a letter or digit, at most 256 characters",
        ),
        (
            "compare.promote.registered_model_name",
            "it's",
            "compare.promote.registered_model_name = \"it's\": allowed: letters, digits, '_', "
            "'.' and '-', starting with a letter or digit, at most 256 characters",
        ),
        (
            "compare.promote.registered_model_name",
            "m" * 257,
            f"compare.promote.registered_model_name = '{'m' * 79}... (257 long): allowed: "
            "letters, digits, '_', '.' and '-', starting with a letter or digit, at most 256 "
            "characters",
        ),
        (
            "track.experiment_name",
            "e" * 257,
            f"track.experiment_name = '{'e' * 79}... (257 long): at most 256 characters "
            "(MLflow's database column)",
        ),
    ],
)
def test_bad_compare_values(
    default_raw: dict[str, Any], key_path: str, value: Any, message: str
) -> None:
    parse_error(changed(default_raw, key_path, value), f"^{re.escape(f'params.yaml: {message}')}$")


def test_unknown_nested_promote_key_suggests_the_closest(default_raw: dict[str, Any]) -> None:
    raw = changed(default_raw, "compare.promote.min_test_auc", 0.9)

    error = parse_error(
        raw,
        re.escape("unknown key compare.promote.min_test_auc; did you mean 'min_test_roc_auc'?"),
    )

    assert "allowed here: enabled, registered_model_name, min_test_roc_auc" in str(error)


def test_missing_promote_key(default_raw: dict[str, Any]) -> None:
    parse_error(
        removed(default_raw, "compare.promote.require_significant"),
        r"^params\.yaml: compare\.promote\.require_significant is missing",
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"model.batch_size": 1201},
            r"^params\.yaml: model\.batch_size = 1201: larger than the 1200 training rows; "
            r"allowed: 1 to 1200$",
        ),
        (
            {"split.test_size": 0.0001},
            r"^params\.yaml: split\.test_size: leaves 0 test rows of dataset\.n_samples = "
            r"2000; each split needs at least 2 \(one per class\)$",
        ),
        (
            {"dataset.n_samples": 5},
            r"^params\.yaml: split\.test_size: leaves 1 test rows of dataset\.n_samples = 5",
        ),
        (
            {"split.test_size": 0.5, "split.validation_size": 0.4999},
            r"split\.test_size \+ split\.validation_size: leaves 0 train rows",
        ),
        (
            {"dataset.positive_fraction": 0.001},
            r"^params\.yaml: dataset\.positive_fraction = 0\.001: gives 2 rows of one class "
            r"in 2000; a stratified split needs at least 3$",
        ),
    ],
)
def test_rows_must_suffice_for_the_split_and_a_batch(
    default_raw: dict[str, Any], changes: dict[str, Any], message: str
) -> None:
    raw = default_raw
    for key_path, value in changes.items():
        raw = changed(raw, key_path, value)
    parse_error(raw, message)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"dataset.source": "file", "dataset.path": "data/table.xlsx"},
            r"^params\.yaml: dataset\.path = 'data/table\.xlsx': with dataset\.source = "
            r"'file', allowed: a \.csv or \.parquet file$",
        ),
        (
            {"dataset.source": "file", "dataset.target": " "},
            r"^params\.yaml: dataset\.target = ' ': with dataset\.source = 'file', name the "
            r"column to predict$",
        ),
        (
            {"dataset.source": "mnist"},
            r"^params\.yaml: dataset\.source = 'mnist': allowed: 'synthetic', "
            r"'breast_cancer', 'wine', 'iris', 'digits' or 'file'$",
        ),
        (
            {"dataset.categorical": "ordinal"},
            r"^params\.yaml: dataset\.categorical = 'ordinal': allowed: 'one_hot' or 'reject'$",
        ),
        (
            {"dataset.missing": "drop"},
            r"^params\.yaml: dataset\.missing = 'drop': allowed: 'impute' or 'reject'$",
        ),
        (
            {"model.class_weight": "auto"},
            r"^params\.yaml: model\.class_weight = 'auto': allowed: 'none' or 'balanced'$",
        ),
    ],
)
def test_data_source_keys(default_raw: dict[str, Any], changes: dict[str, Any], message: str):
    raw = default_raw
    for key_path, value in changes.items():
        raw = changed(raw, key_path, value)
    parse_error(raw, message)


def test_rows_are_checked_by_the_stages_for_files_and_bundled_sets(default_raw):
    # 5 synthetic rows cannot be split, but the setting is ignored for a bundled set.
    raw = changed(changed(default_raw, "dataset.n_samples", 5), "dataset.source", "iris")
    assert parse_params(raw).dataset.source == "iris"


@pytest.mark.parametrize("value", ["run 1", "a/../b", "", "x" * 201, 7])
def test_search_trial_is_a_run_name(default_raw: dict[str, Any], value: Any) -> None:
    with pytest.raises(PipelineError) as caught:
        parse_params(changed(default_raw, "search_trial", value), Path("params.yaml"))
    assert str(caught.value).startswith("params.yaml: search_trial = ")


def test_search_trial_is_none_outside_a_search_and_a_run_name_in_one(
    default_raw: dict[str, Any],
) -> None:
    assert parse_params(default_raw, Path("params.yaml")).search_trial == "none"
    named = parse_params(changed(default_raw, "search_trial", "mlp-search_7"), Path("p.yaml"))
    assert named.search_trial == "mlp-search_7"


def test_a_huge_value_or_key_is_cut_in_the_error_line(default_raw: dict[str, Any]) -> None:
    pasted = "relu " * 2000
    error = parse_error(changed(default_raw, "model.activation", pasted), "model.activation")
    assert str(error) == (
        f"params.yaml: model.activation = {repr(pasted)[:80]}... (10,000 long): "
        "allowed: 'relu', 'tanh', 'logistic' or 'identity'"
    )
    raw = copy.deepcopy(default_raw)
    raw["model"]["k" * 500] = 1
    error = parse_error(raw, "unknown key")
    assert str(error).startswith(f"params.yaml: unknown key model.'{'k' * 79}... (500 long) ")
    assert len(str(error)) < 400


def test_shown_cuts_only_what_is_longer_than_80_characters() -> None:
    fits = "x" * 78  # its repr, quotes included, is exactly 80 characters
    assert shown(fits) == repr(fits)
    assert shown(fits + "y") == f"{repr(fits + 'y')[:80]}... (79 long)"
    assert shown_key("k" * 80) == "k" * 80
    assert shown_key("k" * 81) == f"'{'k' * 79}... (81 long)"
    # A number has no length: the length of how it is written.
    assert shown(10**100) == f"1{'0' * 79}... (101 long)"
