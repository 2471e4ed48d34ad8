"""The verdict: which library trains the better model, by how much, and what to try
next (`reports/comparison.{md,html}`, `data/compare/verdict.json`, tags on the MLflow
parent run). The statistics live in `paired_tests` and `statistics`."""

import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline import figures, paths
from pipeline.config import (
    Params,
    PromoteConfig,
    load_params,
)
from pipeline.diagnosis import (
    Finding,
    ModelEvidence,
    diagnose_replicates,
    estimated_train_rows,
)
from pipeline.errors import PipelineError, run_stage
from pipeline.files import (
    read_classes,
    read_json,
    read_test_predictions,
    write_json,
    write_text,
)
from pipeline.history import read_history, read_summary, split_histories
from pipeline.paired_tests import (
    FAMILIES,
    METRICS,
    Comparison,
    Verdict,
    compare_predictions,
    over_replicates,
    parameter_count,
    point_metrics,
)
from pipeline.replicates import split_paths
from pipeline.report import (
    Block,
    Bullets,
    Code,
    Heading,
    Image,
    Paragraph,
    Table,
    code,
    to_html,
    to_markdown,
)
from pipeline.statistics import (
    LOWER_IS_BETTER,
    Interval,
    ReplicateVerdict,
)
from pipeline.track import open_store, redact, repository_root, resolve_store, store_lock
from pipeline.views import (
    curves_link,
    headline_record,
    parent_metrics,
    publish_views,
    rounded,
    runs_link,
    ui_address,
    verdict_text,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gate:
    name: str  # the compare.promote key, or "winner"
    passed: bool
    detail: str


def check_gates(
    verdict: Verdict, estimates: dict[str, dict[str, float]], promote: PromoteConfig
) -> list[Gate]:
    """Each quality gate the winner must pass before it may become the champion."""
    if verdict.winner == "tie":
        return [Gate("winner", False, f"the models tie on test {verdict.metric}: no winner")]
    winner = estimates[verdict.winner]
    gates = [Gate("winner", True, f"{verdict.winner} is better on test {verdict.metric}")]
    for key, metric in (("min_test_roc_auc", "roc_auc"), ("min_test_accuracy", "accuracy")):
        minimum = getattr(promote, key)
        passed = winner[metric] >= minimum
        relation = ">=" if passed else "<"
        gates.append(
            Gate(key, passed, f"test {metric} {winner[metric]:.4f} {relation} {minimum:g}")
        )
    if promote.require_significant:
        gates.append(
            Gate(
                "require_significant",
                verdict.significant,
                f"{verdict.test} p = {verdict.p_value:.4g} "
                + (f"< {verdict.alpha:g}" if verdict.significant else f">= {verdict.alpha:g}"),
            )
        )
    return gates


# ---------------------------------------------------------------------------------
# Promotion to the MLflow Model Registry

CHAMPION = "champion"
TAG_WINNER = "winner"
TAG_SIGNIFICANT = "significant"
TAG_VERDICT_LEVEL = "verdict_level"  # what the verdict compares
TAG_NOTE = "mlflow.note.content"  # the run description MLflow's UI shows


@dataclass(frozen=True)
class Promotion:
    status: Literal["disabled", "refused", "promoted"]
    gates: tuple[Gate, ...]
    model_name: str
    family: str | None = None
    version: str | None = None

    def describe(self) -> str:
        if self.status == "disabled":
            return "Promotion is off (`compare.promote.enabled: false`)."
        if self.status == "refused":
            failed = "; ".join(
                f"`{gate.name}` ({gate.detail})" for gate in self.gates if not gate.passed
            )
            plural = "s" if sum(not gate.passed for gate in self.gates) > 1 else ""
            return f"Not promoted to `{self.model_name}`: failed gate{plural} {failed}."
        return (
            f"Promoted **{self.family}** to the Model Registry as `{self.model_name}` "
            f"version {self.version}, alias `{CHAMPION}` (gates: "
            + "; ".join(gate.detail for gate in self.gates)
            + ")."
        )


def register_champion(client: MlflowClient, model_id: str, name: str, tags: dict[str, str]) -> str:
    """Register the logged model (once per parent run and family) and point the
    `champion` alias at it; return the version."""
    existing = [
        version
        for version in client.search_model_versions(f"name = '{name}'")
        if all(version.tags.get(key) == value for key, value in tags.items())
    ]
    if existing:
        # A rerun of this stage for the same runs: no second copy of the model.
        version = existing[0].version
    else:
        version = mlflow.register_model(f"models:/{model_id}", name, tags=tags).version
    client.set_registered_model_alias(name, CHAMPION, str(version))
    return str(version)


def promote(
    client: MlflowClient,
    config: PromoteConfig,
    verdict: Verdict,
    estimates: dict[str, dict[str, float]],
    run_ids: dict[str, str],
) -> Promotion:
    if not config.enabled:
        return Promotion("disabled", (), config.registered_model_name)
    gates = tuple(check_gates(verdict, estimates, config))
    if not all(gate.passed for gate in gates):
        return Promotion("refused", gates, config.registered_model_name, verdict.winner)
    family = verdict.winner
    tags = {
        "parent_run_id": run_ids["parent_run_id"],
        "model_family": family,
        f"test_{verdict.metric}": f"{estimates[family][verdict.metric]:.6g}",
    }
    version = register_champion(
        client, run_ids[f"{family}_model_id"], config.registered_model_name, tags
    )
    return Promotion("promoted", gates, config.registered_model_name, family, version)


# ---------------------------------------------------------------------------------
# The report

METRIC_NAMES = {
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "roc_auc": "ROC AUC",
    "log_loss": "log-loss",
}
FINDING_NAMES = {
    "no_signal": "no learnable signal",
    "diverged": "diverged",
    "over_regularized": "over-regularized",
    "imbalance": "accuracy hides a class imbalance",
    "overfitting": "over-fitting",
    "underfitting": "under-fitting",
    "not_converged": "not converged",
    "plateau": "stuck on a plateau",
}


@dataclass(frozen=True)
class Training:
    """What a trainer's summary.json says about one model, plus its size."""

    epochs_trained: int
    best_epoch: int
    stopped_early: bool
    train_seconds: float  # all replicates together
    samples_per_second: float
    parameters: int
    replicates: int = 1


def _interval_text(interval: Interval, signed: bool = False) -> str:
    form = "+.4f" if signed else ".4f"
    return f"{interval.estimate:{form}} [{interval.low:{form}}, {interval.high:{form}}]"


def p_value_text(p_value: float, alpha: float) -> str:
    """p to three significant digits, or more where three would round it across alpha
    (p = 0.04995 is not "0.05 < alpha = 0.05")."""
    for digits in range(3, 10):
        text = f"{p_value:.{digits}g}"
        if (float(text) < alpha) == (p_value < alpha):
            return text
    return repr(p_value)


def model_sentence(comparison: Comparison, verdict: Verdict) -> str:
    """The per-row verdict about replicate 0's two trained models."""
    name = METRIC_NAMES[verdict.metric]
    keras, sklearn = (comparison.intervals[family][verdict.metric].estimate for family in FAMILIES)
    difference = verdict.difference
    level = f"{comparison.confidence:.0%} CI"
    evidence = (
        f"difference keras - sklearn {difference.estimate:+.4f} ({level} "
        f"{difference.low:+.4f} to {difference.high:+.4f}); {verdict.test} "
        f"p = {p_value_text(verdict.p_value, verdict.alpha)}"
    )
    direction = " (lower is better)" if verdict.metric in LOWER_IS_BETTER else ""
    if verdict.winner == "tie":
        return f"**No difference**: both models score {keras:.4f} on test {name}{direction}."
    if verdict.significant:
        return (
            f"**{verdict.winner} wins** on test {name}{direction}: keras {keras:.4f}, "
            f"sklearn {sklearn:.4f}; {evidence} < alpha = {verdict.alpha:g}."
        )
    return (
        f"**No significant difference** on test {name}{direction}: keras {keras:.4f}, "
        f"sklearn {sklearn:.4f}; {evidence} >= alpha = {verdict.alpha:g}. "
        f"{verdict.winner} is ahead on the point estimate only."
    )


def replicate_sentence(replicates: ReplicateVerdict) -> str:
    """The verdict about the two libraries, over K paired replicates."""
    name = METRIC_NAMES[replicates.metric]
    direction = " (lower is better)" if replicates.metric in LOWER_IS_BETTER else ""
    count = replicates.count
    level = f"{replicates.confidence:.0%} CI"
    difference, better = replicates.difference, replicates.keras_better
    runs = f"over {count} training runs of each library, paired by seed"
    evidence = (
        f"mean test {name} keras {replicates.keras.mean():.4f}, sklearn "
        f"{replicates.sklearn.mean():.4f}; mean difference keras - sklearn "
        f"{difference.estimate:+.4f} ({level} {difference.low:+.4f} to {difference.high:+.4f}); "
        f"keras better in {better.estimate * count:g} of {count} replicates (P(keras better) "
        f"{better.estimate:.2f}, {level} {better.low:.2f} to {better.high:.2f}); sign-flip test "
        f"p = {p_value_text(replicates.p_value, replicates.alpha)}"
    )
    if replicates.winner == "tie":
        return f"**No difference between the libraries** {runs}: {evidence}."
    if replicates.significant:
        return (
            f"**{replicates.winner} is better** {runs}{direction}: {evidence} "
            f"< alpha = {replicates.alpha:g}."
        )
    return (
        f"**No significant difference between the libraries** {runs}{direction}: "
        f"{evidence} >= alpha = {replicates.alpha:g}. {replicates.winner} is ahead on the "
        "mean only."
    )


def verdict_sentence(comparison: Comparison) -> str:
    if comparison.replicates is not None:
        return replicate_sentence(comparison.replicates)
    return (
        "With one training run per library (`replicates.count: 1`), this compares two "
        "trained models, not the two libraries: " + model_sentence(comparison, comparison.verdict)
    )


def metrics_table(comparison: Comparison) -> Table:
    rows = tuple(
        (
            METRIC_NAMES[metric] + (" (lower is better)" if metric in LOWER_IS_BETTER else ""),
            *(_interval_text(comparison.intervals[family][metric]) for family in FAMILIES),
            _interval_text(comparison.differences[metric], signed=True),
        )
        for metric in METRICS
    )
    return Table(("test metric", "keras", "sklearn", "keras - sklearn"), rows)


def finding_headline(finding: Finding) -> str:
    return f"{finding.family}: {FINDING_NAMES[finding.kind]}{finding.prevalence}; try " + ", ".join(
        f"`{suggestion.override()}`" for suggestion in finding.suggestions[:2]
    )


def keras_only_note(params: Params) -> str | None:
    used = [
        f"`model.{key}: {getattr(params.model, key):g}`"
        for key in ("l1", "dropout")
        if getattr(params.model, key) > 0
    ]
    if not used:
        return None
    return (
        f"**Not like for like:** {' and '.join(used)} apply to keras only; scikit-learn's "
        "MLPClassifier has no equivalent and trained without them."
    )


def scope_note(comparison: Comparison) -> Paragraph:
    rows = (
        f"{comparison.n_positive} positive"
        if comparison.n_classes == 2
        else f"{comparison.n_classes} classes; precision, recall, F1 and ROC AUC are "
        "macro averages of one-vs-rest scores"
    )
    return Paragraph(
        f"{comparison.n_rows} test rows ({rows}); [low, high]: "
        f"{comparison.confidence:.0%} bootstrap interval from {comparison.n_bootstrap} "
        "stratified resamples of the test rows."
    )


def summary_blocks(
    comparison: Comparison, findings: list[Finding], promotion: Promotion, params: Params
) -> list[Block]:
    """The short version, for MLflow's run description: verdict, table, headlines."""
    note = keras_only_note(params)
    blocks: list[Block] = [
        Paragraph(verdict_sentence(comparison)),
        *([Paragraph(note)] if note else []),
        metrics_table(comparison),
        scope_note(comparison),
    ]
    if findings:
        blocks.append(Bullets(tuple(finding_headline(finding) for finding in findings)))
    else:
        blocks.append(Paragraph("Diagnosis: nothing to fix in the training histories."))
    blocks.append(Paragraph(promotion.describe()))
    return blocks


def next_commands(findings: list[Finding]) -> list[str]:
    """One `dvc exp run` per finding with its first suggestions, without repeats."""
    commands: list[str] = []
    for finding in findings:
        arguments = " ".join(
            f"-S '{suggestion.override()}'" for suggestion in finding.suggestions[:1]
        )
        command = f"dvc exp run {arguments}"
        if command not in commands:
            commands.append(command)
    return commands


TRAINING_ROWS = {
    "replicates trained": lambda run: str(run.replicates),
    "epochs trained (replicate 0)": lambda run: str(run.epochs_trained),
    "best epoch (weights kept)": lambda run: str(run.best_epoch),
    "stopped early": lambda run: str(run.stopped_early).lower(),
    "training time, all replicates (s)": lambda run: f"{run.train_seconds:.2f}",
    "throughput (training rows per second)": lambda run: f"{run.samples_per_second:,.0f}",
    "parameters (weights and biases)": lambda run: str(run.parameters),
}


def training_table(training: dict[str, Training]) -> Table:
    return Table(
        ("", *FAMILIES),
        tuple(
            (name, *(render(training[family]) for family in FAMILIES))
            for name, render in TRAINING_ROWS.items()
        ),
    )


def models_heading(comparison: Comparison) -> str:
    if comparison.replicates is None:
        return "Test metrics"
    return "Replicate 0: these two trained models"


def replicate_blocks(comparison: Comparison, images: dict[str, Image]) -> list[Block]:
    """The replicates behind the verdict, paired by seed."""
    replicates = comparison.replicates
    if replicates is None:
        return []
    name = METRIC_NAMES[replicates.metric]
    rows = tuple(
        (str(index), f"{keras:.4f}", f"{sklearn:.4f}", f"{keras - sklearn:+.4f}")
        for index, (keras, sklearn) in enumerate(
            zip(replicates.keras, replicates.sklearn, strict=True)
        )
    )
    return [
        Heading(f"The two libraries over {replicates.count} replicates"),
        Paragraph(
            f"Replicate r of each library trains with the seed derived from `seed` and r: "
            "its own initial weights and batch order (and its own split with "
            "`replicates.resample_split: true`), the same data for both libraries. "
            f"Test {name} per replicate:"
        ),
        Table(("replicate", "keras", "sklearn", "keras - sklearn"), rows),
        images["replicates"],
    ]


def build_report(
    comparison: Comparison,
    findings: list[Finding],
    training: dict[str, Training],
    promotion: Promotion,
    params: Params,
    images: dict[str, Image],
    parent_run_id: str,
) -> list[Block]:
    verdict = comparison.verdict
    mcnemar_result = comparison.mcnemar
    decision = (
        f"threshold {params.evaluate.threshold:g}"
        if comparison.n_classes == 2
        else "the most probable class"
    )
    tests = [
        f"McNemar on correctness ({decision}): keras is right "
        f"where sklearn is wrong on {mcnemar_result.keras_only_correct} rows, the reverse on "
        f"{mcnemar_result.sklearn_only_correct}; {mcnemar_result.method}, "
        f"p = {p_value_text(mcnemar_result.p_value, verdict.alpha)}.",
    ]
    bootstrap_metrics = ["roc_auc"]
    if verdict.metric not in ("roc_auc", "accuracy"):
        bootstrap_metrics.append(verdict.metric)
    for metric in bootstrap_metrics:
        difference = comparison.differences[metric]
        tests.append(
            f"Paired bootstrap on the {METRIC_NAMES[metric]} difference: "
            f"{difference.estimate:+.4f} ({comparison.confidence:.0%} CI {difference.low:+.4f} "
            f"to {difference.high:+.4f}), "
            f"p = {p_value_text(comparison.bootstrap_p_values[metric], verdict.alpha)} "
            f"from {comparison.n_bootstrap} resamples."
        )
    if comparison.replicates is None:
        tests.append(
            f"The verdict uses the {verdict.test} test on `compare.primary_metric: "
            f"{verdict.metric}` at `compare.alpha: {verdict.alpha:g}`."
        )
    else:
        tests.append(
            "These tests judge these two trained models on these test rows only: "
            "training variance (initial weights, batch order) is outside them, so they "
            "do not decide which library is better. The verdict above does, over "
            f"{comparison.replicates.count} replicates."
        )
    faster, slower = sorted(FAMILIES, key=lambda family: training[family].train_seconds)
    speedup = training[slower].train_seconds / max(training[faster].train_seconds, 1e-9)
    note = keras_only_note(params)
    blocks: list[Block] = [
        Heading("Keras vs scikit-learn: the verdict", 1),
        Paragraph(verdict_sentence(comparison)),
        *([Paragraph(note)] if note else []),
        *replicate_blocks(comparison, images),
        Heading(models_heading(comparison)),
        *(
            [Paragraph(model_sentence(comparison, comparison.model_verdict))]
            if comparison.model_verdict is not None
            else []
        ),
        metrics_table(comparison),
        scope_note(comparison),
        images["intervals"],
        Heading(f"Paired tests on the same {comparison.n_rows} test rows"),
        Bullets(tuple(tests)),
        images["differences"],
        Heading("Training"),
        training_table(training),
        Paragraph(
            f"{faster} trained {speedup:.1f}x faster. Keras' time includes building its "
            "graph; both include measuring train and validation accuracy after each epoch."
            if np.isfinite(speedup)
            # timing.json is not a DVC output: `dvc pull` restores the models without it.
            else "Training times were not measured here (no data/train_*/timing.json)."
        ),
        images["loss"],
        images["roc"],
        Heading("Diagnosis"),
    ]
    if not findings:
        blocks.append(
            Paragraph(
                "No over-fitting, under-fitting or convergence problem shows in the "
                "histories or the test results."
            )
        )
    for finding in findings:
        where = f" (evidence from replicate {finding.replicate})" if finding.seen_in[1] > 1 else ""
        blocks.append(
            Paragraph(
                f"**{finding.family}: {FINDING_NAMES[finding.kind]}{finding.prevalence}.** "
                f"{finding.evidence[0].upper()}{finding.evidence[1:]}{where}."
            )
        )
        blocks.append(
            Bullets(
                tuple(
                    f"`{suggestion.param}`: {suggestion.current} -> **{suggestion.value}**"
                    + (f" ({suggestion.note})" if suggestion.note else "")
                    for suggestion in finding.suggestions
                )
            )
        )
    blocks.append(Heading("What to try next"))
    commands = next_commands(findings)
    if commands:
        blocks.append(Paragraph("One experiment per finding, with its first suggestion:"))
        blocks.append(Code("\n".join(commands)))
    blocks.append(
        Paragraph("Or queue a grid, run it two at a time, and rank the results from MLflow:")
    )
    blocks.append(
        Code(
            "dvc exp run --queue -S 'model.learning_rate=0.001,0.01,0.1' -S 'model.l2=0,0.0001'\n"
            "dvc queue start -j 2\n"
            "python -m pipeline.rank"
        )
    )
    blocks += [
        Heading("Promotion"),
        Paragraph(promotion.describe()),
        Heading("Where this comes from"),
        Paragraph(
            f"MLflow parent run `{parent_run_id}` in experiment "
            f"{code(params.track.experiment_name)} (tags `winner`, `significant`; this report "
            "is among its artifacts). Per-row test predictions: "
            f"`{paths.KERAS_PREDICTIONS}`, `{paths.SKLEARN_PREDICTIONS}`; histories: "
            f"`{paths.KERAS_HISTORY}`, `{paths.SKLEARN_HISTORY}`."
        ),
    ]
    return blocks


def verdict_record(
    comparison: Comparison, findings: list[Finding], promotion: Promotion
) -> dict[str, Any]:
    """data/compare/verdict.json: what `dvc exp show` lists per experiment."""
    verdict = comparison.verdict
    replicates = comparison.replicates
    model_verdict = comparison.model_verdict or verdict
    record: dict[str, Any] = {
        "winner": verdict.winner,
        "significant": verdict.significant,
        "primary_metric": verdict.metric,
        "replicates": 1 if replicates is None else replicates.count,
        "difference": verdict.difference.estimate,
        "difference_low": verdict.difference.low,
        "difference_high": verdict.difference.high,
        "p_value": verdict.p_value,
        "test": verdict.test,
        # Replicate 0's two trained models, by the per-row tests.
        "model_difference": model_verdict.difference.estimate,
        "model_p_value": model_verdict.p_value,
        "mcnemar_p_value": comparison.mcnemar.p_value,
        "roc_auc_p_value": comparison.bootstrap_p_values["roc_auc"],
        "findings": "; ".join(f"{finding.family}: {finding.kind}" for finding in findings)
        or "none",
        "promotion": promotion.status,
    }
    if replicates is not None:
        record |= {
            "p_keras_better": replicates.keras_better.estimate,
            "p_keras_better_low": replicates.keras_better.low,
            "p_keras_better_high": replicates.keras_better.high,
        }
    if promotion.version is not None:
        record["champion_version"] = int(promotion.version)
    return record


# ---------------------------------------------------------------------------------
# The stage


def replicate_evidence(
    comparison: Comparison,
    labels: np.ndarray,
    probabilities: dict[str, np.ndarray],
    histories: dict[str, list[pd.DataFrame]],
    summaries: dict[str, dict[str, Any]],
    threshold: float,
) -> list[list[ModelEvidence]]:
    """What the diagnosis reads about each replicate of both families. The bootstrap
    interval of ROC AUC is replicate 0's, centred on each replicate's own value:
    the test rows' sampling error is the same for every replicate of a family."""
    evidence = []
    for replicate in range(len(labels)):
        models = []
        for family in FAMILIES:
            interval = comparison.intervals[family]["roc_auc"]
            roc_auc = (
                interval.estimate
                if replicate == 0
                else point_metrics(labels[replicate], probabilities[family][replicate], threshold)[
                    "roc_auc"
                ]
            )
            shift = roc_auc - interval.estimate
            models.append(
                ModelEvidence(
                    family,
                    histories[family][replicate],
                    roc_auc,
                    (interval.low + shift, interval.high + shift),
                    bool(summaries[family]["replicates"][replicate]["stopped_early"]),
                )
            )
        evidence.append(models)
    return evidence


def read_run_ids(path: os.PathLike) -> dict[str, str]:
    try:
        run_ids = read_json(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; run the track stage first") from None
    needed = {
        "experiment_id",
        "parent_run_id",
        *(f"{family}_{kind}_id" for family in FAMILIES for kind in ("run", "model")),
    }
    missing = needed - set(run_ids)
    if missing:
        raise PipelineError(f"{path}: missing keys {sorted(missing)}")
    return run_ids


def render_images(
    comparison: Comparison,
    histories: dict[str, pd.DataFrame],
    labels: np.ndarray,
    probabilities: dict[str, np.ndarray],
) -> dict[str, Image]:
    from sklearn.metrics import roc_curve

    model_verdict = comparison.model_verdict or comparison.verdict
    level = f"{comparison.confidence:.0%}"
    curves = {}
    for family in FAMILIES:
        values = np.asarray(probabilities[family])
        if values.ndim == 2 and values.shape[1] > 2:
            # Micro-average: every (row, class) pair one binary decision.
            truth, scores = np.eye(values.shape[1], dtype=np.int32)[labels].ravel(), values.ravel()
        else:
            truth, scores = labels, values[:, 1] if values.ndim == 2 else values
        fpr, tpr, _ = roc_curve(truth, scores)
        curves[family] = pd.DataFrame({"fpr": fpr, "tpr": tpr})
    intervals = {
        family: {
            metric: (interval.estimate, interval.low, interval.high)
            for metric, interval in comparison.intervals[family].items()
        }
        for family in FAMILIES
    }
    aucs = {family: comparison.intervals[family]["roc_auc"].estimate for family in FAMILIES}
    return {
        "intervals": Image(
            figures.png_bytes(figures.metric_intervals(intervals, comparison.confidence)),
            f"Test metrics of both models with {level} bootstrap intervals.",
        ),
        "differences": Image(
            figures.png_bytes(
                figures.bootstrap_differences(
                    comparison.primary_samples,
                    model_verdict.difference.estimate,
                    (model_verdict.difference.low, model_verdict.difference.high),
                    model_verdict.metric,
                )
            ),
            f"Paired bootstrap distribution of the {METRIC_NAMES[model_verdict.metric]} "
            "difference between these two trained models on resampled test rows.",
        ),
        "loss": Image(
            figures.png_bytes(figures.learning_curves(histories, "loss")),
            "Loss per epoch, both models overlaid: training dashed, validation solid.",
        ),
        "roc": Image(
            figures.png_bytes(figures.roc_curves(curves, aucs)),
            "ROC curves on the test set.",
        ),
        **replicate_image(comparison),
    }


def replicate_image(comparison: Comparison) -> dict[str, Image]:
    replicates = comparison.replicates
    if replicates is None:
        return {}
    name = METRIC_NAMES[replicates.metric]
    return {
        "replicates": Image(
            figures.png_bytes(
                figures.paired_replicates(replicates.keras, replicates.sklearn, name)
            ),
            f"Test {name} of every replicate of both libraries, paired by seed.",
        )
    }


def publish_verdict(
    client: MlflowClient,
    parent_run_id: str,
    comparison: Comparison,
    note: str,
    files: list[os.PathLike],
) -> None:
    """Tags, description and report files on the parent run that track logged."""
    verdict = comparison.verdict
    client.set_tag(parent_run_id, TAG_WINNER, verdict.winner)
    client.set_tag(parent_run_id, TAG_SIGNIFICANT, str(verdict.significant).lower())
    client.set_tag(parent_run_id, "primary_metric", verdict.metric)
    client.set_tag(parent_run_id, TAG_NOTE, note)
    # Rounded: the run list shows these to people.
    client.log_metric(
        parent_run_id, f"test_{verdict.metric}_difference", rounded(verdict.difference.estimate)
    )
    client.log_metric(parent_run_id, "p_value", rounded(verdict.p_value))
    replicates = comparison.replicates
    client.set_tag(
        parent_run_id,
        TAG_VERDICT_LEVEL,
        "two trained models" if replicates is None else f"libraries, {replicates.count} replicates",
    )
    if replicates is not None:
        client.log_metric(
            parent_run_id, "p_keras_better", rounded(replicates.keras_better.estimate)
        )
    for path in files:
        client.log_artifact(parent_run_id, str(path), artifact_path="report")


def main() -> None:
    params = load_params()
    classes = read_classes()
    predictions = read_test_predictions(
        split_paths("test", params.replicates, params.seed),
        paths.PREDICTIONS,
        len(classes),
        params.replicates.count,
    )
    labels = predictions.labels
    probabilities = predictions.probabilities
    histories = {family: read_history(path) for family, path in paths.HISTORIES.items()}
    replicate_histories = {
        family: split_histories(read_history(path, replicates=True))
        for family, path in paths.REPLICATE_HISTORIES.items()
    }
    summaries = {family: read_summary(family) for family in FAMILIES}
    run_ids = read_run_ids(paths.MLFLOW_RUNS)
    threshold = params.evaluate.threshold
    try:
        # The per-row tests: replicate 0's two trained models on the same test rows.
        comparison = compare_predictions(
            labels[0],
            {family: values[0] for family, values in probabilities.items()},
            threshold,
            params.compare,
            params.seed,
        )
    except ValueError as error:
        raise PipelineError(f"{paths.TEST}: {error}") from None
    comparison = over_replicates(comparison, labels, probabilities, threshold, params.compare)
    findings = diagnose_replicates(
        replicate_evidence(
            comparison, labels, probabilities, replicate_histories, summaries, threshold
        ),
        params.model,
        params.dataset,
        params.compare.confidence,
        (np.bincount(labels[0], minlength=len(classes)) / labels.shape[1]).tolist(),
        estimated_train_rows(labels.shape[1], params.split),
    )
    training = {
        family: Training(
            epochs_trained=int(summaries[family]["epochs_trained"]),
            best_epoch=int(summaries[family]["best_epoch"]),
            stopped_early=bool(summaries[family]["stopped_early"]),
            # NaN where timing.json is missing (outputs restored by `dvc pull`).
            train_seconds=float(summaries[family].get("train_seconds", "nan")),
            samples_per_second=float(summaries[family].get("samples_per_second", "nan")),
            parameters=parameter_count(
                predictions.n_features, params.model.hidden_layers, len(classes)
            ),
            replicates=int(summaries[family]["replicate_count"]),
        )
        for family in FAMILIES
    }

    store = resolve_store(dict(os.environ), repository_root())
    # track's connection: a bounded retry policy and one line when the store is down.
    client = open_store(store)
    parent_run_id = run_ids["parent_run_id"]
    try:
        client.get_run(parent_run_id)
    except MlflowException:
        raise PipelineError(
            f"{paths.MLFLOW_RUNS}: parent run {parent_run_id} is not in "
            f"{redact(store.tracking_uri)}; rerun the track stage (`dvc repro -f -s track`)"
        ) from None
    estimates = {
        family: {metric: interval.estimate for metric, interval in intervals.items()}
        for family, intervals in comparison.intervals.items()
    }
    # Parallel queued experiments write to the same SQLite store: one writer at a time.
    with store_lock(store):
        promotion = promote(client, params.compare.promote, comparison.verdict, estimates, run_ids)

    images = render_images(
        comparison,
        histories,
        labels[0],
        {family: values[0] for family, values in probabilities.items()},
    )
    verdict = comparison.verdict
    address = ui_address(redact(store.tracking_uri))
    links = {
        "the run list, with the verdict's columns": runs_link(address, run_ids["experiment_id"]),
        "both models' loss and val_loss per epoch": curves_link(
            address, run_ids["experiment_id"], run_ids
        ),
    }
    blocks = build_report(comparison, findings, training, promotion, params, images, parent_run_id)
    blocks += [
        Heading("In the MLflow UI"),
        Paragraph("With `mlflow ui` running (see the README), open:"),
        Code("\n".join(f"# {name}\n{link}" for name, link in links.items())),
    ]
    write_text(to_markdown(blocks), paths.REPORT_MARKDOWN)
    write_text(to_html(blocks, "Keras vs scikit-learn: the verdict"), paths.REPORT_HTML)
    write_json(verdict_record(comparison, findings, promotion), paths.VERDICT)
    test_metrics = read_json(paths.METRICS)
    verdict_label = verdict_text(verdict.winner, verdict.significant)
    write_json(
        headline_record(
            verdict_label, verdict.metric, test_metrics, verdict.p_value, parent_run_id
        ),
        paths.HEADLINE,
    )
    note = to_markdown(
        [
            Heading("Keras vs scikit-learn", 3),
            *summary_blocks(comparison, findings, promotion, params),
        ]
    )
    with store_lock(store):
        publish_verdict(
            client,
            parent_run_id,
            comparison,
            note,
            [paths.REPORT_MARKDOWN, paths.REPORT_HTML, paths.VERDICT],
        )
        publish_views(
            client,
            run_ids["experiment_id"],
            run_ids,
            verdict_label,
            parent_metrics(test_metrics, verdict.metric),
            verdict.metric,
        )

    logger.info("compare: %s", verdict_sentence(comparison).replace("**", ""))
    for finding in findings:
        logger.info("compare: %s", finding_headline(finding).replace("`", ""))
    logger.info("compare: %s", promotion.describe().replace("`", "").replace("**", ""))
    logger.info(
        "compare: report -> %s, %s; tags winner=%s significant=%s on MLflow run %s",
        paths.REPORT_MARKDOWN,
        paths.REPORT_HTML,
        verdict.winner,
        str(verdict.significant).lower(),
        parent_run_id,
    )
    for name, link in links.items():
        logger.info("compare: MLflow UI, %s: %s", name, link)


if __name__ == "__main__":
    run_stage(main)
