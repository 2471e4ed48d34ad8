"""The comparison report's text: the verdict in sentences, its tables, the
diagnosis and what to try next, as blocks that `pipeline.report` renders to
Markdown and HTML. Pure functions of the comparison; no files, no MLflow."""

from dataclasses import dataclass

import numpy as np

from pipeline import paths
from pipeline.config import Params
from pipeline.diagnosis import Finding
from pipeline.paired_tests import FAMILIES, METRICS, Comparison, Verdict
from pipeline.promotion import Promotion
from pipeline.report import (
    Block,
    Bullets,
    Code,
    Heading,
    Image,
    Paragraph,
    Table,
    code,
)
from pipeline.statistics import LOWER_IS_BETTER, Interval, ReplicateVerdict

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
            f"Per-row test predictions: `{paths.KERAS_PREDICTIONS}`, "
            f"`{paths.SKLEARN_PREDICTIONS}`; histories: `{paths.KERAS_HISTORY}`, "
            f"`{paths.SKLEARN_HISTORY}`. The track stage runs after this report and "
            f"publishes it to MLflow, in experiment {code(params.track.experiment_name)}: "
            "among the parent run's artifacts, with the tags `winner` and `significant`. "
            f"`{paths.MLFLOW_RUNS}` then names the runs and links to them in MLflow's UI."
        ),
    ]
    return blocks
