"""The validated, typed view of `params.yaml` that every stage reads."""

import difflib
import itertools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline import paths
from pipeline.errors import PipelineError

DataKind = Literal["classification", "moons", "circles", "xor", "random_labels"]
Activation = Literal["relu", "tanh", "logistic", "identity"]
Optimizer = Literal["adam", "sgd"]
KerasInitializer = Literal[
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
]
LearningRateSchedule = Literal["constant", "invscaling", "adaptive"]
# The test metrics evaluate computes, by their names in metrics.json.
MetricName = Literal["accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"]
DataSource = Literal["synthetic", "breast_cancer", "wine", "iris", "digits", "file"]
CategoricalPolicy = Literal["one_hot", "reject"]
MissingPolicy = Literal["impute", "reject"]
ClassWeight = Literal["none", "balanced"]
FILE_SUFFIXES = (".csv", ".parquet")
KerasTrainer = Literal["auto", "xla", "graph", "fit"]
Initialization = Literal["library", "shared"]
# Enough for any paired test; each replicate costs a model's memory and training time.
MAX_REPLICATES = 64

# Upper bounds on sizes: far above what the pipeline has been measured on (10 million
# rows x 8 features, README "Performance"), low enough that a stray extra zero fails
# here in one line instead of exhausting memory or running for weeks in a stage.
MAX_SAMPLES = 100_000_000
MAX_FEATURES = 100_000
# Generated rows x features: 7.5 GiB as make_classification's float64.
MAX_CELLS = 1_000_000_000
MAX_LAYERS = 100
MAX_UNITS = 100_000
# Weights between consecutive hidden layers: 400 MB as float32, before the gradients
# and the optimizer's state.
MAX_HIDDEN_WEIGHTS = 100_000_000
MAX_EPOCHS = 1_000_000
MAX_BOOTSTRAP = 100_000

# Strict types: YAML `true` is not 1, and "10" (quoted) is not a number.
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
Fraction = Annotated[float, Field(gt=0, lt=1, strict=True, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)]
UnitInterval = Annotated[float, Field(ge=0, le=1, strict=True, allow_inf_nan=False)]
StrictBool = Annotated[bool, Field(strict=True)]


# Error lines show at most this many characters of a value or key (`shown`).
SHOWN_CHARACTERS = 80
# MLflow's databases hold experiment and registered model names of at most 256.
MLFLOW_NAME_LENGTH = 256


