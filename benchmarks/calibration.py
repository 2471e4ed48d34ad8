"""Measure how often the replicate verdict calls a "significant" winner: on
configurations where the libraries should not differ (its false-positive rate) and
on ones where Keras is handicapped (its power); print a table and write JSON.

    ./run python -m benchmarks.calibration                  # 5 configurations x 40 seeds, K = 6
    ./run python -m benchmarks.calibration --seeds 5 --configs defaults,l1

For every configuration and master seed s = 0..N-1 it does what `dvc repro` does with
`seed: s`: generate or load the data, split it, train K replicates of each library,
score every replicate on the test rows, and run the paired test over replicates. For
context it also runs the old verdict, the per-row paired bootstrap of one trained
model each (replicate 0 of both). Nothing here passes or fails; the table says
whether the false-positive rate meets its target.
"""

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.config import Params, load_params, parse_params
from pipeline.dataset import load_dataset
from pipeline.files import Table
from pipeline.split import split_dataset
from pipeline.statistics import Winner, compare_replicates, wilson_interval

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "calibration.json"
# At alpha = 0.05 a sound test calls about 5% of no-difference runs significant; 7%
# leaves room for the binomial noise of a few dozen seeds.
FALSE_SIGNIFICANT_TARGET = 0.07
# Hundreds of trainings: no line per epoch (pipeline.history logs them at INFO), and
# none of TensorFlow's notes that a new network was traced again, which every seed
# does by design (each builds its own networks).
QUIET_LOGGERS = {"pipeline": logging.WARNING, "tensorflow": logging.ERROR}

Expected = Literal["none", "real"]


@dataclass(frozen=True)
class Configuration:
    """Changes to params.yaml, and whether the libraries should then differ."""

    name: str
    expected: Expected
    description: str
    updates: dict[str, dict[str, Any]]


CONFIGURATIONS = {
    configuration.name: configuration
    for configuration in (
        Configuration("defaults", "none", "params.yaml as it is", {}),
        Configuration(
            "breast_cancer",
            "none",
            "bundled breast_cancer set, default model, 20 epochs",
            {"dataset": {"source": "breast_cancer"}, "model": {"epochs": 20}},
        ),
        # Dropout and L1 exist in Keras only: scikit-learn trains without them.
        Configuration(
            "dropout_small",
            "real",
            "Keras-only dropout 0.5 on 300 rows",
            {"dataset": {"n_samples": 300}, "model": {"dropout": 0.5}},
        ),
        Configuration(
            "dropout",
            "real",
            "Keras-only dropout 0.5 on the default 2000 rows",
            {"model": {"dropout": 0.5}},
        ),
        Configuration(
            "l1",
            "real",
            "Keras-only L1 penalty 0.1 (collapses Keras' weights)",
            {"model": {"l1": 0.1}},
        ),
    )
}


@dataclass(frozen=True)
class SeedOutcome:
    """Both verdicts for one master seed."""

    seed: int
    significant: bool  # the replicate verdict: paired sign-flip test over K replicates
    winner: Winner
    p_value: float
    difference: float  # mean over replicates of keras - sklearn on the primary metric
    keras: list[float]  # the primary metric of each Keras replicate
    sklearn: list[float]  # of each scikit-learn replicate, paired by replicate
    single_significant: bool  # the old verdict: per-row bootstrap of replicate 0 of each
    single_winner: Winner
    single_p_value: float
    seconds: float


def configured_params(
    base: Params, updates: dict[str, dict[str, Any]], seed: int, count: int
) -> Params:
    """`base` with the configuration's changes, the master seed and K replicates,
    validated as params.yaml is (a configuration that the pipeline would refuse is
    refused here too)."""
    raw = base.model_dump()
    for section, values in updates.items():
        raw[section] = {**raw[section], **values}
    raw["seed"] = seed
    raw["replicates"] = {**raw["replicates"], "count": count}
    return parse_params(raw)


def dataset_table(params: Params) -> Table:
    """The data set as the split stage reads it: generated rows as they are, a bundled
    set as the numeric table the dataset stage writes (features, then the label)."""
    dataset = load_dataset(params.dataset, params.seed)
    if isinstance(dataset, Table):
        return dataset
    if params.dataset.source == "file":
        raise ValueError("dataset.source = 'file': the calibration uses generated or bundled data")
    return Table(
        features=dataset.features.to_numpy(dtype=np.float32),
        labels=dataset.labels,
        feature_names=tuple(str(name) for name in dataset.features.columns),
    )


