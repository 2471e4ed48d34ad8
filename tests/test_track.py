"""Tests for `pipeline.track`: per-epoch metrics as MLflow logs them, and file hashes
as DVC records them. Publishing itself runs end to end in tests/test_pipeline.py,
tests/test_trust.py and tests/test_compare.py."""

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from pipeline.files import file_md5
from pipeline.track import epoch_metrics


def test_epoch_metrics_use_the_epoch_as_step():
    history = pd.DataFrame(
        {
            "epoch": [1, 2],
            "loss": [0.7, 0.6],
            "accuracy": [0.5, 0.6],
            "val_loss": [0.71, 0.65],
            "val_accuracy": [0.5, 0.55],
        }
    )
    metrics = epoch_metrics(history)
    assert len(metrics) == 8
    by_key = {(metric.key, metric.step): metric.value for metric in metrics}
    assert by_key[("val_loss", 2)] == pytest.approx(0.65)
    assert by_key[("accuracy", 1)] == pytest.approx(0.5)


def test_file_md5_is_the_hash_dvc_records(tmp_path: Path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 3_000_000)
    assert file_md5(path) == hashlib.md5(b"x" * 3_000_000).hexdigest()
