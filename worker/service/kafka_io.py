"""The Kafka edges of the worker: check the broker and topics at start-up, build the clients.

Start-up is bounded by ``startup.timeout_ms``: an unreachable broker or a missing topic is
a ``BrokerError`` that names the address or the topic, not an endless retry. With
``topics.create_topics: true`` (development) missing topics are created.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from worker.core.errors import BrokerError
from worker.service.config import WorkerConfig
from worker.service.kafka_backend import brokers, require_topics
from worker.service.kafka_diagnosis import diagnosing, explain
from worker.service.rebalance import PartitionTracker, uses_cooperative_protocol
from worker.service.transactions import transactional_id

log = logging.getLogger(__name__)

# Defaults the worker picks for the producer; ``kafka.client`` may override them.
# Every batch ends with flush(), which sends at once whatever lingers, so a long linger costs
# no latency; it keeps the sender thread idle while the loop calls send() for a batch, and a
# large batch_size keeps each partition's records in one producer batch. kafka-python wakes
# its sender thread for every new producer batch (a socket write and a GIL hand-off): with
# the old 5 ms / 16 KiB the loop spent a quarter of its time there (docs/benchmarks.md).
# 256 KiB stays well below the broker's 1 MiB message.max.bytes.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger_ms": 100,
    "batch_size": 256 * 1024,
    "allow_auto_create_topics": False,
}
CONSUMER_DEFAULTS: dict[str, Any] = {"allow_auto_create_topics": False}
# kafka-python 3.0.12's poll() may sleep through its whole timeout (capped by
# retry_backoff_ms, 100 ms) with a fetch response already buffered: when its IO thread
# completes the in-flight fetch between fetch_records() draining the buffer and setting up
# the wait, the fetcher reports "idle" and poll sleeps. A consumer polling like the worker at
# 5,700 windows/s had 20 of 1,100 polls stall 23-49 ms that way (docs/benchmarks.md,
# "Latency"). Waiting in slices bounds a stall to one slice: a quarter of the wait, at least
# POLL_SLICE_MS. An idle worker (200 ms polls) then polls about 20 times a second: measured,
# 2.4 % of a core against 0.75 % unsliced (10 ms slices throughout: 6.8 %).
POLL_SLICE_MS = 10
POLL_SLICES = 4


def sliced_poll(
    poll: Callable[[int], Any],
    timeout_ms: int,
    min_slice_ms: int = POLL_SLICE_MS,
    slices: int = POLL_SLICES,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """``poll(timeout_ms)`` as consecutive polls of ``timeout_ms / slices`` each (at least
    ``min_slice_ms``): returns the first non-empty result, or the last (empty) one once
    ``timeout_ms`` has passed."""
    slice_ms = max(min_slice_ms, -(-timeout_ms // slices))
    deadline = clock() + timeout_ms / 1000.0
    while True:
        left_ms = max(0, int((deadline - clock()) * 1000.0 + 0.5))
        records = poll(min(left_ms, slice_ms))
        if records or left_ms <= slice_ms:
            return records


class SlicedPollConsumer(KafkaConsumer):
    """``KafkaConsumer`` whose ``poll`` waits in slices (see ``POLL_SLICE_MS``)."""

    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None, update_offsets: bool = True
    ) -> Any:
        """As ``KafkaConsumer.poll``; the wait is cut into slices."""
        whole = super().poll
        return sliced_poll(
            lambda ms: whole(timeout_ms=ms, max_records=max_records, update_offsets=update_offsets),
            timeout_ms,
        )


@dataclass
class KafkaClients:
    """The consumer (subscribed, with the tracker as rebalance listener) and the producer."""

    consumer: KafkaConsumer
    producer: KafkaProducer

    @property
    def cooperative(self) -> bool:
        """True when the consumer's assignors rebalance cooperatively (KIP-429)."""
        return uses_cooperative_protocol(self.consumer.config["partition_assignment_strategy"])

    def close(self, timeout_s: float = 10.0) -> None:
        """Close both; the consumer leaves the group (no auto-commit)."""
        try:
            self.producer.close(timeout=timeout_s)
        except KafkaError as exc:  # pragma: no cover - best effort on the way out
            log.warning("closing the producer: %r", exc)
        try:
            self.consumer.close(autocommit=False, timeout_ms=int(timeout_s * 1000))
        except KafkaError as exc:  # pragma: no cover - best effort on the way out
            log.warning("closing the consumer: %r", exc)


