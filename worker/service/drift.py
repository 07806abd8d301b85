"""Drift of the live reconstruction-error distribution against the training distribution.

The artifact stores 101 quantiles (0..100 %) of the error on normal training windows. The
worker keeps a rolling window of live errors and compares the two with:

- PSI (population stability index) over the training deciles: each decile bin holds 10 %
  of the training errors; PSI = sum((live - expected) * ln(live / expected)). Rule of
  thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 large shift.
- KS: the largest distance between the live empirical CDF and the training CDF obtained
  by linear interpolation between the stored quantiles (0 = identical, 1 = disjoint).

Live data contains anomalies, so some shift is normal; the thresholds for alerting belong
to the alert rules, not here.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Floor for empty bins so that ln() stays finite (the usual PSI convention).
_PSI_EPSILON = 1e-4
DECILE_LEVELS = tuple(range(10, 100, 10))


def _levels(quantiles: Sequence[float] | np.ndarray) -> np.ndarray:
    """Cumulative probabilities (0..1) of the stored quantiles, evenly spaced."""
    return np.linspace(0.0, 1.0, len(quantiles))


def decile_bins(quantiles: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges (the distinct training deciles) and the training mass in each bin.

    Bins are ``(-inf, e1], (e1, e2], ..., (ek, inf)``. With tied quantiles (many identical
    training errors) fewer, heavier bins result; the masses always sum to 1.
    """
    q = np.asarray(quantiles, dtype=np.float64)
    levels = _levels(q)
    index = [round(level / 100 * (len(q) - 1)) for level in DECILE_LEVELS]
    edges = np.unique(q[index])
    # Right-continuous training CDF at each edge: the highest level whose quantile is <= edge.
    cdf = np.array([levels[np.searchsorted(q, e, side="right") - 1] for e in edges])
    mass = np.diff(np.concatenate(([0.0], cdf, [1.0])))
    return edges, mass


def psi(live: np.ndarray, quantiles: Sequence[float]) -> float:
    """Population stability index of ``live`` errors against the training deciles."""
    values = np.sort(np.asarray(live, dtype=np.float64))
    if values.size == 0:
        return float("nan")
    edges, expected = decile_bins(quantiles)
    counts_le = np.searchsorted(values, edges, side="right")
    actual = np.diff(np.concatenate(([0], counts_le, [values.size]))) / values.size
    actual = np.maximum(actual, _PSI_EPSILON)
    expected = np.maximum(expected, _PSI_EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks(live: np.ndarray, quantiles: Sequence[float]) -> float:
    """Kolmogorov-Smirnov distance between ``live`` and the quantile-interpolated CDF."""
    values = np.sort(np.asarray(live, dtype=np.float64))
    n = values.size
    if n == 0:
        return float("nan")
    q = np.asarray(quantiles, dtype=np.float64)
    model_cdf = np.interp(values, q, _levels(q), left=0.0, right=1.0)
    # Right-continuous empirical CDF after each (possibly tied) value, and just before it.
    after = np.searchsorted(values, values, side="right") / n
    before = np.searchsorted(values, values, side="left") / n
    return float(max(np.max(after - model_cdf), np.max(model_cdf - before), 0.0))


@dataclass(frozen=True)
class DriftStats:
    """The drift statistics of one rolling window (NaN until enough samples)."""

    psi: float
    ks: float
    samples: int


class DriftMonitor:
    """A thread-safe rolling window of live errors (the loop adds, the scrape reads)."""

    def __init__(self, quantiles: Sequence[float], window_size: int, min_samples: int) -> None:
        if len(quantiles) < 2:
            raise ValueError("need at least two training quantiles")
        self.quantiles = tuple(float(q) for q in quantiles)
        self.min_samples = min_samples
        self._ring = np.zeros(window_size, dtype=np.float64)
        self._next = 0
        self._count = 0
        self._lock = threading.Lock()

    def add(self, errors: np.ndarray) -> None:
        """Append a batch of live errors, overwriting the oldest beyond the window size."""
        values = np.asarray(errors, dtype=np.float64).ravel()
        size = self._ring.size
        if values.size >= size:
            values = values[-size:]
        with self._lock:
            end = self._next + values.size
            if end <= size:
                self._ring[self._next : end] = values
            else:
                split = size - self._next
                self._ring[self._next :] = values[:split]
                self._ring[: end - size] = values[split:]
            self._next = end % size
            self._count = min(size, self._count + values.size)

    def restart(self, quantiles: Sequence[float]) -> None:
        """Compare with another model's training errors from now on (after a hot reload):
        the window empties, since errors of the old model say nothing about the new one."""
        with self._lock:
            self.quantiles = tuple(float(q) for q in quantiles)
            self._next = 0
            self._count = 0

    def window(self) -> np.ndarray:
        """A copy of the errors currently in the window (order not preserved)."""
        with self._lock:
            return self._ring[: self._count].copy()

    def stats(self) -> DriftStats:
        """PSI and KS of the current window, NaN while it has fewer than ``min_samples``."""
        live = self.window()
        if live.size < self.min_samples:
            return DriftStats(float("nan"), float("nan"), int(live.size))
        return DriftStats(psi(live, self.quantiles), ks(live, self.quantiles), int(live.size))
