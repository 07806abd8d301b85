"""Partition ownership as seen by the loop, kept up to date by Kafka's rebalance callbacks.

kafka-python 3 calls the listener on its IO thread, where blocking consumer calls (commit)
are not allowed. So the listener only records what changed; the loop, between polls,
drops the uncommitted records it holds for partitions it lost. That is safe for
at-least-once: those records were neither published nor committed, and the partition's
new owner starts at the last commit. Partitions that stay assigned keep their position
(kafka-python preserves it), so their records in hand are delivered normally.

The two rebalance protocols call the listener differently. Eager: "revoked" (everything)
before the join, then "assigned" (the full new set) after it; batches wait in between.
Cooperative (KIP-429, e.g. ``CooperativeStickyAssignor``): after the join, "revoked" with
only the partitions already taken away, and "assigned" only when some were added, maybe
never. So a cooperative revocation is a loss at once and never opens a rebalance window
(waiting for an "assigned" that may not come froze batching forever).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from kafka import ConsumerRebalanceListener
from kafka.coordinator.assignors.abstract import RebalanceProtocol
from kafka.structs import TopicPartition

log = logging.getLogger(__name__)


class PartitionTracker(ConsumerRebalanceListener):
    """Records assignments and revocations; thread-safe."""

    def __init__(
        self,
        on_change: Callable[[frozenset[tuple[str, int]]], None] | None = None,
        cooperative: bool = False,
    ):
        #: True when the consumer's assignors use the cooperative protocol.
        self.cooperative = cooperative
        self._lock = threading.Lock()
        self._assigned: set[tuple[str, int]] = set()
        self._revoked: set[tuple[str, int]] = set()
        self._lost: set[tuple[str, int]] = set()
        self._on_change = on_change

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Called before a rebalance (eager: every partition; cooperative: the ones going)."""
        gone = {(tp.topic, tp.partition) for tp in revoked}
        with self._lock:
            if self.cooperative:
                self._lost |= gone  # already reassigned; no "assigned" call need follow
            else:
                self._revoked |= gone
            self._assigned -= gone
            assigned = frozenset(self._assigned)
        if gone:
            log.info("partitions revoked: %s", _fmt(gone))
        self._notify(assigned)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Called after a rebalance with the partitions (newly) assigned to this worker."""
        new = {(tp.topic, tp.partition) for tp in assigned}
        with self._lock:
            # Revoked and not given back: another worker may own them now.
            self._lost |= self._revoked - new
            self._revoked.clear()
            self._assigned |= new
            current = frozenset(self._assigned)
        log.info("partitions assigned: %s", _fmt(current) or "none")
        self._notify(current)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        """Called when the group membership was lost: those partitions are gone."""
        gone = {(tp.topic, tp.partition) for tp in lost}
        with self._lock:
            self._lost |= gone
            self._assigned -= gone
            current = frozenset(self._assigned)
        log.warning("partitions lost: %s", _fmt(gone))
        self._notify(current)

    def assigned(self) -> frozenset[tuple[str, int]]:
        """The partitions this worker owns now."""
        with self._lock:
            return frozenset(self._assigned)

    def rebalancing(self) -> bool:
        """True between a revocation and the assignment that follows it."""
        with self._lock:
            return bool(self._revoked)

    def take_lost(self) -> frozenset[tuple[str, int]]:
        """Partitions lost since the last call (and not assigned back)."""
        with self._lock:
            lost, self._lost = frozenset(self._lost), set()
            return lost

    def _notify(self, assigned: frozenset[tuple[str, int]]) -> None:
        if self._on_change is not None:
            self._on_change(assigned)


def uses_cooperative_protocol(assignors: Iterable[Any]) -> bool:
    """Whether kafka-python will rebalance cooperatively with these assignors (classes or
    instances): it does when every one of them supports the cooperative protocol."""
    instances = [a() if isinstance(a, type) else a for a in assignors]
    return bool(instances) and all(
        RebalanceProtocol.COOPERATIVE in a.supported_protocols() for a in instances
    )


def _fmt(partitions: set[tuple[str, int]] | frozenset[tuple[str, int]]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(partitions))