class _YamlLoader(yaml.SafeLoader):
    """PyYAML, but `1e-3` is a float, as in YAML 1.2 and in DVC's own parser."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


class Section(BaseModel):
    """A params section: every key is required and unknown keys are errors."""

    # A typo such as `learning_rte` must fail loudly, never fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(Section):
    """Where the rows come from: generated, a bundled scikit-learn set, or a file."""

    source: DataSource
    # source: synthetic
    kind: DataKind
    n_samples: Annotated[int, Field(gt=0, le=MAX_SAMPLES, strict=True)]
    n_features: Annotated[int, Field(gt=0, le=MAX_FEATURES, strict=True)]
    n_informative: PositiveInt
    noise: NonNegativeFloat
    class_sep: PositiveFloat
    positive_fraction: Fraction
    # source: file
    path: Annotated[str, Field(strict=True)]
    target: Annotated[str, Field(strict=True)]
    categorical: CategoricalPolicy
    missing: MissingPolicy

    @model_validator(mode="after")
    def _check_file(self) -> "DatasetConfig":
        if self.source != "file":
            return self
        if Path(self.path).suffix.lower() not in FILE_SUFFIXES:
            raise ValueError(
                f"dataset.path = {shown(self.path)}: with dataset.source = 'file', allowed: "
                f"a {' or '.join(FILE_SUFFIXES)} file"
            )
        if not self.target.strip():
            raise ValueError(
                f"dataset.target = {shown(self.target)}: with dataset.source = 'file', name "
                "the column to predict"
            )
        return self

    @model_validator(mode="after")
    def _check_size(self) -> "DatasetConfig":
        cells = self.n_samples * self.n_features
        if self.source == "synthetic" and cells > MAX_CELLS:
            raise ValueError(
                f"dataset.n_samples x dataset.n_features = {self.n_samples} x "
                f"{self.n_features} = {cells} values; allowed: at most {MAX_CELLS}"
            )
        return self

    @model_validator(mode="after")
    def _check_shape(self) -> "DatasetConfig":
        if self.kind in ("moons", "circles", "xor") and self.n_features < 2:
            raise ValueError(
                f"dataset.n_features = {self.n_features}: kind {self.kind!r} "
                "needs at least 2 features"
            )
        if self.kind == "classification":
            if self.n_informative > self.n_features:
                raise ValueError(
                    f"dataset.n_informative = {self.n_informative}: must be at most "
                    f"dataset.n_features ({self.n_features})"
                )
            if self.noise >= 1:
                raise ValueError(
                    f"dataset.noise = {self.noise}: for kind 'classification' it is "
                    "the fraction of flipped labels, allowed: 0 <= noise < 1"
                )
        return self


class SplitConfig(Section):
    test_size: Fraction
    validation_size: Fraction

    @model_validator(mode="after")
    def _check_sum(self) -> "SplitConfig":
        if self.test_size + self.validation_size >= 1:
            raise ValueError(
                f"split.test_size + split.validation_size = "
                f"{self.test_size + self.validation_size:g}: must be below 1 so "
                "that rows are left for training"
            )
        return self


class ModelSpec(Section):
    """The network and its training, translated faithfully for both libraries."""

    hidden_layers: Annotated[
        list[Annotated[int, Field(gt=0, le=MAX_UNITS, strict=True)]],
        Field(max_length=MAX_LAYERS),
    ]
    activation: Activation
    optimizer: Optimizer
    learning_rate: PositiveFloat
    batch_size: PositiveInt
    epochs: Annotated[int, Field(gt=0, le=MAX_EPOCHS, strict=True)]
    l2: NonNegativeFloat
    # Keras only: scikit-learn's MLPClassifier has neither (train_sklearn warns).
    l1: NonNegativeFloat
    dropout: Annotated[float, Field(ge=0, lt=1, strict=True, allow_inf_nan=False)]
    patience: Annotated[int, Field(ge=0, strict=True)]
    momentum: Annotated[float, Field(ge=0, lt=1, strict=True, allow_inf_nan=False)]
    nesterov: StrictBool
    # balanced: each row weighs n_rows / (n_classes * rows of its class) in the loss.
    class_weight: ClassWeight

    @model_validator(mode="after")
    def _check_width(self) -> "ModelSpec":
        layers = self.hidden_layers
        weights = sum(fan_in * fan_out for fan_in, fan_out in itertools.pairwise(layers))
        if weights > MAX_HIDDEN_WEIGHTS:
            raise ValueError(
                f"model.hidden_layers = {layers}: {weights} weights between hidden "
                f"layers; allowed: at most {MAX_HIDDEN_WEIGHTS}"
            )
        return self

    @model_validator(mode="after")
    def _check_momentum(self) -> "ModelSpec":
        if self.optimizer != "sgd" and (self.momentum != 0 or self.nesterov):
            raise ValueError(
                f"model.momentum = {self.momentum}, model.nesterov = {self.nesterov}: "
                "momentum applies only to model.optimizer = 'sgd'; set them to 0 "
                "and false"
            )
        if self.nesterov and self.momentum == 0:
            raise ValueError("model.nesterov = True: Nesterov momentum needs model.momentum > 0")
        return self


class ReplicatesConfig(Section):
    """How often each library trains, and what differs between its training runs."""

    # K training runs per library; the verdict compares the libraries over them.
    count: Annotated[int, Field(ge=1, le=MAX_REPLICATES, strict=True)]
    # library: each library draws its own initial weights and batch order; shared:
    # both libraries start replicate r from the same weights and batch order.
    initialization: Initialization
    # true: every replicate also re-draws the stratified train/validation/test split.
    resample_split: StrictBool


class TrainKerasConfig(Section):
    kernel_initializer: KerasInitializer
    trainer: KerasTrainer


class TrainSklearnConfig(Section):
    learning_rate_schedule: LearningRateSchedule


class EvaluateConfig(Section):
    threshold: Fraction


class TrackConfig(Section):
    experiment_name: Annotated[str, Field(strict=True)]

    @model_validator(mode="after")
    def _check_name(self) -> "TrackConfig":
        if not self.experiment_name.strip():
            raise ValueError(
                f"track.experiment_name = {shown(self.experiment_name)}: must contain a "
                "non-space character"
            )
        if len(self.experiment_name) > MLFLOW_NAME_LENGTH:
            raise ValueError(
                f"track.experiment_name = {shown(self.experiment_name)}: at most "
                f"{MLFLOW_NAME_LENGTH} characters (MLflow's database column)"
            )
        return self


class PromoteConfig(Section):
    """Quality gates for registering the winner as the `champion` in MLflow."""

    enabled: StrictBool
    registered_model_name: Annotated[str, Field(strict=True)]
    min_test_roc_auc: UnitInterval
    min_test_accuracy: UnitInterval
    require_significant: StrictBool

    @model_validator(mode="after")
    def _check_name(self) -> "PromoteConfig":
        # A plain name: it is quoted into MLflow's search filters.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,255}", self.registered_model_name):
            raise ValueError(
                f"compare.promote.registered_model_name = {shown(self.registered_model_name)}: "
                "allowed: letters, digits, '_', '.' and '-', starting with a letter or digit, "
                f"at most {MLFLOW_NAME_LENGTH} characters"
            )
        return self


class CompareConfig(Section):
    primary_metric: MetricName
    # Fewer resamples make the tails of a 95% interval rest on a handful of values.
    n_bootstrap: Annotated[int, Field(ge=100, le=MAX_BOOTSTRAP, strict=True)]
    confidence: Fraction
    alpha: Fraction
    promote: PromoteConfig


class Params(Section):
    """All of `params.yaml`."""

    seed: Annotated[int, Field(ge=0, lt=2**32, strict=True)]
    # A search run's name (`<study>-<run>`), `none` elsewhere: the trainers follow the
    # search's pruner only when it names their run, so that what they write depends
    # on their params (as dvc.lock records it), never on a variable alone.
    search_trial: Annotated[str, Field(strict=True)]
    dataset: DatasetConfig
    split: SplitConfig
    model: ModelSpec
    replicates: ReplicatesConfig
    train_keras: TrainKerasConfig
    train_sklearn: TrainSklearnConfig
    evaluate: EvaluateConfig
    track: TrackConfig
    compare: CompareConfig

    @model_validator(mode="after")
    def _check_search_trial(self) -> "Params":
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,200}", self.search_trial):
            raise ValueError(
                f"search_trial = {shown(self.search_trial)}: allowed: 'none', or the name of a "
                "search run (letters, digits, '_' and '-'), which pipeline.search sets"
            )
        return self

    @model_validator(mode="after")
    def _check_schedule(self) -> "Params":
        schedule = self.train_sklearn.learning_rate_schedule
        if schedule != "constant" and self.model.optimizer != "sgd":
            raise ValueError(
                f"train_sklearn.learning_rate_schedule = {schedule!r}: applies only "
                "to model.optimizer = 'sgd'; allowed with 'adam': 'constant'"
            )
        return self

    @model_validator(mode="after")
    def _check_replicates(self) -> "Params":
        """An exact paired test over K replicates cannot give a p-value below
        2 / 2^K: refuse a K whose verdict could never be significant."""
        count, alpha = self.replicates.count, self.compare.alpha
        if count > 1 and smallest_p_value(count) >= alpha:
            enough = next(k for k in range(2, MAX_REPLICATES + 1) if smallest_p_value(k) < alpha)
            raise ValueError(
                f"replicates.count = {count}: with compare.alpha = {alpha:g} the paired test "
                f"over {count} replicates can never be significant (its smallest p-value is "
                f"{smallest_p_value(count):g}); allowed: 1, or {enough} to {MAX_REPLICATES}"
            )
        return self

    @model_validator(mode="after")
    def _check_rows(self) -> "Params":
        """Enough rows of each class for every split, and for one batch. Known here for
        generated data; for files and bundled sets the stages check the real rows."""
        if self.dataset.source != "synthetic":
            return self
        n_samples = self.dataset.n_samples
        n_train, n_validation, n_test = split_sizes(n_samples, self.split)
        for keys, name, rows in (
            ("split.test_size", "test", n_test),
            ("split.validation_size", "validation", n_validation),
            ("split.test_size + split.validation_size", "train", n_train),
        ):
            if rows < MIN_SPLIT_ROWS:
                raise ValueError(
                    f"{keys}: leaves {rows} {name} rows of dataset.n_samples = "
                    f"{n_samples}; each split needs at least {MIN_SPLIT_ROWS} (one per class)"
                )
        minority = min(round(n_samples * self.dataset.positive_fraction), n_samples - 1)
        minority = min(max(minority, 1), n_samples - minority)
        if minority < MIN_CLASS_ROWS:
            raise ValueError(
                f"dataset.positive_fraction = {self.dataset.positive_fraction}: gives "
                f"{minority} rows of one class in {n_samples}; a stratified split needs "
                f"at least {MIN_CLASS_ROWS}"
            )
        if self.model.batch_size > n_train:
            raise ValueError(
                f"model.batch_size = {self.model.batch_size}: larger than the {n_train} "
                f"training rows; allowed: 1 to {n_train}"
            )
        return self


# A stratified split needs one row of each of the two classes in every split.
MIN_SPLIT_ROWS = 2
MIN_CLASS_ROWS = 3


def split_sizes(n_samples: int, config: SplitConfig) -> tuple[int, int, int]:
    """(train, validation, test) rows; both fractions are of all rows."""
    n_test = round(config.test_size * n_samples)
    n_validation = round(config.validation_size * n_samples)
    return n_samples - n_test - n_validation, n_validation, n_test


def smallest_p_value(count: int) -> float:
    """The smallest two-sided p-value of the exact sign-flip test over `count` paired
    differences: all of them on one side, 2 of the 2^count sign patterns."""
    return 2.0 ** (1 - count)


def check_batch_size(spec: ModelSpec, n_train: int) -> None:
    """A batch cannot hold more rows than the train split has (the training stages
    check it on the real rows, also for files and bundled sets)."""
    if spec.batch_size > n_train:
        raise PipelineError(
            f"model.batch_size = {spec.batch_size}: larger than the {n_train} training rows; "
            f"allowed: 1 to {n_train}"
        )


def feature_names(n_features: int) -> tuple[str, ...]:
    """The generated data set's columns: x1, x2, ..."""
    return tuple(f"x{index}" for index in range(1, n_features + 1))


