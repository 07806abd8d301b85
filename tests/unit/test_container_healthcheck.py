"""deploy/docker/healthcheck.py: healthy, starting, and stalled workers (a real HTTP server)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry

from worker.service.http_server import HealthState, MetricsServer

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "healthcheck.py"


def load_script(port: int) -> ModuleType:
    spec = importlib.util.spec_from_file_location("container_healthcheck", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.URL = f"http://127.0.0.1:{port}/healthz"
    return module


@pytest.fixture
def killed() -> list[bool]:
    """The kill_worker calls made (the real one would end the test run)."""
    return []


def run(port: int, calls: list[bool]) -> int:
    script = load_script(port)
    script.kill_worker = lambda: calls.append(True)
    return script.main()


def test_a_healthy_worker_passes_and_a_stalled_one_is_ended(killed: list[bool]) -> None:
    health = HealthState(stall_timeout_ms=60000)
    server = MetricsServer(CollectorRegistry(), health, "127.0.0.1", 0).start()
    try:
        health.loop_started()
        assert run(server.port, killed) == 0
        assert killed == []
        health.loop_stopped()  # /healthz now answers 503
        assert run(server.port, killed) == 1
        assert killed == [True]
    finally:
        server.stop()


def test_a_worker_not_answering_yet_is_reported_but_left_alone(killed: list[bool]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here
    assert run(port, killed) == 1
    assert killed == []
