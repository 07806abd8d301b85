"""The confluent-kafka backend without a broker: selecting it (``kafka.library``,
``ECG_KAFKA_LIBRARY``), its librdkafka settings (validation, the worker's own settings
mapped onto librdkafka names), the classification of librdkafka errors, and its adapters
driven through the unchanged delivery modes with fake librdkafka clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError as LibrdkafkaError
from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as Partition
from kafka import errors
from kafka.structs import TopicPartition

from worker.core.errors import BrokerError, ConfigError
from worker.service import confluent_io
from worker.service.config import WorkerConfig, env_help
from worker.service.confluent_io import (
    ConfluentConsumer,
    ConfluentProducer,
    consumer_config,
    cooperative,
    kafka_error,
    producer_config,
)
from worker.service.delivery import (
    GROUP_MOVED_ON,
    PER_RECORD_ERRORS,
    AtLeastOnceDelivery,
    Outgoing,
)
from worker.service.rebalance import PartitionTracker
from worker.service.secrets import secret_values

CONFLUENT = {"library": "confluent-kafka"}


def load(kafka: dict[str, Any], env: dict[str, str] | None = None, **sections: Any) -> WorkerConfig:
    return WorkerConfig.from_mapping({"kafka": kafka, **sections}, env=env or {})


# --------------------------------------------------------------------------- selection


def test_kafka_python_is_the_default_library() -> None:
    assert load({}).kafka.library == "kafka-python"
    assert not load({}).kafka.confluent


def test_the_library_is_selected_in_the_config_or_by_ecg_kafka_library() -> None:
    assert load(CONFLUENT).kafka.confluent
    assert load({}, env={"ECG_KAFKA_LIBRARY": "confluent-kafka"}).kafka.confluent
    # The environment wins over the file, as for every override.
    overridden = load(CONFLUENT, env={"ECG_KAFKA_LIBRARY": "kafka-python"})
    assert overridden.kafka.library == "kafka-python"
    assert "ECG_KAFKA_LIBRARY" in env_help() and "kafka.library" in env_help()


def test_an_unknown_library_is_a_config_error_listing_both() -> None:
    with pytest.raises(ConfigError, match=r"kafka.library must be one of .*confluent-kafka"):
        load({"library": "librdkafka"})


# --------------------------------------------------------------------------- settings


def test_confluent_client_takes_librdkafka_names() -> None:
    config = load({**CONFLUENT, "client": {"linger.ms": 20, "compression.type": "lz4"}})
    assert dict(config.kafka.client) == {"linger.ms": 20, "compression.type": "lz4"}


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("lingr.ms", r"lingr.ms is not a librdkafka setting \(did you mean 'linger.ms'"),
        ("linger_ms", r"kafka.client.linger_ms is not a librdkafka setting"),
        ("no.such.thing", r"kafka.client.no.such.thing is not a librdkafka setting"),
    ],
)
def test_unknown_librdkafka_keys_are_named(key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load({**CONFLUENT, "client": {key: 1}})


@pytest.mark.parametrize(
    "key",
    [
        "bootstrap.servers",
        "group.id",
        "client.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "acks",
        "transactional.id",
        "isolation.level",
        "group.instance.id",
        "enable.partition.eof",
        "max.poll.records",  # each poll asks for what fits in the batch
    ],
)
def test_settings_the_worker_owns_are_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=f"kafka.client.{key} is set by the worker itself"):
        load({**CONFLUENT, "client": {key: "x"}})


def test_kafka_python_still_refuses_librdkafka_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown kafka-python setting 'kafka.client.linger.ms'"):
        load({"client": {"linger.ms": 5}})


def test_bad_librdkafka_values_and_aliases_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"linger.ms must be a non-negative number, got -1"):
        load({**CONFLUENT, "client": {"linger.ms": -1}})
    with pytest.raises(ConfigError, match=r"debug must be a string, number or true/false"):
        load({**CONFLUENT, "client": {"debug": ["all"]}})
    with pytest.raises(ConfigError, match=r"linger.ms and kafka.client.queue.buffering.max.ms"):
        load({**CONFLUENT, "client": {"linger.ms": 1, "queue.buffering.max.ms": 2}})


def test_timeouts_and_sizes_come_from_librdkafka_names_with_kafka_python_defaults() -> None:
    default = load(CONFLUENT).kafka
    # The same bounds as kafka-python's defaults, so the cross-checks hold on both.
    assert default.delivery_timeout_ms == load({}).kafka.delivery_timeout_ms == 120000
    assert default.max_request_size == load({}).kafka.max_request_size
    assert default.request_timeout_ms == 30000
    tuned = load(
        {
            **CONFLUENT,
            "client": {"message.timeout.ms": 4000, "message.max.bytes": 500000},
        }
    ).kafka
    assert (tuned.delivery_timeout_ms, tuned.flush_bound_ms) == (4000, 9000)
    assert tuned.max_request_size == 500000
    with pytest.raises(ConfigError, match=r"max_wait_ms \(900\) must be less than"):
        load(
            {**CONFLUENT, "client": {"request.timeout.ms": 900}},
            batching={"max_wait_ms": 900},
        )


def test_exactly_once_needs_idempotence_and_a_delivery_timeout_within_the_transaction() -> None:
    eos = {"delivery": {"mode": "exactly_once"}}
    with pytest.raises(ConfigError, match=r"drop kafka.client.enable.idempotence"):
        load({**CONFLUENT, "client": {"enable.idempotence": False}}, **eos)
    with pytest.raises(ConfigError, match=r"must not exceed transaction.timeout.ms \(60000\)"):
        load({**CONFLUENT, "client": {"delivery.timeout.ms": 90000}}, **eos)
    longer = {"delivery.timeout.ms": 90000, "transaction.timeout.ms": 90000}
    assert load({**CONFLUENT, "client": longer}, **eos).kafka.delivery_timeout_ms == 90000


def test_security_environment_and_secret_files_land_on_librdkafka_names(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret-pass\n", encoding="utf-8")
    env = {
        "ECG_SECURITY_PROTOCOL": "SASL_SSL",
        "ECG_SASL_MECHANISM": "SCRAM-SHA-512",
        "ECG_SASL_USERNAME": "ecg",
        "ECG_SASL_PASSWORD_FILE": str(password),
        "ECG_SSL_CAFILE": "/etc/ca.pem",
    }
    client = load(CONFLUENT, env=env).kafka.client
    assert dict(client) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "ecg",
        "sasl.password": "s3cret-pass",
        "ssl.ca.location": "/etc/ca.pem",
    }
    assert secret_values(client) == ["s3cret-pass"]  # redacted from every log line
    in_file = load({**CONFLUENT, "client": {"sasl.password_file": str(password)}}).kafka.client
    assert dict(in_file) == {"sasl.password": "s3cret-pass"}


# --------------------------------------------------------------------------- mapping


def config_of(**kafka: Any) -> WorkerConfig:
    mode = kafka.pop("mode", "at_least_once")
    return load(
        {
            **CONFLUENT,
            "bootstrap_servers": ["k1:9092", "k2:9092"],
            "group_id": "g",
            "client_id": "c",
            **kafka,
        },
        delivery={"mode": mode},
    )


def test_the_worker_settings_map_onto_librdkafka_names() -> None:
    config = config_of(
        group_instance_id="pod-0",
        auto_offset_reset="latest",
        client={"linger.ms": 20, "session.timeout.ms": 6000, "security.protocol": "SSL"},
    )
    consumer = consumer_config(config, confluent_io._Errors())
    producer = producer_config(config, confluent_io._Errors())

    assert consumer["bootstrap.servers"] == producer["bootstrap.servers"] == "k1:9092,k2:9092"
    assert consumer["client.id"] == producer["client.id"] == "c"
    assert consumer["group.id"] == "g" and consumer["group.instance.id"] == "pod-0"
    assert consumer["enable.auto.commit"] is False
    assert consumer["enable.auto.offset.store"] is False
    assert consumer["auto.offset.reset"] == "latest"
    assert consumer["isolation.level"] == "read_uncommitted"
    assert consumer["allow.auto.create.topics"] is False
    assert consumer["security.protocol"] == producer["security.protocol"] == "SSL"
    assert consumer["session.timeout.ms"] == 6000 and "session.timeout.ms" not in producer
    assert producer["linger.ms"] == 20 and "linger.ms" not in consumer
    assert producer["acks"] == "all" and producer["enable.idempotence"] is True
    assert "transactional.id" not in producer


def test_exactly_once_maps_to_a_transactional_read_committed_pair() -> None:
    config = config_of(mode="exactly_once", group_instance_id="pod-0")
    consumer = consumer_config(config, confluent_io._Errors())
    producer = producer_config(config, confluent_io._Errors())

    assert consumer["isolation.level"] == "read_committed"
    assert producer["transactional.id"] == "g.pod-0"
    # librdkafka refuses messages that may outlive their transaction.
    assert producer["delivery.timeout.ms"] <= producer["transaction.timeout.ms"]


def test_an_aliased_setting_replaces_the_default_of_its_other_name() -> None:
    producer = producer_config(
        config_of(client={"queue.buffering.max.ms": 50}), confluent_io._Errors()
    )
    assert producer["queue.buffering.max.ms"] == 50 and "linger.ms" not in producer


def test_cooperative_rebalancing_is_read_from_the_assignment_settings() -> None:
    assert not cooperative({})
    assert cooperative({"partition.assignment.strategy": "cooperative-sticky"})
    assert not cooperative({"partition.assignment.strategy": "range,cooperative-sticky"})
    assert cooperative({"group.protocol": "consumer"})


# --------------------------------------------------------------------------- errors


def rd(code: int, **flags: bool) -> LibrdkafkaError:
    return LibrdkafkaError(code, "from the test", **flags)


@pytest.mark.parametrize(
    "code",
    [LibrdkafkaError.MSG_SIZE_TOO_LARGE, LibrdkafkaError.INVALID_RECORD, LibrdkafkaError._BAD_MSG],
)
def test_a_record_refused_alone_is_a_per_record_error(code: int) -> None:
    assert isinstance(kafka_error(rd(code)), PER_RECORD_ERRORS)


@pytest.mark.parametrize(
    "code",
    [
        LibrdkafkaError.ILLEGAL_GENERATION,
        LibrdkafkaError.UNKNOWN_MEMBER_ID,
        LibrdkafkaError.REBALANCE_IN_PROGRESS,
        LibrdkafkaError._ASSIGNMENT_LOST,
    ],
)
def test_a_commit_after_a_rebalance_is_the_group_moving_on(code: int) -> None:
    assert isinstance(kafka_error(rd(code)), GROUP_MOVED_ON)


def test_retriable_fenced_and_fatal_errors_keep_their_meaning() -> None:
    assert kafka_error(rd(LibrdkafkaError.COORDINATOR_NOT_AVAILABLE)).retriable
    assert kafka_error(rd(LibrdkafkaError._TRANSPORT)).retriable
    assert isinstance(
        kafka_error(rd(LibrdkafkaError.FENCED_INSTANCE_ID)), errors.FencedInstanceIdError
    )
    assert isinstance(kafka_error(rd(LibrdkafkaError._FENCED)), errors.ProducerFencedError)
    assert isinstance(kafka_error(rd(LibrdkafkaError.PRODUCER_FENCED)), errors.ProducerFencedError)
    # A librdkafka-only code: retriable exactly when librdkafka says so, never when fatal.
    assert kafka_error(rd(LibrdkafkaError._WAIT_COORD, retriable=True)).retriable
    assert not kafka_error(rd(LibrdkafkaError._WAIT_COORD)).retriable
    assert not kafka_error(rd(LibrdkafkaError._TRANSPORT, fatal=True)).retriable
    assert "from the test" in str(kafka_error(rd(LibrdkafkaError._WAIT_COORD)))


# --------------------------------------------------------------------------- adapters


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, error: Any = None) -> None:
        self._where = (topic, partition, offset)
        self._error = error

    def error(self) -> Any:
        return self._error

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]

    def timestamp(self) -> tuple[int, int]:
        return (1, 1700000000000 + self._where[2])

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v%d" % self._where[2]


class FakeRdConsumer:
    """The part of ``confluent_kafka.Consumer`` the adapter calls."""

    def __init__(self, messages: list[Any] | None = None) -> None:
        self.messages = messages or []
        self.arriving: list[Any] = []  # records that arrive while a poll waits
        self.waited: list[tuple[str, float]] = []
        self.commits: list[list[tuple[str, int, int]]] = []
        self.commit_error: LibrdkafkaError | None = None
        self.assigned: list[tuple[str, int, int]] | None = None
        self.positions: list[Partition] = []

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        self.waited.append(("consume", timeout))
        out, self.messages = self.messages[:num_messages], self.messages[num_messages:]
        return out

    def poll(self, timeout: float) -> Any:
        self.waited.append(("poll", timeout))
        self.messages += self.arriving
        self.arriving = []
        return self.messages.pop(0) if self.messages else None

    def commit(self, offsets: list[Partition], asynchronous: bool) -> list[Partition]:
        assert asynchronous is False  # commit-after-ack waits for the broker
        if self.commit_error is not None:
            raise KafkaException(self.commit_error)
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])
        return offsets

    def position(self, partitions: list[Partition]) -> list[Partition]:
        return self.positions

    def assign(self, partitions: list[Partition]) -> None:
        self.assigned = [(tp.topic, tp.partition, tp.offset) for tp in partitions]


class FakeRdProducer:
    """The part of ``confluent_kafka.Producer`` the adapter calls: records over
    ``max_bytes`` are refused by the (fake) broker in the delivery callback."""

    def __init__(self, max_bytes: int = 100) -> None:
        self.max_bytes = max_bytes
        self.queued: list[tuple[str, bytes, Any]] = []
        self.delivered: list[tuple[str, bytes]] = []

    def produce(self, topic: str, value: bytes, key: Any, headers: Any, on_delivery: Any) -> None:
        self.queued.append((topic, value, on_delivery))

    def flush(self, timeout: float) -> int:
        for topic, value, callback in self.queued:
            if len(value) > self.max_bytes:
                callback(LibrdkafkaError(LibrdkafkaError.MSG_SIZE_TOO_LARGE), None)
            else:
                self.delivered.append((topic, value))
                callback(None, None)
        self.queued = []
        return 0


def test_poll_returns_records_by_partition_and_skips_non_fatal_errors() -> None:
    messages = [
        FakeMessage("in", 0, 5),
        FakeMessage("in", 1, 7),
        FakeMessage("in", 0, 6, error=None),
        FakeMessage("in", 0, -1, error=rd(LibrdkafkaError._TRANSPORT)),
    ]
    polled = ConfluentConsumer(FakeRdConsumer(messages), 1.0).poll(timeout_ms=10)  # type: ignore[arg-type]

    assert {k: [r.offset for r in v] for k, v in polled.items()} == {
        ("in", 0): [5, 6],
        ("in", 1): [7],
    }
    record = polled[("in", 0)][0]
    assert (record.topic, record.key, record.value, record.timestamp) == (
        "in",
        b"k",
        b"v5",
        1700000000005,
    )


def test_poll_returns_what_is_there_at_once_else_waits_for_the_first_record() -> None:
    rd_consumer = FakeRdConsumer([FakeMessage("in", 0, 1)])
    consumer = ConfluentConsumer(rd_consumer, 1.0)  # type: ignore[arg-type]
    assert [r.offset for r in consumer.poll(timeout_ms=200)[("in", 0)]] == [1]
    assert rd_consumer.waited == [("consume", 0)]  # no wait when records are in hand

    rd_consumer.waited = []
    rd_consumer.arriving = [FakeMessage("in", 0, 2), FakeMessage("in", 0, 3)]
    assert [r.offset for r in consumer.poll(timeout_ms=200)[("in", 0)]] == [2, 3]
    # Waits for one record at most 200 ms, then takes what came with it without waiting.
    assert rd_consumer.waited == [("consume", 0), ("poll", 0.2), ("consume", 0)]

    rd_consumer.waited = []
    assert consumer.poll(timeout_ms=50) == {}
    assert rd_consumer.waited == [("consume", 0), ("poll", 0.05)]


def test_a_fatal_consumer_error_is_raised() -> None:
    fatal = [FakeMessage("in", 0, -1, error=rd(LibrdkafkaError._FENCED, fatal=True))]
    with pytest.raises(errors.ProducerFencedError):
        ConfluentConsumer(FakeRdConsumer(fatal), 1.0).poll()  # type: ignore[arg-type]


def test_at_least_once_on_confluent_reroutes_refused_records_then_commits() -> None:
    rd_producer, rd_consumer = FakeRdProducer(max_bytes=10), FakeRdConsumer()
    delivery = AtLeastOnceDelivery(
        ConfluentProducer(rd_producer, 1.0),  # type: ignore[arg-type]
        ConfluentConsumer(rd_consumer, 1.0),  # type: ignore[arg-type]
        flush_timeout_s=1.0,
    )
    big = Outgoing("scores", b"k", b"x" * 50, None, origin=0)
    small = Outgoing("scores", b"k", b"ok", None, origin=1)
    refused: list[Any] = []

    def reroute(records: list[tuple[Outgoing, BaseException]]) -> list[Outgoing]:
        refused.extend(records)
        return [Outgoing("dlq", b"k", b"dead", None, origin=0)]

    assert delivery.publish([big, small], {("in", 0): 8}, reroute=reroute) is True
    assert [type(e) for _, e in refused] == [errors.MessageSizeTooLargeError]
    assert rd_producer.delivered == [("scores", b"ok"), ("dlq", b"dead")]
    assert rd_consumer.commits == [[("in", 0, 8)]]


def test_a_commit_rejected_after_a_rebalance_returns_false_on_confluent() -> None:
    rd_consumer = FakeRdConsumer()
    rd_consumer.commit_error = rd(LibrdkafkaError.ILLEGAL_GENERATION)
    delivery = AtLeastOnceDelivery(
        ConfluentProducer(FakeRdProducer(), 1.0),  # type: ignore[arg-type]
        ConfluentConsumer(rd_consumer, 1.0),  # type: ignore[arg-type]
        flush_timeout_s=1.0,
    )
    assert delivery.publish([Outgoing("scores", b"k", b"v")], {("in", 0): 3}) is False


def test_eager_rebalance_keeps_the_position_of_a_partition_given_back() -> None:
    tracker = PartitionTracker()
    rebalance = confluent_io._Rebalance(tracker, cooperative=False)
    rd_consumer = FakeRdConsumer()
    rebalance.on_assign(rd_consumer, [Partition("in", 0), Partition("in", 1)])  # type: ignore[arg-type]
    rd_consumer.positions = [Partition("in", 0, 40), Partition("in", 1, -1001)]

    rebalance.on_revoke(rd_consumer, [Partition("in", 0), Partition("in", 1)])  # type: ignore[arg-type]
    assert tracker.rebalancing()
    rebalance.on_assign(rd_consumer, [Partition("in", 0), Partition("in", 2)])  # type: ignore[arg-type]

    # in[0] resumes after the records in hand; in[2] (new) and in[1]'s unknown position
    # start where the group committed (-1001: librdkafka's "stored offset").
    assert rd_consumer.assigned == [("in", 0, 40), ("in", 2, -1001)]
    assert tracker.assigned() == {("in", 0), ("in", 2)}
    assert tracker.take_lost() == {("in", 1)}


def test_cooperative_callbacks_leave_the_assignment_to_librdkafka() -> None:
    tracker = PartitionTracker(cooperative=True)
    rebalance = confluent_io._Rebalance(tracker, cooperative=True)
    rd_consumer = FakeRdConsumer()
    rebalance.on_assign(rd_consumer, [Partition("in", 0), Partition("in", 1)])  # type: ignore[arg-type]
    rebalance.on_revoke(rd_consumer, [Partition("in", 1)])  # type: ignore[arg-type]

    assert rd_consumer.assigned is None  # incremental assignment is librdkafka's own
    assert not tracker.rebalancing()
    assert tracker.assigned() == {("in", 0)}
    assert tracker.take_lost() == {("in", 1)}


class WatermarkRdConsumer(FakeRdConsumer):
    """Log ends: cached from fetch responses for ``fetched`` partitions, -1001 (librdkafka's
    "unknown") for the others; every broker request is counted."""

    def __init__(self, fetched: dict[int, int], broker: dict[int, int]) -> None:
        super().__init__()
        self.fetched, self.broker, self.requests = fetched, broker, 0

    def get_watermark_offsets(
        self, tp: Partition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        if cached:
            high = self.fetched.get(tp.partition, -1001)
            return (-1001 if high < 0 else 0), high
        self.requests += 1
        return 0, self.broker[tp.partition]


def test_lag_uses_the_fetched_log_end_and_asks_the_broker_only_when_unknown() -> None:
    rd_consumer = WatermarkRdConsumer(fetched={0: 40}, broker={0: 41, 1: 7})
    consumer = ConfluentConsumer(rd_consumer, 1.0)  # type: ignore[arg-type]
    zero, one = TopicPartition("in", 0), TopicPartition("in", 1)
    assert consumer.end_offsets([zero, one]) == {zero: 40, one: 7}
    assert rd_consumer.requests == 1  # only partition 1, which nothing was fetched from
    assert consumer.beginning_offsets([one]) == {one: 0}


def test_poll_returns_at_most_max_poll_records() -> None:
    messages = [FakeMessage("in", 0, offset) for offset in range(5)]
    consumer = ConfluentConsumer(FakeRdConsumer(messages), 1.0, max_records=2)  # type: ignore[arg-type]
    assert [len(consumer.poll()[("in", 0)]) for _ in range(3)] == [2, 2, 1]


class FullQueueProducer(FakeRdProducer):
    """librdkafka's local queue is full for the first ``full_for`` produce calls."""

    def __init__(self, full_for: int) -> None:
        super().__init__()
        self.full_for = full_for
        self.polls = 0

    def produce(self, topic: str, value: bytes, key: Any, headers: Any, on_delivery: Any) -> None:
        if self.full_for > 0:
            self.full_for -= 1
            raise BufferError("Local: Queue full")
        super().produce(topic, value, key, headers, on_delivery)

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0


