"""Measure the diagnosis on induced training problems: does it name each one, is its
first suggestion the change a careful practitioner would make, and does applying
that suggestion help? Also: how often it stays silent on healthy trainings.

    ./run python -m benchmarks.pathologies                      # every case, K = 3
    ./run python -m benchmarks.pathologies --cases l1_keras,imbalance --replicates 6

Each pathology is a change to params.yaml that induces one known problem. For it the
script does in memory what `dvc repro` does (data, split, K replicates of both
libraries, test predictions), builds the evidence that the compare stage builds
(`pipeline.compare.replicate_evidence`) and calls `diagnose_replicates`. Then it
trains once more with the first suggestion applied and compares a validation
metric of the affected family (the mean over its replicates), named per case.

The first suggestion is that of the first finding the report lists for the affected
family; where both libraries are affected, it must be right for each, and keras' is
the one applied.
K = 3 replicates by default, not the pipeline's 6, to keep the run short; the
finding counts then read "in n of 3". Nothing here passes or fails.
"""

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from benchmarks.calibration import QUIET_LOGGERS, configured_params, train_in_memory
from benchmarks.pathology_cases import (
    HEALTHY,
    MARGINS,
    PATHOLOGIES,
    Metric,
    Pathology,
    families,
    findings_for,
    improved,
    right_change,
    with_suggestion,
)
from pipeline.config import Params, load_params
from pipeline.diagnosis import Finding

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "pathologies.json"
DEFAULT_REPLICATES = 3
PATHOLOGY_SEEDS = 3
HEALTHY_SEEDS = 5
TARGETS = {"named": 0.90, "improved": 0.80, "healthy_silent": 0.90}


@dataclass(frozen=True)
class Trained:
    """One configuration trained K times per library: the diagnosis and the
    validation metrics of each family (means over its replicates)."""

    findings: list[Finding]
    validation: dict[str, dict[str, float]]
    seconds: float


def train_and_diagnose(params: Params, count: int) -> Trained:
    """What `dvc repro` does for these params, in memory, with K = `count`."""
    # Heavy imports here, as in benchmarks.calibration.
    from pipeline import train_keras
    from pipeline.compare import replicate_evidence
    from pipeline.diagnosis import diagnose_replicates
    from pipeline.paired_tests import compare_predictions, point_metrics

    started = time.perf_counter()
    params = params.model_copy(
        update={"replicates": params.replicates.model_copy(update={"count": count})}
    )
    trained = train_in_memory(params)
    splits, results = trained.splits, trained.results
    probabilities = trained.probabilities

    threshold = params.evaluate.threshold
    test = {family: probabilities(family, splits.test) for family in results}
    labels = np.repeat(splits.test.labels[None], count, axis=0)
    comparison = compare_predictions(
        labels[0],
        {family: values[0] for family, values in test.items()},
        threshold,
        params.compare,
        params.seed,
    )
    evidence = replicate_evidence(
        comparison,
        labels,
        test,
        {family: [result.history for result in results[family]] for family in results},
        {
            family: {
                "replicates": [
                    {"stopped_early": result.summary.stopped_early} for result in results[family]
                ]
            }
            for family in results
        },
        threshold,
    )
    n_classes = test["keras"][0].shape[1]
    findings = diagnose_replicates(
        evidence,
        params.model,
        params.dataset,
        params.compare.confidence,
        (np.bincount(labels[0], minlength=n_classes) / labels.shape[1]).tolist(),
        len(splits.train.labels),
    )
    validation = {}
    for family in results:
        values = probabilities(family, splits.validation)
        scores = [point_metrics(splits.validation.labels, value, threshold) for value in values]
        validation[family] = {
            "val_roc_auc": float(np.mean([score["roc_auc"] for score in scores])),
            "val_log_loss": float(np.mean([score["log_loss"] for score in scores])),
            "val_balanced_accuracy": float(
                np.mean(
                    [
                        balanced_accuracy_score(splits.validation.labels, predicted_classes(value))
                        for value in values
                    ]
                )
            ),
        }
    # Each configuration builds new networks; without this Keras' state grows.
    train_keras.keras.backend.clear_session()
    return Trained(findings, validation, time.perf_counter() - started)