@dataclass
class TrainedInMemory:
    """Both libraries' K replicates, trained as `dvc repro` would train them."""

    splits: Any  # pipeline.split.Splits
    results: dict[str, list]  # family -> one training result per replicate
    network: Any  # the Keras replicates as one pipeline.train_keras.StackedNetwork

    def probabilities(self, family: str, table: Table) -> list[np.ndarray]:
        """Each replicate's (n_rows, n_classes) class probabilities on `table`."""
        from pipeline import train_keras, train_sklearn

        if family == "keras":
            return list(self.network.probabilities(train_keras.stack_tables([table])))
        return [
            train_sklearn.predict_probabilities(result.model, table.features)
            for result in self.results["sklearn"]
        ]


def train_in_memory(params: Params) -> TrainedInMemory:
    """Data, split and `params.replicates.count` replicates of each library, in this
    process: what the pipeline's first four stages do, without files."""
    # Heavy imports here, so that the tests of the arithmetic load neither TensorFlow
    # nor MLflow.
    from pipeline import train_keras, train_sklearn
    from pipeline.replicates import replicate_seeds

    splits = split_dataset(dataset_table(params), params.split, params.seed)
    seeds = replicate_seeds(params.seed, params.replicates.count)
    results = {
        "keras": train_keras.train_replicates(
            [splits.train],
            [splits.validation],
            params.model,
            params.train_keras.kernel_initializer,
            seeds,
            params.replicates.initialization,
            params.train_keras.trainer,
        ),
        "sklearn": train_sklearn.train_replicates(
            [splits.train],
            [splits.validation],
            params.model,
            params.train_sklearn.learning_rate_schedule,
            seeds,
        ),
    }
    network = train_keras.StackedNetwork(
        [result.model for result in results["keras"]], params.model.activation
    )
    return TrainedInMemory(splits, results, network)


def run_seed(params: Params) -> SeedOutcome:
    """Data, split, K replicates of each library and both verdicts, for params.seed."""
    from pipeline import train_keras
    from pipeline.paired_tests import compare_predictions, point_metrics

    started = time.perf_counter()
    trained = train_in_memory(params)
    test = trained.splits.test
    keras_probabilities = trained.probabilities("keras", test)
    sklearn_probabilities = trained.probabilities("sklearn", test)
    metric, threshold = params.compare.primary_metric, params.evaluate.threshold
    keras_values = [
        point_metrics(test.labels, probabilities, threshold)[metric]
        for probabilities in keras_probabilities
    ]
    sklearn_values = [
        point_metrics(test.labels, probabilities, threshold)[metric]
        for probabilities in sklearn_probabilities
    ]
    verdict = compare_replicates(
        metric,
        np.array(keras_values),
        np.array(sklearn_values),
        params.compare.alpha,
        params.compare.confidence,
    )
    single = compare_predictions(
        test.labels,
        {"keras": keras_probabilities[0], "sklearn": sklearn_probabilities[0]},
        threshold,
        params.compare,
        params.seed,
    ).verdict
    # Each seed builds new models and traced functions; without this, Keras' global
    # state grows over hundreds of trainings.
    train_keras.keras.backend.clear_session()
    return SeedOutcome(
        seed=params.seed,
        significant=verdict.significant,
        winner=verdict.winner,
        p_value=verdict.p_value,
        difference=verdict.difference.estimate,
        keras=keras_values,
        sklearn=sklearn_values,
        single_significant=single.significant,
        single_winner=single.winner,
        single_p_value=single.p_value,
        seconds=time.perf_counter() - started,
    )


def share(flags: list[bool]) -> float:
    """The share of True among `flags`; 0 for none."""
    return sum(flags) / len(flags) if flags else 0.0