def test_a_full_producer_queue_is_waited_on_then_times_out() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 0.5
        return now[0]

    briefly = FullQueueProducer(full_for=2)
    ConfluentProducer(briefly, 10.0, clock=clock).send("scores", b"v")  # type: ignore[arg-type]
    assert (briefly.polls, len(briefly.queued)) == (2, 1)  # deliveries served meanwhile

    stuck = FullQueueProducer(full_for=10**6)
    with pytest.raises(errors.KafkaTimeoutError, match="queue stayed full"):
        ConfluentProducer(stuck, 3.0, clock=clock).send("scores", b"v")  # type: ignore[arg-type]


def test_start_up_failures_name_the_cause_librdkafka_reported() -> None:
    failure = KafkaException(rd(LibrdkafkaError._TRANSPORT))
    seen = [
        "_TRANSPORT: 127.0.0.1:9093/bootstrap: Disconnected",
        "_AUTHENTICATION: sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication error: "
        "Authentication failed during authentication due to invalid credentials",
    ]
    assert confluent_io.explain(failure, seen).startswith(
        "authentication failed: wrong user name or password"
    )
    assert confluent_io.explain(failure, seen[:1]) == repr(failure)


# --------------------------------------------------------------------------- the tools


def test_the_tools_stay_on_kafka_python_whatever_ecg_kafka_library_says(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from clients.kafka_clients import load_kafka_config

    monkeypatch.delenv("ECG_KAFKA_CONFIG", raising=False)
    monkeypatch.setenv("ECG_KAFKA_LIBRARY", "confluent-kafka")  # the worker's, same shell
    monkeypatch.setenv("ECG_SECURITY_PROTOCOL", "SSL")
    assert load_kafka_config(None).consumer_settings() == {"security_protocol": "SSL"}

    config = tmp_path / "worker.yaml"
    config.write_text("kafka:\n  library: confluent-kafka\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="the tools run on kafka-python"):
        load_kafka_config(config)


def test_librdkafka_log_lines_feed_the_diagnosis() -> None:
    errors_seen = confluent_io._Errors()
    confluent_io.LIBRDKAFKA_LOG.addHandler(errors_seen)
    try:
        confluent_io.LIBRDKAFKA_LOG.error(
            "FAIL [ecg-worker#producer-1]: 127.0.0.1:9093/bootstrap: Disconnected: connection "
            "closed by peer: receive 0 after POLLIN (after 1ms in state APIVERSION_QUERY)"
        )
    finally:
        confluent_io.LIBRDKAFKA_LOG.removeHandler(errors_seen)
    cause = confluent_io.explain(KafkaException(rd(LibrdkafkaError._TRANSPORT)), errors_seen.seen)
    assert cause.startswith("the broker closed the connection at its first request")


class MetadataProducer:
    """Records the topics whose metadata was asked for; ``missing`` has none."""

    def __init__(self, missing: str | None = None) -> None:
        self.asked: list[str] = []
        self.missing = missing

    def list_topics(self, topic: str, timeout: float) -> None:
        self.asked.append(topic)
        if topic == self.missing:
            raise KafkaException(LibrdkafkaError(LibrdkafkaError._TIMED_OUT))

    def flush(self, timeout: float) -> int:
        return 0


def test_the_producer_knows_every_output_topic_before_the_first_batch() -> None:
    producer = MetadataProducer()
    confluent_io.warm_up_producer(producer, WorkerConfig(), 1.0)  # type: ignore[arg-type]
    assert producer.asked == list(WorkerConfig().output_topics())


def test_an_output_topic_without_metadata_is_a_broker_error_naming_it() -> None:
    topics = WorkerConfig().topics
    producer = MetadataProducer(missing=topics.dead_letter)
    with pytest.raises(BrokerError, match=f"output topic '{topics.dead_letter}'"):
        confluent_io.warm_up_producer(producer, WorkerConfig(), 1.0)  # type: ignore[arg-type]
