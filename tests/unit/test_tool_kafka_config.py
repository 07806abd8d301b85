"""The tools' Kafka settings: --kafka-config and the ECG_* variables, parsed like the worker's."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients import alerts, replay
from clients.kafka_clients import load_kafka_config
from worker.core.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch) -> None:
    for name in ("ECG_KAFKA_CONFIG", "ECG_BOOTSTRAP_SERVERS", "ECG_SASL_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def test_a_kafka_config_file_gives_servers_and_security_with_the_password_from_a_file(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("tools-pass-1\n", encoding="utf-8")
    config = tmp_path / "kafka.yaml"
    config.write_text(
        "kafka:\n  bootstrap_servers: broker:9093\n  client:\n    security_protocol: SASL_SSL\n"
        f"    sasl_plain_username: ecg-tools\n    sasl_plain_password_file: {secret}\n",
        encoding="utf-8",
    )

    kafka = load_kafka_config(config)

    assert kafka.bootstrap_servers == ("broker:9093",)
    assert kafka.producer_settings()["sasl_plain_password"] == "tools-pass-1"
    assert kafka.consumer_settings()["security_protocol"] == "SASL_SSL"


def test_the_environment_alone_configures_the_tools(monkeypatch) -> None:
    monkeypatch.setenv("ECG_BOOTSTRAP_SERVERS", "b1:9093,b2:9093")
    monkeypatch.setenv("ECG_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("ECG_SSL_CAFILE", "/ca.pem")

    kafka = load_kafka_config(None)

    assert kafka.bootstrap_servers == ("b1:9093", "b2:9093")
    assert kafka.consumer_settings() == {"security_protocol": "SSL", "ssl_cafile": "/ca.pem"}


def test_ecg_kafka_config_names_the_default_file_and_bad_keys_are_refused(
    monkeypatch, tmp_path: Path
) -> None:
    config = tmp_path / "kafka.yaml"
    config.write_text("kafka:\n  client:\n    sasl_pasword: x\n", encoding="utf-8")
    monkeypatch.setenv("ECG_KAFKA_CONFIG", str(config))

    with pytest.raises(ConfigError) as caught:
        load_kafka_config(None)
    assert str(caught.value).startswith(str(config))
    assert "unknown kafka-python setting 'kafka.client.sasl_pasword'" in str(caught.value)


@pytest.mark.parametrize("tool", [alerts, replay])
def test_the_tools_offer_kafka_config(tool) -> None:
    args = tool.build_parser().parse_args(["--kafka-config", "k.yaml"])
    assert args.kafka_config == "k.yaml"
    assert "--kafka-config" in tool.build_parser().format_help()
