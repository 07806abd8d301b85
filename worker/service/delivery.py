"""The delivery protocol, in one place: publish a batch's outputs, then commit its offsets.

At least once (docs/design.md, "Delivery"): send every score, anomaly and dead letter; flush
and check every acknowledgement; only then commit ``last offset + 1`` per input partition.
A send that is not acknowledged means no commit and a ``ProduceFailed`` (the worker exits
non-zero and a restart replays from the last commit). An exactly-once mode (Kafka
transactions) replaces this class and nothing else.

A send refused for one record alone (``PER_RECORD_ERRORS``: too large, invalid, null key
and value) is not a broker failure: the caller's ``reroute`` turns it into a dead letter,
which is sent in the same batch, and the batch goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kafka.errors import (
    CommitFailedError,
    CorruptRecordError,
    FencedInstanceIdError,
    IllegalGenerationError,
    InvalidRecordError,
    KafkaError,
    MessageSizeTooLargeError,
    RebalanceInProgressError,
    RecordListTooLargeError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition

from worker.core.errors import BrokerError

log = logging.getLogger(__name__)

# Commit errors that mean "the group moved on (rebalance) before this commit": the outputs
# are already acknowledged, and the partition's new owner replays from the last commit, so
# nothing is lost (at worst duplicated); the worker carries on.
GROUP_MOVED_ON = (
    CommitFailedError,
    RebalanceInProgressError,
    IllegalGenerationError,
    UnknownMemberIdError,
)


# Errors about one record, not the broker: kafka-python raises ValueError (key and value
# both null), TypeError (bad header or payload type) and MessageSizeTooLargeError (over
# max_request_size) from send() itself; the broker answers the others for a record it
# refuses. Each becomes a dead letter; any other failure fails the batch.
PER_RECORD_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
    CorruptRecordError,
)
# Rounds of replacements for refused records (a dead letter, then a smaller one).
MAX_REROUTES = 2
# Pause between two tries of a commit that failed with a retriable error.
COMMIT_RETRY_BACKOFF_S = 1.0


class ProduceFailed(BrokerError):
    """Some output of a batch was not acknowledged; its offsets were not committed."""


class CommitFailed(BrokerError):
    """The outputs were acknowledged but the offset commit failed (not a rebalance)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to publish."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    origin: int = -1  # index of the input record in its batch (for ``reroute``)


# Given the records refused one by one (with why), the records to send instead.
Reroute = Callable[[list[tuple[Outgoing, BaseException]]], list[Outgoing]]


class Producer(Protocol):
    """The part of ``kafka.KafkaProducer`` the delivery uses."""

    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Any = None,
        partition: Any = None,
        timestamp_ms: Any = None,
    ) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...


class Committer(Protocol):
    """The part of ``kafka.KafkaConsumer`` the delivery uses."""

    def commit(self, offsets: Any = None, timeout_ms: Any = None) -> None: ...


class Delivery(Protocol):
    """What the loop needs from a delivery mode (at least once, or exactly once in
    ``worker.service.transactions``)."""

    # True when a batch that was not committed left no output visible (a transaction was
    # aborted): the loop then reads that batch again.
    atomic: bool

    def publish(
        self,
        messages: Sequence[Outgoing],
        offsets: Mapping[tuple[str, int], int],
        reroute: Reroute | None = None,
    ) -> bool: ...

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> bool: ...


