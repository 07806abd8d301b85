"""The kafka-python edge's latency fixes: ``sliced_poll`` (the consumer's poll, waited in
short slices; kafka_io.py says why), driven by a fake clock and a fake poll, and the
producer's warm-up."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer
from kafka.errors import KafkaTimeoutError

from tests.fakes import FakeClock
from worker.core.errors import BrokerError
from worker.service.config import WorkerConfig
from worker.service.kafka_io import (
    POLL_SLICE_MS,
    SlicedPollConsumer,
    sliced_poll,
    warm_up_producer,
)


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


class MetadataProducer:
    """Records the topics whose metadata was asked for; refuses ``missing``."""

    def __init__(self, missing: str | None = None) -> None:
        self.asked: list[str] = []
        self.closed = False
        self.missing = missing

    def partitions_for(self, topic: str) -> set[int]:
        self.asked.append(topic)
        if topic == self.missing:
            raise KafkaTimeoutError(f"Failed to update metadata after 60.0 secs. ({topic})")
        return {0, 1}

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def test_the_producer_knows_every_output_topic_before_the_first_batch() -> None:
    producer = MetadataProducer()
    warm_up_producer(producer, WorkerConfig())  # type: ignore[arg-type]
    topics = WorkerConfig().topics
    assert producer.asked == [topics.scores, topics.anomalies, topics.dead_letter]
    shadowed = WorkerConfig.from_mapping({}, env={"ECG_SHADOW_ARTIFACT": "artifacts/candidate"})
    producer = MetadataProducer()
    warm_up_producer(producer, shadowed)  # type: ignore[arg-type]
    assert producer.asked[-1] == topics.shadow_scores  # with a shadow, its topic too


def test_an_output_topic_without_metadata_is_a_broker_error_naming_it() -> None:
    topics = WorkerConfig().topics
    producer = MetadataProducer(missing=topics.anomalies)
    with pytest.raises(BrokerError, match=f"output topic '{topics.anomalies}'"):
        warm_up_producer(producer, WorkerConfig())  # type: ignore[arg-type]
    assert producer.closed
