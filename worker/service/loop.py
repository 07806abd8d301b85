"""The processing loop: consume -> decode -> batch -> score -> publish -> ack -> commit.

Kafka is injected (a consumer with ``poll``/``end_offsets``/``committed``/``position`` and a
``AtLeastOnceDelivery``), and so are the clocks, so unit tests drive the loop with fakes.

Every input record ends as exactly one of: a score (plus an anomaly record when flagged) or
a dead letter. Metrics about windows move only after the batch is committed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from worker.core.codec import (
    NON_FINITE,
    Rejected,
    Window,
    dead_letter_headers,
    decode,
    encode_score,
    reject_window,
    windows_array,
)
from worker.core.scorer import Scorer
from worker.core.segments import batch_abnormal_segments
from worker.service.batcher import Batcher
from worker.service.config import WorkerConfig
from worker.service.delivery import AtLeastOnceDelivery, CommitFailed, Outgoing, ProduceFailed
from worker.service.drift import DriftMonitor
from worker.service.http_server import HealthState
from worker.service.input_schema import InputSchemaCheck
from worker.service.metrics import BatchReport, WorkerMetrics
from worker.service.rebalance import PartitionTracker
from worker.service.rollout import Rollout

log = logging.getLogger(__name__)

# Longest single poll when no batch is open: bounds how late a stop request is noticed.
IDLE_POLL_MS = 200


class Consumer(Protocol):
    """The part of ``kafka.KafkaConsumer`` the loop uses."""

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> Any: ...

    def end_offsets(self, partitions: Any) -> Any: ...

    def committed(self, partition: Any) -> Any: ...

    def beginning_offsets(self, partitions: Any) -> Any: ...


class WorkerLoop:
    """Runs until ``stop()``; then finishes the batch in hand, publishes, commits, returns."""

    def __init__(
        self,
        config: WorkerConfig,
        consumer: Consumer,
        delivery: AtLeastOnceDelivery,
        scorer: Scorer,
        metrics: WorkerMetrics,
        tracker: PartitionTracker,
        health: HealthState,
        drift: DriftMonitor | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        rollout: Rollout | None = None,
    ) -> None:
        self._consumer = consumer
        self._rollout = rollout
        self._delivery = delivery
        self._scorer = scorer
        self._metrics = metrics
        self._tracker = tracker
        self._health = health
        self._drift = drift
        self._clock = clock
        self._wall_ms = wall_ms
        self._topics = config.topics
        self._window_length = scorer.window_length
        self._max_record_bytes = config.limits.max_record_bytes
        self._batcher: Batcher[Window | Rejected] = Batcher(
            config.batching.max_batch_size, config.batching.max_wait_ms, clock
        )
        self._lag_interval_s = config.metrics.lag_interval_ms / 1000.0
        self._next_lag_at = clock()
        self._committed: dict[tuple[str, int], int] = {}
        self._stop = False
        self._input_check = InputSchemaCheck.from_setting(config.validation.input_schema)

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand and return (safe from a signal handler)."""
        self._stop = True

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called."""
        return self._stop

    def run(self) -> None:
        """Process until stopped. Raises ``BrokerError`` when Kafka fails (nothing is
        committed past what was acknowledged, so a restart replays the rest)."""
        self._health.loop_started()
        try:
            while not self._stop:
                self.step()
            self.drain()
        finally:
            self._health.loop_stopped()

    def step(self) -> None:
        """One round: poll (at most until the open batch is due), decode, deliver due batches."""
        self._health.heartbeat()
        if self._rollout is not None:  # between batches: the only place the model changes
            self._scorer = self._rollout.between_batches() or self._scorer
        self._drop_lost_partitions()
        timeout_ms = self._batcher.time_left_ms(IDLE_POLL_MS)
        polled = self._consumer.poll(timeout_ms=timeout_ms)
        self._drop_lost_partitions()
        for records in polled.values():
            for r in records:
                item = decode(
                    r.value,
                    r.key,
                    r.topic,
                    r.partition,
                    r.offset,
                    r.timestamp,
                    self._window_length,
                    self._max_record_bytes,
                )
                if self._input_check is not None and isinstance(item, Window):
                    item = self._input_check.check(item)
                full = self._batcher.add(item)
                if full is not None:
                    self.process(full)
        if self._batcher.due() and not self._tracker.rebalancing():
            self.process(self._batcher.take())
        if self._clock() >= self._next_lag_at:
            self._next_lag_at = self._clock() + self._lag_interval_s
            self.update_lag()

    def drain(self) -> None:
        """Deliver the batch in hand (used on shutdown)."""
        self._drop_lost_partitions()
        if self._tracker.rebalancing():
            # Mid-rebalance at shutdown: keep only partitions still owned; the rest are
            # replayed by their next owner from the last commit.
            owned = self._tracker.assigned()
            self._discard(lambda item: (item.topic, item.partition) in owned, "shutdown")
        if len(self._batcher):
            self.process(self._batcher.take())

    # ------------------------------------------------------------------ one batch

    def process(self, items: list[Window | Rejected]) -> None:
        """Score, publish and commit one batch; then count it."""
        if not items:
            return
        windows = [i for i in items if isinstance(i, Window)]
        rejected = [i for i in items if isinstance(i, Rejected)]
        started = self._clock()
        scores = self._scorer.score(windows_array(windows, self._window_length))
        scoring_s = self._clock() - started
        if not scores.all_scored:
            # Finite in JSON but overflowing the model's float32 input (e.g. 1e300).
            scorable = scores.scorable.tolist()
            for w, ok in zip(windows, scorable, strict=True):
                if not ok:
                    rejected.append(
                        reject_window(w, NON_FINITE, "'values' overflow the model's float32 range")
                    )
            windows = [w for w, ok in zip(windows, scorable, strict=True) if ok]
        messages = self._encode(windows, scores, rejected)
        if self._rollout is not None:
            messages += self._rollout.outputs(windows, scores)
        offsets: dict[tuple[str, int], int] = {}
        for item in items:  # records of one partition arrive in offset order
            offsets[(item.topic, item.partition)] = item.offset + 1
        try:
            committed = self._delivery.publish(messages, offsets)
        except ProduceFailed:
            self._metrics.produce_failures.inc()
            raise
        except CommitFailed:
            self._metrics.commit_failures.inc()
            raise
        if not committed:
            self._metrics.commit_failures.inc()
            return
        acked_ms = self._wall_ms()
        self._committed.update(offsets)
        # End-to-end latency is that of a score: dead letters are counted, not timed.
        stamps = np.fromiter(
            (w.timestamp_ms for w in windows), dtype=np.float64, count=len(windows)
        )
        latencies = (acked_ms - stamps[stamps >= 0]) / 1000.0
        reasons = Counter(r.reason for r in rejected)
        self._metrics.record_batch(
            BatchReport(
                consumed=len(items),
                scored=len(windows),
                anomalous=int(scores.anomalies.sum()),
                rejected=reasons,
                scoring_s=scoring_s,
                errors=scores.errors,
                latencies_s=np.maximum(latencies, 0.0),
            )
        )
        if self._drift is not None and len(windows):
            self._drift.add(scores.errors)
        if self._rollout is not None:
            self._rollout.committed()

    def _encode(
        self, windows: list[Window], scores: Any, rejected: list[Rejected]
    ) -> list[Outgoing]:
        scores_topic, anomalies_topic = self._topics.scores, self._topics.anomalies
        threshold = self._scorer.threshold
        version = self._scorer.model_version
        now_ms = self._wall_ms()
        errors = scores.errors.tolist()
        flags = scores.anomalies.tolist()
        flagged = np.flatnonzero(scores.anomalies)
        segments = iter(batch_abnormal_segments(scores.sample_errors[flagged]))
        messages: list[Outgoing] = []
        append = messages.append
        for i, w in enumerate(windows):
            error, flag = errors[i], flags[i]
            value = encode_score(w, error, flag, threshold, version, now_ms)
            append(Outgoing(scores_topic, w.key, value))
            if flag:
                value = encode_score(w, error, flag, threshold, version, now_ms, next(segments))
                append(Outgoing(anomalies_topic, w.key, value))
        dlq = self._topics.dead_letter
        for r in rejected:
            append(Outgoing(dlq, r.key, r.value, dead_letter_headers(r)))
        return messages

    # ------------------------------------------------------------------ partitions, lag

    def _drop_lost_partitions(self) -> None:
        lost = self._tracker.take_lost()
        if not lost:
            return
        self._discard(lambda item: (item.topic, item.partition) not in lost, "rebalance")
        for topic, partition in lost:
            self._committed.pop((topic, partition), None)
            self._metrics.forget_partition(topic, partition)

    def _discard(self, keep: Callable[[Window | Rejected], bool], why: str) -> None:
        dropped = self._batcher.discard(keep)
        if dropped:
            log.info(
                "%s: dropped %d uncommitted records of partitions no longer owned; their new "
                "owner replays them from the last commit",
                why,
                len(dropped),
            )

    def update_lag(self) -> None:
        """Refresh ``ecg_consumer_lag_records`` (log end offset minus committed offset)."""
        owned = sorted(self._tracker.assigned())
        if not owned:
            return
        partitions = [TopicPartition(t, p) for t, p in owned]
        try:
            ends = self._consumer.end_offsets(partitions)
            starts: dict[Any, int] | None = None
            for tp in partitions:
                key = (tp.topic, tp.partition)
                committed = self._committed.get(key)
                if committed is None:
                    committed = self._consumer.committed(tp)
                    if committed is not None:
                        self._committed[key] = committed
                if committed is None:  # nothing committed yet: all of the log is lag
                    if starts is None:
                        starts = self._consumer.beginning_offsets(partitions)
                    committed = starts.get(tp, 0)
                end = ends.get(tp)
                if end is not None:
                    self._metrics.set_lag(tp.topic, tp.partition, end - committed)
        except KafkaError as exc:
            log.warning("could not refresh consumer lag: %r", exc)
