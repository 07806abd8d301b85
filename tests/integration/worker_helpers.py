"""Helpers for integration tests that run a real ``ecg-worker`` and look at what it did:
read a topic back, call its HTTP endpoints, parse a real scrape of ``/metrics``.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

# One sample of a scrape: (sample name, sorted label pairs).
SampleKey = tuple[str, tuple[tuple[str, str], ...]]
# The worker's two Kafka backends (``kafka.library``); integration tests run on each.
KAFKA_LIBRARIES = ("kafka-python", "confluent-kafka")
# kafka-python settings the tests use whose librdkafka name is not the dotted form, or
# which have no librdkafka counterpart (None: librdkafka's produce never blocks).
_LIBRDKAFKA_NAMES: dict[str, str | None] = {
    "max_block_ms": None,
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "sasl_plain_password_file": "sasl.password_file",
    "ssl_cafile": "ssl.ca.location",
}


def client_settings(library: str, settings: dict[str, Any]) -> dict[str, Any]:
    """kafka-python ``kafka.client`` settings of a test, in ``library``'s names (the same
    meaning on both backends: ``session_timeout_ms`` -> ``session.timeout.ms``)."""
    if library == "kafka-python":
        return dict(settings)
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = _LIBRDKAFKA_NAMES.get(key, key.replace("_", "."))
        if name is not None:
            out[name] = value
    return out


def http_get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, str]:
    """``GET http://127.0.0.1:PORT/PATH`` -> (status, body); a 4xx/5xx is an answer, not an
    error. Raises ``OSError`` when nothing listens (yet)."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", errors="replace")


def parse_scrape(text: str) -> dict[SampleKey, float]:
    """Every sample of a Prometheus text exposition, keyed by name and sorted labels."""
    samples: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def sample(samples: dict[SampleKey, float], name: str, **labels: str) -> float | None:
    """The value of one sample of ``parse_scrape`` output, or None when it is not exposed."""
    return samples.get((name, tuple(sorted(labels.items()))))


def read_topic(
    bootstrap: str,
    topic: str,
    until: int,
    timeout_s: float = 30.0,
    exact_wait_s: float = 0.0,
    settled: Callable[[], bool] | None = None,
) -> list[Any]:
    """Every record of ``topic`` (all partitions) from the beginning, once ``until`` have
    arrived or ``timeout_s`` passed; then ``exact_wait_s`` more to catch unexpected extras.

    With ``settled`` (e.g. ``inputs_committed``), once ``until`` arrived it waits (within
    ``timeout_s``) until ``settled()`` is true and then reads up to the log end as it was
    then: every record that could still come is in, so a late extra cannot go unseen."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        extra_deadline: float | None = None
        ends: dict[Any, int] | None = None
        while True:
            now = time.monotonic()
            if len(records) >= until and settled is not None and ends is None and settled():
                ends = consumer.end_offsets(partitions)
            if ends is not None and all(consumer.position(tp) >= ends[tp] for tp in partitions):
                return records
            if len(records) >= until and extra_deadline is None and settled is None:
                extra_deadline = now + exact_wait_s
            if (extra_deadline is not None and now >= extra_deadline) or now >= deadline:
                return records
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
    finally:
        consumer.close()


def inputs_committed(bootstrap: str, group: str, topic: str) -> Callable[[], bool]:
    """A ``settled`` for ``read_topic``: true once ``group`` committed every partition of
    ``topic`` up to its log end. The worker commits a record only after every output of it
    was acknowledged, so from then on no output of these inputs can still arrive."""

    def done() -> bool:
        probe = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        try:
            numbers = sorted(probe.partitions_for_topic(topic) or {0})
        finally:
            probe.close()
        offsets = group_offsets(bootstrap, group, topic, numbers)
        return all(committed == end for committed, end in offsets.values())

    return done


def group_offsets(
    bootstrap: str, group: str, topic: str, partitions: Iterable[int]
) -> dict[int, tuple[int | None, int]]:
    """``{partition: (committed offset of group, log end offset)}`` as the broker sees it."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = consumer.end_offsets(tps)
        return {tp.partition: (consumer.committed(tp), int(ends[tp])) for tp in tps}
    finally:
        consumer.close()
