"""How fast /healthz answers while stalled clients hold connections to the metrics server.

Prints, for each number of stalled clients (connected, half a request sent, then silent),
the probe's answer time and the threads the process holds. Not a pass/fail test: the figures
go into docs/security.md. Run: PYTHONPATH=. python benchmarks/http_slow_clients.py
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

from prometheus_client import CollectorRegistry

from worker.service.http_server import (
    CONNECTION_TIMEOUT_S,
    MAX_CONNECTIONS,
    HealthState,
    MetricsServer,
)


def probe_s(port: int) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=60) as reply:
        reply.read()
    return time.monotonic() - started


def main() -> None:
    print(f"connection timeout {CONNECTION_TIMEOUT_S} s, connection cap {MAX_CONNECTIONS}")
    print(f"{'stalled clients':>16} {'probe answer (s)':>17} {'threads':>8}")
    for count in (0, 50, 200, MAX_CONNECTIONS - 6, MAX_CONNECTIONS + 100):
        health = HealthState(stall_timeout_ms=600_000)
        health.loop_started()
        server = MetricsServer(CollectorRegistry(), health, "127.0.0.1", 0).start()
        clients = []
        try:
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                clients.append(sock)
            time.sleep(0.2)
            seconds = probe_s(server.port)
            print(f"{count:>16} {seconds:>17.3f} {threading.active_count():>8}")
        finally:
            for sock in clients:
                sock.close()
            server.stop()


if __name__ == "__main__":
    main()