def closest_name(unknown: str, names: Iterable[str]) -> str | None:
    """The name `unknown` most likely meant: the same but for case, else the closest."""
    by_case = {name.casefold(): name for name in reversed(list(names))}
    if unknown.casefold() in by_case:
        return by_case[unknown.casefold()]
    matches = difflib.get_close_matches(unknown.casefold(), by_case, n=1)
    return by_case[matches[0]] if matches else None


def shown(value: Any, limit: int = SHOWN_CHARACTERS) -> str:
    """A value as an error line shows it: its repr, cut after `limit` characters
    with its length, so that a pasted 10,000-character string keeps the line short."""
    text = repr(value)
    if len(text) <= limit:
        return text
    length = len(value) if isinstance(value, str | list | tuple | dict) else len(text)
    return f"{text[:limit]}... ({length:,} long)"


def shown_key(part: Any) -> str:
    """A key path's part as it is, or cut like a value when it is long."""
    text = str(part)
    return text if len(text) <= SHOWN_CHARACTERS else shown(text)


def _suggestion(unknown: str, section: type[BaseModel]) -> str:
    match = closest_name(unknown, section.model_fields)
    return f"; did you mean {match!r}?" if match else ""


def _section_at(location: tuple[Any, ...]) -> type[BaseModel]:
    """The config class that holds the key at `location` (its parent)."""
    section: type[BaseModel] = Params
    for key in location[:-1]:
        annotation = section.model_fields[key].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        section = annotation
    return section


