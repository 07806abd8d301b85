"""Kafka client construction shared by the tools: one place for defaults and error wording.

kafka-python reports an unreachable broker as ``KafkaTimeoutError`` / ``NoBrokersAvailable``;
the tools turn that into a ``BrokerError`` that names the address, so a CLI prints one line.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from worker.core.errors import BrokerError, ConfigError
from worker.service.config import KafkaConfig, WorkerConfig
from worker.service.kafka_diagnosis import diagnosing, explain
from worker.service.secrets import install_log_redaction, secret_values

BOOTSTRAP_ENV = "ECG_BOOTSTRAP_SERVERS"
KAFKA_CONFIG_ENV = "ECG_KAFKA_CONFIG"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
# How long a tool waits for the first broker answer before it gives up with a clear error.
BOOTSTRAP_TIMEOUT_MS = 10_000


def default_bootstrap() -> str:
    """Bootstrap servers from ``$ECG_BOOTSTRAP_SERVERS``, else the local broker's address."""
    return os.environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP


BOOTSTRAP_EPILOG = f"Environment: {BOOTSTRAP_ENV} sets the default --bootstrap-servers."


def add_bootstrap_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--bootstrap-servers`` option shared by the client tools (see ``default_bootstrap``)."""
    parser.add_argument(
        "--bootstrap-servers",
        default=None,
        help=f"Kafka bootstrap servers (default: ${BOOTSTRAP_ENV}, else 127.0.0.1:9092)",
    )


def add_kafka_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--kafka-config YAML``: how the tools reach a secured broker (see ``load_kafka_config``)."""
    parser.add_argument(
        "--kafka-config",
        default=None,
        metavar="YAML",
        help="Kafka connection and security settings, read like the worker's config file (its "
        "kafka section: bootstrap_servers and client: security_protocol, sasl_*, ssl_*, "
        "sasl_plain_password_file); ECG_BOOTSTRAP_SERVERS, ECG_SECURITY_PROTOCOL, "
        f"ECG_SASL_* and ECG_SSL_* override it (default: ${KAFKA_CONFIG_ENV}, else none)",
    )


def load_kafka_config(path: str | os.PathLike[str] | None = None) -> KafkaConfig:
    """The tools' Kafka settings: ``path`` (else ``$ECG_KAFKA_CONFIG``) parsed as a worker
    config with the same ``ECG_*`` overrides, or just the overrides when there is no file.

    One parser for the worker and the tools, so a setting means the same in both. The
    secrets found are masked in every log line from here on. Raises ``ConfigError``."""
    source = path or os.environ.get(KAFKA_CONFIG_ENV)
    # The tools always run on kafka-python: a worker's ECG_KAFKA_LIBRARY in the same shell
    # must not turn the ECG_SASL_*/ECG_SSL_* variables into librdkafka names.
    env = {k: v for k, v in os.environ.items() if k != "ECG_KAFKA_LIBRARY"}
    config = (
        WorkerConfig.from_yaml(source, env=env)
        if source
        else WorkerConfig.from_mapping({}, env=env)
    )
    if config.kafka.confluent:
        raise ConfigError(
            f"{source}: kafka.library is confluent-kafka, but the tools run on kafka-python: "
            "give them a file with kafka-python settings (docs/worker.md)"
        )
    install_log_redaction(secret_values(config.kafka.client))
    return config.kafka


def make_producer(bootstrap_servers: str, **config: Any) -> KafkaProducer:
    """A producer that waits for every in-sync replica (``acks=all``) before a send counts."""
    settings = {
        "acks": "all",
        "linger_ms": 5,
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
        "client_id": "ecg-tools",
        **config,
    }
    with diagnosing(settings.get("security_protocol", "PLAINTEXT")) as diagnosis:
        try:
            return KafkaProducer(bootstrap_servers=bootstrap_servers, **settings)
        except KafkaError as exc:
            raise BrokerError(
                f"cannot reach Kafka at {bootstrap_servers}: {explain(exc, diagnosis)}"
            ) from exc


def make_consumer(bootstrap_servers: str, **config: Any) -> KafkaConsumer:
    """A consumer with no group by default (reads without committing anything) that sees
    committed transactions only."""
    settings = {
        "group_id": None,
        "enable_auto_commit": False,
        # Skip outputs of aborted transactions (the worker's exactly-once mode); the same
        # as read_uncommitted for a non-transactional producer.
        "isolation_level": "read_committed",
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
        "client_id": "ecg-tools",
        **config,
    }
    with diagnosing(settings.get("security_protocol", "PLAINTEXT")) as diagnosis:
        try:
            return KafkaConsumer(bootstrap_servers=bootstrap_servers, **settings)
        except KafkaError as exc:
            raise BrokerError(
                f"cannot reach Kafka at {bootstrap_servers}: {explain(exc, diagnosis)}"
            ) from exc


def require_topic(consumer: KafkaConsumer, topic: str, bootstrap_servers: str) -> None:
    """Raise ``BrokerError`` when ``topic`` does not exist (instead of waiting forever)."""
    try:
        topics = consumer.topics()
    except KafkaError as exc:
        raise BrokerError(f"cannot list topics on {bootstrap_servers}: {exc}") from exc
    if topic not in topics:
        # With ACLs a broker lists only the topics this user may describe.
        raise BrokerError(
            f"topic {topic!r} does not exist on {bootstrap_servers}, or this user is not "
            "allowed to see it (ACLs)"
        )
