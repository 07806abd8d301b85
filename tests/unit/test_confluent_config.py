"""The confluent-kafka side of WorkerConfig, through its public loader (YAML text plus
``ECG_*`` variables in, a frozen config or a ConfigError out): which settings reach which
client, how an ``ECG_*`` variable lands on librdkafka's name, and what an operator reads
when a librdkafka setting is refused. Every error starts with the file it is about."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.core.errors import ConfigError
from worker.service.config import WorkerConfig

CONFLUENT = "kafka:\n  library: confluent-kafka\n"


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> WorkerConfig:
    path = tmp_path / "worker.yaml"
    path.write_text(text, encoding="utf-8")
    return WorkerConfig.from_yaml(path, env=env or {})


def refused(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    """The error after '<file>: '."""
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text, env)
    message = str(raised.value)
    prefix = f"{tmp_path / 'worker.yaml'}: "
    assert message.startswith(prefix), message
    return message[len(prefix) :]


def test_consumer_and_producer_get_only_their_own_librdkafka_settings(tmp_path: Path) -> None:
    config = load(tmp_path, CONFLUENT + "  client:\n    fetch.wait.max.ms: 20\n    linger.ms: 7\n")
    assert config.kafka.consumer_settings() == {"fetch.wait.max.ms": 20}
    assert config.kafka.producer_settings() == {"linger.ms": 7}


def test_a_kafka_section_without_library_is_kafka_python(tmp_path: Path) -> None:
    config = load(tmp_path, "kafka:\n  client:\n    linger_ms: 7\n")
    assert config.kafka.library == "kafka-python"
    assert config.kafka.producer_settings() == {"linger_ms": 7}


def test_ecg_kafka_library_alone_moves_ecg_settings_onto_librdkafka_names(
    tmp_path: Path,
) -> None:
    # No library in the file: the variable decides, and the SASL user lands on
    # librdkafka's name, not kafka-python's.
    env = {"ECG_KAFKA_LIBRARY": "confluent-kafka", "ECG_SASL_USERNAME": "ecg-worker"}
    config = load(tmp_path, "batching:\n  max_wait_ms: 50\n", env)
    assert config.kafka.library == "confluent-kafka"
    assert config.kafka.client["sasl.username"] == "ecg-worker"
    assert "sasl_plain_username" not in config.kafka.client


def test_an_empty_client_section_is_accepted_on_confluent(tmp_path: Path) -> None:
    config = load(tmp_path, CONFLUENT + "  client:\n")
    assert dict(config.kafka.client) == {}


@pytest.mark.parametrize(
    ("client_yaml", "expected"),
    [
        ("  client: [linger.ms]\n", "kafka.client must be a mapping of librdkafka settings"),
        ("  client:\n    1: 2\n", "kafka.client has a non-string key 1"),
        (
            "  client:\n    lingr.ms: 5\n",
            "kafka.client.lingr.ms is not a librdkafka setting (did you mean 'linger.ms'?)",
        ),
        (
            "  client:\n    max_block_ms: 5\n",
            "kafka.client.max_block_ms is not a librdkafka setting (a kafka-python name; "
            "kafka.library is confluent-kafka)",
        ),
        (
            "  client:\n    client.id: x\n",
            "kafka.client.client.id is set by the worker itself and cannot be passed through "
            "(see docs/worker.md)",
        ),
        (
            "  client:\n    linger.ms: 5\n    queue.buffering.max.ms: 5\n",
            "kafka.client.linger.ms and kafka.client.queue.buffering.max.ms name the same "
            "librdkafka setting; keep one",
        ),
    ],
)
def test_refused_librdkafka_settings_say_why(
    tmp_path: Path, client_yaml: str, expected: str
) -> None:
    assert refused(tmp_path, CONFLUENT + client_yaml) == expected


def test_an_unknown_name_that_is_nobodys_gets_no_hint(tmp_path: Path) -> None:
    message = refused(tmp_path, CONFLUENT + "  client:\n    no.such.setting.at.all: 1\n")
    assert message == "kafka.client.no.such.setting.at.all is not a librdkafka setting"


@pytest.mark.parametrize("key", ["delivery.timeout.ms", "message.timeout.ms"])
def test_exactly_once_on_confluent_bounds_the_delivery_timeout_by_the_transaction(
    tmp_path: Path, key: str
) -> None:
    text = CONFLUENT + f"  client:\n    {key}: 60001\ndelivery:\n  mode: exactly_once\n"
    assert refused(tmp_path, text) == (
        "kafka.client.delivery.timeout.ms (60001) must not exceed transaction.timeout.ms "
        "(60000) with delivery.mode exactly_once on confluent-kafka"
    )
    accepted = load(tmp_path, text.replace("60001", "60000"))
    assert accepted.kafka.delivery_timeout_ms == 60000


def test_at_least_once_on_confluent_has_no_transaction_bound(tmp_path: Path) -> None:
    config = load(tmp_path, CONFLUENT + "  client:\n    delivery.timeout.ms: 100000\n")
    assert config.kafka.delivery_timeout_ms == 100000