def _describe(error: ValidationError, source: Path) -> str:
    """One line naming the key path, the bad value and what is allowed."""
    errors = error.errors()
    # A misspelt key also leaves the key it meant missing: the unknown key, with its
    # did-you-mean, is the one to report.
    first = next((item for item in errors if item["type"] == "extra_forbidden"), errors[0])
    location = tuple(first["loc"])
    key = ".".join(shown_key(part) for part in location)
    kind = first["type"]
    if kind == "value_error":
        # Our own validators already name the keys involved.
        return f"{source}: {first['msg'].removeprefix('Value error, ')}"
    if kind == "missing":
        return f"{source}: {key} is missing (every key must be set; see the README)"
    if kind == "extra_forbidden":
        allowed = ", ".join(_section_at(location).model_fields)
        suggestion = _suggestion(str(location[-1]), _section_at(location))
        return f"{source}: unknown key {key}{suggestion} (allowed here: {allowed})"
    value = first.get("input")
    if kind == "too_long":
        # The value itself may be thousands of items long: its length is the point.
        return (
            f"{source}: {key} has {len(value)} items; allowed: at most {first['ctx']['max_length']}"
        )
    message = first["msg"]
    if kind == "literal_error":
        message = message.replace("Input should be", "allowed:")
    else:
        message = message.replace("Input should be", "must be")
    return f"{source}: {key} = {shown(value)}: {message}"


