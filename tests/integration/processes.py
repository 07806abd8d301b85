"""Run a command that starts processes of its own, and leave none of them behind.

``subprocess.run(timeout=...)`` kills only the child it started: an ``ecg-demo`` killed that
way leaves its worker (and the Kafka JVM its script started) running. Here the command runs
in a session of its own; when it outlives its timeout, or the test is interrupted (e.g. by
pytest-timeout, whose signal method raises in the test's thread), the whole session gets
SIGTERM (so the command's own cleanup runs), then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import Any

# How long a command gets to clean up after SIGTERM before its whole session is killed.
CLEANUP_GRACE_S = 30.0


def run_bounded(
    command: Sequence[str], timeout_s: float, **popen: Any
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(command, capture_output=True, text=True)`` bounded by ``timeout_s``,
    stopping every process of the command's session on timeout or interruption; raises
    ``subprocess.TimeoutExpired`` (after the cleanup) when the time ran out."""
    process = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        **popen,
    )
    try:
        out, err = process.communicate(timeout=timeout_s)
    except BaseException:
        _stop_session(process)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _stop_session(process: subprocess.Popen[str]) -> None:
    """SIGTERM to the command's session, SIGKILL to what is left after the grace period."""
    for sig, wait_s in ((signal.SIGTERM, CLEANUP_GRACE_S), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.communicate(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            # The leader is gone; its children may not be: kill whatever is left.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        return
