"""Fakes for the worker's collaborators: a settable clock and in-memory Kafka clients.

The Kafka fakes are as strict as kafka-python 3.0 for the calls the worker makes: the same
call raises the same exception (``tests/integration/test_fake_contract.py`` runs the same
scenarios against these fakes and against a real broker). Their state lives in a
``FakeBroker`` (an append-only log per partition and a group's committed offsets), which a
producer and consumers may share; by default each client has its own.

A consumer that never called ``subscribe`` or ``assign`` owns every partition it was fed
(as if manually assigned), so a unit test can drive the loop's ``PartitionTracker`` itself.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka.errors import (
    IllegalStateError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
)
from kafka.producer.future import RecordMetadata
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.structs import OffsetAndMetadata, TopicPartition

# kafka-python's default max_request_size.
DEFAULT_MAX_REQUEST_SIZE = 1048576


class FakeClock:
    """A monotonic clock (seconds) that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeRecord:
    """The fields of a kafka-python ``ConsumerRecord`` the worker reads."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class FakeBroker:
    """Partitions (append-only logs) and the committed offsets of one consumer group."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.logs: dict[TopicPartition, list[FakeRecord]] = defaultdict(list)
        self.partition_counts: dict[str, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.members: list[FakeConsumer] = []  # subscribed consumers, in join order

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        """Declare a topic's partition count (a topic first written to gets one)."""
        self.partition_counts[topic] = partitions

    def append(self, record: FakeRecord) -> None:
        """Append a record at its own offset, which must be past the partition's end."""
        tp = TopicPartition(record.topic, record.partition)
        with self.lock:
            log = self.logs[tp]
            if log and record.offset <= log[-1].offset:
                raise ValueError(
                    f"{tp}: offset {record.offset} is not past the log end {log[-1].offset + 1}"
                )
            log.append(record)
            count = self.partition_counts.get(record.topic, 0)
            self.partition_counts[record.topic] = max(count, record.partition + 1)

    def produce(
        self, tp: TopicPartition, key: Any, value: Any, headers: list, timestamp: int
    ) -> int:
        """Append at the end of ``tp``; returns the record's offset."""
        with self.lock:
            offset = self.end_offset(tp)
            record = FakeRecord(tp.topic, tp.partition, offset, timestamp, key, value, headers)
            self.append(record)
            return offset

    def end_offset(self, tp: TopicPartition) -> int:
        log = self.logs.get(tp)
        return log[-1].offset + 1 if log else 0

    def beginning_offset(self, tp: TopicPartition) -> int:
        log = self.logs.get(tp)
        return log[0].offset if log else 0

    def partitions_of(self, topic: str) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for p in range(self.partition_counts.get(topic, 0))]

    def join(self, member: FakeConsumer) -> None:
        """A consumer subscribed: every member rejoins (eager protocol) on its next poll."""
        with self.lock:
            if member not in self.members:
                self.members.append(member)
            self._rebalance()

    def leave(self, member: FakeConsumer) -> None:
        with self.lock:
            if member in self.members:
                self.members.remove(member)
                self._rebalance()

    def _rebalance(self) -> None:
        """Range assignment of each topic's partitions over the members subscribed to it."""
        shares: dict[int, set[TopicPartition]] = {id(m): set() for m in self.members}
        topics = sorted({t for m in self.members for t in m.subscription})
        for topic in topics:
            members = [m for m in self.members if topic in m.subscription]
            partitions = self.partitions_of(topic)
            per, extra = divmod(len(partitions), len(members))
            start = 0
            for i, m in enumerate(members):
                n = per + (1 if i < extra else 0)
                shares[id(m)] |= set(partitions[start : start + n])
                start += n
        for m in self.members:
            m.pending_assignment = shares[id(m)]


