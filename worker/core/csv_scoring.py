"""Scoring a CSV of ECG windows in one batch: what ``ecg-score`` does, and what the demo's
offline check compares the stream against. Rejected rows keep their place in the output.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.core.codec import NON_FINITE
from worker.core.scorer import Scorer
from worker.core.windows_csv import CsvRejected, CsvWindow, read_windows


@dataclass(frozen=True)
class ScoreRun:
    """The outcome of scoring one file: output records in input order, plus metrics."""

    records: list[dict[str, Any]]
    rejected: int
    metrics: dict[str, Any] | None


def score_file(scorer: Scorer, lines: Iterable[str]) -> ScoreRun:
    """Score every valid window of CSV ``lines`` in one batch (``windows_csv`` layout)."""
    return score_rows(scorer, list(read_windows(lines, scorer.window_length)))


def score_rows(scorer: Scorer, parsed: list[CsvWindow | CsvRejected]) -> ScoreRun:
    """Score the parsed rows' windows in one batch; rejected rows keep their place."""
    parsed = list(parsed)
    windows = [p for p in parsed if isinstance(p, CsvWindow)]
    records: dict[int, dict[str, Any]] = {}
    metrics = None
    if windows:
        scores = scorer.score(np.asarray([w.values for w in windows], dtype=np.float64))
        if not scores.all_scored:
            # Finite in the file but beyond the model's float32 input range (e.g. 1e300).
            for w, ok in zip(windows, scores.scorable.tolist(), strict=True):
                if not ok:
                    parsed[parsed.index(w)] = CsvRejected(
                        w.row, NON_FINITE, "values overflow the model's float32 range"
                    )
            windows = [w for w, ok in zip(windows, scores.scorable.tolist(), strict=True) if ok]
        for w, error, anomaly in zip(windows, scores.errors, scores.anomalies, strict=True):
            record: dict[str, Any] = {"row": w.row, "error": float(error), "anomaly": bool(anomaly)}
            if w.label is not None:
                record["label"] = w.label
            records[w.row] = record
        if windows and windows[0].label is not None:
            from worker.core.evaluation import detection_metrics

            labels = np.asarray([w.label for w in windows])
            metrics = detection_metrics(labels, scores.errors, scores.anomalies)
    rejected = 0
    for p in parsed:
        if isinstance(p, CsvRejected):
            records[p.row] = {"row": p.row, "rejected": p.reason, "detail": p.detail}
            rejected += 1
    return ScoreRun([records[p.row] for p in parsed], rejected, metrics)
