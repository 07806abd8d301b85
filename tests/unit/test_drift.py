"""Drift statistics: the same distribution scores small, a shifted one large."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker.core.artifact import error_quantiles
from worker.service.drift import DriftMonitor, decile_bins, ks, psi


@pytest.fixture(scope="module")
def training() -> list[float]:
    rng = np.random.default_rng(0)
    return error_quantiles(rng.gamma(4.0, 0.01, size=20000))


def live(n: int, scale: float = 0.01, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).gamma(4.0, scale, size=n)


def test_same_distribution_is_stable(training: list[float]) -> None:
    sample = live(2000)
    assert psi(sample, training) < 0.05
    assert ks(sample, training) < 0.05


def test_shifted_distribution_is_flagged(training: list[float]) -> None:
    shifted = live(2000, scale=0.02)  # errors doubled, e.g. a new sensor or a stale model
    assert psi(shifted, training) > 0.5
    assert ks(shifted, training) > 0.3


def test_drift_grows_with_the_shift(training: list[float]) -> None:
    values = [psi(live(2000, scale=s), training) for s in (0.01, 0.012, 0.015, 0.02)]
    assert values == sorted(values)


def test_disjoint_live_errors_give_ks_one(training: list[float]) -> None:
    assert ks(np.full(100, 10.0), training) == pytest.approx(1.0)
    assert ks(np.full(100, -1.0), training) == pytest.approx(1.0)


def test_decile_bins_hold_ten_percent_each_and_survive_ties(training: list[float]) -> None:
    edges, mass = decile_bins(training)
    assert len(edges) == 9
    assert np.allclose(mass, 0.1)
    tied = [0.0] * 60 + list(np.linspace(0.0, 1.0, 41))
    edges, mass = decile_bins(tied)
    assert mass.sum() == pytest.approx(1.0)
    assert len(edges) == len(set(edges.tolist()))
    assert math.isfinite(psi(np.linspace(0, 1, 100), tied))


def test_monitor_is_nan_until_enough_samples_then_rolls(training: list[float]) -> None:
    monitor = DriftMonitor(training, window_size=500, min_samples=100)
    monitor.add(live(50))
    stats = monitor.stats()
    assert math.isnan(stats.psi) and math.isnan(stats.ks) and stats.samples == 50
    monitor.add(live(450, seed=2))
    assert monitor.stats().psi < 0.1
    # The window rolls: after 500 shifted errors the old ones are gone.
    shifted = [live(100, scale=0.03, seed=10 + seed) for seed in range(5)]
    for batch in shifted:
        monitor.add(batch)
    stats = monitor.stats()
    assert stats.samples == 500
    assert stats.psi > 1.0
    assert sorted(monitor.window().tolist()) == sorted(np.concatenate(shifted).tolist())


def test_monitor_accepts_batches_larger_than_the_window(training: list[float]) -> None:
    monitor = DriftMonitor(training, window_size=100, min_samples=10)
    monitor.add(np.arange(250, dtype=float))
    assert sorted(monitor.window().tolist()) == list(range(150, 250))
