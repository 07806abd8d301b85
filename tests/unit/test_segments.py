"""The batch version of abnormal_segments gives the per-window function's answer."""

from __future__ import annotations

import numpy as np
import pytest

from tests.oracles import abnormal_segments
from worker.core.segments import batch_abnormal_segments


def assert_same(batch: np.ndarray, **kwargs: int) -> None:
    got = batch_abnormal_segments(batch, **kwargs)
    assert len(got) == len(batch)
    for row, segments in zip(batch, got, strict=True):
        expected = abnormal_segments(row, **kwargs)
        assert [(s.start, s.end) for s in segments] == [(s.start, s.end) for s in expected]
        for a, b in zip(segments, expected, strict=True):
            assert a.mean_error == pytest.approx(b.mean_error, rel=1e-9)


def test_matches_per_window_on_random_errors() -> None:
    rng = np.random.default_rng(0)
    assert_same(np.abs(rng.normal(0, 1, (300, 140))).astype(np.float32))


def test_matches_with_localised_bumps_and_edges() -> None:
    rng = np.random.default_rng(1)
    batch = np.abs(rng.normal(0, 0.01, (50, 140)))
    for i, row in enumerate(batch):
        start = (i * 7) % 135
        row[start : start + 5] += 1.0  # a bump, sometimes at the very start or end
    batch[0, :3] += 2.0
    batch[1, -3:] += 2.0
    assert_same(batch)


def test_flat_rows_fall_back_to_the_worst_stretch() -> None:
    assert_same(np.ones((3, 140)))
    assert_same(np.zeros((2, 10)))


@pytest.mark.parametrize(("smooth", "segments"), [(1, 1), (3, 2), (7, 5), (200, 3)])
def test_matches_for_other_settings(smooth: int, segments: int) -> None:
    rng = np.random.default_rng(2)
    batch = np.abs(rng.normal(0, 1, (40, 60)))
    assert_same(batch, smooth_samples=smooth, max_segments=segments)


def test_empty_batch() -> None:
    assert batch_abnormal_segments(np.zeros((0, 140))) == []
