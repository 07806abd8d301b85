"""Connection failures explained: kafka-python's log records in, one operator sentence out."""

from __future__ import annotations

import logging

from kafka.errors import KafkaTimeoutError

from worker.service.kafka_diagnosis import diagnosing, explain
from worker.service.secrets import register_secrets

TIMEOUT = KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:9093")


def fail_with(*messages: str, protocol: str = "SASL_SSL") -> str:
    with diagnosing(protocol) as diagnosis:
        for message in messages:
            logging.getLogger("kafka.net.manager").warning(message)
    return explain(TIMEOUT, diagnosis)


def test_a_wrong_password_is_named_as_such() -> None:
    text = fail_with(
        "Bootstrap connection to bootstrap-0 failed: KafkaConnectionError: socket disconnected",
        "Bootstrap connection to bootstrap-0 failed: [Error 58] SaslAuthenticationFailedError: "
        "Authentication failed during authentication due to invalid credentials",
    )
    assert text.startswith("authentication failed: wrong user name or password")
    assert text.endswith("Unable to bootstrap from 127.0.0.1:9093]")


def test_a_hang_up_during_sasl_means_an_unknown_user_but_not_for_plaintext() -> None:
    hang_up = "Connection lost: KafkaConnectionError: socket disconnected"
    assert fail_with(hang_up, protocol="SASL_SSL").startswith("authentication failed: the broker")
    assert "probably expects TLS" in fail_with(hang_up, protocol="PLAINTEXT")
    assert fail_with(hang_up, protocol="SSL").startswith("KafkaTimeoutError")


def test_tls_problems_are_told_apart() -> None:
    untrusted = (
        "Connection failed: KafkaConnectionError: Handshake failed: [SSL: "
        "CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
    )
    plaintext_on_tls = "Connection lost: InvalidReceiveError: Invalid frame length: 352518912"
    assert "certificate is not trusted" in fail_with(untrusted)
    assert "expects TLS" in fail_with(plaintext_on_tls, protocol="PLAINTEXT")


def test_nothing_logged_gives_the_plain_error_and_secrets_stay_masked() -> None:
    register_secrets(["hunter2-password"])
    assert fail_with(protocol="PLAINTEXT") == (
        "KafkaTimeoutError: KafkaTimeoutError: Unable to bootstrap from 127.0.0.1:9093"
    )
    with diagnosing() as diagnosis:
        logging.getLogger("kafka.conn").error("Connection lost: pw hunter2-password failed")
    assert diagnosis.messages == ["Connection lost: pw *** failed"]
