"""One small HTTP server for operators: ``/metrics``, ``/healthz`` and ``/readyz``.

- ``/metrics``: Prometheus exposition of the worker's registry.
- ``/healthz``: 200 while the processing loop runs and has come round recently; 503 once
  it stopped or stalled (a restart is the fix).
- ``/readyz``: 200 only when the model is loaded and input partitions are assigned; 503
  otherwise (during start-up, a rebalance, or when a worker has no partition).

It runs on a daemon thread (stdlib ``ThreadingHTTPServer``); ``port=0`` binds any free
port, reported by ``MetricsServer.port``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HealthState:
    """Liveness and readiness, written by the loop and read by the HTTP thread."""

    def __init__(self, stall_timeout_ms: int, clock: Callable[[], float] = time.monotonic):
        self._stall_s = stall_timeout_ms / 1000.0
        self._clock = clock
        self._lock = threading.Lock()
        self._running = False
        self._beat = clock()
        self.model_loaded = False
        self.partitions: frozenset[tuple[str, int]] = frozenset()

    def loop_started(self) -> None:
        """The processing loop is running."""
        with self._lock:
            self._running = True
            self._beat = self._clock()

    def heartbeat(self) -> None:
        """The loop came round once more."""
        self._beat = self._clock()

    def loop_stopped(self) -> None:
        """The processing loop ended (normally or not)."""
        with self._lock:
            self._running = False

    def alive(self) -> tuple[bool, str]:
        """Whether the loop runs and has not stalled, with a reason."""
        with self._lock:
            running, beat = self._running, self._beat
        if not running:
            return False, "processing loop is not running"
        idle = self._clock() - beat
        if idle > self._stall_s:
            return False, f"processing loop stalled for {idle:.0f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Whether the worker can score: model loaded and partitions assigned."""
        live, why = self.alive()
        if not live:
            return False, why
        if not self.model_loaded:
            return False, "model not loaded"
        if not self.partitions:
            return False, "no input partitions assigned"
        return True, f"ok ({len(self.partitions)} partitions)"


class MetricsServer:
    """Serves the registry and the health state over HTTP on a background thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        health: HealthState,
        host: str,
        port: int,
        actions: Mapping[str, Callable[[], tuple[int, str]]] | None = None,
    ) -> None:
        """``actions``: POST paths (e.g. ``/reload``) -> handler returning (status, text);
        none by default."""
        handler = _make_handler(registry, health, dict(actions or {}))
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ecg-metrics-http", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port (the real one when configured with 0)."""
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        """Start serving; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _make_handler(
    registry: CollectorRegistry,
    health: HealthState,
    actions: Mapping[str, Callable[[], tuple[int, str]]],
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            action = actions.get(self.path.split("?", 1)[0])
            if action is None:
                self._send(404, b"not found\n", "text/plain")
                return
            status, text = action()
            self._send(status, text.encode(), "text/plain; charset=utf-8")

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._status(*health.alive())
            elif path == "/readyz":
                self._status(*health.ready())
            else:
                self._send(404, b"not found: try /metrics, /healthz, /readyz\n", "text/plain")

        def _status(self, ok: bool, reason: str) -> None:
            self._send(200 if ok else 503, f"{reason}\n".encode(), "text/plain; charset=utf-8")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes every few seconds would flood the log; stay quiet."""

    return Handler
