"""Generate the synthetic binary-classification data set (`data/dataset/`)."""

import logging

import numpy as np
from sklearn.datasets import make_circles, make_classification, make_moons

from pipeline import paths
from pipeline.config import DatasetConfig, feature_names, load_params
from pipeline.errors import run_stage
from pipeline.files import Table, write_table

logger = logging.getLogger(__name__)

# The geometric kinds carry their signal in two features; the others are noise.
SIGNAL_FEATURES = 2


def class_counts(n_samples: int, positive_fraction: float) -> tuple[int, int]:
    """(negatives, positives), with at least one row of each class."""
    positives = min(max(round(n_samples * positive_fraction), 1), n_samples - 1)
    return n_samples - positives, positives


def balanced_labels(
    n_samples: int, positive_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Exactly `class_counts` labels, in random order."""
    negatives, positives = class_counts(n_samples, positive_fraction)
    labels = np.concatenate([np.zeros(negatives), np.ones(positives)])
    return rng.permutation(labels).astype(np.int32)


def xor_features(labels: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Points in [-1, 1]^2 whose quadrant gives the label: 1 where x1 * x2 > 0."""
    points = rng.uniform(-1.0, 1.0, size=(len(labels), 2))
    same_sign = points[:, 0] * points[:, 1] > 0
    # Mirror the second coordinate wherever the quadrant disagrees with the label.
    points[:, 1] = np.where(same_sign == labels.astype(bool), points[:, 1], -points[:, 1])
    return points + rng.normal(0.0, noise, size=points.shape)


def generate_dataset(config: DatasetConfig, seed: int) -> Table:
    """Draw `config.n_samples` rows of `config.kind` data, reproducibly from `seed`."""
    rng = np.random.default_rng(seed)
    n_samples, n_features = config.n_samples, config.n_features
    if config.kind == "classification":
        features, labels = make_classification(
            n_samples=n_samples,
            n_features=n_features,
            n_informative=config.n_informative,
            n_redundant=0,
            # make_classification needs 2 ** n_informative >= classes * clusters.
            n_clusters_per_class=1 if config.n_informative == 1 else 2,
            weights=[1 - config.positive_fraction],
            flip_y=config.noise,
            class_sep=config.class_sep,
            # No shuffling: it would copy the whole float64 array (640 MB at 10M rows).
            # The informative features are then x1..x{n_informative}; the rows come
            # grouped by class, which the stratified, shuffled split undoes.
            shuffle=False,
            random_state=seed,
        )
    elif config.kind == "random_labels":
        # The textbook example's own data: uniform features, labels unrelated to them.
        features = rng.random((n_samples, n_features))
        labels = balanced_labels(n_samples, config.positive_fraction, rng)
    else:
        counts = class_counts(n_samples, config.positive_fraction)
        if config.kind == "moons":
            signal, labels = make_moons(counts, noise=config.noise, random_state=seed)
        elif config.kind == "circles":
            signal, labels = make_circles(counts, noise=config.noise, factor=0.5, random_state=seed)
        else:
            labels = balanced_labels(n_samples, config.positive_fraction, rng)
            signal = xor_features(labels, config.noise, rng)
        padding = rng.standard_normal((n_samples, n_features - SIGNAL_FEATURES))
        features = np.hstack([signal, padding])
    # Labels first: the int64 copy goes before the float32 features are made.
    labels = np.asarray(labels, dtype=np.int32)
    return Table(
        features=features.astype(np.float32),
        labels=labels,
        feature_names=feature_names(n_features),
    )


def main() -> None:
    params = load_params()
    dataset = generate_dataset(params.dataset, params.seed)
    write_table(dataset, paths.DATASET)
    logger.info(
        "dataset: %d rows, %d features, %.1f%% positive (%s) -> %s",
        len(dataset.labels),
        len(dataset.feature_names),
        100 * dataset.labels.mean(),
        params.dataset.kind,
        paths.DATASET,
    )


if __name__ == "__main__":
    run_stage(main)
