"""One small HTTP server for operators: ``/metrics``, ``/healthz`` and ``/readyz``.

- ``/metrics``: Prometheus exposition of the worker's registry.
- ``/healthz``: 200 while the processing loop runs and has come round recently; 503 once
  it stopped or stalled (a restart is the fix).
- ``/readyz``: 200 once the model is loaded, the loop runs and the consumer has joined its
  group, whether or not it holds a partition (a spare replica or the surge pod of a rolling
  update is healthy, and must not stall a rollout); 503 during start-up.
- ``POST`` actions (``/reload``, ``/promote`` with ``reload.http: true``): none by default.

The server is waitress (a well-kept pure-Python WSGI server) on one daemon thread. Unlike
a thread per connection, its event loop reads requests without a thread each, so slow or
half-open clients cannot starve the probes: a connection idle for
``CONNECTION_TIMEOUT_S`` is closed, at most ``MAX_CONNECTIONS`` are open at once (more wait
in the listen backlog), a request head is capped at ``MAX_HEADER_BYTES``, and only complete
requests reach the ``THREADS`` handler threads. ``port=0`` binds any free port, reported by
``MetricsServer.port``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, make_wsgi_app
from waitress import wasyncore
from waitress.server import create_server

# A scrape or probe is one small request sent at once: 5 s without a byte means the client
# is gone or stalling on purpose. (Between scrapes Prometheus simply reconnects.)
CONNECTION_TIMEOUT_S = 5
# Prometheus, two probes and a few humans need a handful. A stalled connection costs a socket
# and a small buffer, no thread, so the cap is generous: beyond it new connections (probes
# too) wait in the listen backlog until stalled ones time out. It stays well below the usual
# 1024 open files a container gets.
MAX_CONNECTIONS = 256
MAX_HEADER_BYTES = 8192
THREADS = 2


class HealthState:
    """Liveness and readiness, written by the loop and read by the HTTP thread."""

    def __init__(self, stall_timeout_ms: int, clock: Callable[[], float] = time.monotonic):
        self._stall_s = stall_timeout_ms / 1000.0
        self._clock = clock
        self._lock = threading.Lock()
        self._running = False
        self._beat = clock()
        self.model_loaded = False
        self.joined = False  # the consumer joined its group (first assignment, even empty)
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
        """Whether the worker can score: model loaded, loop running, group joined. Owning
        a partition is not required; the answer says how many it owns."""
        live, why = self.alive()
        if not live:
            return False, why
        if not self.model_loaded:
            return False, "model not loaded"
        if not (self.joined or self.partitions):  # owning a partition implies joined
            return False, "not yet joined the consumer group"
        if not self.partitions:
            return True, "ok (no partitions assigned: standby)"
        return True, f"ok ({len(self.partitions)} partitions)"


class MetricsServer:
    """Serves the registry and the health state over HTTP on a background thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        health: HealthState,
        host: str,
        port: int,
        connection_timeout_s: int = CONNECTION_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        actions: Mapping[str, Action] | None = None,
    ) -> None:
        """``actions``: POST paths (e.g. ``/reload``) -> handler returning (status, text)."""
        self._server: Any = create_server(
            make_app(registry, health, actions),
            host=host,
            port=port,
            threads=THREADS,
            channel_timeout=connection_timeout_s,
            # How often idle connections are looked for: at most a second late.
            cleanup_interval=1,
            connection_limit=max_connections,
            max_request_header_size=MAX_HEADER_BYTES,
            max_request_body_size=0,
            ident="ecg-worker",
            clear_untrusted_proxy_headers=True,
        )
        self._thread = threading.Thread(
            target=self._server.run, name="ecg-metrics-http", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port (the real one when configured with 0)."""
        return int(self._server.effective_port)

    def start(self) -> MetricsServer:
        """Start serving; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and release the port."""
        server = self._server
        if self._thread.is_alive():
            # Sockets belong to the event loop's thread: close them there (the trigger runs
            # the function in that thread); the loop ends when nothing is left to watch.
            server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
            self._thread.join(timeout=5)
        else:
            wasyncore.close_all(server._map)
        server.task_dispatcher.shutdown()


Environ = dict[str, Any]
Action = Callable[[], tuple[int, str]]
StartResponse = Callable[..., Any]
TEXT = "text/plain; charset=utf-8"


def make_app(
    registry: CollectorRegistry,
    health: HealthState,
    actions: Mapping[str, Action] | None = None,
) -> Callable[[Environ, StartResponse], Iterable[bytes]]:
    """The WSGI application: prometheus_client's exposition for /metrics, the probes, the
    POST ``actions`` (none unless given), 404."""
    metrics_app = make_wsgi_app(registry)
    posts = dict(actions or {})

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") == "POST" and path in posts:
            code, text = posts[path]()
            return _reply(start_response, code, text.encode())
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _reply(start_response, 405, b"only GET and HEAD\n", [("Allow", "GET, HEAD")])
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            return _status(start_response, *health.alive())
        if path == "/readyz":
            return _status(start_response, *health.ready())
        return _reply(start_response, 404, b"not found: try /metrics, /healthz, /readyz\n")

    return app


_REASONS = {
    200: "OK",
    202: "Accepted",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    503: "Service Unavailable",
}


def _status(start_response: StartResponse, ok: bool, reason: str) -> list[bytes]:
    return _reply(start_response, 200 if ok else 503, f"{reason}\n".encode())


def _reply(
    start_response: StartResponse,
    code: int,
    body: bytes,
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    headers = [("Content-Type", TEXT), ("Content-Length", str(len(body))), *(extra or [])]
    start_response(f"{code} {_REASONS[code]}", headers)
    return [body]
