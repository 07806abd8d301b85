"""Detection metrics of scored, labelled windows: one definition for the trainer (which
records them in the artifact) and ``ecg-score`` (which must reproduce them exactly).

Labels follow the tutorial: 1 = normal, 0 = anomalous. ``accuracy``, ``precision`` and
``recall`` use the tutorial's convention (positive class = normal, prediction normal iff
not flagged), so they compare with its 0.944 / 0.992 / 0.907; ``anomaly_*`` treat the
anomaly as the positive class; ``roc_auc`` ranks windows by error as the anomaly score.

numpy only: ``ecg-score`` runs where only the worker's dependencies are installed.
The definitions match scikit-learn's (``tests/unit/test_evaluation.py`` checks that).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.core.errors import DataError

METRIC_NAMES = (
    "accuracy",
    "precision",
    "recall",
    "anomaly_precision",
    "anomaly_recall",
    "anomaly_f1",
    "roc_auc",
)
# The tutorial's published figures (TensorFlow "Intro to Autoencoders", ECG part).
TUTORIAL_METRICS = {"accuracy": 0.944, "precision": 0.992, "recall": 0.907}


def detection_metrics(
    labels: np.ndarray, errors: np.ndarray, anomalies: np.ndarray
) -> dict[str, Any]:
    """Metrics of a labelled set: ``anomalies`` are the scorer's flags, ``errors`` its scores.

    Also returns the counts (``windows``, ``normal``, ``anomalous``, ``tp``.. with positive
    = anomaly). ``roc_auc`` is ``None`` when only one class is present.
    """
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    flags = np.asarray(anomalies, dtype=bool).reshape(-1)
    scores = np.asarray(errors, dtype=np.float64).reshape(-1)
    if not (y.shape == flags.shape == scores.shape):
        raise DataError(
            f"labels {y.shape}, errors {scores.shape} and flags {flags.shape} differ in length"
        )
    if y.size == 0:
        raise DataError("no labelled windows to evaluate")
    if not np.isin(y, (0, 1)).all():
        raise DataError("labels must be 0 (anomalous) or 1 (normal)")
    anomaly = y == 0
    tp = int((flags & anomaly).sum())
    fp = int((flags & ~anomaly).sum())
    tn = int((~flags & ~anomaly).sum())
    fn = int((~flags & anomaly).sum())
    return {
        **count_metrics(tp, fp, tn, fn),
        "roc_auc": roc_auc(anomaly, scores),
        "windows": int(y.size),
        "normal": int((~anomaly).sum()),
        "anomalous": int(anomaly.sum()),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def count_metrics(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    """The metrics that depend only on the confusion counts (positive = anomaly in the
    counts): all of ``METRIC_NAMES`` except ``roc_auc``."""
    return {
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
        # positive = normal (the tutorial): a "normal" prediction is an unflagged window
        "precision": _ratio(tn, tn + fn),
        "recall": _ratio(tn, tn + fp),
        "anomaly_precision": _ratio(tp, tp + fp),
        "anomaly_recall": _ratio(tp, tp + fn),
        "anomaly_f1": _ratio(2 * tp, (tp + fn) + (tp + fp)),
    }


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for the boolean ``positive`` class, or
    ``None`` with a single class. Mann-Whitney form with tied scores counted as half,
    which equals the trapezoidal area scikit-learn computes."""
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # average 1-based rank of each distinct score, ties sharing the mean of their ranks
    first_rank = np.cumsum(counts) - counts + 1
    ranks = (first_rank + (counts - 1) / 2.0)[inverse]
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def metrics_table(columns: dict[str, dict[str, Any]], names: tuple[str, ...] = METRIC_NAMES) -> str:
    """A plain-text table: one row per metric, one column per named metrics dict."""
    header = ["metric", *columns]
    rows = [header]
    for name in names:
        row = [name]
        for metrics in columns.values():
            value = metrics.get(name)
            row.append("-" if value is None else f"{value:.4f}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join(lines)
