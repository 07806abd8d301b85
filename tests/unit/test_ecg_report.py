"""The training report from synthetic results: real PNGs and a Markdown table next to the
tutorial's numbers, also when the test set has a single class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.ecg.report import ReportInputs, write_report
from worker.core.evaluation import detection_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _inputs(labels: np.ndarray) -> ReportInputs:
    rng = np.random.default_rng(0)
    n = labels.size
    errors = np.where(labels == 1, rng.normal(0.02, 0.005, n), rng.normal(0.06, 0.01, n))
    errors = errors.astype(np.float32)
    windows = rng.uniform(0.3, 0.7, (n, 140)).astype(np.float32)
    threshold = 0.04
    return ReportInputs(
        profile="tuned",
        model_version="0123456789abcdef",
        history={
            "loss": [0.1, 0.05, 0.03],
            "val_loss": [0.11, 0.06, 0.04],
            "val_auc": [0.9, 0.95, 0.97],
        },
        val_label="validation loss (normal validation windows)",
        best_epoch=2,
        threshold=threshold,
        test_errors=errors,
        test_labels=labels,
        test_windows=windows,
        test_reconstructions=windows + np.float32(0.01),
        test_metrics=detection_metrics(labels, errors, errors >= threshold),
        validation_metrics=None,
    )


def test_report_files(tmp_path: Path) -> None:
    labels = np.array([1] * 60 + [0] * 40)
    inputs = _inputs(labels)
    files = write_report(tmp_path / "report", inputs)
    names = sorted(f.name for f in files)
    assert names == [
        "error_histogram.png",
        "loss.png",
        "reconstructions.png",
        "report.md",
        "roc.png",
    ]
    for f in files:
        if f.suffix == ".png":
            data = f.read_bytes()
            assert data.startswith(PNG_MAGIC)
            assert len(data) > 10_000, f.name  # a drawn figure, not an empty canvas
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| accuracy | 0.9440 |" in md
    assert f"{inputs.test_metrics['roc_auc']:.4f}" in md
    assert "![roc.png](roc.png)" in md


def test_report_with_only_normal_windows(tmp_path: Path) -> None:
    files = write_report(tmp_path / "report", _inputs(np.ones(30, dtype=int)))
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| roc_auc | - | - |" in md
    # Every figure is still drawn (the ROC one without a curve), none empty.
    assert sorted(f.name for f in files) == [
        "error_histogram.png",
        "loss.png",
        "reconstructions.png",
        "report.md",
        "roc.png",
    ]
    assert all(f.stat().st_size > 0 for f in files)
