"""The confluent-kafka (librdkafka) edges of the worker, behind the interfaces the loop and
the delivery modes already use (``kafka.library: confluent-kafka``, docs/worker.md).

The adapters speak the worker's Kafka vocabulary (kafka-python's ``TopicPartition``,
``OffsetAndMetadata`` and error classes), so ``loop``, ``delivery`` and ``transactions`` do
not know which library runs: ``kafka_error`` turns a librdkafka error into the class its
Kafka error code has in ``kafka.errors`` (a refused record, a group that moved on, a
retriable or a fatal failure), and the delivery modes classify it as before.

- ``ConfluentConsumer``: ``consume`` in batches, manual synchronous commits of explicit
  offsets, no auto-commit and no offset store; rebalance callbacks go to the
  ``PartitionTracker``. Under the eager protocol a partition given back to this worker keeps
  its position (as kafka-python does), so the records in hand are not read twice.
- ``ConfluentProducer``: ``produce`` with a delivery callback per record (one small
  ``_Ack``: no future objects), transactions with ``send_offsets_to_transaction``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaException,
    Producer,
)
from confluent_kafka import KafkaError as LibrdkafkaError
from confluent_kafka import TopicPartition as Partition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import errors
from kafka.structs import TopicPartition

from worker.core.errors import BrokerError
from worker.service import confluent_settings as rd
from worker.service.config import WorkerConfig
from worker.service.kafka_backend import brokers, require_topics
from worker.service.rebalance import PartitionTracker
from worker.service.secrets import redact
from worker.service.transactions import transactional_id

log = logging.getLogger(__name__)
# librdkafka's own log lines go through Python logging (and its secret redaction).
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")

# Most records one ``poll`` returns when not told (as kafka-python's max_poll_records; the
# worker's loop always tells).
MAX_POLL_RECORDS = 500
# Errors kept for the start-up diagnosis (a long run's broker restarts must not pile up).
KEPT_ERRORS = 32
# Pause while the producer's local queue is full (its deliveries are served meanwhile).
QUEUE_FULL_BACKOFF_S = 0.05

# librdkafka's own (negative) error codes with a kafka-python class of the same meaning;
# broker error codes (>= 0) are shared with kafka-python (``errors.for_code``).
_LOCAL_ERRORS: dict[int, type[errors.KafkaError]] = {
    LibrdkafkaError._ASSIGNMENT_LOST: errors.CommitFailedError,
    LibrdkafkaError._FENCED: errors.ProducerFencedError,
    LibrdkafkaError._TIMED_OUT: errors.KafkaTimeoutError,
    LibrdkafkaError._MSG_TIMED_OUT: errors.KafkaTimeoutError,
    LibrdkafkaError._TIMED_OUT_QUEUE: errors.KafkaTimeoutError,
    LibrdkafkaError._TRANSPORT: errors.KafkaConnectionError,
    LibrdkafkaError._ALL_BROKERS_DOWN: errors.KafkaConnectionError,
    LibrdkafkaError._STATE: errors.IllegalStateError,
    LibrdkafkaError._BAD_MSG: errors.CorruptRecordError,
}


def kafka_error(error: LibrdkafkaError) -> errors.KafkaError:
    """A librdkafka error as the ``kafka.errors`` exception the delivery modes classify.

    Broker error codes map to their kafka-python class (e.g. MSG_SIZE_TOO_LARGE ->
    ``MessageSizeTooLargeError``, a per-record refusal; ILLEGAL_GENERATION -> the group
    moved on); librdkafka's own codes through ``_LOCAL_ERRORS``; anything else is a plain
    ``KafkaError`` that is retriable exactly when librdkafka says so. A fatal error is
    never retriable."""
    code = error.code()
    cls: type[errors.KafkaError]
    if code > 0:
        cls = errors.kafka_errors.get(code, errors.KafkaError)
    else:
        cls = _LOCAL_ERRORS.get(code, errors.KafkaError)
    exc = cls(f"{error.name()}: {redact(error.str())}")
    if cls is errors.KafkaError:
        exc.retriable = bool(error.retriable())
    if error.fatal():
        exc.retriable = False
    return exc


def _raised(exc: KafkaException) -> errors.KafkaError:
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, LibrdkafkaError):
        return kafka_error(cause)
    return errors.KafkaError(redact(str(exc)))


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Re-raise librdkafka's ``KafkaException`` as the matching ``kafka.errors`` class."""
    try:
        yield
    except KafkaException as exc:
        raise _raised(exc) from exc


