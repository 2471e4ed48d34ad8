"""The validated, typed view of `search.yaml`: the study, its budget and its search space."""

import copy
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline import paths
from pipeline.config import Params, closest_name, flatten, parse_params, read_yaml
from pipeline.errors import PipelineError

Sampler = Literal["tpe", "random"]
# A study name becomes part of DVC experiment names and git refs (`<study>-<trial>`).
STUDY_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
DIMENSION_TYPES = ("float", "int", "categorical")
# A scalar YAML value: what a params key and a `when` condition hold.
Scalar = bool | int | float | str


class _Strict(BaseModel):
    # A typo such as `hgih` must fail loudly, never fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Range(_Strict):
    # Sample this key only when every listed key has the listed value (the sampled
    # one, else the trial's): `momentum` only with `optimizer: sgd`.
    when: dict[str, Scalar] = {}

    @model_validator(mode="after")
    def _check_bounds(self) -> "_Range":
        low, high = getattr(self, "low", None), getattr(self, "high", None)
        if low is not None and high is not None and low >= high:
            raise ValueError(f"low = {low!r}, high = {high!r}: low must be below high")
        if getattr(self, "log", False) and low is not None and low <= 0:
            raise ValueError(f"low = {low!r}: a log scale needs low > 0")
        return self


class FloatRange(_Range):
    type: Literal["float"]
    low: Annotated[float, Field(strict=True, allow_inf_nan=False)]
    high: Annotated[float, Field(strict=True, allow_inf_nan=False)]
    log: Annotated[bool, Field(strict=True)] = False


class IntRange(_Range):
    type: Literal["int"]
    low: Annotated[int, Field(strict=True)]
    high: Annotated[int, Field(strict=True)]
    log: Annotated[bool, Field(strict=True)] = False


class Categorical(_Range):
    type: Literal["categorical"]
    # Lists are allowed (`hidden_layers`); Optuna stores them as JSON text.
    choices: Annotated[list[Scalar | list[Scalar]], Field(min_length=2)]

    @model_validator(mode="after")
    def _check_distinct(self) -> "Categorical":
        encoded = [encode_choice(choice) for choice in self.choices]
        if len(set(encoded)) != len(encoded):
            raise ValueError(f"choices = {self.choices!r}: each choice may appear once")
        return self


Dimension = Annotated[FloatRange | IntRange | Categorical, Field(discriminator="type")]


class Budget(_Strict):
    """The same for both libraries: every trial trains both on the same params."""

    trials: Annotated[int, Field(ge=0, le=100_000, strict=True)]
    minutes: Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)]

    @model_validator(mode="after")
    def _check_limit(self) -> "Budget":
        if self.trials == 0 and self.minutes == 0:
            raise ValueError("budget.trials = 0 and budget.minutes = 0: set at least one limit")
        return self


class Pruner(_Strict):
    """Optuna's median pruner per library, or none: a library's trial stops once its
    validation loss trails the median of that library's finished trials."""

    type: Literal["median", "none"] = "median"
    # No pruning until this many of the library's trials have finished, ...
    startup_trials: Annotated[int, Field(ge=0, le=1000, strict=True)] = 5
    # ... nor in a trial's first epochs.
    warmup_epochs: Annotated[int, Field(ge=0, le=100_000, strict=True)] = 0


class SearchConfig(_Strict):
    """All of `search.yaml`."""

    study: Annotated[str, Field(strict=True, pattern=STUDY_NAME)]
    sampler: Sampler
    seed: Annotated[int, Field(ge=0, lt=2**32, strict=True)]
    budget: Budget
    heartbeat_seconds: Annotated[int, Field(ge=1, le=3600, strict=True)]
    pruner: Pruner = Pruner()
    # Set in every trial, on top of params.yaml; the final verdict uses params.yaml.
    trial_params: dict[str, Any]
    space: Annotated[dict[str, Dimension], Field(min_length=1)]


def encode_choice(choice: Any) -> Any:
    """A choice as Optuna stores it: scalars as they are, lists as JSON text."""
    return json.dumps(choice) if isinstance(choice, list) else choice


def decode_choice(stored: Any, dimension: Categorical) -> Any:
    """The choice of `dimension` that Optuna stored as `stored`."""
    return next(choice for choice in dimension.choices if encode_choice(choice) == stored)


def suggest(trial: optuna.Trial, config: SearchConfig, base: dict[str, Any]) -> dict[str, Any]:
    """The trial's params: each dimension whose `when` holds, sampled in file order.
    `base` holds the flattened trial params that the conditions fall back on."""
    sampled: dict[str, Any] = {}
    for key, dimension in config.space.items():
        current = {**base, **sampled}
        if any(current[other] != value for other, value in dimension.when.items()):
            continue
        if isinstance(dimension, FloatRange):
            sampled[key] = trial.suggest_float(
                key, dimension.low, dimension.high, log=dimension.log
            )
        elif isinstance(dimension, IntRange):
            sampled[key] = trial.suggest_int(key, dimension.low, dimension.high, log=dimension.log)
        else:
            stored = trial.suggest_categorical(
                key, [encode_choice(choice) for choice in dimension.choices]
            )
            sampled[key] = decode_choice(stored, dimension)
    return sampled


