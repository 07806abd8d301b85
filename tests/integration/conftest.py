"""Fixtures for real services (see ``services.py`` for the helpers behind them).

- ``kafka_broker`` (session): this session's own broker; ``.bootstrap_servers``,
  ``.create_topics(names, partitions=1)``, ``.topic_set(partitions=1)``, ``.log_tail()``.
- ``topic_names`` (function): fresh uuid-named topics, already created (``TopicNames``).
- ``kcat`` (session): path of the ``kcat`` binary.
- ``prometheus_bin`` (session): path of the ``prometheus`` binary.
- ``kafka_library`` (function, parametrised): each of the worker's Kafka backends; a test
  that takes it runs once per backend.
- ``start_prometheus`` (function): ``start_prometheus(config) -> PrometheusServer``; every
  server started is stopped when the test ends.

Under ``CI=true`` a service that cannot start fails the test with its log tail; elsewhere
the test is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.integration.services import (
    KafkaBroker,
    PrometheusServer,
    ServiceError,
    TopicNames,
    kcat_path,
    prometheus_binary,
    start_kafka,
    unavailable,
)
from tests.integration.worker_helpers import KAFKA_LIBRARIES


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """This session's own Kafka broker on free loopback ports; stopped at session end."""
    try:
        broker = start_kafka(tmp_path_factory.mktemp("kafka"))
    except ServiceError as exc:
        unavailable(f"local Kafka broker did not start: {exc}")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(params=KAFKA_LIBRARIES)
def kafka_library(request: pytest.FixtureRequest) -> str:
    """The worker's Kafka backend (``kafka.library``): the test runs once on each."""
    return str(request.param)


@pytest.fixture
def topic_names(kafka_broker: KafkaBroker) -> TopicNames:
    """Input/scores/anomalies/dead-letter topics with uuid names, one partition each."""
    try:
        return kafka_broker.topic_set()
    except Exception as exc:
        unavailable(f"cannot create topics: {exc}\n{kafka_broker.log_tail()}")


@pytest.fixture(scope="session")
def kcat() -> str:
    """Path of ``kcat`` (Debian package ``kcat``; installed by ``make system``)."""
    path = kcat_path()
    if path is None:
        unavailable("kcat not found; run 'make system' (Debian package 'kcat')")
    return path


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """Path of ``prometheus`` (Debian package ``prometheus``; installed by ``make system``)."""
    path = prometheus_binary()
    if path is None:
        unavailable("prometheus not found; run 'make system' (Debian package 'prometheus')")
    return path


@pytest.fixture
def start_prometheus(
    prometheus_bin: str, tmp_path: Path
) -> Iterator[Callable[[Mapping[str, Any]], PrometheusServer]]:
    """Factory: ``start_prometheus(config_dict)`` starts a real Prometheus with that config
    (build it with ``services.project_prometheus_config(targets)``) and returns a ready
    ``PrometheusServer``; all are stopped after the test."""
    started: list[PrometheusServer] = []

    def start(config: Mapping[str, Any]) -> PrometheusServer:
        try:
            server = PrometheusServer.start(
                config, tmp_path / f"prometheus-{len(started)}", prometheus_bin
            )
        except ServiceError as exc:
            unavailable(f"prometheus did not start: {exc}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
