"""Exactly-once delivery: a batch's outputs and its input offsets in one Kafka transaction.

``delivery.mode: exactly_once`` (docs/reliability.md). Per batch: begin a transaction, send
every score, anomaly and dead letter, flush, add the batch's next offsets to the
transaction with the consumer's group metadata (``send_offsets_to_transaction``, KIP-447),
commit. Either all of it becomes visible to ``read_committed`` readers together with the
offset commit, or none of it does:

- the group rebalanced before the offsets were added (stale generation, another static
  instance): the transaction is aborted and ``publish`` returns False, like the
  at-least-once commit that loses a rebalance; the partition's new owner replays;
- a send is not acknowledged or the broker fails: the transaction is aborted (best
  effort) and ``ProduceFailed`` is raised (exit 1; a restart resumes from the last commit);
- the producer was fenced (a newer worker with the same transactional id, or the
  transaction timed out on the coordinator): ``ProduceFailed``; its open transaction is
  aborted by the broker, never committed.

It implements the same ``publish``/``commit`` interface as ``AtLeastOnceDelivery``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from kafka.errors import (
    CommitFailedError,
    FencedInstanceIdError,
    KafkaError,
    ProducerFencedError,
)

from worker.core.errors import BrokerError
from worker.service.config import WorkerConfig
from worker.service.delivery import (
    GROUP_MOVED_ON,
    MAX_REROUTES,
    PER_RECORD_ERRORS,
    CommitFailed,
    Outgoing,
    ProduceFailed,
    Reroute,
    offset_request,
)

log = logging.getLogger(__name__)


class TransactionalProducer(Protocol):
    """The part of a transactional ``kafka.KafkaProducer`` this class uses."""

    def init_transactions(self) -> None: ...

    def begin_transaction(self) -> None: ...

    def send(self, topic: str, value: Any = None, key: Any = None, headers: Any = None) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def send_offsets_to_transaction(self, offsets: Any, group_metadata: Any) -> None: ...

    def commit_transaction(self) -> None: ...

    def abort_transaction(self) -> None: ...


class GroupMember(Protocol):
    """The part of ``kafka.KafkaConsumer`` this class uses."""

    def group_metadata(self) -> Any: ...


def transactional_id(config: WorkerConfig) -> str:
    """The producer's transactional id.

    With ``kafka.group_instance_id`` it is ``<group>.<instance>``: stable across restarts,
    so a restarted worker aborts its predecessor's open transaction at once and fences it.
    Without, it is unique per process (an open transaction of a killed worker then stays
    open until ``transaction_timeout_ms``, holding back read_committed readers)."""
    group = config.kafka.group_id
    instance = config.kafka.group_instance_id
    if instance is not None:
        return f"{group}.{instance}"
    return f"{group}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


class ExactlyOnceDelivery:
    """Send a batch and commit its offsets in one transaction; abort on any failure."""

    atomic = True

    def __init__(
        self, producer: TransactionalProducer, consumer: GroupMember, flush_timeout_s: float
    ) -> None:
        self._producer = producer
        self._consumer = consumer
        self._flush_timeout_s = flush_timeout_s
        try:
            # Aborts (or completes) whatever a predecessor with this id left open.
            producer.init_transactions()
        except KafkaError as exc:
            raise BrokerError(f"cannot initialise the transactional producer: {exc!r}") from exc

    def publish(
        self,
        messages: Sequence[Outgoing],
        offsets: Mapping[tuple[str, int], int],
        reroute: Reroute | None = None,
    ) -> bool:
        """Deliver one batch atomically. ``offsets`` maps (topic, partition) to the next
        offset to read; records refused one by one are replaced through ``reroute``, as in
        ``AtLeastOnceDelivery``.

        Returns True when committed, False when the group rebalanced first (transaction
        aborted; the new owner replays). Raises ``ProduceFailed`` (transaction aborted or
        left to the broker to abort; offsets not committed)."""
        if not messages and not offsets:
            return True
        pending = list(messages)
        try:
            for attempt in range(MAX_REROUTES + 1):
                sent, refused = self._transaction(pending, offsets, reroute)
                if not refused:
                    return True
                # The broker refused records one by one: that poisons a transaction, which
                # is aborted; the batch goes again with those records replaced.
                if reroute is None or attempt == MAX_REROUTES:
                    raise ProduceFailed(
                        f"{len(refused)} records of a batch were refused (first: "
                        f"{refused[0][1]!r}) and could not be replaced; transaction aborted, "
                        "offsets not committed"
                    )
                gone = {id(m) for m, _ in refused}
                pending = [m for m in sent if id(m) not in gone] + reroute(refused)
        except GROUP_MOVED_ON as exc:
            log.warning(
                "the group rebalanced before this batch's transaction committed (%r): "
                "aborted; the partitions' new owners replay from the last commit",
                exc,
            )
            self._abort()
            return False
        except FencedInstanceIdError as exc:
            self._abort()
            raise CommitFailed(
                f"fenced by another worker with the same group_instance_id ({exc!r}); "
                "transaction aborted"
            ) from exc
        except ProducerFencedError as exc:
            raise ProduceFailed(
                f"the transactional producer was fenced ({exc!r}): a newer worker uses the "
                "same transactional id, or the transaction timed out; nothing committed"
            ) from exc
        except KafkaError as exc:
            raise ProduceFailed(
                f"the transaction of a batch of {len(messages)} records failed: {exc!r}; "
                f"{self._abort()}, offsets not committed"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _transaction(
        self,
        pending: list[Outgoing],
        offsets: Mapping[tuple[str, int], int],
        reroute: Reroute | None,
    ) -> tuple[list[Outgoing], list[tuple[Outgoing, BaseException]]]:
        """One transaction: send ``pending`` (replacing what ``send()`` itself refuses,
        which never joins the transaction), add the offsets, commit. Returns the records
        sent and those the broker refused one by one; when there are any, the transaction
        is already aborted and nothing is committed."""
        self._producer.begin_transaction()
        sent: list[Outgoing] = []
        futures: list[tuple[Outgoing, Any]] = []
        refused = self._send(pending, sent, futures)
        rounds = 0
        while refused and reroute is not None and rounds < MAX_REROUTES:
            rounds += 1
            refused = self._send(reroute(refused), sent, futures)
        if refused:
            raise ProduceFailed(
                f"{len(refused)} records of a batch were refused (first: {refused[0][1]!r}) "
                f"and could not be replaced; {self._abort()}, offsets not committed"
            )
        self._producer.flush(timeout=self._flush_timeout_s)
        late = [
            (m, f.exception)
            for m, f in futures
            if f.is_done and isinstance(f.exception, PER_RECORD_ERRORS)
        ]
        if late:
            self._abort()
            return sent, late
        failed = [f for _, f in futures if not f.is_done or f.exception is not None]
        if failed:
            first = failed[0]
            why = repr(first.exception) if first.is_done else "no acknowledgement in time"
            raise ProduceFailed(
                f"{len(failed)} of {len(futures)} records of a batch were not "
                f"acknowledged (first: {why}); {self._abort()}, offsets not committed"
            )
        if offsets:
            member = self._consumer.group_metadata()
            if member.generation_id < 0 or not member.member_id:
                # kafka-python resets a member that lost its session to generation -1,
                # and the broker does not fence a commit without a generation: a woken
                # zombie would commit offsets of partitions it no longer owns.
                raise CommitFailedError("this worker is not a member of the group now")
            request = offset_request(offsets)
            self._bounded(
                "adding the offsets to the transaction",
                lambda: self._producer.send_offsets_to_transaction(request, member),
            )
        self._bounded("committing the transaction", self._producer.commit_transaction)
        return sent, []

    def _send(
        self,
        messages: Sequence[Outgoing],
        sent: list[Outgoing],
        futures: list[tuple[Outgoing, Any]],
    ) -> list[tuple[Outgoing, BaseException]]:
        """Send into the open transaction; return the records ``send()`` refused."""
        refused: list[tuple[Outgoing, BaseException]] = []
        for m in messages:
            try:
                future = self._producer.send(m.topic, value=m.value, key=m.key, headers=m.headers)
            except PER_RECORD_ERRORS as exc:
                refused.append((m, exc))
            else:
                sent.append(m)
                futures.append((m, future))
        return refused

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> bool:
        """Commit offsets with no outputs (in a transaction of their own)."""
        return self.publish([], offsets)

    def _bounded(self, what: str, call: Callable[[], None]) -> None:
        """Run a transactional call, which kafka-python waits on without a time limit (it
        retries while the coordinator is away or a partition is unknown), for at most the
        flush timeout. On timeout the worker exits through ``ProduceFailed``; the open
        transaction is aborted by the broker or by the restarted worker's
        ``init_transactions``."""
        outcome: list[BaseException] = []
        finished = threading.Event()

        def run() -> None:
            try:
                call()
            except BaseException as exc:  # re-raised in the caller's thread
                outcome.append(exc)
            finally:
                finished.set()

        threading.Thread(target=run, name="ecg-transaction", daemon=True).start()
        if not finished.wait(self._flush_timeout_s):
            raise ProduceFailed(
                f"{what} did not finish within {self._flush_timeout_s:.0f} s; "
                "transaction left open for the broker to abort, offsets not committed"
            )
        if outcome:
            raise outcome[0]

    def _abort(self) -> str:
        """Abort the open transaction; says how it went, for the error message."""
        try:
            self._bounded("aborting the transaction", self._producer.abort_transaction)
        except ProduceFailed as exc:
            log.warning("%s", exc)
            return "transaction left open for the broker to abort"
        except KafkaError as exc:
            # The coordinator aborts it after transaction_timeout_ms anyway (or a restarted
            # worker with the same transactional id does at once).
            log.warning("could not abort the transaction: %r", exc)
            return "transaction left open for the broker to abort"
        return "transaction aborted"