# --------------------------------------------------------------------------- consumer


class _Record:
    """One consumed record, with the attributes the loop reads (kafka-python's names)."""

    __slots__ = ("key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(
        self, topic: Any, partition: Any, offset: Any, timestamp: Any, key: Any, value: Any
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value


@dataclass(frozen=True)
class GroupMember:
    """The consumer's group membership for ``send_offsets_to_transaction``.

    librdkafka does not expose the generation; its metadata carries it and the broker
    fences a stale one. ``generation_id`` is -1 when this worker is not in the group."""

    member_id: str
    generation_id: int
    metadata: Any


class ConfluentConsumer:
    """A subscribed ``confluent_kafka.Consumer`` with the interface of ``loop.Consumer``
    (plus ``commit`` and ``group_metadata`` for the delivery modes)."""

    def __init__(
        self, consumer: Consumer, timeout_s: float, max_records: int = MAX_POLL_RECORDS
    ) -> None:
        self._consumer = consumer
        self._timeout_s = timeout_s
        self._max_records = max_records

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        """Up to ``max_records`` records, by partition: what is there, else the first to
        arrive within ``timeout_ms`` and what came with it (as kafka-python's ``poll``;
        librdkafka's ``consume`` would wait the whole timeout for a full batch)."""
        limit = max_records or self._max_records
        with _translated():
            messages = self._consumer.consume(limit, 0)
            if not messages and timeout_ms > 0:
                first = self._consumer.poll(timeout_ms / 1000.0)
                if first is not None:
                    messages = [first, *self._consumer.consume(limit - 1, 0)]
        polled: dict[tuple[str, int], list[Any]] = {}
        for m in messages:
            error = m.error()
            if error is not None:
                if error.fatal():
                    raise kafka_error(error)
                log.warning("consumer: %s", redact(error.str()))
                continue
            record = _Record(
                m.topic(), m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value()
            )
            where = (record.topic, record.partition)
            batch = polled.get(where)
            if batch is None:
                polled[where] = [record]
            else:
                batch.append(record)
        return polled

    def commit(self, offsets: Mapping[TopicPartition, Any]) -> None:
        """Commit explicit next offsets (``{TopicPartition: OffsetAndMetadata}``) and wait."""
        request = [Partition(tp.topic, tp.partition, meta.offset) for tp, meta in offsets.items()]
        with _translated():
            answered = self._consumer.commit(offsets=request, asynchronous=False)
        for tp in answered or ():
            if tp.error is not None:
                raise kafka_error(tp.error)

    def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset of ``partition``; None when there is none."""
        with _translated():
            (tp,) = self._consumer.committed(
                [Partition(partition.topic, partition.partition)], timeout=self._timeout_s
            )
        if tp.error is not None:
            raise kafka_error(tp.error)
        return None if tp.offset < 0 else int(tp.offset)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Read ``partition`` from ``offset`` on."""
        with _translated():
            self._consumer.seek(Partition(partition.topic, partition.partition, offset))

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The log end offset of each partition: as of the last fetch response when this
        consumer has one (no broker request), else asked of the broker.

        Why cached: the loop refreshes the lag between batches, and a broker round trip per
        partition there stalled the loop (11 % of the worker's wall time in ``make bench``,
        some requests taking 200 ms on a loaded machine); a fetched partition's high
        watermark is at most ``fetch.wait.max.ms`` old."""
        out = {}
        for tp in partitions:
            with _translated():
                _, high = self._consumer.get_watermark_offsets(
                    Partition(tp.topic, tp.partition), cached=True
                )
            out[tp] = int(high) if high >= 0 else self._watermarks(tp)[1]
        return out

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The first offset of each partition."""
        return {tp: self._watermarks(tp)[0] for tp in partitions}

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        with _translated():
            low, high = self._consumer.get_watermark_offsets(
                Partition(tp.topic, tp.partition), timeout=self._timeout_s
            )
        return int(low), int(high)

    def group_metadata(self) -> GroupMember:
        """This member's group metadata, for exactly-once offset commits."""
        with _translated():
            member_id = self._consumer.memberid() or ""
            metadata = self._consumer.consumer_group_metadata()
        return GroupMember(member_id, 0 if member_id else -1, metadata)

    def close(self) -> None:
        """Leave the group (nothing is committed: auto-commit is off)."""
        with _translated():
            self._consumer.close()


class _Rebalance:
    """librdkafka's rebalance callbacks (run inside ``consume``) -> the ``PartitionTracker``."""

    def __init__(self, tracker: PartitionTracker, cooperative: bool) -> None:
        self._tracker = tracker
        self._cooperative = cooperative
        self._positions: dict[tuple[str, int], int] = {}

    def on_revoke(self, consumer: Consumer, partitions: list[Partition]) -> None:
        if not self._cooperative:
            # Eager: everything is revoked; remember where we were in case it comes back.
            with contextlib.suppress(KafkaException):
                self._positions = {
                    (tp.topic, tp.partition): tp.offset
                    for tp in consumer.position(partitions)
                    if tp.offset >= 0
                }
        self._tracker.on_partitions_revoked(_structs(partitions))

    def on_assign(self, consumer: Consumer, partitions: list[Partition]) -> None:
        if not self._cooperative:
            # librdkafka would restart a partition given back at its last commit, behind
            # the records this worker holds (and will commit): keep its position instead.
            for tp in partitions:
                position = self._positions.get((tp.topic, tp.partition))
                if position is not None:
                    tp.offset = position
            self._positions = {}
            consumer.assign(partitions)
        self._tracker.on_partitions_assigned(_structs(partitions))

    def on_lost(self, consumer: Consumer, partitions: list[Partition]) -> None:
        self._positions = {}
        self._tracker.on_partitions_lost(_structs(partitions))


def _structs(partitions: list[Partition]) -> set[TopicPartition]:
    return {TopicPartition(tp.topic, tp.partition) for tp in partitions}


def cooperative(client: Mapping[str, Any]) -> bool:
    """Whether librdkafka rebalances incrementally with these settings: the
    cooperative-sticky assignor, or the KIP-848 ``group.protocol: consumer``."""
    if str(client.get("group.protocol", "classic")).lower() == "consumer":
        return True
    strategies = str(client.get("partition.assignment.strategy", "range,roundrobin"))
    return all(s.strip() == "cooperative-sticky" for s in strategies.split(",") if s.strip())


# --------------------------------------------------------------------------- producer


class _Ack:
    """A record's acknowledgement: librdkafka's delivery callback fills it in (during
    ``flush``); ``is_done``/``exception`` are what the delivery modes read of a future."""

    __slots__ = ("exception", "is_done")

    def __init__(self) -> None:
        self.is_done = False
        self.exception: BaseException | None = None

    def __call__(self, error: LibrdkafkaError | None, message: Any) -> None:
        self.is_done = True
        if error is not None:
            self.exception = kafka_error(error)


class ConfluentProducer:
    """A ``confluent_kafka.Producer`` with the interface of ``delivery.Producer`` and
    ``transactions.TransactionalProducer``."""

    def __init__(
        self,
        producer: Producer,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._producer = producer
        self._timeout_s = timeout_s
        self._clock = clock

    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Any = None,
        partition: Any = None,
        timestamp_ms: Any = None,
    ) -> _Ack:
        """Queue one record; returns its acknowledgement. Raises a ``kafka.errors`` class
        for a record refused at once (e.g. ``MessageSizeTooLargeError``)."""
        ack = _Ack()
        deadline: float | None = None
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=ack)
                return ack
            except BufferError:
                # The local queue is full: serve deliveries until there is room again.
                now = self._clock()
                deadline = deadline or now + self._timeout_s
                if now >= deadline:
                    raise errors.KafkaTimeoutError(
                        "the producer's queue stayed full (queue.buffering.max.messages)"
                    ) from None
                self._producer.poll(QUEUE_FULL_BACKOFF_S)
            except KafkaException as exc:
                raise _raised(exc) from exc

    def flush(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for every acknowledgement (unacknowledged records
        stay ``is_done`` False; the delivery modes report them)."""
        with _translated():
            self._producer.flush(-1 if timeout is None else timeout)

    def init_transactions(self) -> None:
        """Fence a predecessor with the same transactional id; get a producer id."""
        with _translated():
            self._producer.init_transactions(self._timeout_s)

    def begin_transaction(self) -> None:
        """Open a transaction."""
        with _translated():
            self._producer.begin_transaction()

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, Any], group_metadata: GroupMember
    ) -> None:
        """Add the next offsets to the open transaction, for the consumer's group."""
        request = [Partition(tp.topic, tp.partition, meta.offset) for tp, meta in offsets.items()]
        with _translated():
            self._producer.send_offsets_to_transaction(
                request, group_metadata.metadata, self._timeout_s
            )

    def commit_transaction(self) -> None:
        """Commit the open transaction (flushes first)."""
        with _translated():
            self._producer.commit_transaction(self._timeout_s)

    def abort_transaction(self) -> None:
        """Abort the open transaction."""
        with _translated():
            self._producer.abort_transaction(self._timeout_s)

    def close(self, timeout_s: float) -> None:
        """Deliver what is queued, for at most ``timeout_s``."""
        with _translated():
            self._producer.flush(timeout_s)


@dataclass
class ConfluentClients:
    """The subscribed consumer and the producer, on confluent-kafka."""

    consumer: ConfluentConsumer
    producer: ConfluentProducer
    cooperative: bool

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush the producer; the consumer leaves the group (no auto-commit)."""
        try:
            self.producer.close(timeout_s)
        except errors.KafkaError as exc:  # pragma: no cover - best effort on the way out
            log.warning("closing the producer: %r", exc)
        try:
            self.consumer.close()
        except errors.KafkaError as exc:  # pragma: no cover - best effort on the way out
            log.warning("closing the consumer: %r", exc)


# --------------------------------------------------------------------------- building


class _Errors(logging.Handler):
    """librdkafka's error callback: logs each error (redacted) and keeps them, so that a
    failed start-up can say why (``explain``). As a handler on the ``librdkafka`` logger
    it keeps its log lines too (some causes are only there)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: deque[str] = deque(maxlen=KEPT_ERRORS)

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # a broken record must not break start-up
            self.seen.append(redact(record.getMessage()))

    def __call__(self, error: LibrdkafkaError) -> None:
        text = redact(f"{error.name()}: {error.str()}")
        self.seen.append(text)
        log.warning("kafka: %s", text)


# (substring of a librdkafka error, what it means for the operator), most telling first.
# Seen from a real broker: a wrong password (test_security.py), an untrusted CA, TLS on the
# plaintext port, plaintext on the TLS port (docs/worker.md); the others follow librdkafka's
# wording.
_CAUSES = (
    (
        "Authentication failed",
        "authentication failed: wrong user name or password, or the user does not exist "
        "(check sasl.username and the password / ECG_SASL_PASSWORD_FILE)",
    ),
    (
        "certificate verify failed",
        "the broker's TLS certificate is not trusted: point ssl.ca.location (ECG_SSL_CAFILE) "
        "at the CA that signed it",
    ),
    (
        "wrong version number",
        "TLS handshake failed: this port does not speak TLS (is it the plaintext listener? "
        "check security.protocol and the port)",
    ),
    (
        "PLAINTEXT broker listener",
        "TLS handshake failed: this port does not speak TLS (is it the plaintext listener? "
        "check security.protocol and the port)",
    ),
    (
        "not supported by broker",
        "the broker does not offer this SASL mechanism (check sasl.mechanism)",
    ),
    (
        "incorrect security.protocol",
        "the broker closed the connection at once: check security.protocol (SSL or "
        "SASL_SSL on a TLS port) and ssl.ca.location",
    ),
    (
        "in state APIVERSION_QUERY",
        "the broker closed the connection at its first request: this port probably expects "
        "TLS (set security.protocol to SSL or SASL_SSL and ssl.ca.location)",
    ),
)


def explain(exc: BaseException, seen: Iterable[str]) -> str:
    """The most telling cause of a failed connection, or the exception itself."""
    for needle, meaning in _CAUSES:
        for text in seen:
            if needle.lower() in text.lower():
                return f"{meaning} [{text}]"
    return redact(repr(exc))


def _common(config: WorkerConfig, keys: frozenset[str], on_error: _Errors) -> dict[str, Any]:
    """The worker's defaults, the pass-through settings and what the worker owns."""
    client = config.kafka.client
    return {
        **{k: v for k, v in rd.DEFAULTS.items() if k in keys and k not in _aliased(client, k)},
        **{k: v for k, v in client.items() if k in keys},
        "bootstrap.servers": brokers(config),
        "client.id": config.kafka.client_id,
        "error_cb": on_error,
        "logger": LIBRDKAFKA_LOG,
    }


def _aliased(client: Mapping[str, Any], key: str) -> set[str]:
    """{key} when ``client`` sets ``key`` under its alias (so the default must not)."""
    alias = rd.ALIASES.get(key)
    return {key} if alias is not None and alias in client else set()


def ensure_topics(config: WorkerConfig) -> None:
    """Check that the topics exist (creating them when configured); ``BrokerError`` when
    the broker is unreachable within ``startup.timeout_ms`` or a topic is missing."""
    seen = _Errors()
    timeout_ms = config.startup.timeout_ms
    both = rd.CONSUMER_KEYS & rd.PRODUCER_KEYS
    admin = AdminClient(_common(config, both, seen))
    LIBRDKAFKA_LOG.addHandler(seen)
    try:
        metadata = admin.list_topics(timeout=timeout_ms / 1000.0)
    except KafkaException as exc:
        admin.poll(0)  # serves the error callbacks and log lines that say why
        cause = explain(exc, seen.seen)
        hint = "" if cause != redact(repr(exc)) else "; is the broker running? (make kafka-start)"
        raise BrokerError(
            f"cannot reach Kafka at {brokers(config)} within {timeout_ms} ms: {cause}{hint}"
        ) from exc
    finally:
        LIBRDKAFKA_LOG.removeHandler(seen)
    existing = [name for name, topic in metadata.topics.items() if topic.error is None]
    require_topics(config, existing, lambda names: _create(admin, config, names))


def _create(admin: AdminClient, config: WorkerConfig, names: list[str]) -> None:
    topics = config.topics
    log.info("creating topics %s (%d partitions)", ", ".join(names), topics.partitions)
    timeout_s = config.startup.timeout_ms / 1000.0
    new = [NewTopic(n, topics.partitions, topics.replication_factor) for n in names]
    for name, future in admin.create_topics(new, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if getattr(error, "code", lambda: None)() == LibrdkafkaError.TOPIC_ALREADY_EXISTS:
                continue  # another worker was first
            raise BrokerError(f"cannot create topic {name!r} on {brokers(config)}: {exc}") from exc


def producer_config(config: WorkerConfig, on_error: _Errors) -> dict[str, Any]:
    """The librdkafka settings of the worker's producer."""
    settings = _common(config, rd.PRODUCER_KEYS, on_error)
    settings["acks"] = "all"
    settings.setdefault("enable.idempotence", True)
    if config.delivery.mode == "exactly_once":
        settings["transactional.id"] = transactional_id(config)
        client = config.kafka.client
        if not {"delivery.timeout.ms", "message.timeout.ms"} & set(client):
            # librdkafka refuses messages that may outlive their transaction.
            settings["delivery.timeout.ms"] = min(
                int(rd.setting(client, "delivery.timeout.ms")),
                int(rd.setting(client, "transaction.timeout.ms")),
            )
    return settings


def consumer_config(config: WorkerConfig, on_error: _Errors) -> dict[str, Any]:
    """The librdkafka settings of the worker's consumer."""
    kafka = config.kafka
    settings = _common(config, rd.CONSUMER_KEYS, on_error)
    settings.update(
        {
            "group.id": kafka.group_id,
            "enable.auto.commit": False,
            # The worker commits explicit offsets; nothing is stored behind its back.
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": kafka.auto_offset_reset,
            # Exactly-once reads past no open transaction of an upstream producer.
            "isolation.level": (
                "read_committed" if config.delivery.mode == "exactly_once" else "read_uncommitted"
            ),
        }
    )
    if kafka.group_instance_id is not None:
        settings["group.instance.id"] = kafka.group_instance_id
    return settings


def warm_up_producer(producer: Producer, config: WorkerConfig, timeout_s: float) -> None:
    """Fetch the output topics' metadata now, not at the first batch (whose latency it
    would add); ``BrokerError`` naming a topic without it."""
    for name in config.output_topics():
        try:
            producer.list_topics(name, timeout=timeout_s)
        except KafkaException as exc:
            producer.flush(5)
            raise BrokerError(f"no metadata for output topic {name!r}: {_raised(exc)!r}") from exc


def connect(config: WorkerConfig, tracker: PartitionTracker) -> ConfluentClients:
    """Build the producer and the subscribed consumer (after ``ensure_topics``)."""
    where = brokers(config)
    timeout_s = config.kafka.flush_bound_ms / 1000.0
    seen = _Errors()
    try:
        producer = Producer(producer_config(config, seen))
    except KafkaException as exc:
        raise BrokerError(f"cannot create a Kafka producer for {where}: {_raised(exc)!r}") from exc
    warm_up_producer(producer, config, timeout_s)
    incremental = cooperative(config.kafka.client)
    rebalance = _Rebalance(tracker, incremental)
    try:
        consumer = Consumer(consumer_config(config, seen))
        consumer.subscribe(
            [config.topics.input],
            on_assign=rebalance.on_assign,
            on_revoke=rebalance.on_revoke,
            on_lost=rebalance.on_lost,
        )
        metadata = consumer.list_topics(config.topics.input, timeout=timeout_s)
        topic = metadata.topics.get(config.topics.input)
        if topic is None or topic.error is not None:
            consumer.close()
            raise BrokerError(f"topic {config.topics.input!r} does not exist on {where}")
    except KafkaException as exc:
        producer.flush(5)
        raise BrokerError(f"cannot create a Kafka consumer for {where}: {_raised(exc)!r}") from exc
    return ConfluentClients(
        consumer=ConfluentConsumer(
            consumer,
            config.startup.timeout_ms / 1000.0,
            MAX_POLL_RECORDS,
        ),
        producer=ConfluentProducer(producer, timeout_s),
        cooperative=incremental,
    )
