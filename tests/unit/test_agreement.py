"""The score-agreement contract: what it accepts (last-bit differences, borderline flips),
what it must reject (real differences, flag flips far from the threshold), and that scoring
the same windows in batches of 1, 7 and 500 agrees under it whatever BLAS kernel runs
(``make test-kernels`` runs this file with the kernel forced)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.builders import synthetic_windows
from worker.core.agreement import (
    UNIT_ROUNDOFF,
    borderline,
    compare_scores,
    metric_bounds,
    score_tolerance,
)
from worker.core.artifact import Normalisation
from worker.core.errors import DataError
from worker.core.evaluation import detection_metrics
from worker.core.scorer import Scorer

N = 140
TOL = score_tolerance(N)


def _agree(expected, expected_flags, got, got_flags, threshold=0.035):
    return compare_scores(
        np.asarray(expected),
        np.asarray(expected_flags),
        np.asarray(got),
        np.asarray(got_flags),
        threshold=threshold,
        window_length=N,
    )


def test_tolerance_is_float32_rounding_of_a_140_sample_mean_plus_reconstruction_units():
    # 2 * gamma(141) with u = 2**-24, and 16 units of 2**-24 in the reconstruction
    assert TOL.rel == pytest.approx(2 * 141 * 2**-24, rel=1e-4)
    assert TOL.rel == pytest.approx(1.68e-5, rel=1e-3)
    assert TOL.abs == 16 * UNIT_ROUNDOFF
    # At a typical threshold the band is about 1.5e-6 wide on each side.
    assert 1.4e-6 < float(TOL.bound(0.035, 0.035)) < 1.6e-6
    with pytest.raises(DataError, match="window length"):
        score_tolerance(0)


def test_relative_part_covers_any_summation_order_of_the_mean():
    # The same 140 float32 terms summed forwards, backwards, pairwise (numpy) and exactly:
    # every pair of results is within the relative part alone (no absolute slack).
    rng = np.random.default_rng(1)
    for _ in range(200):
        terms = np.abs(rng.normal(0, rng.uniform(0.001, 0.5), N)).astype(np.float32)
        forwards = np.float32(0)
        for t in terms:
            forwards = np.float32(forwards + t)
        backwards = np.float32(0)
        for t in terms[::-1]:
            backwards = np.float32(backwards + t)
        means = [
            float(forwards / np.float32(N)),
            float(backwards / np.float32(N)),
            float(terms.mean(dtype=np.float32)),
            float(terms.astype(np.float64).mean()),
        ]
        for a in means:
            for b in means:
                assert abs(a - b) <= TOL.rel * max(a, b)


def test_the_reported_last_bit_differences_agree():
    # The pair from the issue (an AMD EPYC machine, stream vs ecg-score): 4.7e-9 apart.
    result = _agree([0.013377746567130089], [False], [0.013377751223742962], [False])
    assert result.ok and result.compared == 1
    assert result.max_difference == pytest.approx(4.66e-9, rel=1e-2)
    assert result.borderline == ()


def test_a_real_difference_larger_than_the_tolerance_breaks_the_contract():
    expected = np.array([0.010, 0.020, 0.050], dtype=np.float32)
    got = expected.astype(np.float64).copy()
    got[1] += 2e-6  # about 2x the tolerance at 0.02: far more than rounding, far less than a bug
    result = _agree(expected, expected >= 0.035, got, got >= 0.035)
    assert not result.ok
    assert [d.index for d in result.disagreements] == [1]
    line = result.disagreements[0].describe("w1")
    assert line.startswith("w1: errors differ by 2e-06 > tolerance 1.29e-06")


def test_a_flag_flip_far_from_the_threshold_breaks_the_contract():
    errors = np.array([0.010, 0.020, 0.050])
    flags = errors >= 0.035
    flipped = flags.copy()
    flipped[2] = False  # error 0.05, threshold 0.035: no rounding can explain this
    result = _agree(errors, flags, errors, flipped)
    assert not result.ok
    assert (
        result.disagreements[0].describe("w2").startswith("w2: flag differs far from the threshold")
    )
    assert result.borderline_flipped == ()


def test_a_flag_flip_at_the_threshold_is_borderline_counted_and_shown():
    threshold = 0.035
    at = np.float32(threshold)
    below = float(np.nextafter(at, np.float32(0)))  # one float32 step under the threshold
    expected = np.array([0.010, float(at), 0.050, threshold + 1e-7])
    got = np.array([0.010, below, 0.050, threshold + 1e-7])
    result = _agree(expected, expected >= threshold, got, got >= threshold, threshold)
    assert result.ok
    assert result.borderline == (1, 3)  # both near the threshold, only one flipped
    assert result.borderline_flipped == (1,)
    names = ["w0", "w1", "w2", "w3"]
    assert result.describe_borderline(names) == "2 borderline: w1 (flag differs), w3"
    assert _agree([0.01], [False], [0.01], [False]).describe_borderline() == "0 borderline"


def test_missing_or_nan_scores_and_length_mismatches_are_not_agreement():
    assert not _agree([0.01, 0.02], [False, False], [0.01, float("nan")], [False, False]).ok
    with pytest.raises(DataError, match="different lengths"):
        _agree([0.01, 0.02], [False, False], [0.01], [False])


@pytest.fixture(scope="module")
def many_windows() -> np.ndarray:
    return synthetic_windows(500, seed=21)


def test_batches_of_1_7_and_500_agree_under_the_contract(ecg_artifact, many_windows):
    scorer = Scorer(ecg_artifact)
    whole = scorer.score(many_windows)
    for size in (1, 7):
        parts = [scorer.score(many_windows[i : i + size]) for i in range(0, 500, size)]
        errors = np.concatenate([p.errors for p in parts])
        flags = np.concatenate([p.anomalies for p in parts])
        result = compare_scores(
            whole.errors,
            whole.anomalies,
            errors,
            flags,
            threshold=scorer.threshold,
            window_length=scorer.window_length,
        )
        assert result.ok, [d.describe(str(d.index)) for d in result.disagreements[:3]]
        assert result.compared == 500
        # Flags flip only for borderline windows (usually none: the band is ~1e-6 wide).
        assert set(result.borderline_flipped) <= set(result.borderline)


def test_a_slightly_different_model_does_not_agree(ecg_artifact, many_windows):
    # The must-fail case on real scores: normalisation off by one part in 10^4.
    norm = ecg_artifact.normalisation
    other = dataclasses.replace(
        ecg_artifact, normalisation=Normalisation(norm.min, norm.max + 1e-4 * (norm.max - norm.min))
    )
    a, b = Scorer(ecg_artifact).score(many_windows), Scorer(other).score(many_windows)
    result = compare_scores(
        a.errors,
        a.anomalies,
        b.errors,
        b.anomalies,
        threshold=ecg_artifact.threshold,
        window_length=N,
    )
    assert len(result.disagreements) > 250


def test_borderline_is_the_tolerance_band_around_the_threshold():
    threshold = 0.04
    band = float(TOL.bound(threshold, threshold))
    errors = np.array(
        [threshold - 2 * band, threshold - 0.5 * band, threshold, threshold + 2 * band]
    )
    assert borderline(errors, threshold, N).tolist() == [False, True, True, False]


def test_metric_bounds_without_borderline_windows_are_the_stream_metrics():
    labels = np.array([1, 1, 1, 0, 0, 0])
    errors = np.array([0.01, 0.02, 0.05, 0.06, 0.07, 0.03])
    flags = errors >= 0.035
    bounds = metric_bounds(labels, errors, flags, threshold=0.035, window_length=N)
    metrics = detection_metrics(labels, errors, flags)
    for name, (lo, hi) in bounds.items():
        assert lo == hi == pytest.approx(metrics[name]), name


def test_metric_bounds_widen_by_exactly_what_borderline_flips_can_change():
    threshold = 0.035
    labels = np.array([1, 1, 1, 0, 0, 0])
    # window 3 (anomalous) sits 1e-7 above the threshold: elsewhere it may be missed
    errors = np.array([0.01, 0.02, 0.05, threshold + 1e-7, 0.07, 0.03])
    flags = errors >= threshold
    bounds = metric_bounds(labels, errors, flags, threshold=threshold, window_length=N)
    # flagged: 2 (normal), 3 and 4 (anomalous). Elsewhere tp may be 1 instead of 2, fp stays
    # 1: accuracy 3/6 .. 4/6, anomaly recall 1/3 .. 2/3, anomaly precision 1/2 .. 2/3.
    assert bounds["accuracy"] == pytest.approx((3 / 6, 4 / 6))
    assert bounds["anomaly_recall"] == pytest.approx((1 / 3, 2 / 3))
    assert bounds["anomaly_precision"] == pytest.approx((1 / 2, 2 / 3))
    assert bounds["roc_auc"][0] == bounds["roc_auc"][1]  # no two errors within tolerance


def test_roc_auc_bound_counts_pairs_whose_order_may_swap():
    labels = np.array([0, 1, 0, 1])
    errors = np.array([0.0500000, 0.0500003, 0.2, 0.01])  # pair (0, 1) is 3e-7 apart
    flags = errors >= 0.1
    lo, hi = metric_bounds(labels, errors, flags, threshold=0.1, window_length=N)["roc_auc"]
    auc = detection_metrics(labels, errors, flags)["roc_auc"]
    assert (lo, hi) == pytest.approx((auc - 1 / 4, min(1.0, auc + 1 / 4)))
