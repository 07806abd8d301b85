"""``clients.local_broker``: the demo stops the broker it started, even one cut short."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from clients.local_broker import LocalBroker


class _Script(LocalBroker):
    """A broker whose script calls are recorded; ``start`` is interrupted."""

    def __init__(self, tmp_path: Path) -> None:
        script = tmp_path / "local-kafka.sh"
        script.write_text("")
        super().__init__(port=1, script=script)
        self.calls: list[str] = []

    def _run(self, command: str, capture: bool) -> subprocess.CompletedProcess[str]:
        self.calls.append(command)
        if command == "start":
            raise KeyboardInterrupt  # SIGTERM to ecg-demo while the JVM comes up
        return subprocess.CompletedProcess([command], 1 if command == "status" else 0)


def test_a_start_cut_short_stops_what_it_may_have_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("clients.local_broker._answers", lambda bootstrap: False)
    broker = _Script(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        broker.ensure_running()
    assert broker.calls == ["status", "start", "stop"]
