"""The delivery protocol, in one place: publish a batch's outputs, then commit its offsets.

At least once (docs/design.md, "Delivery"): send every score, anomaly and dead letter; flush
and check every acknowledgement; only then commit ``last offset + 1`` per input partition.
A send that is not acknowledged means no commit and a ``ProduceFailed`` (the worker exits
non-zero and a restart replays from the last commit). An exactly-once mode (Kafka
transactions) replaces this class and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kafka.errors import (
    CommitFailedError,
    FencedInstanceIdError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
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
        self, messages: Sequence[Outgoing], offsets: Mapping[tuple[str, int], int]
    ) -> bool: ...

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> bool: ...


class AtLeastOnceDelivery:
    """Publish, wait for every acknowledgement, then commit."""

    atomic = False

    def __init__(self, producer: Producer, consumer: Committer, flush_timeout_s: float) -> None:
        self._producer = producer
        self._consumer = consumer
        self._flush_timeout_s = flush_timeout_s

    def publish(self, messages: Sequence[Outgoing], offsets: Mapping[tuple[str, int], int]) -> bool:
        """Deliver one batch. ``offsets`` maps (topic, partition) to the next offset to read.

        Returns True when committed, False when the group rebalanced before the commit
        (outputs acknowledged; the new owner replays). Raises ``ProduceFailed`` (nothing
        committed) or ``CommitFailed``.
        """
        futures = []
        try:
            for m in messages:
                futures.append(
                    self._producer.send(m.topic, value=m.value, key=m.key, headers=m.headers)
                )
            self._producer.flush(timeout=self._flush_timeout_s)
        except KafkaError as exc:
            raise ProduceFailed(
                f"publishing a batch of {len(messages)} records failed after "
                f"{len(futures)} sends: {exc!r}; offsets not committed"
            ) from exc
        failed = [f for f in futures if not f.is_done or f.exception is not None]
        if failed:
            first = failed[0]
            why = repr(first.exception) if first.is_done else "no acknowledgement in time"
            raise ProduceFailed(
                f"{len(failed)} of {len(futures)} records of a batch were not acknowledged "
                f"(first: {why}); offsets not committed"
            )
        return self.commit(offsets)

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> bool:
        """Commit the given next offsets; False when the group moved on (rebalance)."""
        if not offsets:
            return True
        request = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in offsets.items()
        }
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
            raise CommitFailed(f"offset commit failed: {exc!r}") from exc
        return True
