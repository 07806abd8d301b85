"""sliced_poll: the kafka-python consumer's poll, waited in short slices (kafka_io.py says
why), driven by a fake clock and a fake poll."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer

from tests.fakes import FakeClock
from worker.service.kafka_io import POLL_SLICE_MS, SlicedPollConsumer, sliced_poll


class StallingPoll:
    """A poll that returns ``records`` on its ``ready_on``-th call; an empty poll waits its
    whole timeout (as kafka-python's does when it wrongly believes it has nothing to wait
    for)."""

    def __init__(self, clock: FakeClock, ready_on: int | None) -> None:
        self.clock, self.ready_on = clock, ready_on
        self.timeouts: list[int] = []

    def __call__(self, timeout_ms: int) -> dict[str, list[int]]:
        self.timeouts.append(timeout_ms)
        if self.ready_on is not None and len(self.timeouts) >= self.ready_on:
            return {"tp": [1, 2]}
        self.clock.advance(timeout_ms / 1000.0)
        return {}


def test_a_stalled_slice_costs_one_slice_not_the_whole_timeout() -> None:
    clock = FakeClock()
    poll = StallingPoll(clock, ready_on=2)
    started = clock()
    assert sliced_poll(poll, 40, 10, 4, clock) == {"tp": [1, 2]}
    assert poll.timeouts == [10, 10]
    assert round(clock() - started, 6) == 0.010


def test_nothing_arriving_waits_the_whole_timeout_in_slices_then_returns_empty() -> None:
    clock = FakeClock()
    poll = StallingPoll(clock, ready_on=None)
    started = clock()
    assert sliced_poll(poll, 45, 10, 4, clock) == {}
    assert poll.timeouts == [12, 12, 12, 9]  # a quarter, rounded up
    assert round(clock() - started, 6) == 0.045


def test_short_waits_are_cut_into_slices_of_at_least_the_minimum() -> None:
    clock = FakeClock()
    poll = StallingPoll(clock, ready_on=None)
    assert sliced_poll(poll, 25, 10, 4, clock) == {}
    assert poll.timeouts == [10, 10, 5]


def test_an_idle_wait_is_cut_in_four_so_that_an_idle_worker_polls_little() -> None:
    clock = FakeClock()
    poll = StallingPoll(clock, ready_on=None)
    assert sliced_poll(poll, 200, 10, 4, clock) == {}
    assert poll.timeouts == [50, 50, 50, 50]


def test_a_zero_timeout_is_one_poll_that_does_not_wait() -> None:
    clock = FakeClock()
    poll = StallingPoll(clock, ready_on=None)
    assert sliced_poll(poll, 0, 10, 4, clock) == {}
    assert poll.timeouts == [0]


def test_records_at_hand_return_at_once() -> None:
    clock = FakeClock()
    poll = StallingPoll(clock, ready_on=1)
    assert sliced_poll(poll, 500, 10, 4, clock) == {"tp": [1, 2]}
    assert poll.timeouts == [125]


def test_the_worker_consumer_polls_kafka_python_in_slices_and_passes_the_rest_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, int | None, bool]] = []

    def whole_poll(
        self: KafkaConsumer,
        timeout_ms: int = 0,
        max_records: int | None = None,
        update_offsets: bool = True,
    ) -> dict[str, list[int]]:
        calls.append((timeout_ms, max_records, update_offsets))
        time.sleep(timeout_ms / 1000.0)
        return {}

    monkeypatch.setattr(KafkaConsumer, "poll", whole_poll)
    consumer = SlicedPollConsumer.__new__(SlicedPollConsumer)  # no broker needed

    assert consumer.poll(timeout_ms=3 * POLL_SLICE_MS, max_records=7) == {}

    assert 3 <= len(calls) <= 4  # 3 slices, maybe a last one for a rounding remainder
    assert all(t <= POLL_SLICE_MS for t, _, _ in calls)
    assert {(m, u) for _, m, u in calls} == {(7, True)}
