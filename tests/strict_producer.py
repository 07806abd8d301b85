"""Kept for tests written before the strict producer moved into ``tests/fakes.py``:
``FakeProducer`` now refuses what kafka-python refuses. New tests import it from there."""

from __future__ import annotations

from tests.fakes import DEFAULT_MAX_REQUEST_SIZE, FakeProducer


def StrictProducer(
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE, broker_max_bytes: int | None = None
) -> FakeProducer:
    """A ``FakeProducer`` with these limits (a function under the old class name)."""
    return FakeProducer(max_request_size=max_request_size, broker_max_bytes=broker_max_bytes)
