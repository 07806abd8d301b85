"""Abnormal segments of many windows at once.

The rule: the per-sample error is smoothed with a moving average; runs where it exceeds the
window's mean + 1 std are candidate segments, ranked by their mean raw error; when no run
stands out, the single most-wrong stretch of ``smooth_samples`` is returned. It is computed
for a whole batch with array operations: a per-window loop (kept as the test oracle in
``tests/oracles.py``) costs ~50 us per window, more than decoding and scoring together, and
anomalous windows can be frequent.
"""

from __future__ import annotations

import numpy as np

from worker.core.scorer import Segment


def batch_abnormal_segments(
    sample_errors: np.ndarray, max_segments: int = 3, smooth_samples: int = 5
) -> list[list[Segment]]:
    """``abnormal_segments`` of each row of ``sample_errors`` (shape ``(m, n)``)."""
    err = np.asarray(sample_errors, dtype=np.float64)
    if err.ndim != 2:
        raise ValueError(f"expected a 2-d array of per-sample errors, got shape {err.shape}")
    m, n = err.shape
    if m == 0:
        return []
    if n == 0:
        return [[] for _ in range(m)]
    width = max(1, min(smooth_samples, n))
    # np.convolve(row, ones(width) / width, mode="same"): a centred box sum, zero-padded.
    padded = np.pad(err, ((0, 0), (width // 2, (width - 1) // 2)))
    box = np.cumsum(padded, axis=1)
    box = np.concatenate((np.zeros((m, 1)), box), axis=1)
    smooth = (box[:, width:] - box[:, :-width]) / width
    above = smooth > (smooth.mean(axis=1) + smooth.std(axis=1))[:, None]
    edges = np.diff(np.pad(above.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    start_rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    raw = np.concatenate((np.zeros((m, 1)), np.cumsum(err, axis=1)), axis=1)
    means = (raw[start_rows, ends] - raw[start_rows, starts]) / (ends - starts)
    # Runs stay plain tuples until ranked: only the kept ones become ``Segment`` objects
    # (a window can have many short runs, and building each cost more than the rest).
    candidates: list[list[tuple[float, int, int]]] = [[] for _ in range(m)]
    for row, start, end, mean in zip(
        start_rows.tolist(), starts.tolist(), ends.tolist(), means.tolist(), strict=True
    ):
        candidates[row].append((mean, start, end))
    out: list[list[Segment]] = []
    for row, runs in enumerate(candidates):
        if not runs:
            centre = int(np.argmax(smooth[row]))
            lo = max(0, min(centre - width // 2, n - width))
            out.append([Segment(lo, lo + width, float(err[row, lo : lo + width].mean()))])
            continue
        if len(runs) > 1:
            runs.sort(key=_mean_error, reverse=True)  # stable: ties keep their order
            del runs[max_segments:]
        out.append([Segment(start, end, mean) for mean, start, end in runs])
    return out


def _mean_error(run: tuple[float, int, int]) -> float:
    return run[0]