def parse_params(raw: Any, source: Path = paths.PARAMS) -> Params:
    """Validate already-parsed YAML content."""
    if not isinstance(raw, dict):
        raise PipelineError(
            f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}"
        )
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise PipelineError(_describe(error, source)) from None


def read_yaml(path: Path, what: str = "params file") -> Any:
    """Parse a YAML file the way DVC does; a missing file or bad YAML is one line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PipelineError(f"{path}: cannot read the {what} ({error.strerror})") from None
    try:
        return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 (a SafeLoader)
    except yaml.reader.ReaderError as error:
        # A control character or bad encoding: the reader knows only the offset.
        line = text.count("\n", 0, error.position) + 1
        column = error.position - (text.rfind("\n", 0, error.position) + 1) + 1
        raise PipelineError(
            f"{path}: malformed YAML at line {line}, column {column}: "
            f"character U+{error.character:04X} is not allowed (a control or special character)"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise PipelineError(f"{path}: malformed YAML{where}: {problem}") from None


def load_params(path: Path = paths.PARAMS) -> Params:
    """Read and validate the params file, before any stage does work."""
    return parse_params(read_yaml(path), path)


def flatten(params: Params) -> dict[str, Any]:
    """`{"model.learning_rate": 0.001, ...}`, the way DVC and MLflow show params."""
    flat: dict[str, Any] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                visit(f"{prefix}.{key}" if prefix else key, item)
        else:
            flat[prefix] = value

    visit("", params.model_dump())
    return flat
