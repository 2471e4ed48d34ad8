"""The verdict: which library trains the better model, by how much, and what to try
next, computed from the stages' files (`reports/comparison.{md,html}`,
`data/compare/verdict.json`, `headline.json` and `description.md`), after the test
metrics, curves and figures of both families (`data/evaluate/`, pipeline.evaluate).
It imports neither TensorFlow nor MLflow: `track`, the last stage, publishes all of it."""

import logging
from typing import Any

import numpy as np
import pandas as pd

from pipeline import figures, paths
from pipeline.comparison_report import (
    METRIC_NAMES,
    Training,
    build_report,
    finding_headline,
    summary_blocks,
    verdict_sentence,
)
from pipeline.config import Params, load_params
from pipeline.diagnosis import (
    Finding,
    ModelEvidence,
    diagnose_replicates,
    estimated_train_rows,
)
from pipeline.errors import PipelineError, run_stage
from pipeline.evaluate import evaluate_families, evaluation_figures, write_evaluation
from pipeline.files import read_classes, read_test_predictions, write_json, write_text
from pipeline.headline import headline_record, verdict_text
from pipeline.history import read_history, read_summary, split_histories
from pipeline.paired_tests import (
    FAMILIES,
    Comparison,
    compare_predictions,
    over_replicates,
    parameter_count,
    point_metrics,
)
from pipeline.promotion import Promotion, decide_promotion
from pipeline.replicates import split_paths
from pipeline.report import Heading, Image, to_html, to_markdown

logger = logging.getLogger(__name__)


def verdict_record(
    comparison: Comparison, findings: list[Finding], promotion: Promotion
) -> dict[str, Any]:
    """data/compare/verdict.json: the whole verdict, for machines and for `track`."""
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
    if promotion.status == "approved":
        # What `track` tags the registered version with: the promoted model's score.
        record["winner_score"] = comparison.intervals[verdict.winner][verdict.metric].estimate
    return record


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


def render_images(comparison: Comparison, figure_files: dict[str, bytes]) -> dict[str, Image]:
    """The report's figures: its own, and the loss and ROC charts that the evaluation
    drew for `data/evaluate/figures/` (the same PNG files)."""
    model_verdict = comparison.model_verdict or comparison.verdict
    level = f"{comparison.confidence:.0%}"
    intervals = {
        family: {
            metric: (interval.estimate, interval.low, interval.high)
            for metric, interval in comparison.intervals[family].items()
        }
        for family in FAMILIES
    }
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
            figure_files["loss.png"],
            "Loss per epoch, both models overlaid: training dashed, validation solid.",
        ),
        "roc": Image(figure_files["roc.png"], "ROC curves on the test set."),
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


def training_summaries(
    summaries: dict[str, dict[str, Any]], n_features: int, params: Params, n_classes: int
) -> dict[str, Training]:
    """What the report says about each family's training."""
    return {
        family: Training(
            epochs_trained=int(summaries[family]["epochs_trained"]),
            best_epoch=int(summaries[family]["best_epoch"]),
            stopped_early=bool(summaries[family]["stopped_early"]),
            # NaN where timing.json is missing (outputs restored by `dvc pull`).
            train_seconds=float(summaries[family].get("train_seconds", "nan")),
            samples_per_second=float(summaries[family].get("samples_per_second", "nan")),
            parameters=parameter_count(n_features, params.model.hidden_layers, n_classes),
            replicates=int(summaries[family]["replicate_count"]),
        )
        for family in FAMILIES
    }


def main() -> None:
    params = load_params()
    classes = read_classes()
    # The training stages predicted the test set; TensorFlow does not load here.
    predictions = read_test_predictions(
        split_paths("test", params.replicates, params.seed),
        paths.PREDICTIONS,
        len(classes),
        params.replicates.count,
    )
    labels = predictions.labels
    probabilities = predictions.probabilities
    threshold = params.evaluate.threshold
    histories = {family: read_history(path) for family, path in paths.HISTORIES.items()}
    # data/evaluate/ first: the test metrics, curves and figures of both families.
    evaluation = evaluate_families(predictions, classes, threshold)
    figure_files = evaluation_figures(evaluation, histories, classes)
    write_evaluation(evaluation, figure_files)
    replicate_histories = {
        family: split_histories(read_history(path, replicates=True))
        for family, path in paths.REPLICATE_HISTORIES.items()
    }
    summaries = {family: read_summary(family) for family in FAMILIES}
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
    training = training_summaries(summaries, predictions.n_features, params, len(classes))
    estimates = {
        family: {metric: interval.estimate for metric, interval in intervals.items()}
        for family, intervals in comparison.intervals.items()
    }
    promotion = decide_promotion(params.compare.promote, comparison.verdict, estimates)
    images = render_images(comparison, figure_files)
    verdict = comparison.verdict
    blocks = build_report(comparison, findings, training, promotion, params, images)
    write_text(to_markdown(blocks), paths.REPORT_MARKDOWN)
    write_text(to_html(blocks, "Keras vs scikit-learn: the verdict"), paths.REPORT_HTML)
    write_json(verdict_record(comparison, findings, promotion), paths.VERDICT)
    write_json(
        headline_record(
            verdict_text(verdict.winner, verdict.significant),
            verdict.metric,
            evaluation.means,
            verdict.p_value,
            # A search trial's pruned library (docs/search.md).
            {
                family: summary["pruned_epoch"]
                for family, summary in summaries.items()
                if "pruned_epoch" in summary
            },
        ),
        paths.HEADLINE,
    )
    # The parent run's description in MLflow's UI: the short version of the report.
    description = [
        Heading("Keras vs scikit-learn", 3),
        *summary_blocks(comparison, findings, promotion, params),
    ]
    write_text(to_markdown(description), paths.DESCRIPTION)

    logger.info("compare: %s", verdict_sentence(comparison).replace("**", ""))
    for finding in findings:
        logger.info("compare: %s", finding_headline(finding).replace("`", ""))
    logger.info("compare: %s", promotion.describe().replace("`", "").replace("**", ""))
    logger.info(
        "compare: report -> %s, %s; track publishes it to MLflow next",
        paths.REPORT_MARKDOWN,
        paths.REPORT_HTML,
    )


if __name__ == "__main__":
    run_stage(main)
