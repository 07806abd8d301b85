"""The fakes of ``tests/fakes.py`` behave like kafka-python on a real broker.

Each scenario is one function run twice, on the in-memory fakes and on real kafka-python
clients against this session's broker, asserting the same observable results; a unit test
that passes against a fake the real client would fail is what this guards against.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import MessageSizeTooLargeError
from kafka.structs import OffsetAndMetadata, TopicPartition

from tests.fakes import FakeBroker, FakeConsumer, FakeProducer

pytestmark = pytest.mark.integration

# Real consumers need a few polls (and, for a rebalance, a few heartbeats) to get there.
WAIT_S = 60.0


class FakeCluster:
    """Fake clients sharing one in-memory broker."""

    heartbeat_s = 0.0  # a fake member knows of a rebalance at once

    def __init__(self) -> None:
        self.broker = FakeBroker()

    def topic(self, partitions: int = 1) -> str:
        name = f"contract-{uuid.uuid4().hex[:10]}"
        self.broker.create_topic(name, partitions)
        return name

    def producer(self, **config: Any) -> Any:
        return FakeProducer(broker=self.broker, **config)

    def consumer(self) -> Any:
        return FakeConsumer(broker=self.broker)

    def close(self) -> None:
        pass


class RealCluster:
    """kafka-python clients on the session's broker; one consumer group per scenario."""

    heartbeat_s = 3.5  # kafka-python's heartbeat_interval_ms is 3000

    def __init__(self, kafka_broker: Any) -> None:
        self.kafka = kafka_broker
        self.group = f"contract-{uuid.uuid4().hex[:10]}"
        self.clients: list[Any] = []

    def topic(self, partitions: int = 1) -> str:
        name = f"contract-{uuid.uuid4().hex[:10]}"
        self.kafka.create_topics([name], partitions=partitions)
        return name

    def producer(self, **config: Any) -> Any:
        producer = KafkaProducer(bootstrap_servers=self.kafka.bootstrap_servers, **config)
        self.clients.append(producer)
        return producer

    def consumer(self) -> Any:
        consumer = KafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap_servers,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self.clients.append(consumer)
        return consumer

    def close(self) -> None:
        for client in reversed(self.clients):
            client.close(timeout=5) if isinstance(client, KafkaProducer) else client.close()


