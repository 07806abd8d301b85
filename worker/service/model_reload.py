"""Hot reload of the model: where a replaced artifact is noticed, and how it is validated.

The artifact location is a directory path (``artifact`` in worker.yaml). The trainer
replaces it atomically (``write_artifact`` exchanges a complete, verified directory into place),
or an operator swaps a symlink (``ln -sfn artifacts/ecg-v2 artifacts/ecg.tmp && mv -T
artifacts/ecg.tmp artifacts/ecg``). Either way the files behind the path change identity.
``ArtifactWatch`` polls a cheap fingerprint (resolved path; inode, size and mtime of
``artifact.json`` and ``weights.npz``) and reports a change only once it has been stable for
one poll, so a directory still being copied in place is not even tried.

``load_candidate`` validates a candidate exactly as start-up does (``load_ecg_artifact``,
same window length) plus the self-test (``worker.core.selftest``). Requests (SIGHUP, HTTP
POST) go through a ``SimpleQueue``, whose ``put`` is safe from a signal handler.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

from worker.core.artifact import ARTIFACT_FILE, WEIGHTS_FILE, EcgArtifact, load_ecg_artifact
from worker.core.selftest import check_self_test

Fingerprint = tuple[object, ...]


def fingerprint(path: Path) -> Fingerprint | None:
    """Identity of the files behind ``path`` now; ``None`` when they are not (all) there."""
    try:
        real = os.path.realpath(path)
        parts: list[object] = [real]
        for name in (ARTIFACT_FILE, WEIGHTS_FILE):
            st = os.stat(os.path.join(real, name))
            parts += [st.st_ino, st.st_size, st.st_mtime_ns]
    except OSError:
        return None
    return tuple(parts)


class ArtifactWatch:
    """Reports when the artifact at ``path`` was replaced (and has stayed put since)."""

    def __init__(self, path: Path, seen: Fingerprint | None = None) -> None:
        self.path = path
        self._handled = seen
        self._last = seen

    def mark_handled(self) -> None:
        """The current content was tried (applied or refused): report it no more."""
        self._handled = self._last = fingerprint(self.path)

    def changed(self) -> bool:
        """True when the location holds something new, unchanged since the previous poll."""
        now = fingerprint(self.path)
        stable = now == self._last
        self._last = now
        return now is not None and stable and now != self._handled


def load_candidate(path: Path, window_length: int) -> tuple[EcgArtifact, int]:
    """Load ``path`` as start-up does and run its self-test; returns the artifact and how
    many reference windows were checked. Raises ``ArtifactError`` (or ``DataError``)."""
    artifact = load_ecg_artifact(path, window_length)
    return artifact, check_self_test(artifact)


@dataclass
class ReloadRequest:
    """An operator's request, answered by the loop between two batches."""

    action: str  # "reload" (the artifact location) or "promote" (the shadow)
    trigger: str  # "signal" or "http", for the log
    done: threading.Event = field(default_factory=threading.Event)
    result: str = "pending"  # applied | unchanged | refused | pending
    detail: str = ""

    def answer(self, result: str, detail: str) -> None:
        """Record the outcome and wake the requester."""
        self.result, self.detail = result, detail
        self.done.set()


class RequestQueue:
    """Requests from other threads and signal handlers to the loop."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[ReloadRequest] = queue.SimpleQueue()

    def put(self, request: ReloadRequest) -> ReloadRequest:
        """Queue ``request`` (safe from a signal handler); returns it."""
        self._queue.put(request)
        return request

    def take_all(self) -> list[ReloadRequest]:
        """Every queued request, oldest first."""
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out
