"""Stratified train / validation / test row indices, and whether a set of class counts
can be split so: `split` draws the rows, `dataset` checks beforehand that it can."""

from collections.abc import Sequence

import numpy as np

from pipeline.config import SplitConfig, split_sizes
from pipeline.errors import PipelineError

# A row of each class in each of train, validation and test.
MIN_CLASS_ROWS = 3
# How many classes a message names before it says "...".
EXAMPLES = 3


def summarize(names: Sequence[object], counts: Sequence[int], total: int) -> str:
    """`'1.5' (4 rows), '2.5' (4 rows), ...`: the first few classes of a list that may
    hold thousands, with their row counts."""
    shown = ", ".join(
        f"{name!r} ({count} row{'s' if count != 1 else ''})"
        for name, count in zip(names[:EXAMPLES], counts[:EXAMPLES], strict=True)
    )
    return shown + (", ..." if total > EXAMPLES else "")


def check_class_rows(class_counts: Sequence[int], class_names: Sequence[object], what: str) -> None:
    """Refuse, in one line starting with `what`, classes too rare for a row in each of
    train, validation and test."""
    counts = np.asarray(class_counts, dtype=np.int64)
    rare = np.flatnonzero(counts < MIN_CLASS_ROWS)
    if len(rare):
        # Most often a number to predict (a regression target), not a class.
        examples = summarize([class_names[code] for code in rare], counts[rare].tolist(), len(rare))
        raise PipelineError(
            f"{what} has {len(counts)} classes, {len(rare)} of them in fewer than "
            f"{MIN_CLASS_ROWS} rows ({examples}); the stratified split needs "
            f"{MIN_CLASS_ROWS} rows of each class (one per split)"
        )


def check_stratifiable(
    class_counts: Sequence[int], class_names: Sequence[object], config: SplitConfig, what: str
) -> None:
    """Refuse, in one line starting with `what`, class counts that the stratified split
    cannot put a row of each class into train, validation and test."""
    check_class_rows(class_counts, class_names, what)
    counts = np.asarray(class_counts, dtype=np.int64)
    n_classes, n_rows = len(counts), int(counts.sum())
    sizes = dict(zip(("train", "validation", "test"), split_sizes(n_rows, config), strict=True))
    # The test split first where two are equally small: it is usually the smallest.
    name, smallest = min(reversed(sizes.items()), key=lambda item: item[1])
    if smallest < n_classes:
        raise PipelineError(
            f"{what} has {n_classes} classes in {n_rows} rows, but split.test_size = "
            f"{config.test_size} and split.validation_size = {config.validation_size} leave "
            f"{smallest} {name} rows; every split needs a row of each class (a number to "
            "predict rather than classes?)"
        )


def apportion(total: int, sizes: np.ndarray) -> np.ndarray:
    """Whole numbers proportional to `sizes` that add up to `total`: rounded down,
    the rows left over to the largest remainders, and then at least one each
    (taken from the largest share)."""
    exact = total * sizes / sizes.sum()
    whole = np.floor(exact).astype(np.int64)
    left_over = total - int(whole.sum())
    whole[np.argsort(whole - exact, kind="stable")[:left_over]] += 1
    for empty in np.flatnonzero(whole == 0):
        whole[np.argmax(whole)] -= 1
        whole[empty] = 1
    return whole


def stratified_indices(
    labels: np.ndarray, config: SplitConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of the train, validation and test sets, each with the class mix
    of the whole data set, in increasing order.

    Written out rather than `train_test_split`: on 10 million rows, that made
    several int64 copies of the labels and indices (700 MB at once).
    """
    n_train, n_validation, n_test = split_sizes(len(labels), config)
    classes, counts = np.unique(labels, return_counts=True)
    check_stratifiable(counts.tolist(), classes.tolist(), config, "split: the label column")
    test_counts = apportion(n_test, counts)
    validation_counts = apportion(n_validation, counts - test_counts)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
    for label, n_class_test, n_class_validation in zip(
        classes, test_counts, validation_counts, strict=True
    ):
        # int32 row numbers: half the memory of int64 on 10 million rows.
        rows = np.flatnonzero(labels == label).astype(np.int32)
        rng.shuffle(rows)
        parts["test"].append(rows[:n_class_test])
        parts["validation"].append(rows[n_class_test : n_class_test + n_class_validation])
        parts["train"].append(rows[n_class_test + n_class_validation :])
    train, validation, test = (
        np.sort(np.concatenate(parts[name])) for name in ("train", "validation", "test")
    )
    return train, validation, test
