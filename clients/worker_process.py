"""``ecg-worker`` as a child process: start it with environment overrides, wait until its
``/readyz`` says it holds partitions, scrape its ``/metrics``, stop it with SIGTERM and check
it exited 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from worker.core.errors import EcgError


class WorkerProcessError(EcgError):
    """The worker did not start, died, or did not shut down cleanly."""


def tool_command(name: str) -> list[str]:
    """The console script ``name`` of this installation (next to the Python running us)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which(name)
    if found:
        return [found]
    raise WorkerProcessError(f"{name!r} not found next to {sys.executable} or on PATH")


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file, indented, for an error message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "  (no log)"
    return "\n".join("  | " + line for line in text[-lines:]) or "  (empty log)"


class WorkerProcess:
    """One ``ecg-worker --config CONFIG`` child with its output in ``log_path``."""

    def __init__(
        self, config: Path, env: Mapping[str, str], metrics_port: int, log_path: Path
    ) -> None:
        self.config = config
        self.env = dict(env)
        self.metrics_port = metrics_port
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._process.pid if self._process else None

    def start(self) -> None:
        """Launch the worker (in its own session, so a terminal Ctrl-C reaches only us)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [*tool_command("ecg-worker"), "--config", str(self.config)],
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def check_alive(self) -> None:
        """Raise ``WorkerProcessError`` (with the log tail) when the worker has exited."""
        if self._process is None:
            raise WorkerProcessError("the worker was never started")
        code = self._process.poll()
        if code is not None:
            raise WorkerProcessError(
                f"ecg-worker exited with code {code} (log {self.log_path}):\n"
                + log_tail(self.log_path)
            )

    def wait_ready(self, timeout_s: float) -> float:
        """Poll ``/readyz`` until it answers 200 and owns a partition (a ready worker may be
        a standby without one); returns the seconds it took."""
        url = f"http://127.0.0.1:{self.metrics_port}/readyz"
        started = time.monotonic()
        while True:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    body = response.read().decode("utf-8", errors="replace")
                    if response.status == 200 and "no partitions" not in body:
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or 503 until the group is joined
            if time.monotonic() - started > timeout_s:
                raise WorkerProcessError(
                    f"ecg-worker was not ready ({url}) within {timeout_s:.0f} s "
                    f"(log {self.log_path}):\n" + log_tail(self.log_path)
                )
            time.sleep(0.2)

    def scrape_metrics(self, timeout_s: float = 2.0) -> str:
        """The text of ``/metrics``; raises ``WorkerProcessError`` when it cannot be read."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return response.read().decode("utf-8", errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            raise WorkerProcessError(f"cannot scrape {url}: {exc}") from exc

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s`` (then SIGKILL); returns the exit code."""
        process, self._process = self._process, None
        try:
            if process is None:
                return None
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                    raise WorkerProcessError(
                        f"ecg-worker did not stop within {timeout_s:.0f} s of SIGTERM; killed it "
                        f"(log {self.log_path}):\n" + log_tail(self.log_path)
                    ) from None
            return process.returncode
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
