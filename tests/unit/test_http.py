"""The operators' HTTP endpoint: /metrics, /healthz and /readyz on a real socket (port 0)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from tests.fakes import FakeClock
from worker.service.http_server import HealthState, MetricsServer


@pytest.fixture
def served() -> Iterator[tuple[MetricsServer, HealthState, FakeClock, CollectorRegistry]]:
    registry = CollectorRegistry()
    Counter("ecg_windows_consumed", "test counter", registry=registry).inc(3)
    clock = FakeClock()
    health = HealthState(stall_timeout_ms=60000, clock=clock)
    server = MetricsServer(registry, health, "127.0.0.1", 0).start()
    try:
        yield server, health, clock, registry
    finally:
        server.stop()


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_port_zero_binds_a_real_port_and_serves_metrics(served) -> None:
    server, *_ = served
    assert server.port > 0
    status, body = get(server.port, "/metrics")
    assert status == 200
    assert "ecg_windows_consumed_total 3.0" in body


def test_healthz_follows_the_loop(served) -> None:
    server, health, clock, _ = served
    assert get(server.port, "/healthz")[0] == 503  # loop not started yet
    health.loop_started()
    assert get(server.port, "/healthz") == (200, "ok\n")
    clock.advance(61)  # no heartbeat for longer than the stall timeout
    status, body = get(server.port, "/healthz")
    assert status == 503 and "stalled" in body
    health.heartbeat()
    assert get(server.port, "/healthz")[0] == 200
    health.loop_stopped()
    assert get(server.port, "/healthz")[0] == 503


def test_readyz_needs_model_and_group_but_not_a_partition(served) -> None:
    server, health, _, _ = served
    health.loop_started()
    status, body = get(server.port, "/readyz")
    assert status == 503 and "model not loaded" in body
    health.model_loaded = True
    status, body = get(server.port, "/readyz")
    assert status == 503 and "not yet joined" in body
    # Joined with nothing to own (more replicas than partitions, a surge pod): ready.
    health.joined = True
    assert get(server.port, "/readyz") == (200, "ok (no partitions assigned: standby)\n")
    health.partitions = frozenset({("ecg.windows", 0)})
    status, body = get(server.port, "/readyz")
    assert status == 200 and "1 partitions" in body


def test_unknown_path_is_404(served) -> None:
    server, *_ = served
    assert get(server.port, "/nope")[0] == 404
