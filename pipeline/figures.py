"""PNG figures of the comparison, for MLflow and for readers without `dvc plots`."""

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # No display: render straight to files.

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pipeline.files import atomic_path  # noqa: E402

COLORS = {"keras": "tab:red", "sklearn": "tab:blue"}


def save_figure(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    with atomic_path(path) as temporary:
        # No timestamp in the PNG metadata, so that reruns give identical files.
        figure.savefig(temporary, dpi=100, format="png", metadata={"Software": None})
    plt.close(figure)


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG, for embedding in a self-contained HTML page."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=100, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def learning_curves(histories: dict[str, pd.DataFrame], metric: str) -> Figure:
    """Train (dashed) and validation (solid) curves of both models in one chart."""
    figure, axes = plt.subplots(figsize=(6, 4))
    for family, history in histories.items():
        color = COLORS[family]
        axes.plot(
            history["epoch"],
            history[metric],
            "--",
            color=color,
            label=f"{family} train",
        )
        axes.plot(
            history["epoch"],
            history[f"val_{metric}"],
            "-",
            color=color,
            label=f"{family} validation",
        )
    axes.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch")
    axes.legend()
    return figure


def roc_curves(curves: dict[str, pd.DataFrame], aucs: dict[str, float]) -> Figure:
    figure, axes = plt.subplots(figsize=(5, 5))
    for family, curve in curves.items():
        axes.plot(
            curve["fpr"],
            curve["tpr"],
            color=COLORS[family],
            label=f"{family} (AUC {aucs[family]:.3f})",
        )
    axes.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    axes.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="ROC curve (test set)",
    )
    axes.legend(loc="lower right")
    return figure


def precision_recall_curves(curves: dict[str, pd.DataFrame]) -> Figure:
    figure, axes = plt.subplots(figsize=(5, 5))
    for family, curve in curves.items():
        axes.plot(curve["recall"], curve["precision"], color=COLORS[family], label=family)
    axes.set(
        xlabel="recall",
        ylabel="precision",
        title="Precision-recall curve (test set)",
        ylim=(0, 1.02),
    )
    axes.legend(loc="lower left")
    return figure


def confusion_matrices(
    matrices: dict[str, np.ndarray], class_names: list[str] | None = None
) -> Figure:
    size = matrices[next(iter(matrices))].shape[0]
    names = class_names or [str(code) for code in range(size)]
    # Larger for many classes, so that every count stays readable.
    side = max(4.0, 0.45 * size + 2)
    figure, all_axes = plt.subplots(1, len(matrices), figsize=(side * len(matrices), side))
    for axes, (family, matrix) in zip(np.atleast_1d(all_axes), matrices.items(), strict=True):
        axes.imshow(matrix, cmap="Blues")
        for (actual, predicted), count in np.ndenumerate(matrix):
            # imshow spans the colour map from the smallest to the largest count.
            color = "white" if count > (matrix.min() + matrix.max()) / 2 else "black"
            axes.text(predicted, actual, str(count), ha="center", va="center", color=color)
        ticks = range(size)
        axes.set_xticks(
            ticks, names, rotation=45 if size > 4 else 0, ha="right" if size > 4 else "center"
        )
        axes.set_yticks(ticks, names)
        axes.set(xlabel="predicted", ylabel="actual", title=f"{family} (test set)")
    return figure


def metric_intervals(
    intervals: dict[str, dict[str, tuple[float, float, float]]], confidence: float
) -> Figure:
    """Each test metric of each model: the estimate and its bootstrap interval."""
    families = list(intervals)
    metrics = list(next(iter(intervals.values())))
    figure, axes = plt.subplots(figsize=(6, 0.5 + 0.55 * len(metrics)))
    offsets = np.linspace(-0.15, 0.15, len(families))
    for offset, family in zip(offsets, families, strict=True):
        for row, metric in enumerate(metrics):
            estimate, low, high = intervals[family][metric]
            axes.errorbar(
                estimate,
                row + offset,
                xerr=[[estimate - low], [high - estimate]],
                fmt="o",
                color=COLORS[family],
                capsize=3,
                label=family if row == 0 else None,
            )
    axes.set_yticks(range(len(metrics)), metrics)
    axes.invert_yaxis()
    axes.set(
        xlabel="test set value", title=f"Test metrics with {confidence:.0%} bootstrap intervals"
    )
    axes.legend()
    return figure


def bootstrap_differences(
    differences: np.ndarray, estimate: float, interval: tuple[float, float], metric: str
) -> Figure:
    """The paired bootstrap distribution of keras - sklearn on one metric."""
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.hist(differences, bins=40, color="tab:grey", alpha=0.7)
    axes.axvline(0, color="black", linestyle=":", label="no difference")
    axes.axvline(estimate, color="tab:red", label=f"test set: {estimate:+.4f}")
    for bound in interval:
        axes.axvline(bound, color="tab:red", linestyle="--")
    axes.set(
        xlabel=f"{metric}: keras - sklearn",
        ylabel="resamples",
        title=f"Paired bootstrap of the {metric} difference (dashed: interval)",
    )
    axes.legend()
    return figure


def paired_replicates(keras: np.ndarray, sklearn: np.ndarray, metric: str) -> Figure:
    """Each replicate's test metric for both libraries, one line per replicate from
    keras to sklearn: parallel lines mean a consistent difference, crossing lines
    none."""
    figure, axes = plt.subplots(figsize=(5, 4))
    for replicate, (left, right) in enumerate(zip(keras, sklearn, strict=True)):
        axes.plot([0, 1], [left, right], "-", color="0.6", linewidth=1)
        axes.annotate(f"{replicate}", (1.03, right), fontsize=7, va="center", color="0.4")
    axes.scatter(np.zeros(len(keras)), keras, color=COLORS["keras"], label="keras", zorder=3)
    axes.scatter(np.ones(len(sklearn)), sklearn, color=COLORS["sklearn"], label="sklearn", zorder=3)
    axes.set_xticks([0, 1], ["keras", "sklearn"])
    axes.set_xlim(-0.3, 1.3)
    axes.set(ylabel=f"test {metric}", title=f"test {metric} per replicate, paired by seed")
    return figure
