"""The development broker, driven through ``deploy/kafka/local-kafka.sh``.

``ensure_running()`` remembers whether it started the broker, so the caller stops only
what it started: a broker that was already up (ours or anyone's on that port) is left alone.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kafka.errors import KafkaError

from worker.core.errors import BrokerError

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "deploy" / "kafka" / "local-kafka.sh"
# A broker start formats storage and loads a JVM; the script has its own 60 s limit.
SCRIPT_TIMEOUT_S = 180.0


@dataclass
class LocalBroker:
    """A local single-node broker on ``127.0.0.1:port``."""

    port: int = 9092
    data_dir: Path | None = None
    script: Path = SCRIPT
    started_here: bool = False

    @property
    def bootstrap_servers(self) -> str:
        """The client address."""
        return f"127.0.0.1:{self.port}"

    def ensure_running(self) -> str:
        """Start the broker unless one already answers on the port; returns how it went."""
        if not self.script.is_file():
            raise BrokerError(
                f"{self.script} not found: ecg-demo needs a source checkout of the project "
                "(or pass --bootstrap-servers to use a running broker)"
            )
        if self._run("status", capture=True).returncode == 0:
            return f"using the local broker already running on {self.bootstrap_servers}"
        if _answers(self.bootstrap_servers):
            return f"using the Kafka broker already answering on {self.bootstrap_servers}"
        try:
            result = self._run("start", capture=False)
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM) or timed out mid-start: the JVM may be up already
            # and nothing else was running here, so it is ours to stop.
            self._run("stop", capture=False)
            raise
        if result.returncode != 0:
            raise BrokerError(
                f"the local broker did not start on {self.bootstrap_servers} (see the log above)"
            )
        self.started_here = True
        return f"started a local broker on {self.bootstrap_servers}"

    def stop_if_started(self) -> None:
        """Stop the broker when this object started it."""
        if self.started_here:
            self._run("stop", capture=False)
            self.started_here = False

    def _run(self, command: str, capture: bool) -> subprocess.CompletedProcess[str]:
        args = ["bash", str(self.script), "--port", str(self.port)]
        if self.data_dir is not None:
            args += ["--data-dir", str(self.data_dir)]
        try:
            return subprocess.run(
                [*args, command],
                text=True,
                timeout=SCRIPT_TIMEOUT_S,
                stdout=subprocess.PIPE if capture else sys.stderr,
                stderr=subprocess.PIPE if capture else sys.stderr,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(
                f"local-kafka.sh {command} did not finish within {SCRIPT_TIMEOUT_S:.0f} s"
            ) from exc


def _answers(bootstrap_servers: str) -> bool:
    """True when a Kafka broker answers at ``bootstrap_servers`` within a few seconds."""
    from kafka import KafkaAdminClient

    host, _, port = bootstrap_servers.rpartition(":")
    try:  # a refused connection answers at once; only a listening port needs the Kafka probe
        socket.create_connection((host, int(port)), timeout=2).close()
    except (OSError, ValueError):
        return False
    try:
        client = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            bootstrap_timeout_ms=3000,
            request_timeout_ms=3000,
            client_id="ecg-demo-probe",
        )
    except (KafkaError, OSError):
        return False
    client.close()
    return True
