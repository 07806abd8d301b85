"""Test oracles: plain, slow reference versions of vectorised product code.

``abnormal_segments`` is the per-window rule that ``worker.core.segments`` computes for a
whole batch with array operations; the tests check that both give the same answer.
"""

from __future__ import annotations

import numpy as np

from worker.core.scorer import Segment


def abnormal_segments(
    sample_errors: np.ndarray, max_segments: int = 3, smooth_samples: int = 5
) -> list[Segment]:
    """The few contiguous segments of one window where reconstruction is worst.

    The per-sample error is smoothed with a moving average; runs where it exceeds the
    window's mean + 1 std are candidate segments, ranked by their mean raw error. When
    no run stands out, the single most-wrong stretch of ``smooth_samples`` is returned.
    """
    err = np.asarray(sample_errors, dtype=np.float64)
    n = err.shape[0]
    if n == 0:
        return []
    width = max(1, min(smooth_samples, n))
    smooth = np.convolve(err, np.ones(width) / width, mode="same")
    above = smooth > smooth.mean() + smooth.std()
    runs: list[Segment] = []
    start = None
    for i, flag in enumerate(np.append(above, False)):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append(Segment(start, i, float(err[start:i].mean())))
            start = None
    if not runs:
        centre = int(np.argmax(smooth))
        lo = max(0, min(centre - width // 2, n - width))
        runs = [Segment(lo, lo + width, float(err[lo : lo + width].mean()))]
    runs.sort(key=lambda s: s.mean_error, reverse=True)
    return runs[:max_segments]