class AtLeastOnceDelivery:
    """Publish, wait for every acknowledgement, then commit."""

    atomic = False

    def __init__(
        self,
        producer: Producer,
        consumer: Committer,
        flush_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._producer = producer
        self._consumer = consumer
        self._flush_timeout_s = flush_timeout_s
        self._clock = clock
        self._sleep = sleep

    def publish(
        self,
        messages: Sequence[Outgoing],
        offsets: Mapping[tuple[str, int], int],
        reroute: Reroute | None = None,
    ) -> bool:
        """Deliver one batch. ``offsets`` maps (topic, partition) to the next offset to read.

        Records refused one by one go through ``reroute`` (at most ``MAX_REROUTES`` rounds)
        and their replacements are sent before the commit. Empty ``offsets``: publish and
        check the acknowledgements only (the loop commits later, with ``commit``). Returns
        True when committed (or nothing to commit), False when the group rebalanced before
        the commit (outputs acknowledged; the new owner replays). Raises ``ProduceFailed``
        (nothing committed) or ``CommitFailed``.
        """
        refused = self._send_all(messages)
        rounds = 0
        while refused and reroute is not None and rounds < MAX_REROUTES:
            rounds += 1
            log.warning(
                "%d records refused one by one (first: %r); sending their replacements",
                len(refused),
                refused[0][1],
            )
            refused = self._send_all(reroute(refused))
        if refused:
            raise ProduceFailed(
                f"{len(refused)} records of a batch were refused (first: {refused[0][1]!r}) "
                "and could not be replaced; offsets not committed"
            )
        return self.commit(offsets)

    def _send_all(self, messages: Sequence[Outgoing]) -> list[tuple[Outgoing, BaseException]]:
        """Send and flush; return the records refused one by one. Raises ``ProduceFailed``
        when anything else went wrong (not acknowledged in time, broker errors)."""
        futures = []
        refused: list[tuple[Outgoing, BaseException]] = []
        try:
            for m in messages:
                try:
                    future = self._producer.send(
                        m.topic, value=m.value, key=m.key, headers=m.headers
                    )
                except PER_RECORD_ERRORS as exc:
                    refused.append((m, exc))
                else:
                    futures.append((m, future))
            self._producer.flush(timeout=self._flush_timeout_s)
        except KafkaError as exc:
            raise ProduceFailed(
                f"publishing a batch of {len(messages)} records failed after "
                f"{len(futures)} sends: {exc!r}; offsets not committed"
            ) from exc
        failed = []
        for m, f in futures:
            if f.is_done and isinstance(f.exception, PER_RECORD_ERRORS):
                refused.append((m, f.exception))
            elif not f.is_done or f.exception is not None:
                failed.append(f)
        if failed:
            first = failed[0]
            why = repr(first.exception) if first.is_done else "no acknowledgement in time"
            raise ProduceFailed(
                f"{len(failed)} of {len(futures)} records of a batch were not acknowledged "
                f"(first: {why}); offsets not committed"
            )
        return refused

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> bool:
        """Commit the given next offsets; False when the group moved on (rebalance).

        A retriable failure (the coordinator or the broker is away, e.g. restarting) is
        retried for up to the flush timeout, so a short broker outage does not stop the
        worker; past that it is a ``CommitFailed``."""
        if not offsets:
            return True
        request = offset_request(offsets)
        deadline = self._clock() + self._flush_timeout_s
        while True:
            try:
                self._consumer.commit(request)
            except GROUP_MOVED_ON as exc:
                log.warning(
                    "offset commit rejected because the group rebalanced (%r); outputs are "
                    "published and the partitions' new owners replay from the last commit",
                    exc,
                )
                return False
            except FencedInstanceIdError as exc:
                raise CommitFailed(f"offset commit fenced by another instance: {exc!r}") from exc
            except KafkaError as exc:
                left_s = deadline - self._clock()
                if not exc.retriable or left_s < COMMIT_RETRY_BACKOFF_S:
                    raise CommitFailed(f"offset commit failed: {exc!r}") from exc
                log.warning("offset commit failed (%r); retrying for %.0f s more", exc, left_s)
                self._sleep(COMMIT_RETRY_BACKOFF_S)
                continue
            return True


def offset_request(offsets: Mapping[tuple[str, int], int]) -> dict[TopicPartition, Any]:
    """The commit request for next offsets keyed by (topic, partition)."""
    return {
        TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
        for (topic, partition), offset in offsets.items()
    }
