"""A fake producer as strict as kafka-python's ``KafkaProducer.send`` (3.0), for unit tests.

It refuses what kafka-python refuses, the way kafka-python does: ``ValueError`` for a record
whose key and value are both null, ``TypeError`` for a non-bytes key, value or header,
``MessageSizeTooLargeError`` (raised by ``send``) for a record whose estimated size exceeds
``max_request_size``. A broker that refuses records above ``broker_max_bytes`` is modelled by
failing the future with ``MessageSizeTooLargeError`` at ``flush``; ``fail_all`` makes every
future fail with a broker-wide error (``KafkaTimeoutError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.record.default_records import DefaultRecordBatchBuilder


class StrictFuture:
    """A produce future, settled by ``flush``."""

    def __init__(self) -> None:
        self.is_done = False
        self.exception: BaseException | None = None


@dataclass
class Record:
    """One acknowledged record."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class StrictProducer:
    """Accepts exactly what kafka-python accepts; keeps what the 'broker' acknowledged."""

    def __init__(
        self, max_request_size: int = 1048576, broker_max_bytes: int | None = None
    ) -> None:
        self.max_request_size = max_request_size
        self.broker_max_bytes = broker_max_bytes
        self.fail_all = False
        self.acked: list[Record] = []
        self.refused_by_send = 0
        self._pending: list[tuple[Record, int, StrictFuture]] = []

    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Any = None,
        partition: Any = None,
        timestamp_ms: Any = None,
    ) -> StrictFuture:
        try:
            return self._send(topic, value, key, headers)
        except (ValueError, TypeError, MessageSizeTooLargeError):
            self.refused_by_send += 1
            raise

    def _send(self, topic: Any, value: Any, key: Any, headers: Any) -> StrictFuture:
        if not isinstance(topic, str):
            raise TypeError("topic must be a str")
        if key is None and value is None:
            raise ValueError("Need at least one: key or value")
        headers = [] if headers is None else headers
        if not isinstance(headers, list):
            raise TypeError("headers must be list-type")
        if not all(
            isinstance(h, tuple)
            and len(h) == 2
            and isinstance(h[0], str)
            and isinstance(h[1], bytes)
            for h in headers
        ):
            raise TypeError("All headers items must be (str, bytes) tuples")
        for what, data in (("key", key), ("value", value)):
            if data is not None and not isinstance(data, bytes | bytearray | memoryview):
                raise TypeError(f"Unsupported type for serialized {what}: {type(data)}")
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size > self.max_request_size:
            raise MessageSizeTooLargeError(
                f"The message is {size} bytes when serialized which is larger than the "
                "maximum request size you have configured with the max_request_size configuration"
            )
        future = StrictFuture()
        self._pending.append((Record(topic, key, value, list(headers)), size, future))
        return future

    def flush(self, timeout: float | None = None) -> None:
        for record, size, future in self._pending:
            future.is_done = True
            if self.fail_all:
                future.exception = KafkaTimeoutError("Batch expired before acknowledgement")
            elif self.broker_max_bytes is not None and size > self.broker_max_bytes:
                future.exception = MessageSizeTooLargeError("MESSAGE_TOO_LARGE from the broker")
            else:
                self.acked.append(record)
        self._pending = []

    def by_topic(self, topic: str) -> list[Record]:
        """Acknowledged records of one topic."""
        return [r for r in self.acked if r.topic == topic]