@pytest.fixture(params=["fake", "real"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The same scenario on the fakes, then on kafka-python and a real broker."""
    if request.param == "fake":
        c: Any = FakeCluster()
    else:
        c = RealCluster(request.getfixturevalue("kafka_broker"))
    try:
        yield c
    finally:
        c.close()


def produce(cluster: Any, topic: str, n: int) -> list[Any]:
    producer = cluster.producer()
    futures = [
        producer.send(
            topic, value=b"v%d" % i, key=b"k%d" % i, headers=[("h", b"%d" % i)], partition=0
        )
        for i in range(n)
    ]
    producer.flush(timeout=10)
    return futures


def poll_until(consumer: Any, n: int, max_records: int | None = None) -> list[Any]:
    """Poll until ``n`` records came (or fail after ``WAIT_S``)."""
    records: list[Any] = []
    deadline = time.monotonic() + WAIT_S
    while len(records) < n:
        assert time.monotonic() < deadline, f"only {len(records)} of {n} records came"
        for batch in consumer.poll(timeout_ms=200, max_records=max_records).values():
            records.extend(batch)
    return records


def commit_request(tp: TopicPartition, next_offset: int) -> dict[TopicPartition, Any]:
    return {tp: OffsetAndMetadata(next_offset, "", -1)}


def test_sent_records_are_acknowledged_in_order_and_read_back(cluster: Any) -> None:
    topic = cluster.topic()
    futures = produce(cluster, topic, 3)
    assert [(f.is_done, f.exception) for f in futures] == [(True, None)] * 3
    assert [f.value.offset for f in futures] == [0, 1, 2]
    consumer = cluster.consumer()
    consumer.assign([TopicPartition(topic, 0)])
    got = [(r.offset, r.key, r.value, r.headers) for r in poll_until(consumer, 3)]
    assert got == [(i, b"k%d" % i, b"v%d" % i, [("h", b"%d" % i)]) for i in range(3)]


def test_send_refuses_what_kafka_python_refuses(cluster: Any) -> None:
    topic = cluster.topic()
    producer = cluster.producer(max_request_size=2000)
    with pytest.raises(ValueError, match="key or value"):
        producer.send(topic, key=None, value=None)
    with pytest.raises(TypeError, match="value"):
        producer.send(topic, value="text, not bytes")
    with pytest.raises(TypeError, match="key"):
        producer.send(topic, key=7, value=b"v")
    with pytest.raises(TypeError, match="headers"):
        producer.send(topic, value=b"v", headers=[("h", "text")])
    with pytest.raises(MessageSizeTooLargeError):
        producer.send(topic, value=b"x" * 3000)
    # A tombstone (key, no value) is a valid record, read back with a null value.
    tombstone = producer.send(topic, key=b"device-7", value=None)
    producer.flush(timeout=10)
    assert tombstone.is_done and tombstone.exception is None
    consumer = cluster.consumer()
    consumer.assign([TopicPartition(topic, 0)])
    [record] = poll_until(consumer, 1)
    assert (record.key, record.value) == (b"device-7", None)


def test_commit_is_what_the_next_consumer_of_the_group_starts_from(cluster: Any) -> None:
    topic = cluster.topic(partitions=2)
    tp, other = TopicPartition(topic, 0), TopicPartition(topic, 1)
    produce(cluster, topic, 5)
    consumer = cluster.consumer()
    consumer.assign([tp])
    assert consumer.committed(tp) is None
    assert [r.offset for r in poll_until(consumer, 5)] == [0, 1, 2, 3, 4]
    with pytest.raises(TypeError):
        consumer.commit({tp: 3})
    with pytest.raises(TypeError):
        consumer.committed((topic, 0))
    consumer.commit(commit_request(tp, 3))
    assert consumer.committed(tp) == 3
    # The group coordinator does not check ownership of a manually assigned partition.
    consumer.commit(commit_request(other, 1))
    assert consumer.committed(other) == 1
    consumer.close()
    restarted = cluster.consumer()
    restarted.assign([tp])
    assert [r.offset for r in poll_until(restarted, 2)] == [3, 4]


def test_end_offsets_are_the_log_end_while_records_are_in_hand(cluster: Any) -> None:
    topic = cluster.topic()
    tp = TopicPartition(topic, 0)
    produce(cluster, topic, 5)
    consumer = cluster.consumer()
    consumer.assign([tp])
    assert [r.offset for r in poll_until(consumer, 2, max_records=2)] == [0, 1]
    assert consumer.end_offsets([tp]) == {tp: 5}
    assert consumer.beginning_offsets([tp]) == {tp: 0}
    assert consumer.position(tp) == 2
    assert consumer.committed(tp) is None


def test_seek_rewinds_an_assigned_partition_only(cluster: Any) -> None:
    topic = cluster.topic(partitions=2)
    tp = TopicPartition(topic, 0)
    produce(cluster, topic, 4)
    consumer = cluster.consumer()
    consumer.assign([tp])
    poll_until(consumer, 4)
    consumer.seek(tp, 1)
    assert [r.offset for r in poll_until(consumer, 3)] == [1, 2, 3]
    with pytest.raises(ValueError, match="Offset"):
        consumer.seek(tp, -1)
    with pytest.raises(ValueError, match="Unassigned"):
        consumer.seek(TopicPartition(topic, 1), 0)
    with pytest.raises(TypeError):
        consumer.seek((topic, 0), 0)


class Recorder(ConsumerRebalanceListener):
    """The listener calls, as (kind, partition numbers)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, frozenset[int]]] = []

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.calls.append(("revoked", frozenset(tp.partition for tp in revoked)))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.calls.append(("assigned", frozenset(tp.partition for tp in assigned)))

    def assignments(self) -> int:
        return sum(kind == "assigned" for kind, _ in self.calls)


def owned(recorder: Recorder) -> frozenset[int] | None:
    """The partitions of the last assignment, None before the first."""
    assigned = [parts for kind, parts in recorder.calls if kind == "assigned"]
    return assigned[-1] if assigned else None