def decoded_params(config: SearchConfig, stored: dict[str, Any]) -> dict[str, Any]:
    """A finished trial's params as params.yaml values (lists back from JSON text)."""
    return {
        key: decode_choice(value, dimension) if isinstance(dimension, Categorical) else value
        for key, value in stored.items()
        if (dimension := config.space.get(key)) is not None
    }


def short(value: Any) -> str:
    """A param for people: floats to 4 significant digits (DVC gets them in full)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def with_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of raw params with dotted keys (`model.learning_rate`) replaced."""
    result = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        section = result
        for key in parents:
            section = section[key]
        section[last] = value
    return result


def _location(location: tuple[Any, ...]) -> str:
    """The key path of an error, without pydantic's union tag (`space.x.float.low`)."""
    parts = [str(part) for part in location]
    if len(parts) > 2 and parts[0] == "space" and parts[2] in DIMENSION_TYPES:
        del parts[2]
    return ".".join(parts)


def _describe(error: ValidationError, source: Path) -> str:
    """One line naming the key path, the bad value and what is allowed."""
    errors = error.errors()
    first = next((item for item in errors if item["type"] == "extra_forbidden"), errors[0])
    key = _location(tuple(first["loc"]))
    kind = first["type"]
    value = first.get("input")
    if kind == "value_error":
        prefix = f"{key}: " if key else ""
        return f"{source}: {prefix}{first['msg'].removeprefix('Value error, ')}"
    if kind == "missing":
        return f"{source}: {key} is missing (every key must be set; see docs/search.md)"
    if kind == "extra_forbidden":
        return f"{source}: unknown key {key}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        allowed = ", ".join(DIMENSION_TYPES)
        found = value.get("type") if isinstance(value, dict) else value
        return f"{source}: {key}.type = {found!r}: allowed: {allowed}"
    if kind == "string_pattern_mismatch":
        return (
            f"{source}: {key} = {value!r}: allowed: up to 64 letters, digits, '_' and '-', "
            "starting with a letter or digit"
        )
    if kind == "too_short":
        return f"{source}: {key} is empty; name at least one param"
    verb = "allowed:" if kind == "literal_error" else "must be"
    message = first["msg"].replace("Input should be", verb)
    return f"{source}: {key} = {value!r}: {message}"


def _check_keys(config: SearchConfig, known: dict[str, Any], source: Path) -> None:
    """Every key names a params.yaml key that holds a value, not a section."""
    for where, keys in (
        ("trial_params", config.trial_params),
        ("space", config.space),
        *((f"space.{key}.when", dimension.when) for key, dimension in config.space.items()),
    ):
        for key in keys:
            if key == "search_trial":
                raise PipelineError(
                    f"{source}: {where}.search_trial: set by the search to each run's "
                    "name; it cannot be searched or set"
                )
            if key not in known:
                match = closest_name(key, known)
                suggestion = f"; did you mean {match!r}?" if match else ""
                raise PipelineError(
                    f"{source}: {where}.{key}: no such key in params.yaml{suggestion}"
                )
    both = sorted(set(config.trial_params) & set(config.space))
    if both:
        raise PipelineError(
            f"{source}: {both[0]} is in both trial_params and space; keep it in one"
        )


def _check_values(config: SearchConfig, raw: dict[str, Any], source: Path) -> None:
    """Each bound and choice alone (with its `when`) passes params.yaml's own rules,
    applied to the trial params: `model.dropout: high 1.5` fails here, not in the 20th
    trial."""
    trial_raw = with_overrides(raw, config.trial_params)
    try:
        parse_params(trial_raw, source)
    except PipelineError as error:
        detail = str(error).removeprefix(f"{source}: ")
        raise PipelineError(f"{source}: trial_params: {detail}") from None
    for key, dimension in config.space.items():
        if isinstance(dimension, Categorical):
            values = {f"choices[{index}]": choice for index, choice in enumerate(dimension.choices)}
        else:
            values = {"low": dimension.low, "high": dimension.high}
        for name, value in values.items():
            try:
                parse_params(with_overrides(trial_raw, {**dimension.when, key: value}), source)
            except PipelineError as error:
                detail = str(error).removeprefix(f"{source}: ")
                raise PipelineError(f"{source}: space.{key}.{name} = {value!r}: {detail}") from None


def parse_search(raw: Any, params_raw: dict[str, Any], source: Path = paths.SEARCH) -> SearchConfig:
    """Validate already-parsed `search.yaml` content against the params it varies."""
    if not isinstance(raw, dict):
        raise PipelineError(
            f"{source}: expected a mapping of keys at the top level, got {type(raw).__name__}"
        )
    try:
        config = SearchConfig.model_validate(raw)
    except ValidationError as error:
        raise PipelineError(_describe(error, source)) from None
    known = flatten(Params.model_validate(params_raw))
    _check_keys(config, known, source)
    _check_values(config, params_raw, source)
    return config


def load_search(path: Path, params_path: Path) -> tuple[SearchConfig, dict[str, Any]]:
    """The validated search file and the raw params it varies (validated too)."""
    params_raw = read_yaml(params_path)
    parse_params(params_raw, params_path)
    return parse_search(read_yaml(path, "search file"), params_raw, path), params_raw
