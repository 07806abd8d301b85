"""Secrets: from files and the environment into the Kafka settings, and out of every log line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from worker.core.errors import ConfigError
from worker.service import secrets
from worker.service.config import WorkerConfig, env_help

PASSWORD = "s3cret-Pa55word-xyz"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def secured_yaml(tmp_path: Path, client: str) -> Path:
    return write(
        tmp_path,
        "worker.yaml",
        "kafka:\n  client:\n    security_protocol: SASL_SSL\n"
        "    sasl_mechanism: SCRAM-SHA-512\n    sasl_plain_username: ecg-worker\n" + client,
    )


def test_password_file_supplies_the_password_and_the_trailing_newline_is_dropped(
    tmp_path: Path,
) -> None:
    secret = write(tmp_path, "password", PASSWORD + "\n")
    path = secured_yaml(tmp_path, f"    sasl_plain_password_file: {secret}\n")

    client = WorkerConfig.from_yaml(path, env={}).kafka.client

    assert client["sasl_plain_password"] == PASSWORD
    assert "sasl_plain_password_file" not in client
    assert WorkerConfig.from_yaml(path, env={}).kafka.consumer_settings()["sasl_plain_password"]


def test_environment_password_and_file_override_the_config(tmp_path: Path) -> None:
    path = secured_yaml(tmp_path, "    sasl_plain_password: from-the-file\n")
    secret = write(tmp_path, "mounted", "from-a-secret\n")

    by_value = WorkerConfig.from_yaml(path, env={"ECG_SASL_PASSWORD": "from-env-1"})
    by_file = WorkerConfig.from_yaml(path, env={"ECG_SASL_PASSWORD_FILE": str(secret)})

    assert by_value.kafka.client["sasl_plain_password"] == "from-env-1"
    assert by_file.kafka.client["sasl_plain_password"] == "from-a-secret"


def test_security_settings_come_from_the_environment_alone() -> None:
    env = {
        "ECG_SECURITY_PROTOCOL": "SASL_SSL",
        "ECG_SASL_MECHANISM": "SCRAM-SHA-512",
        "ECG_SASL_USERNAME": "ecg-worker",
        "ECG_SASL_PASSWORD": PASSWORD,
        "ECG_SSL_CAFILE": "/etc/ecg/ca.pem",
    }
    client = WorkerConfig.from_mapping({}, env=env).kafka.client
    assert dict(client) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "ecg-worker",
        "sasl_plain_password": PASSWORD,
        "ssl_cafile": "/etc/ecg/ca.pem",
    }


def test_both_password_and_file_in_the_config_is_an_error(tmp_path: Path) -> None:
    secret = write(tmp_path, "password", PASSWORD)
    path = secured_yaml(
        tmp_path, f"    sasl_plain_password: x1234\n    sasl_plain_password_file: {secret}\n"
    )
    with pytest.raises(ConfigError, match="both set"):
        WorkerConfig.from_yaml(path, env={})


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("\n", "is empty"), ("x" * 5000, "larger than")],
)
def test_unusable_password_file_is_named_without_its_content(
    tmp_path: Path, content: str | None, message: str
) -> None:
    secret = tmp_path / "password"
    if content is not None:
        secret.write_text(content, encoding="utf-8")
    path = secured_yaml(tmp_path, f"    sasl_plain_password_file: {secret}\n")
    with pytest.raises(ConfigError, match=message) as caught:
        WorkerConfig.from_yaml(path, env={})
    assert "sasl_plain_password_file" in str(caught.value)
    assert str(secret) in str(caught.value)
    assert "xxxx" not in str(caught.value)


def test_help_lists_the_security_variables_and_no_value(monkeypatch) -> None:
    monkeypatch.setenv("ECG_SASL_PASSWORD", PASSWORD)
    text = env_help()
    for name in ("ECG_SASL_PASSWORD_FILE", "ECG_SASL_USERNAME", "ECG_SSL_CAFILE"):
        assert name in text
    assert PASSWORD not in text


@pytest.fixture
def captured_log():
    """A root handler with the redaction installed, like ecg-worker's; removed afterwards."""
    from io import StringIO

    stream = StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    secrets.install_log_redaction([PASSWORD])
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_log_lines_of_any_logger_and_level_mask_the_password(captured_log) -> None:
    config = {"sasl_plain_password": PASSWORD, "sasl_plain_username": "ecg-worker"}
    logging.getLogger("kafka.admin.client").debug(
        "Starting KafkaAdminClient with configuration: %s", config
    )
    logging.getLogger("ecg-worker").error("failed with %r", RuntimeError(f"pw={PASSWORD}"))
    try:
        raise ValueError(f"bad password {PASSWORD}")
    except ValueError:
        logging.getLogger("any.other").exception("traceback follows")

    text = captured_log.getvalue()
    assert PASSWORD not in text
    assert text.count(secrets.MASK) == 3  # the config, the message, the traceback
    assert "ecg-worker" in text  # the user name is not a secret


def test_redact_masks_registered_secrets_only() -> None:
    secrets.register_secrets([PASSWORD, "ab"])  # too short to mask safely
    assert secrets.redact(f"cannot log in with {PASSWORD} as ab") == "cannot log in with *** as ab"
