"""Exactly-once delivery with a fake transactional producer: what a reader would notice.

A batch's outputs and its offsets are committed together or not at all: a failed
acknowledgement or a rebalance aborts the transaction, and no offset is committed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest
from kafka.errors import (
    CommitFailedError,
    FencedInstanceIdError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    ProducerFencedError,
)
from kafka.structs import ConsumerGroupMetadata, TopicPartition
from prometheus_client import CollectorRegistry

from tests.builders import synthetic_windows
from tests.fakes import FakeClock, FakeRecord
from worker.core.artifact import EcgArtifact
from worker.core.errors import BrokerError
from worker.core.scorer import Scorer
from worker.service.config import BatchingConfig, WorkerConfig
from worker.service.delivery import CommitFailed, Outgoing, ProduceFailed
from worker.service.drift import DriftMonitor
from worker.service.http_server import HealthState
from worker.service.loop import WorkerLoop
from worker.service.metrics import WorkerMetrics
from worker.service.rebalance import PartitionTracker
from worker.service.transactions import ExactlyOnceDelivery, transactional_id


@dataclass
class Future:
    exception: Exception | None = None
    is_done: bool = True


@dataclass
class FakeTransactionalProducer:
    """Records outputs per transaction; only committed ones are 'visible'."""

    fail_send: Exception | None = None
    fail_offsets: Exception | None = None
    fail_init: Exception | None = None
    visible: list[tuple[str, bytes | None]] = field(default_factory=list)
    committed_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    _open: list[tuple[str, bytes | None]] = field(default_factory=list)
    _offsets: dict[TopicPartition, int] = field(default_factory=dict)

    def init_transactions(self) -> None:
        if self.fail_init is not None:
            raise self.fail_init
        self.events.append("init")

    def begin_transaction(self) -> None:
        self.events.append("begin")

    def send(self, topic: str, value: Any = None, key: Any = None, headers: Any = None) -> Future:
        self._open.append((topic, value))
        return Future(self.fail_send)

    def flush(self, timeout: float | None = None) -> None:
        self.events.append("flush")

    def send_offsets_to_transaction(self, offsets: Any, group_metadata: Any) -> None:
        assert group_metadata.generation_id >= 0
        if self.fail_offsets is not None:
            raise self.fail_offsets
        self._offsets = {tp: o.offset for tp, o in offsets.items()}

    def commit_transaction(self) -> None:
        self.events.append("commit")
        self.visible.extend(self._open)
        self.committed_offsets.update(self._offsets)
        self._open, self._offsets = [], {}

    def abort_transaction(self) -> None:
        self.events.append("abort")
        self._open, self._offsets = [], {}


@dataclass
class Member:
    generation_id: int = 3
    member_id: str = "worker-1"

    def group_metadata(self) -> ConsumerGroupMetadata:
        return ConsumerGroupMetadata("g", self.generation_id, self.member_id, None, None)


BATCH = [Outgoing("scores", b"k", b"s1"), Outgoing("dlq", None, b"bad")]
OFFSETS = {("windows", 0): 42}


def test_a_batch_and_its_offsets_are_committed_in_one_transaction() -> None:
    producer = FakeTransactionalProducer()
    delivery = ExactlyOnceDelivery(producer, Member(), 5.0)

    assert delivery.publish(BATCH, OFFSETS) is True
    assert producer.visible == [("scores", b"s1"), ("dlq", b"bad")]
    assert producer.committed_offsets == {TopicPartition("windows", 0): 42}
    assert producer.events == ["init", "begin", "flush", "commit"]


def test_an_unacknowledged_send_aborts_and_commits_nothing() -> None:
    producer = FakeTransactionalProducer(fail_send=KafkaTimeoutError("no ack"))
    delivery = ExactlyOnceDelivery(producer, Member(), 5.0)

    with pytest.raises(ProduceFailed, match="transaction aborted"):
        delivery.publish(BATCH, OFFSETS)
    assert producer.visible == [] and producer.committed_offsets == {}
    assert producer.events[-1] == "abort"


def test_a_rebalance_before_the_commit_aborts_and_reports_not_committed() -> None:
    producer = FakeTransactionalProducer(fail_offsets=CommitFailedError("stale generation"))
    delivery = ExactlyOnceDelivery(producer, Member(), 5.0)

    assert delivery.publish(BATCH, OFFSETS) is False
    assert producer.visible == [] and producer.committed_offsets == {}
    # The producer stays usable for the next batch.
    producer.fail_offsets = None
    assert delivery.publish(BATCH, OFFSETS) is True
    assert len(producer.visible) == 2


def test_a_worker_that_lost_its_membership_commits_nothing() -> None:
    # A worker woken after its session expired has generation -1 until it rejoins; the
    # broker would not fence such a commit, so the delivery must refuse it.
    producer = FakeTransactionalProducer()
    delivery = ExactlyOnceDelivery(producer, Member(generation_id=-1, member_id=""), 5.0)

    assert delivery.publish(BATCH, OFFSETS) is False
    assert producer.visible == [] and producer.committed_offsets == {}
    assert producer.events[-1] == "abort"


def test_fenced_by_another_instance_or_producer_is_fatal() -> None:
    producer = FakeTransactionalProducer(fail_offsets=FencedInstanceIdError())
    with pytest.raises(CommitFailed, match="same group_instance_id"):
        ExactlyOnceDelivery(producer, Member(), 5.0).publish(BATCH, OFFSETS)
    producer = FakeTransactionalProducer(fail_offsets=ProducerFencedError())
    with pytest.raises(ProduceFailed, match="fenced"):
        ExactlyOnceDelivery(producer, Member(), 5.0).publish(BATCH, OFFSETS)
    assert producer.visible == []


def test_a_commit_that_never_answers_fails_the_batch_in_bounded_time() -> None:
    # kafka-python waits for EndTxn without a limit (e.g. an output topic was deleted).
    producer = FakeTransactionalProducer()
    never = threading.Event()
    producer.commit_transaction = lambda: never.wait()  # type: ignore[assignment, method-assign, return-value]
    delivery = ExactlyOnceDelivery(producer, Member(), 0.2)

    with pytest.raises(ProduceFailed, match="did not finish within"):
        delivery.publish(BATCH, OFFSETS)
    assert producer.visible == [] and producer.committed_offsets == {}
    never.set()


class RefusingProducer(FakeTransactionalProducer):
    """Refuses records whose value is in ``too_large``: from ``send()`` itself (as
    kafka-python does over max_request_size) or, with ``late``, in the future (as the
    broker does over its own limit)."""

    too_large: frozenset[bytes] = frozenset({b"huge"})
    late: bool = False

    def send(self, topic: str, value: Any = None, key: Any = None, headers: Any = None) -> Future:
        if value in self.too_large:
            if not self.late:
                raise MessageSizeTooLargeError("over max_request_size")
            self._open.append((topic, value))
            return Future(MessageSizeTooLargeError("over the broker's limit"))
        return super().send(topic, value, key, headers)


def to_dead_letter(refused: list[tuple[Outgoing, BaseException]]) -> list[Outgoing]:
    return [Outgoing("dlq", m.key, b"cut") for m, _ in refused]


@pytest.mark.parametrize("late", [False, True], ids=["send-refuses", "broker-refuses"])
def test_a_record_refused_alone_is_replaced_and_the_batch_commits(late: bool) -> None:
    producer = RefusingProducer()
    producer.late = late
    delivery = ExactlyOnceDelivery(producer, Member(), 5.0)
    batch = [Outgoing("scores", b"k", b"s1"), Outgoing("scores", b"k", b"huge")]

    assert delivery.publish(batch, OFFSETS, reroute=to_dead_letter) is True
    # Exactly one output per input: the refused one became its dead letter, committed with
    # the offsets; a broker-side refusal poisoned the first transaction, which was aborted.
    assert sorted(producer.visible) == [("dlq", b"cut"), ("scores", b"s1")]
    assert producer.committed_offsets == {TopicPartition("windows", 0): 42}
    assert producer.events.count("abort") == (1 if late else 0)


def test_a_refused_record_without_a_replacement_commits_nothing() -> None:
    producer = RefusingProducer()
    delivery = ExactlyOnceDelivery(producer, Member(), 5.0)

    with pytest.raises(ProduceFailed, match="could not be replaced"):
        delivery.publish([Outgoing("scores", b"k", b"huge")], OFFSETS)
    assert producer.visible == [] and producer.committed_offsets == {}


def test_init_failure_is_a_broker_error() -> None:
    producer = FakeTransactionalProducer(fail_init=KafkaTimeoutError("coordinator down"))
    with pytest.raises(BrokerError, match="transactional producer"):
        ExactlyOnceDelivery(producer, Member(), 5.0)


def test_transactional_id_is_stable_with_a_static_member_and_unique_without() -> None:
    static = WorkerConfig.from_mapping(
        {"kafka": {"group_id": "g", "group_instance_id": "pod-0"}}, env={}
    )
    dynamic = WorkerConfig.from_mapping({"kafka": {"group_id": "g"}}, env={})

    assert transactional_id(static) == transactional_id(static) == "g.pod-0"
    assert transactional_id(dynamic) != transactional_id(dynamic)
    assert transactional_id(dynamic).startswith("g.")


# --------------------------------------------------------------------------- with the loop


class LogConsumer:
    """One partition's log with a position: ``seek`` really rewinds, like Kafka."""

    def __init__(self, records: list[Any], producer: FakeTransactionalProducer) -> None:
        self.log = records
        self.position = 0
        self.producer = producer

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        batch, self.position = self.log[self.position : self.position + 5], self.position + 5
        return {TopicPartition("ecg.windows", 0): batch} if batch else {}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.position = offset

    def committed(self, partition: TopicPartition) -> int | None:
        return self.producer.committed_offsets.get(partition)

    def end_offsets(self, partitions: Any) -> dict:
        return {tp: len(self.log) for tp in partitions}

    def beginning_offsets(self, partitions: Any) -> dict:
        return {tp: 0 for tp in partitions}

    def group_metadata(self) -> ConsumerGroupMetadata:
        return ConsumerGroupMetadata("g", 3, "worker-1", None, None)


