"""Secrets in the Kafka client settings: read from files, kept out of every log line.

- ``kafka.client.<secret>_file: PATH`` (e.g. ``sasl_plain_password_file``) reads the secret
  from a file, so a Kubernetes Secret or a Docker secret mounted as a file can supply it and
  the config file itself (a ConfigMap) holds no secret. ``ECG_SASL_PASSWORD`` and
  ``ECG_SASL_PASSWORD_FILE`` do the same from the environment (see ``config.ENV_OVERRIDES``).
- ``install_log_redaction(values)`` replaces every secret value with ``***`` in every log
  record of the process, whatever the logger or level: kafka-python logs its whole
  configuration, password included, at DEBUG.
- ``redact(text)`` does the same for text printed outside logging (error messages).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from worker.core.errors import ConfigError

# Settings whose value is a secret: kafka-python's, then librdkafka's (kafka.library
# confluent-kafka), each with its ``_file`` form.
SECRET_CLIENT_KEYS = ("sasl_plain_password", "ssl_password", "sasl.password", "ssl.key.password")
FILE_SUFFIX = "_file"
FILE_KEYS = tuple(key + FILE_SUFFIX for key in SECRET_CLIENT_KEYS)
MASK = "***"
# Environment variables for the Kafka security settings: (name, kafka.client key, help).
SECURITY_ENV = (
    ("ECG_SECURITY_PROTOCOL", "security_protocol", "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    ("ECG_SASL_MECHANISM", "sasl_mechanism", "e.g. SCRAM-SHA-512"),
    ("ECG_SASL_USERNAME", "sasl_plain_username", "SASL user"),
    ("ECG_SASL_PASSWORD", "sasl_plain_password", "SASL password (prefer the _FILE form)"),
    ("ECG_SASL_PASSWORD_FILE", "sasl_plain_password_file", "file holding the SASL password"),
    ("ECG_SSL_CAFILE", "ssl_cafile", "CA certificate(s) to trust (PEM)"),
    ("ECG_SSL_CERTFILE", "ssl_certfile", "client certificate (PEM), for mutual TLS"),
    ("ECG_SSL_KEYFILE", "ssl_keyfile", "client private key (PEM)"),
    ("ECG_SSL_PASSWORD_FILE", "ssl_password_file", "file holding the private key's password"),
)
# Shorter values would mask unrelated text (and are no real password anyway).
MIN_REDACTED_LENGTH = 4
# A secret file is a password, not a document: refuse anything larger (a wrong path).
MAX_SECRET_FILE_BYTES = 4096


def sibling(key: str) -> str | None:
    """``sasl_plain_password`` <-> ``sasl_plain_password_file``; None for other keys.

    An environment override of one replaces the other, so the environment always wins."""
    if key in SECRET_CLIENT_KEYS:
        return key + FILE_SUFFIX
    if key in FILE_KEYS:
        return key[: -len(FILE_SUFFIX)]
    return None


def resolve_secret_files(client: Any, where: str) -> Any:
    """``client`` with each ``<secret>_file`` key replaced by the secret read from that file.

    Raises ``ConfigError`` naming the key and the file (never the content) when the file
    cannot be read, is empty or too large, or when both the secret and its file are set.
    Anything that is not a mapping is returned unchanged (the caller reports it)."""
    if not isinstance(client, Mapping):
        return client
    settings = dict(client)
    for file_key in FILE_KEYS:
        if file_key not in settings:
            continue
        key = file_key[: -len(FILE_SUFFIX)]
        path = settings.pop(file_key)
        if key in settings:
            raise ConfigError(
                f"{where}: kafka.client.{key} and kafka.client.{file_key} are both set; "
                "keep one (a file is better: it stays out of the config)"
            )
        settings[key] = read_secret_file(path, f"{where}: kafka.client.{file_key}")
    return settings


def read_secret_file(path: Any, label: str) -> str:
    """The secret in ``path`` without its trailing newline; ``ConfigError`` otherwise."""
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{label} must be a file path, got {type(path).__name__}")
    source = Path(path)
    try:
        data = source.read_bytes()[: MAX_SECRET_FILE_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {source} ({exc.strerror or exc})") from exc
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{label}: {source} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: {source} is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"{label}: {source} is empty")
    return text


def secret_values(client: Mapping[str, Any]) -> list[str]:
    """The secret values among ``client`` settings (either library's names)."""
    return [
        value for key in SECRET_CLIENT_KEYS if isinstance(value := client.get(key), str) and value
    ]


# --------------------------------------------------------------------------- redaction

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register_secrets(values: Iterable[str]) -> None:
    """Add ``values`` to the process-wide set that ``redact`` masks."""
    global _secrets
    with _lock:
        known = set(_secrets)
        known.update(v for v in values if len(v) >= MIN_REDACTED_LENGTH)
        # Longest first, so a secret that contains another is masked whole.
        _secrets = tuple(sorted(known, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Formats each record's message once, masks the secrets in it and in the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let logging report it as usual
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def install_log_redaction(values: Iterable[str] = ()) -> None:
    """Register ``values`` and put the redacting filter on every handler of the root logger
    and on the last-resort handler. Handler filters see the records of every logger that
    propagates to the root (kafka-python's included), at every level."""
    register_secrets(values)
    handlers = list(logging.getLogger().handlers)
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
