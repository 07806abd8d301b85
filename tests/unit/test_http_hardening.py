"""The metrics/health endpoint under slow and half-open clients: the probes still answer.

Before, each connection held a thread with no timeout, so 50 half-sent requests held 50
threads. These tests open such clients against a real server on a free port."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from worker.service.http_server import HealthState, MetricsServer


@contextlib.contextmanager
def serving(**options: int) -> Iterator[MetricsServer]:
    registry = CollectorRegistry()
    Counter("ecg_windows_consumed", "test counter", registry=registry).inc(3)
    health = HealthState(stall_timeout_ms=60000)
    health.loop_started()
    health.model_loaded = True
    health.partitions = frozenset({("ecg.windows", 0)})
    server = MetricsServer(registry, health, "127.0.0.1", 0, **options).start()
    try:
        yield server
    finally:
        server.stop()


def get(port: int, path: str, timeout_s: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def open_clients(port: int, count: int, first_bytes: bytes) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first_bytes:
            sock.sendall(first_bytes)
        clients.append(sock)
    return clients


def close_all(clients: list[socket.socket]) -> None:
    for sock in clients:
        sock.close()


def test_probes_answer_while_fifty_clients_hang_half_way_through_a_request() -> None:
    with serving() as server:
        silent = open_clients(server.port, 25, b"")  # connected, never send a byte
        half = open_clients(server.port, 25, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        try:
            started = time.monotonic()
            assert get(server.port, "/healthz", timeout_s=3) == (200, "ok\n")
            assert get(server.port, "/readyz", timeout_s=3)[0] == 200
            status, body = get(server.port, "/metrics", timeout_s=3)
            elapsed = time.monotonic() - started
        finally:
            close_all(silent + half)
    assert status == 200
    assert "ecg_windows_consumed_total 3.0" in body
    assert elapsed < 3.0  # answered at once, not after the stalled clients timed out


def test_a_stalled_connection_is_closed_after_the_timeout() -> None:
    with serving(connection_timeout_s=1) as server:
        (sock,) = open_clients(server.port, 1, b"GET /healthz HTTP/1.1\r\n")
        try:
            started = time.monotonic()
            sock.settimeout(10)
            assert sock.recv(1024) == b""  # the server hung up
            waited = time.monotonic() - started
        finally:
            sock.close()
    assert 0.5 <= waited < 5.0


def test_beyond_the_connection_cap_a_probe_waits_only_until_stalled_clients_time_out() -> None:
    with serving(connection_timeout_s=1, max_connections=8) as server:
        hogs = open_clients(server.port, 8, b"GET /metrics HTTP/1.1\r\n")
        try:
            started = time.monotonic()
            assert get(server.port, "/healthz", timeout_s=10) == (200, "ok\n")
            waited = time.monotonic() - started
        finally:
            close_all(hogs)
    assert waited < 5.0


def test_a_client_trickling_its_request_holds_no_thread_from_the_probes() -> None:
    with serving() as server:
        tricklers = open_clients(server.port, 10, b"G")
        try:
            for piece in (b"ET /me", b"trics HT"):
                for sock in tricklers:
                    sock.sendall(piece)
                assert get(server.port, "/healthz", timeout_s=3) == (200, "ok\n")
        finally:
            close_all(tricklers)


def test_an_oversized_request_head_is_refused() -> None:
    head = b"GET /metrics HTTP/1.1\r\nX-Big: " + b"X" * 20000 + b"\r\n\r\n"
    with serving() as server, socket.create_connection(("127.0.0.1", server.port), 5) as sock:
        sock.sendall(head)
        reply = sock.recv(1024)
    assert reply.startswith(b"HTTP/1.1 431") or reply.startswith(b"HTTP/1.0 431")


def test_only_get_and_head_are_served() -> None:
    with serving() as server:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/metrics", data=b"x", method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
    assert caught.value.code in (405, 413)
