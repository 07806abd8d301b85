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


def test_an_item_that_waited_longer_than_the_first_brings_the_deadline_forward() -> None:
    clock = FakeClock()
    b: Batcher[int] = Batcher(10, 50, clock)
    b.add(1)
    b.add(2, since=clock() - 0.040)  # e.g. another partition's record, fetched late
    assert b.time_left_ms(idle_ms=1000) == 10
    b.add(3, since=clock() - 0.010)  # a later one changes nothing
    assert b.time_left_ms(idle_ms=1000) == 10
    b.add(4)
    clock.advance(0.010)
    assert b.due()
    assert b.take() == [1, 2, 3, 4]
    b.add(5)  # the next batch starts afresh
    assert b.time_left_ms(idle_ms=1000) == 50


def test_a_batch_closes_early_by_the_time_batches_take_to_publish() -> None:
    clock = FakeClock()
    b: Batcher[int] = Batcher(10, 50, clock)
    assert b.wait_s == 0.050  # nothing published yet: the whole wait
    b.published(0.008)  # first measurement: 8 ms, deviation half of it (RFC 6298)
    b.add(1)
    assert b.time_left_ms(idle_ms=1000) == 30  # 50 - (8 + 3 * 4): the score is out in time
    clock.advance(0.029)
    assert not b.due()
    clock.advance(0.001)
    assert b.due()


def test_the_reserve_follows_the_average_and_the_spread_of_publishing_times() -> None:
    steady: Batcher[int] = Batcher(10, 100, FakeClock())
    for _ in range(50):
        steady.published(0.010)
    # Always 10 ms: the deviation decays to nothing and the reserve is the 10 ms.
    assert round(steady.wait_s, 4) == 0.090

    b: Batcher[int] = Batcher(10, 100, FakeClock())
    b.published(0.010)  # average 10 ms, deviation 5 ms
    b.published(0.030)  # average moves by a fifth of 20 ms, deviation by a quarter of 15
    assert round(b.wait_s, 6) == round(0.100 - (0.014 + 3 * 0.00875), 6)

    spread: Batcher[int] = Batcher(10, 100, FakeClock())
    for seconds in [0.002, 0.018] * 20:  # averaging 10 ms, but half the batches take 18
        spread.published(seconds)
    assert spread.wait_s < steady.wait_s - 0.010


def test_at_most_half_of_max_wait_is_kept_for_publishing() -> None:
    clock = FakeClock()
    b: Batcher[int] = Batcher(10, 50, clock)
    b.published(5.0)  # e.g. a broker hiccup: batches still get half the wait to fill
    b.add(1)
    assert b.time_left_ms(idle_ms=1000) == 25

    fresh: Batcher[int] = Batcher(10, 50, clock)
    fresh.published(-1.0)  # a clock step backwards never extends the wait
    assert fresh.wait_s == 0.050
