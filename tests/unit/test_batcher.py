"""Batcher: closes at max size or max wait since its first item, driven by a fake clock."""

from __future__ import annotations

import pytest

from tests.fakes import FakeClock
from worker.service.batcher import Batcher


def test_closes_at_max_size() -> None:
    clock = FakeClock()
    b: Batcher[int] = Batcher(3, 100, clock)
    assert b.add(1) is None
    assert b.add(2) is None
    assert b.add(3) == [1, 2, 3]
    assert len(b) == 0 and not b.due()


def test_closes_after_max_wait_since_the_first_item() -> None:
    clock = FakeClock()
    b: Batcher[str] = Batcher(100, 50, clock)
    b.add("a")
    clock.advance(0.030)
    b.add("b")  # a later item does not restart the wait
    assert not b.due()
    assert b.time_left_ms(idle_ms=1000) == 20
    clock.advance(0.020)
    assert b.due()
    assert b.take() == ["a", "b"]
    assert not b.due()


def test_empty_batch_is_never_due_and_waits_the_idle_time() -> None:
    clock = FakeClock()
    b: Batcher[int] = Batcher(10, 50, clock)
    clock.advance(10)
    assert not b.due()
    assert b.time_left_ms(idle_ms=200) == 200
    b.add(1)
    assert b.time_left_ms(idle_ms=10) == 10  # never longer than the idle bound
    clock.advance(1)
    assert b.time_left_ms(idle_ms=200) == 0


def test_zero_wait_closes_immediately() -> None:
    clock = FakeClock()
    b: Batcher[int] = Batcher(10, 0, clock)
    b.add(1)
    assert b.due()


def test_the_wait_restarts_with_the_next_batch() -> None:
    clock = FakeClock()
    b: Batcher[int] = Batcher(2, 50, clock)
    b.add(1)
    clock.advance(0.049)
    assert b.add(2) == [1, 2]
    b.add(3)
    clock.advance(0.049)
    assert not b.due()


def test_discard_keeps_the_opening_time() -> None:
    clock = FakeClock()
    b: Batcher[int] = Batcher(10, 50, clock)
    for i in range(6):
        b.add(i)
    assert b.discard(lambda i: i % 2 == 0) == [1, 3, 5]
    clock.advance(0.05)
    assert b.due()
    assert b.take() == [0, 2, 4]


@pytest.mark.parametrize(
    ("size", "wait", "message"),
    [(0, 10, "max_size must be >= 1, got 0"), (1, -1, "max_wait_ms must be >= 0, got -1")],
)
def test_bad_limits_are_refused(size: int, wait: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Batcher(size, wait)


@pytest.mark.parametrize(
    ("size", "wait", "named"),
    [(0, 10, "max_size must be >= 1"), (1, -1, "max_wait_ms must be >= 0")],
)
def test_bad_limits_name_the_setting(size: int, wait: int, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Batcher(size, wait)


def test_a_long_wait_is_exact_to_the_millisecond() -> None:
    clock = FakeClock()
    b: Batcher[int] = Batcher(10, 1000, clock)
    b.add(1)
    assert b.time_left_ms(idle_ms=5000) == 1000
    clock.advance(0.9995)
    assert not b.due()
    clock.advance(0.0005)
    assert b.due()


def test_closes_when_the_bytes_reach_max_bytes() -> None:
    b: Batcher[str] = Batcher(100, 1000, FakeClock(), max_bytes=100)
    assert b.add("a", 60) is None
    assert b.add("b", 39) is None
    assert b.add("c", 1) == ["a", "b", "c"]  # exactly max_bytes closes
    # The next batch counts its bytes from zero.
    assert b.add("d", 99) is None
    assert b.add("e", 1) == ["d", "e"]


def test_items_without_a_size_never_close_on_bytes() -> None:
    b: Batcher[int] = Batcher(100, 1000, FakeClock(), max_bytes=2)
    for i in range(5):
        assert b.add(i) is None
    assert len(b) == 5


def test_discarding_every_item_resets_the_byte_count() -> None:
    b: Batcher[str] = Batcher(100, 1000, FakeClock(), max_bytes=100)
    b.add("a", 60)
    assert b.discard(lambda item: False) == ["a"]
    assert b.add("b", 99) is None
    assert b.add("c", 1) == ["b", "c"]


def test_discarding_some_items_keeps_the_byte_count_as_an_over_estimate() -> None:
    b: Batcher[str] = Batcher(100, 1000, FakeClock(), max_bytes=100)
    b.add("a", 60)
    b.add("b", 30)
    assert b.discard(lambda item: item == "b") == ["a"]
    assert b.add("c", 10) == ["b", "c"]


def test_a_batch_opens_when_its_first_item_could_have_arrived() -> None:
    clock = FakeClock()
    b: Batcher[int] = Batcher(10, 50, clock)
    b.add(1, since=clock() - 0.030)  # e.g. arrived while the previous batch was processed
    assert b.time_left_ms(idle_ms=1000) == 20
    clock.advance(0.019)
    assert not b.due()
    clock.advance(0.001)
    assert b.due()
    b.take()
    b.add(2, since=clock() + 5.0)  # a reading from the future counts as now
    assert b.time_left_ms(idle_ms=1000) == 50
    b.add(3, since=clock() - 1.0)  # only the first item opens the batch
    assert not b.due()


def test_a_batch_closes_early_by_the_time_batches_take_to_publish() -> None:
    clock = FakeClock()
    b: Batcher[int] = Batcher(10, 50, clock)
    b.published(0.020)
    b.add(1)
    assert b.time_left_ms(idle_ms=1000) == 30  # so that the score is out 50 ms after
    clock.advance(0.029)
    assert not b.due()
    clock.advance(0.001)
    assert b.due()


def test_the_publishing_time_is_a_moving_average() -> None:
    b: Batcher[int] = Batcher(10, 100, FakeClock())
    b.published(0.010)
    b.published(0.060)  # one slow batch moves the estimate by a fifth of the difference
    assert round(b.wait_s, 6) == 0.080


def test_at_most_half_of_max_wait_is_kept_for_publishing() -> None:
    clock = FakeClock()
    b: Batcher[int] = Batcher(10, 50, clock)
    b.published(5.0)  # e.g. a broker hiccup: batches still get half the wait to fill
    b.add(1)
    assert b.time_left_ms(idle_ms=1000) == 25

    fresh: Batcher[int] = Batcher(10, 50, clock)
    fresh.published(-1.0)  # a clock step backwards never extends the wait
    assert fresh.wait_s == 0.050
