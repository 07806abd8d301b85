"""Model rollout inside the worker loop: hot reload, shadow scoring, promotion.

The loop calls three hooks, all on its own thread:

- ``between_batches()`` before each round: handles queued requests (SIGHUP, HTTP POST) and
  polls the artifact locations; returns a new primary ``Scorer`` when one was swapped in.
  A batch is scored by the scorer the loop holds when the batch is processed, so no batch
  is ever scored by two models, and each score record names the model that scored it.
- ``outputs(windows, scores, kept)`` for each batch: the shadow's records (its own topic)
  and the per-model counts, pending until
- ``take_counts()``: the counting of that batch, run once it is committed.

A candidate that fails validation or its self-test is refused (an ERROR log line and
``ecg_model_reloads_total{result="refused"}``); the model in place keeps scoring.
Promote = load the shadow's artifact as the primary through the same validation; the
shadow slot is then empty until its location holds a new model.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import numpy as np

from worker.core.artifact import EcgArtifact
from worker.core.codec import Window
from worker.core.scorer import Scorer, Scores
from worker.service.delivery import Outgoing
from worker.service.drift import DriftMonitor
from worker.service.metrics import WorkerMetrics
from worker.service.model_reload import (
    ArtifactWatch,
    ReloadRequest,
    RequestQueue,
    fingerprint,
    load_candidate,
)
from worker.service.rollout_metrics import RolloutMetrics
from worker.service.shadow import score_shadow

log = logging.getLogger(__name__)
# How long an HTTP request waits for the loop to act on it (it holds one of the metrics
# server's two handler threads meanwhile; the loop comes round every few hundred ms).
HTTP_WAIT_S = 10.0


class Rollout:
    """Owns the primary and shadow scorers between batches (see the module docstring)."""

    def __init__(
        self,
        primary: Scorer,
        metrics: RolloutMetrics,
        worker_metrics: WorkerMetrics,
        *,
        artifact_path: Path,
        shadow_path: Path | None = None,
        shadow_topic: str = "",
        watch: bool = True,
        poll_interval_s: float = 2.0,
        drift: DriftMonitor | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.primary = primary
        self.shadow: Scorer | None = None
        self._metrics = metrics
        self._worker_metrics = worker_metrics
        self._drift = drift
        self._artifact_path = artifact_path
        self._shadow_path = shadow_path
        self._shadow_topic = shadow_topic
        self._watch_enabled = watch
        self._interval_s = poll_interval_s
        self._clock = clock
        self._wall_ms = wall_ms
        self._next_poll = clock() + poll_interval_s
        self.requests = RequestQueue()
        # What is there now is what start-up loaded (a replacement in between is caught as
        # "unchanged" or "applied" by the next SIGHUP or change).
        self._watch = ArtifactWatch(artifact_path)
        self._watch.mark_handled()
        self._shadow_watch = ArtifactWatch(shadow_path) if shadow_path is not None else None
        # (role, model_version, errors, flags, threshold) of the batch in flight
        self._pending: list[tuple[str, str, np.ndarray, np.ndarray, float]] = []
        self._pending_agreement: tuple[str, str, dict[str, int]] | None = None
        self._record_primary(primary)
        if self._shadow_watch is not None:
            self._shadow_watch.mark_handled()
            if fingerprint(self._shadow_watch.path) is not None:
                self._try_shadow("start-up")
            else:
                log.info("shadow artifact %s not there yet: watching for it", shadow_path)
        self._metrics.set_shadow(self.shadow.model_version if self.shadow else None)

    # ------------------------------------------------------------------ requests

    def request(self, action: str, trigger: str) -> ReloadRequest:
        """Queue ``reload`` or ``promote`` (safe from a signal handler and other threads)."""
        return self.requests.put(ReloadRequest(action, trigger))

    def http_action(self, action: str) -> tuple[int, str]:
        """Queue ``action`` and wait for the loop's answer: (HTTP status, message)."""
        request = self.request(action, "http")
        if not request.done.wait(HTTP_WAIT_S):
            return 202, f"{action} queued; the loop has not reached it yet\n"
        status = {"applied": 200, "unchanged": 200}.get(request.result, 409)
        return status, f"{request.result}: {request.detail}\n"

    # ------------------------------------------------------------------ loop hooks

    def between_batches(self) -> Scorer | None:
        """Handle requests and poll the locations; the new primary scorer, if swapped."""
        before = self.primary
        for request in self.requests.take_all():
            if request.action == "promote":
                result, detail = self._promote(request.trigger)
            else:
                result, detail = self._try_primary(self._artifact_path, request.trigger)
                self._watch.mark_handled()
            request.answer(result, detail)
        if self._watch_enabled and self._clock() >= self._next_poll:
            self._next_poll = self._clock() + self._interval_s
            if self._watch.changed():
                self._try_primary(self._artifact_path, "watch")
                self._watch.mark_handled()
            if self._shadow_watch is not None and self._shadow_watch.changed():
                self._try_shadow("watch")
                self._shadow_watch.mark_handled()
        return self.primary if self.primary is not before else None

    def outputs(
        self, windows: Sequence[Window], scores: Scores, kept: np.ndarray | None = None
    ) -> list[Outgoing]:
        """The shadow's records for a batch the primary scored (``scores`` aligned with
        ``windows``; ``kept`` masks the windows whose score records are being published).
        The per-model counts wait for ``take_counts()``."""
        errors, flags = scores.errors, scores.anomalies
        if kept is not None and not kept.all():
            windows = [w for w, ok in zip(windows, kept.tolist(), strict=True) if ok]
            errors, flags = errors[kept], flags[kept]
        primary = self.primary
        self._pending = [("primary", primary.model_version, errors, flags, primary.threshold)]
        self._pending_agreement = None
        if self.shadow is None or not windows:
            return []
        batch = score_shadow(self.shadow, windows, flags, self._shadow_topic, self._wall_ms())
        shadow = self.shadow
        self._pending.append(
            ("shadow", shadow.model_version, batch.errors, batch.flags, shadow.threshold)
        )
        self._pending_agreement = (
            primary.model_version,
            shadow.model_version,
            batch.agreement.as_dict(),
        )
        return batch.messages

    def take_counts(self) -> Callable[[], None]:
        """The counting of the last ``outputs``' batch, to run once that batch is committed
        (the worker may commit several acknowledged batches at once). A score the producer
        then refused, rare, became a dead letter but is still counted."""
        pending, agreement = self._pending, self._pending_agreement
        self._pending, self._pending_agreement = [], None
        metrics = self._metrics

        def count() -> None:
            for role, version, errors, flags, threshold in pending:
                if errors.size == 0:
                    continue
                metrics.scored.labels(role, version).inc(errors.size)
                metrics.anomalous.labels(role, version).inc(int(flags.sum()))
                if threshold > 0:  # a zero threshold (every window anomalous) has no ratio
                    ratio = errors / np.float32(threshold)
                    metrics.error_ratio.observe_many((role, version), ratio)
            if agreement is not None:
                primary, shadow, counts = agreement
                for outcome, n in counts.items():
                    metrics.agreement.labels(primary, shadow, outcome).inc(n)

        return count

    # ------------------------------------------------------------------ swapping

    def _validate(self, path: Path, role: str, trigger: str) -> EcgArtifact | str:
        try:
            artifact, checked = load_candidate(path, self.primary.window_length)
        except Exception as exc:  # any failure to load a candidate refuses it, never the worker
            self._metrics.reloads.labels(role, "refused").inc()
            log.error(
                "%s model reload (%s) refused, model %s keeps scoring: %s",
                role,
                trigger,
                self.primary.model_version if role == "primary" else self._shadow_version(),
                exc,
            )
            return str(exc)
        if checked == 0:
            log.warning("%s has no self_test reference windows (older artifact)", path)
        return artifact

    def _try_primary(self, path: Path, trigger: str) -> tuple[str, str]:
        candidate = self._validate(path, "primary", trigger)
        if isinstance(candidate, str):
            return "refused", candidate
        if candidate.model_version == self.primary.model_version:
            self._metrics.reloads.labels("primary", "unchanged").inc()
            return "unchanged", f"model {candidate.model_version} is already scoring"
        old = self.primary.model_version
        self.primary = Scorer(candidate)
        self._record_primary(self.primary)
        self._worker_metrics.set_model(candidate)
        if self._drift is not None:
            self._drift.restart(candidate.training_error_quantiles)
        self._metrics.reloads.labels("primary", "applied").inc()
        if self.shadow is not None:
            self._metrics.start_agreement(candidate.model_version, self.shadow.model_version)
        log.info(
            "model %s swapped in for %s (%s, from %s; threshold %.6g by %s); "
            "the next batch is scored by it",
            candidate.model_version,
            old,
            trigger,
            candidate.path,
            candidate.threshold,
            candidate.threshold_rule,
        )
        return "applied", f"model {candidate.model_version} replaces {old}"

    def _try_shadow(self, trigger: str) -> tuple[str, str]:
        assert self._shadow_path is not None
        candidate = self._validate(self._shadow_path, "shadow", trigger)
        if isinstance(candidate, str):
            return "refused", candidate
        if self.shadow is not None and candidate.model_version == self.shadow.model_version:
            self._metrics.reloads.labels("shadow", "unchanged").inc()
            return "unchanged", f"shadow {candidate.model_version} is already scoring"
        self.shadow = Scorer(candidate)
        self._metrics.set_shadow(candidate.model_version)
        self._metrics.start_model("shadow", candidate.model_version)
        self._metrics.start_agreement(self.primary.model_version, candidate.model_version)
        self._metrics.reloads.labels("shadow", "applied").inc()
        log.info(
            "shadow model %s scoring alongside %s (%s, from %s); its scores go to %s",
            candidate.model_version,
            self.primary.model_version,
            trigger,
            candidate.path,
            self._shadow_topic,
        )
        return "applied", f"shadow {candidate.model_version} scoring to {self._shadow_topic}"

    def _promote(self, trigger: str) -> tuple[str, str]:
        if self._shadow_path is None or self.shadow is None:
            return "refused", "no shadow model to promote"
        result, detail = self._try_primary(self._shadow_path, f"promote via {trigger}")
        if result == "applied":
            self.shadow = None
            self._metrics.set_shadow(None)
            log.info(
                "promoted: a restart loads %s again unless it now holds this model",
                self._artifact_path,
            )
        return result, detail

    def _shadow_version(self) -> str:
        return self.shadow.model_version if self.shadow is not None else "(none)"

    def _record_primary(self, scorer: Scorer) -> None:
        self._metrics.start_model("primary", scorer.model_version)


def install_sighup(rollout: Rollout) -> Callable[[], None]:
    """SIGHUP asks for a reload of the artifact location; returns a function that restores
    the previous handler."""

    def handler(signum: int, frame: FrameType | None) -> None:
        rollout.request("reload", "signal")

    previous = signal.signal(signal.SIGHUP, handler)

    def restore() -> None:
        signal.signal(signal.SIGHUP, previous)

    return restore