def predicted_classes(probabilities: np.ndarray) -> np.ndarray:
    """The most probable class: for two classes, class 1 above 0.5 (the default
    `evaluate.threshold`)."""
    return probabilities.argmax(axis=1)


def family_metric(trained: Trained, names: list[str], metric: Metric) -> float:
    return float(np.mean([trained.validation[family][metric] for family in names]))


def score_pathology(pathology: Pathology, base: Params, seed: int, count: int) -> dict[str, Any]:
    """One table row: named, right first suggestion, improvement when applied."""
    trained = train_and_diagnose(configured_params(base, pathology.updates, seed, 6), count)
    names = families(pathology)
    seen = {family: findings_for(trained.findings, family) for family in names}
    named = all(
        any(finding.kind in pathology.kinds for finding in seen[family]) for family in names
    )
    # What each affected family's reader is told to do first: its first finding's
    # first suggestion. Right only if it is right for every affected family.
    firsts = [found[0].suggestions[0] for found in seen.values() if found]
    suggestion = firsts[0] if firsts else None
    right = len(firsts) == len(names) and all(
        right_change(first, pathology.fixes) for first in firsts
    )
    row: dict[str, Any] = {
        "pathology": pathology.name,
        "seed": seed,
        "description": pathology.description,
        "family": pathology.family,
        "expected_kinds": list(pathology.kinds),
        "expected_fixes": pathology.fixes,
        "findings": [describe(finding) for finding in trained.findings],
        "found": [short(finding) for finding in trained.findings],
        "named": named,
        "first_suggestion": suggestion.override() if suggestion is not None else None,
        "first_suggestions": [first.override() for first in firsts],
        "right_change": right,
        "metric": pathology.metric,
        "before": family_metric(trained, names, pathology.metric),
        "after": None,
        "improved": False,
        "seconds": trained.seconds,
    }
    if suggestion is not None:
        updates = with_suggestion(pathology.updates, suggestion)
        applied = train_and_diagnose(configured_params(base, updates, seed, 6), count)
        row["after"] = family_metric(applied, names, pathology.metric)
        row["improved"] = improved(row["before"], row["after"], pathology.metric)
        row["seconds"] += applied.seconds
    return row


def short(finding: Finding) -> str:
    """`keras: over_regularized 3/3`: the family, the kind, in how many replicates."""
    seen, count = finding.seen_in
    return f"{finding.family}: {finding.kind} {seen}/{count}"


