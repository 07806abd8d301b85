"""Detection metrics of scored, labelled windows: one definition for the trainer (which
records them in the artifact) and ``ecg-score`` (which must reproduce them exactly).

Labels follow the tutorial: 1 = normal, 0 = anomalous. ``accuracy``, ``precision`` and
``recall`` use the tutorial's convention (positive class = normal, prediction normal iff
not flagged), so they compare with its 0.944 / 0.992 / 0.907; ``anomaly_*`` treat the
anomaly as the positive class; ``roc_auc`` ranks windows by error as the anomaly score.

scikit-learn is imported lazily: the streaming worker never computes these.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.errors import DataError

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
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

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
    predicted_normal = (~flags).astype(np.int64)
    is_anomaly = (y == 0).astype(np.int64)
    flagged = flags.astype(np.int64)
    both_classes = 0 < int(is_anomaly.sum()) < y.size
    return {
        "accuracy": float(accuracy_score(y, predicted_normal)),
        "precision": float(precision_score(y, predicted_normal, zero_division=0)),
        "recall": float(recall_score(y, predicted_normal, zero_division=0)),
        "anomaly_precision": float(precision_score(is_anomaly, flagged, zero_division=0)),
        "anomaly_recall": float(recall_score(is_anomaly, flagged, zero_division=0)),
        "anomaly_f1": float(f1_score(is_anomaly, flagged, zero_division=0)),
        "roc_auc": float(roc_auc_score(is_anomaly, scores)) if both_classes else None,
        "windows": int(y.size),
        "normal": int((y == 1).sum()),
        "anomalous": int(is_anomaly.sum()),
        "tp": int((flags & (y == 0)).sum()),
        "fp": int((flags & (y == 1)).sum()),
        "tn": int((~flags & (y == 1)).sum()),
        "fn": int((~flags & (y == 0)).sum()),
    }


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
