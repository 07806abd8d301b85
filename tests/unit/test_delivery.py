"""The at-least-once delivery on its own: what it sends, when it commits, what it raises.

What an operator would notice: a flush that never times out, a commit before every send is
acknowledged, a refused record that is neither replaced nor reported, a commit error that
stops the worker when waiting a second would have ridden it out.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kafka.errors import (
    CommitFailedError,
    FencedInstanceIdError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RebalanceInProgressError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition

from tests.fakes import FakeClock, FakeConsumer, FakeFuture, FakeProducer
from worker.service.delivery import (
    MAX_REROUTES,
    AtLeastOnceDelivery,
    CommitFailed,
    Outgoing,
    ProduceFailed,
)

IN, SCORES, DLQ = "ecg.windows", "ecg.scores", "ecg.windows.dlq"


class SelectiveProducer:
    """A producer that acknowledges at flush, except: values in ``refuse_at_send`` make
    ``send`` raise their error, values in ``refuse_at_flush`` fail their future with theirs,
    and values in ``never_acked`` are still pending when ``flush`` returns (its timeout ran
    out)."""

    def __init__(self) -> None:
        self.refuse_at_send: dict[bytes, BaseException] = {}
        self.refuse_at_flush: dict[bytes, BaseException] = {}
        self.never_acked: set[bytes] = set()
        self.flush_timeouts: list[float | None] = []
        self.sent_values: list[bytes | None] = []
        self._pending: list[tuple[bytes | None, FakeFuture]] = []

    def send(self, topic, value=None, key=None, headers=None, partition=None, timestamp_ms=None):
        self.sent_values.append(value)
        if value in self.refuse_at_send:
            raise self.refuse_at_send[value]
        future = FakeFuture(self.refuse_at_flush.get(value))
        future.is_done = False
        self._pending.append((value, future))
        return future

    def flush(self, timeout: float | None = None) -> None:
        self.flush_timeouts.append(timeout)
        for value, future in self._pending:
            future.is_done = value not in self.never_acked
        self._pending = []


def out(value: bytes, topic: str = SCORES, origin: int = 0) -> Outgoing:
    return Outgoing(topic, b"dev", value, None, origin)


def delivery(
    producer: Any, consumer: FakeConsumer | None = None, flush_timeout_s: float = 5.0
) -> tuple[AtLeastOnceDelivery, FakeConsumer, FakeClock]:
    clock = FakeClock()
    consumer = consumer or FakeConsumer(clock)
    return (
        AtLeastOnceDelivery(producer, consumer, flush_timeout_s, clock=clock, sleep=clock.advance),
        consumer,
        clock,
    )


def test_flush_waits_at_most_the_flush_timeout() -> None:
    producer = SelectiveProducer()
    d, _, _ = delivery(producer, flush_timeout_s=7.5)
    assert d.publish([out(b"a")], {(IN, 0): 1}) is True
    assert producer.flush_timeouts == [7.5]


def test_the_commit_request_is_next_offset_without_metadata_or_leader_epoch() -> None:
    # The exact request kafka-python sends: an epoch other than -1 (unknown) would make the
    # broker check it against the partition leader's and refuse the commit.
    d, consumer, _ = delivery(FakeProducer())
    assert d.publish([out(b"a")], {(IN, 0): 12, (IN, 3): 4}) is True
    assert consumer.commits == [
        {
            TopicPartition(IN, 0): OffsetAndMetadata(12, "", -1),
            TopicPartition(IN, 3): OffsetAndMetadata(4, "", -1),
        }
    ]


def test_nothing_to_commit_is_a_success_without_a_commit_request() -> None:
    d, consumer, _ = delivery(FakeProducer())
    assert d.publish([], {}) is True
    assert d.commit({}) is True
    assert consumer.commits == []


def test_records_not_acknowledged_in_time_fail_the_batch_with_their_count() -> None:
    producer = SelectiveProducer()
    producer.never_acked = {b"b", b"c"}
    d, consumer, _ = delivery(producer)
    with pytest.raises(ProduceFailed) as raised:
        d.publish([out(b"a"), out(b"b"), out(b"c")], {(IN, 0): 3})
    message = str(raised.value)
    assert "2 of 3 records" in message
    assert "first: no acknowledgement in time" in message
    assert consumer.commits == []


def test_a_broker_error_on_an_acknowledgement_names_the_first_failure() -> None:
    producer = SelectiveProducer()
    producer.refuse_at_flush = {
        b"b": KafkaTimeoutError("first broker failure"),
        b"c": KafkaConnectionError("second broker failure"),
    }
    d, consumer, _ = delivery(producer)
    with pytest.raises(ProduceFailed, match=r"2 of 3 records.*first: KafkaTimeoutError") as raised:
        d.publish([out(b"a"), out(b"b"), out(b"c")], {(IN, 0): 3})
    assert "first broker failure" in str(raised.value)
    assert "second broker failure" not in str(raised.value)
    assert consumer.commits == []


def test_replacements_are_tried_for_at_most_max_reroutes_rounds() -> None:
    producer = SelectiveProducer()
    too_large = MessageSizeTooLargeError("record of 2000000 bytes")
    producer.refuse_at_send = {b"a": too_large, b"r": too_large}
    calls: list[int] = []

    def reroute(refused: list[tuple[Outgoing, BaseException]]) -> list[Outgoing]:
        calls.append(len(refused))
        return [out(b"r", DLQ)]

    d, consumer, _ = delivery(producer)
    with pytest.raises(ProduceFailed) as raised:
        d.publish([out(b"a"), out(b"ok")], {(IN, 0): 2}, reroute=reroute)
    assert calls == [1] * MAX_REROUTES
    message = str(raised.value)
    assert message.startswith("1 records of a batch were refused (first: MessageSizeTooLarge")
    assert "2000000 bytes" in message and "offsets not committed" in message
    assert consumer.commits == []


def test_refused_records_without_a_reroute_name_the_first_refusal() -> None:
    producer = SelectiveProducer()
    producer.refuse_at_send = {b"a": ValueError("first refusal")}
    producer.refuse_at_flush = {b"b": MessageSizeTooLargeError("second refusal")}
    d, consumer, _ = delivery(producer)
    with pytest.raises(ProduceFailed, match=r"^2 records of a batch were refused") as raised:
        d.publish([out(b"a"), out(b"b")], {(IN, 0): 2})
    assert "first refusal" in str(raised.value) and "second refusal" not in str(raised.value)
    assert consumer.commits == []


def test_a_replaced_record_lets_the_batch_commit_and_the_refusal_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = SelectiveProducer()
    producer.refuse_at_flush = {b"a": MessageSizeTooLargeError("record too large")}
    d, consumer, _ = delivery(producer)
    with caplog.at_level(logging.WARNING, "worker.service.delivery"):
        committed = d.publish(
            [out(b"a"), out(b"ok")], {(IN, 0): 2}, reroute=lambda r: [out(b"dead", DLQ)]
        )
    assert committed is True
    assert producer.sent_values == [b"a", b"ok", b"dead"]
    assert consumer.committed_offsets == {TopicPartition(IN, 0): 2}
    (record,) = caplog.records
    assert "1 records refused" in record.getMessage()
    assert "record too large" in record.getMessage()


@pytest.mark.parametrize(
    "error", [CommitFailedError("moved on"), RebalanceInProgressError("rebalancing")]
)
def test_a_commit_after_the_group_moved_on_is_not_committed_and_says_why(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = FakeConsumer()
    consumer.fail_commit = error
    d, _, _ = delivery(FakeProducer(), consumer)
    with caplog.at_level(logging.WARNING, "worker.service.delivery"):
        assert d.publish([out(b"a")], {(IN, 0): 1}) is False
    (record,) = caplog.records
    assert "rebalanced" in record.getMessage() and repr(error) in record.getMessage()


def test_a_fenced_instance_stops_the_worker_naming_the_fence() -> None:
    consumer = FakeConsumer()
    consumer.fail_commit = FencedInstanceIdError("pod-1 fenced")
    d, _, _ = delivery(FakeProducer(), consumer)
    with pytest.raises(CommitFailed, match=r"fenced by another instance.*pod-1 fenced"):
        d.commit({(IN, 0): 1})


class FlakyCommitter(FakeConsumer):
    """Fails the first ``failures`` commits with a retriable connection error."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def commit(self, offsets: dict | None = None, timeout_ms: Any = None) -> None:
        if self.failures:
            self.failures -= 1
            raise KafkaConnectionError("broker restarting")
        super().commit(offsets, timeout_ms)


def test_a_retriable_commit_error_is_retried_while_a_full_backoff_fits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Exactly one backoff (1 s) of time left: one more try, and it succeeds.
    consumer = FlakyCommitter(failures=1)
    d, _, clock = delivery(FakeProducer(), consumer, flush_timeout_s=1.0)
    started = clock()
    with caplog.at_level(logging.WARNING, "worker.service.delivery"):
        assert d.commit({(IN, 0): 5}) is True
    assert clock() - started == 1.0
    assert consumer.committed_offsets == {TopicPartition(IN, 0): 5}
    (record,) = caplog.records
    assert "broker restarting" in record.getMessage() and "1 s more" in record.getMessage()


def test_a_retriable_commit_error_past_the_flush_timeout_is_a_commit_failure() -> None:
    consumer = FlakyCommitter(failures=10)
    d, _, clock = delivery(FakeProducer(), consumer, flush_timeout_s=3.0)
    started = clock()
    with pytest.raises(CommitFailed, match=r"offset commit failed: .*broker restarting"):
        d.commit({(IN, 0): 5})
    assert clock() - started == 3.0  # three pauses of one second, then it gives up
    assert consumer.failures == 6