def summarize(
    configuration: Configuration, outcomes: list[SeedOutcome], count: int, confidence: float
) -> dict[str, Any]:
    """One table row: how often each verdict said "significant", with the replicate
    verdict's Wilson interval (40 seeds pin a 5% rate down only to about 1-17%)."""
    significant = [outcome.significant for outcome in outcomes]
    interval = wilson_interval(sum(significant), max(len(outcomes), 1), confidence)
    return {
        "configuration": configuration.name,
        "description": configuration.description,
        "expected_difference": configuration.expected,
        "seeds": len(outcomes),
        "replicates": count,
        "significant_share": share(significant),
        "significant_low": interval.low,
        "significant_high": interval.high,
        # Where Keras is handicapped, a significant win for it would be a wrong call.
        "significant_sklearn_share": share(
            [outcome.significant and outcome.winner == "sklearn" for outcome in outcomes]
        ),
        "single_model_significant_share": share(
            [outcome.single_significant for outcome in outcomes]
        ),
        "mean_difference": float(np.mean([outcome.difference for outcome in outcomes]))
        if outcomes
        else 0.0,
        "seconds": sum(outcome.seconds for outcome in outcomes),
    }


def target_text(row: dict[str, Any]) -> str:
    """The target, and whether this row meets it."""
    if row["expected_difference"] == "real":
        return f"power reported: {row['significant_sklearn_share']:.0%} significant for sklearn"
    met = row["significant_share"] <= FALSE_SIGNIFICANT_TARGET
    return f"<= {FALSE_SIGNIFICANT_TARGET:.0%} false: {'met' if met else 'NOT met'}"


def format_row(row: dict[str, Any]) -> str:
    return (
        f"| {row['configuration']} | {row['expected_difference']} | {row['seeds']} | "
        f"{row['replicates']} | {row['significant_share']:.1%} "
        f"({row['significant_low']:.0%}-{row['significant_high']:.0%}) | "
        f"{row['single_model_significant_share']:.1%} | {row['mean_difference']:+.4f} | "
        f"{target_text(row)} |"
    )


def format_table(rows: list[dict[str, Any]], metric: str) -> str:
    header = (
        "| configuration | difference expected | seeds | K | share significant (replicates, "
        "95% interval) | share significant (one trained model each, per-row bootstrap) | "
        f"mean difference keras - sklearn ({metric}) | target |"
    )
    return "\n".join([header, "|---|---|---:|---:|---:|---:|---:|---|", *map(format_row, rows)])


def progress_line(name: str, index: int, total: int, outcome: SeedOutcome) -> str:
    def called(significant: bool, winner: str) -> str:
        return f"significant, {winner}" if significant else "not significant"

    return (
        f"{name} seed {outcome.seed} ({index}/{total}): replicates "
        f"{called(outcome.significant, outcome.winner)} (p {outcome.p_value:.3f}, "
        f"difference {outcome.difference:+.4f}); one model each "
        f"{called(outcome.single_significant, outcome.single_winner)} "
        f"(p {outcome.single_p_value:.3f}); {outcome.seconds:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40, help="master seeds 0..N-1 per config")
    parser.add_argument(
        "--replicates", type=int, default=None, help="K (default: replicates.count)"
    )
    parser.add_argument(
        "--configs", default=",".join(CONFIGURATIONS), help=f"from {', '.join(CONFIGURATIONS)}"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    arguments = parser.parse_args()
    names = [name.strip() for name in arguments.configs.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONFIGURATIONS]
    if unknown:
        parser.error(
            f"unknown --configs {', '.join(unknown)}; allowed: {', '.join(CONFIGURATIONS)}"
        )
    base = load_params(ROOT / "params.yaml")
    count = arguments.replicates or base.replicates.count
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)

    rows, outcomes_by_configuration = [], {}
    started = time.perf_counter()
    for name in names:
        configuration = CONFIGURATIONS[name]
        outcomes = []
        for index, seed in enumerate(range(arguments.seeds), start=1):
            params = configured_params(base, configuration.updates, seed, count)
            outcomes.append(run_seed(params))
            print(progress_line(name, index, arguments.seeds, outcomes[-1]), file=sys.stderr)
        rows.append(summarize(configuration, outcomes, count, base.compare.confidence))
        outcomes_by_configuration[name] = [asdict(outcome) for outcome in outcomes]
        # Written after every configuration, so that a stopped run keeps what it measured.
        arguments.output.write_text(
            json.dumps(
                {
                    "primary_metric": base.compare.primary_metric,
                    "alpha": base.compare.alpha,
                    "false_significant_target": FALSE_SIGNIFICANT_TARGET,
                    "rows": rows,
                    "outcomes": outcomes_by_configuration,
                },
                indent=2,
            )
            + "\n"
        )
    print(format_table(rows, base.compare.primary_metric))
    print(f"\n{time.perf_counter() - started:.0f} s in all; written: {arguments.output}")


if __name__ == "__main__":
    main()
