"""Fakes for the worker's collaborators: a settable clock and in-memory Kafka clients.

They implement only what the worker uses (``worker.service.loop.Consumer`` and the producer
calls of ``worker.service.delivery``); real Kafka is for the integration tests.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka.structs import TopicPartition


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


class FakeConsumer:
    """A consumer over in-memory partitions; ``poll`` hands out queued records in order."""

    def __init__(
        self,
        clock: FakeClock | None = None,
        poll_batch: int = 1000,
        events: list[str] | None = None,
    ) -> None:
        self.events = events if events is not None else []
        self.queues: dict[tuple[str, int], list[FakeRecord]] = defaultdict(list)
        self.commits: list[dict[TopicPartition, Any]] = []
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.fail_commit: Exception | None = None
        self.clock = clock
        self.poll_batch = poll_batch
        self.poll_timeouts: list[int] = []
        self.on_poll: list[Any] = []  # callables run at the start of the next poll

    def feed(self, records: Iterable[FakeRecord]) -> None:
        for r in records:
            self.queues[(r.topic, r.partition)].append(r)

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        self.poll_timeouts.append(timeout_ms)
        while self.on_poll:
            self.on_poll.pop(0)()
        limit = min(max_records or self.poll_batch, self.poll_batch)
        out: dict[TopicPartition, list[FakeRecord]] = {}
        for (topic, partition), queue in self.queues.items():
            if not queue or limit <= 0:
                continue
            take, self.queues[(topic, partition)] = queue[:limit], queue[limit:]
            limit -= len(take)
            out[TopicPartition(topic, partition)] = take
        if not out and self.clock is not None:
            self.clock.advance(timeout_ms / 1000.0)  # an idle poll waits its full timeout
        return out

    def commit(self, offsets: dict | None = None, timeout_ms: Any = None) -> None:
        if self.fail_commit is not None:
            raise self.fail_commit
        assert offsets, "the worker always commits explicit offsets"
        self.events.append("commit")
        self.commits.append(dict(offsets))
        for tp, meta in offsets.items():
            self.committed_offsets[tp] = meta.offset

    def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offsets.get(tp)

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        ends = {}
        for tp in partitions:
            queue = self.queues.get((tp.topic, tp.partition), [])
            ends[tp] = (queue[-1].offset + 1) if queue else self.committed_offsets.get(tp, 0)
        return ends

    def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in partitions}


class FakeFuture:
    """A settled produce future."""

    def __init__(self, exception: Exception | None = None) -> None:
        self.is_done = True
        self.exception = exception


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None


class FakeProducer:
    """Records sends; ``flush`` acknowledges them (or fails those of ``fail_topics``)."""

    def __init__(self, events: list[str] | None = None) -> None:
        self.pending: list[Sent] = []
        self.acked: list[Sent] = []
        self.fail_topics: set[str] = set()
        self.events = events if events is not None else []
        self._futures: list[tuple[Sent, FakeFuture]] = []

    def send(self, topic, value=None, key=None, headers=None, partition=None, timestamp_ms=None):
        sent = Sent(topic, key, value, headers)
        future = FakeFuture()
        future.is_done = False
        self._futures.append((sent, future))
        self.events.append(f"send:{topic}")
        return future

    def flush(self, timeout: float | None = None) -> None:
        self.events.append("flush")
        for sent, future in self._futures:
            future.is_done = True
            if sent.topic in self.fail_topics:
                future.exception = RuntimeError(f"UnknownTopicOrPartition: {sent.topic}")
            else:
                self.acked.append(sent)
        self._futures = []

    def by_topic(self, topic: str) -> list[Sent]:
        return [s for s in self.acked if s.topic == topic]
