"""PNG figures of the comparison, for MLflow and for readers without `dvc plots`."""

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


def confusion_matrices(matrices: dict[str, np.ndarray]) -> Figure:
    figure, all_axes = plt.subplots(1, len(matrices), figsize=(4.5 * len(matrices), 4))
    for axes, (family, matrix) in zip(np.atleast_1d(all_axes), matrices.items(), strict=True):
        axes.imshow(matrix, cmap="Blues")
        for (actual, predicted), count in np.ndenumerate(matrix):
            # imshow spans the colour map from the smallest to the largest count.
            color = "white" if count > (matrix.min() + matrix.max()) / 2 else "black"
            axes.text(predicted, actual, str(count), ha="center", va="center", color=color)
        ticks = range(matrix.shape[0])
        axes.set(
            xticks=ticks,
            yticks=ticks,
            xlabel="predicted",
            ylabel="actual",
            title=f"{family} (test set)",
        )
    return figure