def subscribe(consumer: Any, topic: str, listener: Recorder) -> None:
    """Subscribe as the worker does (worker/service/kafka_io.py): with the topic's metadata
    fetched before the first poll joins. Otherwise the leader may assign from a snapshot
    without the topic created a moment ago, and the second rebalance that follows can leave
    kafka-python 3.0.12's member stuck: a CI run waited 60 s for it."""
    consumer.subscribe([topic], listener=listener)
    assert topic in consumer.topics()


@contextlib.contextmanager
def polling(consumer: Any, subscribe_to: tuple[str, Recorder] | None = None) -> Iterator[None]:
    """Poll ``consumer`` from a thread of its own (which subscribes it first, if asked: a
    kafka-python consumer is used from one thread only) until the block ends."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            if subscribe_to is not None:
                subscribe(consumer, *subscribe_to)
            while not stop.is_set():
                consumer.poll(timeout_ms=200)
                time.sleep(0.01)  # a fake's poll returns at once
        except BaseException as e:  # re-raised in the test's thread
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=WAIT_S)
    assert not thread.is_alive(), "a consumer's poll did not return"
    if errors:
        raise errors[0]


def test_a_second_consumer_joining_rebalances_the_first_through_its_listener(
    cluster: Any,
) -> None:
    topic = cluster.topic(partitions=2)
    first, second = cluster.consumer(), cluster.consumer()
    first_calls, second_calls = Recorder(), Recorder()
    subscribe(first, topic, first_calls)
    deadline = time.monotonic() + WAIT_S
    # The first join of a real group takes a few polls: wait until the first member owns both.
    while owned(first_calls) != {0, 1}:
        assert time.monotonic() < deadline, first_calls.calls
        first.poll(timeout_ms=200)
    joined_at = len(first_calls.calls)
    # Each member polls from its own thread, as two workers would: polled in turn from one
    # thread, each sat out the other's 200 ms poll and a loaded CI host saw the group
    # rebalance over and over for a minute.
    with polling(first), polling(second, subscribe_to=(topic, second_calls)):
        while not (
            len(first_calls.calls) > joined_at + 1
            and owned(first_calls)
            and owned(second_calls)
            and len(owned(first_calls) or ()) == len(owned(second_calls) or ()) == 1
        ):
            assert time.monotonic() < deadline, (first_calls.calls, second_calls.calls)
            time.sleep(0.05)
    # Eager protocol: the first member gives everything back, then each gets its share.
    assert first_calls.calls[joined_at] == ("revoked", frozenset({0, 1}))
    assert second_calls.calls[0] == ("revoked", frozenset())
    mine, theirs = owned(first_calls), owned(second_calls)
    assert mine is not None and theirs is not None and mine | theirs == {0, 1}


def test_a_member_that_has_not_rejoined_yet_still_commits(cluster: Any) -> None:
    # Kafka accepts the current generation's commits while the group prepares a rebalance,
    # so a worker finishing its batch when another joins loses no commit.
    topic = cluster.topic(partitions=2)
    tp = TopicPartition(topic, 0)
    first, second = cluster.consumer(), cluster.consumer()
    first_calls, second_calls = Recorder(), Recorder()
    subscribe(first, topic, first_calls)
    deadline = time.monotonic() + WAIT_S
    while first_calls.assignments() < 1:
        assert time.monotonic() < deadline, first_calls.calls
        first.poll(timeout_ms=200)
    subscribe(second, topic, second_calls)
    joining = threading.Thread(target=lambda: second.poll(timeout_ms=5000), daemon=True)
    joining.start()  # its join waits for the first member to rejoin
    time.sleep(cluster.heartbeat_s)  # the first has heard of the rebalance by now
    first.commit(commit_request(tp, 1))
    assert first.committed(tp) == 1
    while first_calls.assignments() < 2:  # its next poll rejoins
        assert time.monotonic() < deadline, first_calls.calls
        first.poll(timeout_ms=200)
    joining.join(timeout=WAIT_S)
    assert not joining.is_alive()