class FakeConsumer:
    """A consumer over a ``FakeBroker``'s partitions; ``poll`` hands out records in order.

    ``poll_batch`` is how many records the consumer holds at a time (the rest not fetched
    yet): a poll returns at most that many, however many it asks for.

    Strictness knobs: ``fail_commit`` (raised by every commit), ``poll_errors`` (raised by
    the next polls, one each), ``on_poll`` (callables run at the start of the next poll),
    ``schedule_rebalance`` (the next poll calls the rebalance listener).
    """

    def __init__(
        self,
        clock: FakeClock | None = None,
        poll_batch: int = 1000,
        events: list[str] | None = None,
        broker: FakeBroker | None = None,
    ) -> None:
        self.broker = broker if broker is not None else FakeBroker()
        self.events = events if events is not None else []
        self.commits: list[dict[TopicPartition, Any]] = []
        self.fail_commit: Exception | None = None
        self.clock = clock
        self.poll_batch = poll_batch
        self.poll_timeouts: list[int] = []
        self.on_poll: list[Callable[[], Any]] = []
        self.poll_errors: list[BaseException] = []
        self.subscription: set[str] = set()
        self.listener: Any = None
        # None: never subscribed nor assigned, so every partition fed is ours.
        self._assignment: set[TopicPartition] | None = None
        self.pending_assignment: set[TopicPartition] | None = None
        self._lose_next = False
        self._positions: dict[TopicPartition, int] = {}
        self._closed = False

    # ------------------------------------------------------------------ test controls

    @property
    def committed_offsets(self) -> dict[TopicPartition, int]:
        """The group's committed offsets (the broker's)."""
        return self.broker.committed

    def feed(self, records: Iterable[FakeRecord]) -> None:
        """Append records to the broker's log (at their own offsets)."""
        for r in records:
            self.broker.append(r)

    def schedule_rebalance(self, assignment: Iterable[TopicPartition], lost: bool = False) -> None:
        """Make the next poll move to ``assignment``, calling the listener as kafka-python
        does (eager: revoked(all owned), then assigned(all new); ``lost``: lost(owned))."""
        self.pending_assignment = set(assignment)
        self._lose_next = lost

    # ------------------------------------------------------------------ kafka-python API

    def subscribe(self, topics: Iterable[str], listener: Any = None) -> None:
        if self._assignment is not None and not self.subscription:
            raise IllegalStateError("Subscription to topics and manual assignment are exclusive")
        self.subscription = set(topics)
        self.listener = listener
        self._assignment = set()
        self.broker.join(self)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        if self.subscription:
            raise IllegalStateError("Subscription to topics and manual assignment are exclusive")
        self._assignment = set(partitions)

    def topics(self) -> set[str]:
        """The topics the broker knows (kafka-python fetches fresh metadata for this)."""
        with self.broker.lock:
            return set(self.broker.partition_counts)

    def assignment(self) -> set[TopicPartition]:
        return set(self._owned())

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        self._check_open()
        if not isinstance(timeout_ms, int | float) or timeout_ms < 0:
            raise ValueError("Timeout must not be negative")
        if max_records is not None and (not isinstance(max_records, int) or max_records <= 0):
            raise ValueError("`max_records` must be a positive integer")
        self.poll_timeouts.append(timeout_ms)
        while self.on_poll:
            self.on_poll.pop(0)()
        if self.poll_errors:
            raise self.poll_errors.pop(0)
        self._maybe_rebalance()
        limit = min(max_records or self.poll_batch, self.poll_batch)
        out: dict[TopicPartition, list[FakeRecord]] = {}
        with self.broker.lock:
            for tp in sorted(self._owned()):
                if limit <= 0:
                    break
                position = self._position(tp)
                log = self.broker.logs.get(tp, [])
                start = bisect.bisect_left(log, position, key=lambda r: r.offset)
                take = log[start : start + limit]
                if take:
                    limit -= len(take)
                    out[tp] = take
                    self._positions[tp] = take[-1].offset + 1
        if not out and self.clock is not None:
            self.clock.advance(timeout_ms / 1000.0)  # an idle poll waits its full timeout
        return out

    def commit(self, offsets: dict | None = None, timeout_ms: Any = None) -> None:
        self._check_open()
        if self.fail_commit is not None:
            raise self.fail_commit
        assert offsets, "the worker always commits explicit offsets"
        if not all(isinstance(k, TopicPartition) for k in offsets) or not all(
            isinstance(v, OffsetAndMetadata) for v in offsets.values()
        ):
            raise TypeError("offsets must be dict[TopicPartition, OffsetAndMetadata]")
        # A member that has not rejoined a rebalancing group still commits: the broker takes
        # the current generation's commits until the new one starts (test_fake_contract).
        self.events.append("commit")
        self.commits.append(dict(offsets))
        with self.broker.lock:
            for tp, meta in offsets.items():
                self.broker.committed[tp] = meta.offset

    def committed(self, tp: TopicPartition, metadata: bool = False) -> Any:
        self._check_open()
        if not isinstance(tp, TopicPartition):
            raise TypeError("partition must be a TopicPartition namedtuple")
        offset = self.broker.committed.get(tp)
        if offset is None or not metadata:
            return offset
        return OffsetAndMetadata(offset, "", -1)

    def position(self, tp: TopicPartition) -> int:
        if not isinstance(tp, TopicPartition):
            raise TypeError("partition must be a TopicPartition namedtuple")
        if tp not in self._owned():
            raise IllegalStateError(
                f"You can only check the position for assigned partitions: {tp}"
            )
        return self._position(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if not isinstance(tp, TopicPartition):
            raise TypeError("partition must be a TopicPartition namedtuple")
        if not isinstance(offset, int) or offset < 0:
            raise ValueError("Offset must be int >= 0")
        if tp not in self._owned():
            raise ValueError("Unassigned partition")
        self._positions[tp] = offset

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The log end (offset of the next record written), records in hand or not."""
        return {tp: self.broker.end_offset(tp) for tp in partitions}

    def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.broker.beginning_offset(tp) for tp in partitions}

    def close(self, autocommit: bool = True, timeout_ms: Any = None) -> None:
        if self.subscription:
            self.broker.leave(self)
        self._closed = True

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise IllegalStateError("KafkaConsumer is closed")

    def _owned(self) -> set[TopicPartition]:
        if self._assignment is None:
            return set(self.broker.logs)
        return self._assignment

    def _position(self, tp: TopicPartition) -> int:
        if tp not in self._positions:
            committed = self.broker.committed.get(tp)
            self._positions[tp] = (
                committed if committed is not None else self.broker.beginning_offset(tp)
            )
        return self._positions[tp]

    def _maybe_rebalance(self) -> None:
        # Under the broker's lock: another member subscribing (another thread) may be setting
        # a newer assignment at this moment.
        with self.broker.lock:
            new = self.pending_assignment
            self.pending_assignment = None
        if new is None:
            return
        old = self._owned()
        listener = self.listener
        if self._lose_next:
            self._lose_next = False
            if listener is not None and old:
                listener.on_partitions_lost(set(old))
        elif listener is not None:
            listener.on_partitions_revoked(set(old))
        self._assignment = set(new)
        for tp in old - new:
            self._positions.pop(tp, None)  # its next owner starts at the last commit
        if listener is not None:
            listener.on_partitions_assigned(set(new))


class FakeFuture:
    """A produce future (kafka-python's ``FutureRecordMetadata``), settled when made;
    ``FakeProducer.send`` returns a pending one that ``flush`` settles."""

    def __init__(self, exception: BaseException | None = None) -> None:
        self.is_done = True
        self.exception = exception
        self.value: RecordMetadata | None = None  # set once acknowledged

    def succeeded(self) -> bool:
        return self.is_done and self.exception is None

    def failed(self) -> bool:
        return self.is_done and self.exception is not None


@dataclass
class Sent:
    """One record handed to ``send``."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None
    partition: int = 0


class FakeProducer:
    """Accepts exactly what kafka-python's ``KafkaProducer.send`` accepts, raising what it
    raises: ``ValueError`` (key and value both null), ``TypeError`` (a non-bytes key, value
    or header, a non-str topic), ``MessageSizeTooLargeError`` (estimated size over
    ``max_request_size``), ``IllegalStateError`` (after ``close``). ``flush`` acknowledges
    what was sent, except:

    - records of ``fail_topics``, or all records when ``fail_all``: their futures fail with
      ``KafkaTimeoutError`` (a batch expired unacknowledged);
    - records over ``broker_max_bytes``, or of ``refuse_topics``: their futures fail with
      ``MessageSizeTooLargeError`` (the broker refuses that one record, e.g. over its
      ``message.max.bytes``);
    - when ``stall_flush``: ``flush`` raises ``KafkaTimeoutError`` and the futures stay
      pending, as kafka-python's does when its timeout passes.
    """

    def __init__(
        self,
        events: list[str] | None = None,
        *,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        broker_max_bytes: int | None = None,
        broker: FakeBroker | None = None,
    ) -> None:
        self.broker = broker if broker is not None else FakeBroker()
        self.max_request_size = max_request_size
        self.broker_max_bytes = broker_max_bytes
        self.pending: list[Sent] = []
        self.acked: list[Sent] = []
        self.fail_topics: set[str] = set()
        self.refuse_topics: set[str] = set()
        self.fail_all = False
        self.stall_flush = False
        self.refused_by_send = 0
        self.events = events if events is not None else []
        self._futures: list[tuple[Sent, int, FakeFuture]] = []
        self._closed = False

    def send(
        self,
        topic: Any,
        value: Any = None,
        key: Any = None,
        headers: Any = None,
        partition: Any = None,
        timestamp_ms: Any = None,
    ) -> FakeFuture:
        try:
            sent, size = self._check(topic, value, key, headers, partition or 0)
        except (ValueError, TypeError, MessageSizeTooLargeError):
            self.refused_by_send += 1
            raise
        future = FakeFuture()
        future.is_done = False
        self._futures.append((sent, size, future))
        self.pending.append(sent)
        self.events.append(f"send:{topic}")
        return future

    def _check(
        self, topic: Any, value: Any, key: Any, headers: Any, partition: int
    ) -> tuple[Sent, int]:
        if self._closed:
            raise IllegalStateError("KafkaProducer already closed!")
        if not isinstance(topic, str):
            raise TypeError("topic must be a str")
        if key is None and value is None:
            raise ValueError("Need at least one: key or value")
        headers = [] if headers is None else headers
        if not isinstance(headers, list):
            raise TypeError("headers must be list-type")
        if not all(
            isinstance(h, tuple)
            and len(h) == 2
            and isinstance(h[0], str)
            and isinstance(h[1], bytes)
            for h in headers
        ):
            raise TypeError("All headers items must be (str, bytes) tuples")
        for what, data in (("key", key), ("value", value)):
            if data is not None and not isinstance(data, bytes | bytearray | memoryview):
                raise TypeError(f"Unsupported type for serialized {what}: {type(data)}")
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size > self.max_request_size:
            raise MessageSizeTooLargeError(
                f"The message is {size} bytes when serialized which is larger than the "
                "maximum request size you have configured with the max_request_size configuration"
            )
        return Sent(topic, key, value, list(headers), partition), size

    def flush(self, timeout: float | None = None) -> None:
        self.events.append("flush")
        if self.stall_flush:
            raise KafkaTimeoutError("Timeout waiting for future")
        for sent, size, future in self._futures:
            future.is_done = True
            if self.fail_all or sent.topic in self.fail_topics:
                future.exception = KafkaTimeoutError(
                    f"Batch for {sent.topic} expired before acknowledgement"
                )
            elif sent.topic in self.refuse_topics or (
                self.broker_max_bytes is not None and size > self.broker_max_bytes
            ):
                future.exception = MessageSizeTooLargeError("MESSAGE_TOO_LARGE from the broker")
            else:
                self.acked.append(sent)
                tp = TopicPartition(sent.topic, sent.partition)
                offset = self.broker.produce(tp, sent.key, sent.value, sent.headers or [], 0)
                future.value = RecordMetadata(
                    tp.topic,
                    tp.partition,
                    tp,
                    offset,
                    0,
                    None,
                    len(sent.key or b""),
                    len(sent.value or b""),
                    -1,
                )
        self._futures = []
        self.pending = []

    def close(self, timeout: float | None = None) -> None:
        if not self._closed and not self.stall_flush:
            self.flush(timeout)
        self._closed = True

    def by_topic(self, topic: str) -> list[Sent]:
        """Acknowledged records of one topic."""
        return [s for s in self.acked if s.topic == topic]
