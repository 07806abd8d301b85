"""Why a Kafka connection failed, in one sentence an operator can act on.

kafka-python retries a failing bootstrap until its timeout and then raises
``KafkaTimeoutError: Unable to bootstrap``, whatever the cause: a wrong password, an
untrusted certificate or a plaintext client on a TLS port all look the same. The causes are
only in its log records. ``diagnosing()`` listens to them while clients are built, and
``explain(exc, diagnosis)`` names the most telling one with what to change.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from worker.service.secrets import redact

# (substring of a kafka-python log message, what it means for the operator), most telling first.
_CAUSES = (
    (
        "SaslAuthenticationFailedError",
        "authentication failed: wrong user name or password, or the user does not exist "
        "(check sasl_plain_username and the password / ECG_SASL_PASSWORD_FILE)",
    ),
    (
        "CERTIFICATE_VERIFY_FAILED",
        "the broker's TLS certificate is not trusted: point ssl_cafile (ECG_SSL_CAFILE) at "
        "the CA that signed it",
    ),
    (
        "WRONG_VERSION_NUMBER",
        "TLS handshake failed: this port does not speak TLS (is it the plaintext listener? "
        "check security_protocol and the port)",
    ),
    (
        "UnsupportedSaslMechanismError",
        "the broker does not offer this SASL mechanism (check sasl_mechanism)",
    ),
    (
        "Invalid frame length",
        "the broker answered in another protocol: this port probably expects TLS "
        "(set security_protocol to SSL or SASL_SSL and ssl_cafile)",
    ),
    (
        "IllegalSaslStateError",
        "the broker expects SASL: set security_protocol SASL_SSL and the SASL settings",
    ),
)


class _Listener(logging.Handler):
    """Keeps the connection failures kafka-python logs (redacted)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # pragma: no cover - a malformed record of someone else's
            return
        if "failed" in message or "Connection lost" in message or "Handshake" in message:
            self.messages.append(redact(message))


# Kafka may answer a failed SCRAM login (unknown user, wrong password) by just hanging up.
_SASL_HANG_UP = (
    "socket disconnected",
    "authentication failed: the broker closed the connection during SASL authentication "
    "(an unknown user or a wrong password: check sasl_plain_username and the password)",
)


# A broker's TLS listener drops a plaintext client's request, often without a word.
_PLAINTEXT_HANG_UP = (
    "socket disconnected",
    "the broker hung up at once: this port probably expects TLS (set security_protocol to "
    "SSL or SASL_SSL, and ssl_cafile)",
)


class Diagnosis:
    """What ``diagnosing()`` saw: the failure messages, and the one that explains most."""

    def __init__(self, listener: _Listener, security_protocol: str) -> None:
        self._listener = listener
        protocol = security_protocol.upper()
        self._fallback = _SASL_HANG_UP if protocol.startswith("SASL_") else None
        if protocol == "PLAINTEXT":
            self._fallback = _PLAINTEXT_HANG_UP

    @property
    def messages(self) -> list[str]:
        """Every connection failure logged so far."""
        return list(self._listener.messages)

    def cause(self) -> str | None:
        """The operator's sentence for the most telling failure seen, or None."""
        causes = (*_CAUSES, self._fallback) if self._fallback else _CAUSES
        for needle, meaning in causes:
            if any(needle in message for message in self._listener.messages):
                return meaning
        return None


@contextlib.contextmanager
def diagnosing(security_protocol: str = "PLAINTEXT") -> Iterator[Diagnosis]:
    """Collect kafka-python's connection failures while the block runs (for clients built
    with ``security_protocol``).

    While it runs, those records go to this listener instead of the last-resort stderr
    handler of a process without logging set up (the tools), so a failure prints one
    explained line rather than a page of retries; a configured root handler still gets them."""
    listener = _Listener()
    logger = logging.getLogger("kafka")
    logger.addHandler(listener)
    try:
        yield Diagnosis(listener, security_protocol)
    finally:
        logger.removeHandler(listener)


def explain(exc: BaseException, diagnosis: Diagnosis) -> str:
    """``exc`` as text, with the cause the diagnosis found (if any) in front."""
    text = redact(f"{type(exc).__name__}: {exc}")
    cause = diagnosis.cause()
    return f"{cause} [{text}]" if cause else text