def test_an_aborted_batch_is_read_again_so_nothing_is_lost_or_doubled(
    ecg_artifact: EcgArtifact,
) -> None:
    # The group moves on while the second batch commits; the partition stays ours. The
    # consumer's position is already past that batch, so without a rewind it would be lost.
    rows = synthetic_windows(20, seed=4)
    records = [
        FakeRecord(
            "ecg.windows", 0, i, 1, b"d", orjson.dumps({"id": f"w-{i}", "values": r.tolist()})
        )
        for i, r in enumerate(rows)
    ]
    producer = FakeTransactionalProducer()
    consumer = LogConsumer(records, producer)
    tracker = PartitionTracker()
    tracker.on_partitions_assigned({TopicPartition("ecg.windows", 0)})
    delivery = ExactlyOnceDelivery(producer, consumer, 5.0)
    calls = {"n": 0}
    real_send_offsets = producer.send_offsets_to_transaction

    def flaky(offsets: Any, member: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise CommitFailedError("stale generation")
        real_send_offsets(offsets, member)

    producer.send_offsets_to_transaction = flaky  # type: ignore[method-assign]
    clock = FakeClock()
    config = replace(WorkerConfig(), batching=BatchingConfig(5, 50))
    drift = DriftMonitor(ecg_artifact.training_error_quantiles, 100, 10)
    loop = WorkerLoop(
        config,
        consumer,
        delivery,
        Scorer(ecg_artifact),
        WorkerMetrics(ecg_artifact, 5, drift, CollectorRegistry(), clock),
        tracker,
        HealthState(60000, clock),
        drift,
        clock=clock,
    )
    for _ in range(12):
        loop.step()

    ids = [orjson.loads(v)["id"] for topic, v in producer.visible if topic == "ecg.scores"]
    assert ids == [f"w-{i}" for i in range(20)]  # each once, in order
    assert producer.committed_offsets == {TopicPartition("ecg.windows", 0): 20}
    assert "abort" in producer.events