def format_pathology_table(rows: list[dict[str, Any]]) -> str:
    """One line per pathology over its seeds: how often it was named, how often the
    first suggestion was the right change and improved the metric; the findings and
    first suggestions of the first seed."""
    lines = [
        "| pathology | family | findings (first seed; replicates) | first suggestion (first "
        "seed) | named | right change | metric | before | after | improved |",
        "|---|---|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for name in dict.fromkeys(row["pathology"] for row in rows):
        runs = [row for row in rows if row["pathology"] == name]
        first = runs[0]
        firsts = ", ".join(
            f"`{override}`" for override in dict.fromkeys(first["first_suggestions"])
        )
        afters = [run["after"] for run in runs if run["after"] is not None]

        def count(key: str, runs: list[dict[str, Any]] = runs) -> str:
            return f"{sum(bool(run[key]) for run in runs)}/{len(runs)}"

        lines.append(
            f"| {name} | {first['family']} | {'; '.join(first['found']) or 'none'} | "
            f"{firsts or 'none'} | {count('named')} | {count('right_change')} | "
            f"{first['metric']} | {np.mean([run['before'] for run in runs]):.4f} | "
            f"{np.mean(afters) if afters else float('nan'):.4f} | {count('improved')} |"
        )
    return "\n".join(lines)


def format_healthy_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| healthy configuration | seeds without a finding | findings |", "|---|---:|---|"]
    for name in dict.fromkeys(row["configuration"] for row in rows):
        runs = [row for row in rows if row["configuration"] == name]
        silent = sum(not run["found"] for run in runs)
        found = "; ".join(
            f"seed {run['seed']}: {', '.join(run['found'])}" for run in runs if run["found"]
        )
        lines.append(f"| {name} | {silent}/{len(runs)} | {found or 'none'} |")
    return "\n".join(lines)


def totals(pathology_rows: list[dict[str, Any]], healthy_rows: list[dict[str, Any]]) -> dict:
    """The shares over every (pathology, seed) run and every healthy run."""

    def share(flags: list[bool]) -> float:
        return sum(flags) / len(flags) if flags else 0.0

    return {
        "named": share([row["named"] for row in pathology_rows]),
        "right_change": share([row["right_change"] for row in pathology_rows]),
        "improved": share([row["improved"] for row in pathology_rows]),
        "healthy_silent": share([not row["found"] for row in healthy_rows]),
        "pathology_runs": len(pathology_rows),
        "pathologies": len({row["pathology"] for row in pathology_rows}),
        "healthy_runs": len(healthy_rows),
    }


def format_totals(summary: dict[str, Any]) -> str:
    def against(key: str) -> str:
        target = TARGETS.get(key)
        if target is None:
            return ""
        return f" (target >= {target:.0%}: {'met' if summary[key] >= target else 'NOT met'})"

    runs = f"of {summary['pathology_runs']} runs ({summary['pathologies']} pathologies x seeds)"
    return "\n".join(
        [
            f"named: {summary['named']:.0%} {runs}{against('named')}",
            f"first suggestion the right change: {summary['right_change']:.0%} {runs}",
            f"first suggestion improves the metric when applied: {summary['improved']:.0%} "
            f"{runs}{against('improved')}",
            f"healthy runs without a finding: {summary['healthy_silent']:.0%} of "
            f"{summary['healthy_runs']}{against('healthy_silent')}",
        ]
    )


def describe(finding: Finding) -> str:
    return f"{finding.family}: {finding.kind}{finding.prevalence}; " + ", ".join(
        suggestion.override() for suggestion in finding.suggestions[:2]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=DEFAULT_REPLICATES, help="K")
    parser.add_argument(
        "--seeds", type=int, default=PATHOLOGY_SEEDS, help="master seeds per pathology"
    )
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds start here (a fresh sample: 10)"
    )
    parser.add_argument(
        "--healthy-seeds", type=int, default=HEALTHY_SEEDS, help="master seeds per healthy case"
    )
    parser.add_argument(
        "--cases", default=",".join([*PATHOLOGIES, *HEALTHY]), help="pathologies and healthy"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    arguments = parser.parse_args()
    names = [name.strip() for name in arguments.cases.split(",") if name.strip()]
    unknown = [name for name in names if name not in PATHOLOGIES and name not in HEALTHY]
    if unknown:
        parser.error(
            f"unknown --cases {', '.join(unknown)}; allowed: {', '.join([*PATHOLOGIES, *HEALTHY])}"
        )
    base = load_params(ROOT / "params.yaml")
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)

    started = time.perf_counter()
    pathology_rows, healthy_rows = [], []
    for name in names:
        count = arguments.seeds if name in PATHOLOGIES else arguments.healthy_seeds
        for seed in range(arguments.first_seed, arguments.first_seed + count):
            if name in PATHOLOGIES:
                row = score_pathology(PATHOLOGIES[name], base, seed, arguments.replicates)
                pathology_rows.append(row)
                print(
                    f"{name} seed {seed}: named {row['named']}, first "
                    f"{row['first_suggestions']}, right {row['right_change']}, "
                    f"{row['metric']} {row['before']:.4f} -> {row['after']}",
                    file=sys.stderr,
                )
                continue
            params = configured_params(base, HEALTHY[name], seed, 6)
            trained = train_and_diagnose(params, arguments.replicates)
            healthy_rows.append(
                {
                    "configuration": name,
                    "seed": seed,
                    "findings": [describe(finding) for finding in trained.findings],
                    "found": [short(finding) for finding in trained.findings],
                }
            )
            print(f"{name} seed {seed}: {healthy_rows[-1]['found']}", file=sys.stderr)
    summary = totals(pathology_rows, healthy_rows)
    arguments.output.write_text(
        json.dumps(
            {
                "replicates": arguments.replicates,
                "targets": TARGETS,
                "margins": MARGINS,
                "totals": summary,
                "pathologies": pathology_rows,
                "healthy": healthy_rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(format_pathology_table(pathology_rows))
    print()
    print(format_healthy_table(healthy_rows))
    print()
    print(format_totals(summary))
    print(f"\n{time.perf_counter() - started:.0f} s in all; written: {arguments.output}")


if __name__ == "__main__":
    main()
