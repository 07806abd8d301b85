"""The score-agreement contract: when two computations of the same windows' scores agree.

The worker scores a window in whatever micro-batch it arrives in; ``ecg-score`` and the
trainer score whole files at once. The numpy forward pass runs on OpenBLAS, which picks its
float32 matrix-multiply kernel per CPU and per matrix shape, and kernels add the products of
a dot product in different orders. So the same window scored alone, in a batch of 7 or of
500 can come out a few units in the last place apart, and which batch sizes differ changes
from CPU to CPU. Scores are therefore compared with the tolerance below, never with ``==``.

The tolerance, derived. A window's error is ``e = fl(sum_i fl(|x_i - r_i|) / n)``: the mean,
in float32, of ``n`` (the window length, 140) absolute differences between the normalised
input ``x`` and the reconstruction ``r``. Two computations A and B of the same window differ
in two ways, and ``|e_A - e_B|`` is at most the sum of the two bounds:

1. Rounding of the mean (the relative part). Each of the ``n`` subtractions, the ``n - 1``
   additions (in whatever order: numpy's pairwise sum or a naive loop) and the division
   rounds once, with relative error at most ``u = 2**-24`` (float32's unit roundoff). For
   non-negative terms the computed mean is within ``gamma(n + 1) * e`` of the exact mean of
   the same terms, ``gamma(k) = k*u / (1 - k*u)`` (Higham, *Accuracy and Stability of
   Numerical Algorithms*, 2nd ed., sec. 4.2). A and B each carry that error, so
   ``REL = 2 * gamma(n + 1)``: 1.68e-5 for n = 140.
2. The reconstruction itself (the absolute part). Different kernels give ``r_A`` and
   ``r_B`` that differ by a few float32 units in the last place. The model's last layer is
   a sigmoid, so ``r`` lies in (0, 1), where one unit in the last place is at most
   ``2**-24``. The input ``x`` is normalised elementwise, the same bits in A and B, so each
   term ``|x_i - r_i|`` moves by at most ``|r_A,i - r_B,i|`` (its rounding is part 1), and
   the mean of ``n`` terms that each move by at most ``K * 2**-24`` moves by at most
   ``K * 2**-24``, whatever ``n``.
   ``K`` is measured, not derived (it depends on the depth and weights of the network):
   with ``OPENBLAS_CORETYPE`` forced to Haswell, Sandybridge and SkylakeX and batch sizes
   1, 7, 64, 256 and 1000, no reconstructed sample of the tuned ECG model moved by more
   than 9.5 units of ``2**-24``, and no error by more than 0.94 units
   (``benchmarks/score_agreement.py``). ``K = 16``: ``ABS = 9.5e-7``.

So ``|e_A - e_B| <= REL * max(|e_A|, |e_B|) + ABS``; at a threshold of 0.035 that is
1.5e-6. Observed differences are at most 5.6e-8 (4.4 % of it); a real defect (other
weights, another normalisation, a changed window) moves errors by 1e-4 or more.

Flags. A window is anomalous iff ``error >= threshold``. Errors that agree within the
tolerance can still fall on either side of the threshold when they are within the tolerance
of it: those windows are *borderline*. Their flags may differ; they are counted and
listed, never hidden. Any other flag difference breaks the contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.core.errors import DataError
from worker.core.evaluation import METRIC_NAMES, count_metrics, detection_metrics, roc_auc

UNIT_ROUNDOFF = 2.0**-24  # float32: half the spacing of numbers in [1, 2)
# Units of 2**-24 by which the reconstructions of two BLAS kernels may differ (measured: 9.5).
RECONSTRUCTION_UNITS = 16
# Slack for float64 arithmetic on equal counts (the same ratio computed in another order).
METRIC_SLACK = 1e-9


def _gamma(k: int) -> float:
    return k * UNIT_ROUNDOFF / (1.0 - k * UNIT_ROUNDOFF)


@dataclass(frozen=True)
class Tolerance:
    """How far apart two computations of one window's error may be: ``rel * |e| + abs``."""

    rel: float
    abs: float

    def bound(self, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
        """The largest allowed ``|a - b|`` (elementwise)."""
        scale = np.maximum(np.abs(np.asarray(a, np.float64)), np.abs(np.asarray(b, np.float64)))
        return self.rel * scale + self.abs


def score_tolerance(window_length: int) -> Tolerance:
    """The tolerance for errors that are means of ``window_length`` float32 terms."""
    if window_length < 1:
        raise DataError(f"window length must be positive, got {window_length}")
    return Tolerance(rel=2.0 * _gamma(window_length + 1), abs=RECONSTRUCTION_UNITS * UNIT_ROUNDOFF)


def borderline(errors: np.ndarray, threshold: float, window_length: int) -> np.ndarray:
    """Which windows have an error within the tolerance of ``threshold``, so that another
    computation of the same window may flag it the other way (boolean mask)."""
    e = np.asarray(errors, dtype=np.float64)
    return np.abs(e - threshold) <= score_tolerance(window_length).bound(e, threshold)


@dataclass(frozen=True)
class Disagreement:
    """One window that breaks the contract."""

    index: int
    expected_error: float
    got_error: float
    expected_flag: bool
    got_flag: bool
    allowed: float  # the tolerance for this window's errors

    def describe(self, name: str) -> str:
        """One line naming the window, both scores and what is wrong."""
        diff = abs(self.got_error - self.expected_error)
        if diff > self.allowed:
            what = f"errors differ by {diff:.3g} > tolerance {self.allowed:.3g}"
        else:
            what = "flag differs far from the threshold"
        return (
            f"{name}: {what} (got error {self.got_error!r} anomaly {self.got_flag}, "
            f"expected error {self.expected_error!r} anomaly {self.expected_flag})"
        )


@dataclass(frozen=True)
class Agreement:
    """The outcome of comparing two computations of the same windows' scores."""

    compared: int
    tolerance: Tolerance
    threshold: float
    max_difference: float  # largest |got - expected| error, 0.0 when nothing was compared
    borderline: tuple[int, ...]  # indices within the tolerance of the threshold
    borderline_flipped: tuple[int, ...]  # borderline indices whose flags differ
    disagreements: tuple[Disagreement, ...]  # the windows that break the contract

    @property
    def ok(self) -> bool:
        """Every window agrees within the contract."""
        return not self.disagreements

    def threshold_tolerance(self) -> float:
        """The tolerance at the threshold: the width of the borderline band on each side."""
        return float(self.tolerance.bound(self.threshold, self.threshold))

    def describe_borderline(self, names: Sequence[str] | None = None, limit: int = 5) -> str:
        """``N borderline`` plus the first few windows by name, and which of them flipped."""
        if not self.borderline:
            return "0 borderline"
        flipped = set(self.borderline_flipped)
        shown = [
            f"{names[i] if names is not None else i}{' (flag differs)' if i in flipped else ''}"
            for i in self.borderline[:limit]
        ]
        more = " ..." if len(self.borderline) > limit else ""
        return f"{len(self.borderline)} borderline: {', '.join(shown)}{more}"


def compare_scores(
    expected_errors: np.ndarray,
    expected_flags: np.ndarray,
    got_errors: np.ndarray,
    got_flags: np.ndarray,
    *,
    threshold: float,
    window_length: int,
) -> Agreement:
    """Check two computations of the same windows' scores against the contract.

    The one definition of "the streamed scores equal the offline ones" (see the module
    docstring for the derivation): row ``i`` of the four arrays is one window. Errors
    agree when ``|got - expected| <= REL * max(|got|, |expected|) + ABS``; flags agree when
    equal, or when the window is borderline (either error within the tolerance of the
    threshold), in which case a difference is counted in ``borderline_flipped``.
    """
    exp_e = np.asarray(expected_errors, dtype=np.float64).reshape(-1)
    got_e = np.asarray(got_errors, dtype=np.float64).reshape(-1)
    exp_f = np.asarray(expected_flags, dtype=bool).reshape(-1)
    got_f = np.asarray(got_flags, dtype=bool).reshape(-1)
    if not exp_e.shape == got_e.shape == exp_f.shape == got_f.shape:
        raise DataError(
            f"cannot compare scores of different lengths: expected {exp_e.shape[0]} errors "
            f"and {exp_f.shape[0]} flags, got {got_e.shape[0]} errors and {got_f.shape[0]} flags"
        )
    tolerance = score_tolerance(window_length)
    allowed = tolerance.bound(exp_e, got_e)
    diff = np.abs(got_e - exp_e)
    near = borderline(exp_e, threshold, window_length) | borderline(got_e, threshold, window_length)
    flipped = exp_f != got_f
    # NaN differences compare False with <=, so they count as disagreements too.
    bad = ~(diff <= allowed) | (flipped & ~near)
    return Agreement(
        compared=int(exp_e.size),
        tolerance=tolerance,
        threshold=float(threshold),
        max_difference=float(diff.max()) if diff.size else 0.0,
        borderline=tuple(int(i) for i in np.flatnonzero(near)),
        borderline_flipped=tuple(int(i) for i in np.flatnonzero(near & flipped)),
        disagreements=tuple(
            Disagreement(
                index=int(i),
                expected_error=float(exp_e[i]),
                got_error=float(got_e[i]),
                expected_flag=bool(exp_f[i]),
                got_flag=bool(got_f[i]),
                allowed=float(allowed[i]),
            )
            for i in np.flatnonzero(bad)
        ),
    )


def metric_bounds(
    labels: np.ndarray,
    errors: np.ndarray,
    flags: np.ndarray,
    *,
    threshold: float,
    window_length: int,
) -> dict[str, tuple[float, float]]:
    """The range each detection metric can take when these windows are scored elsewhere.

    Another computation that agrees with this one under the contract (``compare_scores``)
    may flip the flag of any subset of the borderline windows, and nothing else. So each
    count-based metric (accuracy, precision, ..., anomaly_f1) lies between its minimum and
    maximum over all such subsets. ``roc_auc`` ranks windows by error: an (anomalous,
    normal) pair can swap order only when the two errors are within the sum of their
    tolerances, and each swap moves the AUC by at most ``1 / (anomalous * normal)``.
    Returns ``{name: (low, high)}``; metrics that are undefined (AUC with one class) are
    left out.
    """
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    f = np.asarray(flags, dtype=bool).reshape(-1)
    anomaly = y == 0
    near = borderline(e, threshold, window_length)
    tp, fp = int((f & anomaly).sum()), int((f & ~anomaly).sum())
    n_anomalous, n_normal = int(anomaly.sum()), int((~anomaly).sum())
    # Flipping a flagged borderline window unflags it; an unflagged one gets flagged.
    tp_range = range(
        tp - int((near & f & anomaly).sum()), tp + int((near & ~f & anomaly).sum()) + 1
    )
    fp_range = range(
        fp - int((near & f & ~anomaly).sum()), fp + int((near & ~f & ~anomaly).sum()) + 1
    )
    bounds: dict[str, tuple[float, float]] = {}
    for tp_alt in tp_range:
        for fp_alt in fp_range:
            counts = count_metrics(tp_alt, fp_alt, n_normal - fp_alt, n_anomalous - tp_alt)
            for name, value in counts.items():
                lo, hi = bounds.get(name, (value, value))
                bounds[name] = (min(lo, value), max(hi, value))
    auc = roc_auc(anomaly, e)
    if auc is not None:
        swaps = _swappable_pairs(e[anomaly], e[~anomaly], score_tolerance(window_length))
        slack = swaps / (n_anomalous * n_normal)
        bounds["roc_auc"] = (max(0.0, auc - slack), min(1.0, auc + slack))
    return bounds


def _swappable_pairs(a: np.ndarray, b: np.ndarray, tolerance: Tolerance) -> int:
    """Pairs (one of ``a``, one of ``b``) whose order two agreeing computations may swap.

    Each error may move by ``rel * |e| + abs``, so a pair can swap when
    ``|a - b| <= 2 * (rel * max(|a|, |b|) + abs)``; since ``max <= |a| + |a - b|`` this holds
    whenever ``|a - b| <= 2 * (rel * |a| + abs) / (1 - 2 * rel)``, the window counted here.
    """
    b_sorted = np.sort(b)
    width = 2.0 * (tolerance.rel * np.abs(a) + tolerance.abs) / (1.0 - 2.0 * tolerance.rel)
    hi = np.searchsorted(b_sorted, a + width, side="right")
    lo = np.searchsorted(b_sorted, a - width, side="left")
    return int((hi - lo).sum())


@dataclass(frozen=True)
class MetricComparison:
    """One recorded metric against the range the measured scores allow for it."""

    name: str
    measured: float
    recorded: float
    low: float
    high: float

    @property
    def agrees(self) -> bool:
        """The recorded value is one that some agreeing computation gives."""
        return self.low - METRIC_SLACK <= self.recorded <= self.high + METRIC_SLACK

    @property
    def equal(self) -> bool:
        """Measured and recorded are the same number."""
        return abs(self.measured - self.recorded) <= METRIC_SLACK

    def describe(self) -> str:
        """``name measured (stream) vs recorded (artifact)``, plus the range when outside."""
        text = f"{self.name} {self.measured:.4f} (stream) vs {self.recorded:.4f} (artifact)"
        return text if self.agrees else f"{text}, outside [{self.low:.4f}, {self.high:.4f}]"


def compare_metrics(
    recorded: Mapping[str, Any],
    labels: np.ndarray,
    errors: np.ndarray,
    flags: np.ndarray,
    *,
    threshold: float,
    window_length: int,
) -> list[MetricComparison]:
    """Compare recorded detection metrics (e.g. the artifact's test metrics, computed by the
    trainer, maybe on another CPU) with those of these scores of the same windows.

    A recorded metric agrees when it lies in ``metric_bounds`` of these scores: the values
    any computation that agrees with them under ``compare_scores`` can give. With no
    borderline window that is exactly the measured value. Metrics missing on either side
    (e.g. AUC with one class) are skipped.
    """
    measured = detection_metrics(labels, errors, flags)
    bounds = metric_bounds(labels, errors, flags, threshold=threshold, window_length=window_length)
    out = []
    for name in METRIC_NAMES:
        a, b = measured.get(name), recorded.get(name)
        if a is None or b is None:
            continue
        lo, hi = bounds.get(name, (float(a), float(a)))
        out.append(MetricComparison(name, float(a), float(b), lo, hi))
    return out