def warm_up_producer(producer: KafkaProducer, config: WorkerConfig) -> None:
    """Fetch the output topics' metadata now: kafka-python's first send to a topic waits for
    it (with retry_backoff_ms between tries), which put 100-300 ms into the first batches'
    latency after every start."""
    for topic in config.output_topics():
        try:
            producer.partitions_for(topic)
        except KafkaError as exc:
            producer.close(timeout=5)
            raise BrokerError(f"no metadata for output topic {topic!r}: {exc!r}") from exc


def _common(config: WorkerConfig) -> dict[str, Any]:
    return {
        "bootstrap_servers": list(config.kafka.bootstrap_servers),
        "client_id": config.kafka.client_id,
        "bootstrap_timeout_ms": config.startup.timeout_ms,
    }


def ensure_topics(config: WorkerConfig) -> None:
    """Check that the four topics exist (creating them when configured); ``BrokerError``
    when the broker is unreachable within ``startup.timeout_ms`` or a topic is missing."""
    settings = {
        k: v for k, v in config.kafka.client.items() if k in KafkaAdminClient.DEFAULT_CONFIG
    }
    timeout_ms = config.startup.timeout_ms
    # The first connection is where a wrong password or an untrusted certificate shows.
    with diagnosing(settings.get("security_protocol", "PLAINTEXT")) as diagnosis:
        try:
            admin = KafkaAdminClient(
                **{**settings, **_common(config), "request_timeout_ms": min(timeout_ms, 30000)}
            )
        except KafkaError as exc:
            hint = "" if diagnosis.cause() else "; is the broker running? (make kafka-start)"
            raise BrokerError(
                f"cannot reach Kafka at {brokers(config)} within {timeout_ms} ms: "
                f"{explain(exc, diagnosis)}{hint}"
            ) from exc
    try:
        require_topics(config, admin.list_topics(), lambda names: _create(admin, config, names))
    except KafkaError as exc:
        raise BrokerError(f"cannot list or create topics on {brokers(config)}: {exc!r}") from exc
    finally:
        admin.close()


def _create(admin: KafkaAdminClient, config: WorkerConfig, names: list[str]) -> None:
    topics = config.topics
    log.info("creating topics %s (%d partitions)", ", ".join(names), topics.partitions)
    new = [
        NewTopic(
            name, num_partitions=topics.partitions, replication_factor=topics.replication_factor
        )
        for name in names
    ]
    with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
        admin.create_topics(new, timeout_ms=config.startup.timeout_ms)


def connect(config: WorkerConfig, tracker: PartitionTracker) -> KafkaClients:
    """Build the producer and the subscribed consumer (after ``ensure_topics``)."""
    where = brokers(config)
    exactly_once = config.delivery.mode == "exactly_once"
    transactional: dict[str, Any] = {}
    if exactly_once:
        transactional = {"transactional_id": transactional_id(config)}
    try:
        producer = KafkaProducer(
            **{
                **PRODUCER_DEFAULTS,
                **config.kafka.producer_settings(),
                **_common(config),
                **transactional,
                "acks": "all",
            }
        )
    except KafkaError as exc:
        raise BrokerError(f"cannot create a Kafka producer for {where}: {exc!r}") from exc
    warm_up_producer(producer, config)
    consumer_settings = {
        **CONSUMER_DEFAULTS,
        **config.kafka.consumer_settings(),
        **_common(config),
        "group_id": config.kafka.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": config.kafka.auto_offset_reset,
        "group_instance_id": config.kafka.group_instance_id,
        # Exactly-once reads past no open transaction of an upstream transactional producer.
        "isolation_level": "read_committed" if exactly_once else "read_uncommitted",
    }
    try:
        consumer = SlicedPollConsumer(**consumer_settings)
        consumer.subscribe([config.topics.input], listener=tracker)
        # Refresh metadata after subscribing and before joining the group: otherwise the
        # leader may assign from a stale (empty) snapshot and, when the next metadata
        # update arrives, force a second rebalance right after start-up, which kafka-python
        # 3.0 can get stuck in.
        if config.topics.input not in consumer.topics():
            raise BrokerError(f"topic {config.topics.input!r} does not exist on {where}")
    except KafkaError as exc:
        producer.close(timeout=5)
        raise BrokerError(f"cannot create a Kafka consumer for {where}: {exc!r}") from exc
    return KafkaClients(consumer=consumer, producer=producer)
