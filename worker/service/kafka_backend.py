"""Which Kafka client library runs the worker (``kafka.library``), behind one interface.

``kafka-python`` (the default; ``worker.service.kafka_io``) or ``confluent-kafka``
(librdkafka; ``worker.service.confluent_io``). Both build a ``Clients``: a consumer with
the interfaces of ``loop.Consumer``, ``delivery.Committer`` and ``transactions.GroupMember``
and a producer with those of ``delivery.Producer`` and
``transactions.TransactionalProducer``, raising ``kafka.errors`` classes either way. So the
loop, the codec, the scorer, the delivery modes and the metrics never know which one runs.
The library is imported only when selected: a kafka-python worker never loads librdkafka.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from worker.core.errors import BrokerError
from worker.service.config import WorkerConfig
from worker.service.rebalance import PartitionTracker


class Clients(Protocol):
    """The consumer (subscribed; rebalances reported to the tracker) and the producer."""

    @property
    def consumer(self) -> Any: ...

    @property
    def producer(self) -> Any: ...

    @property
    def cooperative(self) -> bool:
        """True when the consumer rebalances incrementally (``PartitionTracker.cooperative``)."""
        ...

    def close(self, timeout_s: float = 10.0) -> None: ...


def brokers(config: WorkerConfig) -> str:
    """The bootstrap servers as one string, as errors name them."""
    return ",".join(config.kafka.bootstrap_servers)


def require_topics(
    config: WorkerConfig, existing: Iterable[str], create: Callable[[list[str]], None]
) -> None:
    """Create the required topics missing from ``existing`` (``topics.create_topics``), or
    raise a ``BrokerError`` naming them; the same rule and words for both libraries."""
    present = set(existing)
    missing = [t for t in config.required_topics() if t not in present]
    if missing and config.topics.create_topics:
        create(missing)
    elif missing:
        raise BrokerError(
            f"topics missing on {brokers(config)}: {', '.join(missing)} (create them, "
            "grant this user DESCRIBE on them if the broker enforces ACLs, or set "
            "topics.create_topics: true for development)"
        )


def ensure_topics(config: WorkerConfig) -> None:
    """Check (or create) the topics with the selected library; ``BrokerError`` otherwise."""
    if config.kafka.confluent:
        from worker.service import confluent_io

        confluent_io.ensure_topics(config)
    else:
        from worker.service import kafka_io

        kafka_io.ensure_topics(config)


def connect(config: WorkerConfig, tracker: PartitionTracker) -> Clients:
    """The selected library's clients, after ``ensure_topics``."""
    if config.kafka.confluent:
        from worker.service import confluent_io

        return confluent_io.connect(config, tracker)
    from worker.service import kafka_io

    return kafka_io.connect(config, tracker)
