"""The processing loop: consume -> decode -> batch -> score -> publish -> ack -> commit.

Kafka is injected (a consumer with ``poll``/``end_offsets``/``committed``/``position`` and a
``AtLeastOnceDelivery``), and so are the clocks, so unit tests drive the loop with fakes.

Every input record ends as exactly one of: a score (plus an anomaly record when flagged) or
a dead letter. At least once, acknowledged batches are committed together at most every
``delivery.commit_interval_ms`` (at once when the input goes quiet and on the way out).
Metrics about windows move only after the batch is committed. No record can
stop the loop: whatever cannot be decoded, scored, encoded or sent becomes a dead letter
with its reason, and the batch goes on; only a broker failure raises.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from kafka.errors import KafkaError
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.structs import TopicPartition

from worker.core.codec import (
    NON_FINITE,
    OUTPUT_TOO_LARGE,
    SEND_FAILED,
    UNENCODABLE,
    UNSCORABLE,
    FieldLimits,
    Rejected,
    Window,
    decode,
    encode_dead_letter,
    encode_score_and_alert,
    reject_window,
    windows_array,
)
from worker.core.errors import BrokerError
from worker.core.scorer import Scorer, Scores
from worker.core.segments import batch_abnormal_segments
from worker.service.batcher import Batcher
from worker.service.config import WorkerConfig
from worker.service.delivery import CommitFailed, Delivery, Outgoing, ProduceFailed
from worker.service.drift import DriftMonitor
from worker.service.http_server import HealthState
from worker.service.input_schema import InputSchemaCheck
from worker.service.metrics import BatchReport, WorkerMetrics
from worker.service.rebalance import PartitionTracker
from worker.service.rollout import Rollout

log = logging.getLogger(__name__)

# Longest single poll when no batch is open: bounds how late a stop request is noticed.
IDLE_POLL_MS = 200
# Poll timeout while a rebalance holds back a due batch: poll completes the rebalance, and
# a zero timeout would spin the CPU until it does.
REBALANCE_POLL_MS = 100
# Polls without waiting that may top up a due batch: a bound for when each returns all it
# asked for and a batch closes on max_batch_bytes first, so that a step comes back.
MAX_TOP_UP_POLLS = 16
# Records whose key + value are this far below max_request_size need no exact size check.
SIZE_CHECK_SLACK_BYTES = 8192


class Consumer(Protocol):
    """The part of ``kafka.KafkaConsumer`` the loop uses."""

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> Any: ...

    def end_offsets(self, partitions: Any) -> Any: ...

    def committed(self, partition: Any) -> Any: ...

    def beginning_offsets(self, partitions: Any) -> Any: ...

    def seek(self, partition: Any, offset: int) -> None: ...


class WorkerLoop:
    """Runs until ``stop()``; then finishes the batch in hand, publishes, commits, returns."""

    def __init__(
        self,
        config: WorkerConfig,
        consumer: Consumer,
        delivery: Delivery,
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
        limits = config.limits
        self._field_limits = FieldLimits(
            limits.max_field_bytes, limits.max_field_depth, limits.max_field_keys
        )
        self._max_request_size = config.kafka.max_request_size
        self._batcher: Batcher[Window | Rejected] = Batcher(
            config.batching.max_batch_size,
            config.batching.max_wait_ms,
            clock,
            max_bytes=config.limits.max_batch_bytes,
        )
        self._lag_interval_s = config.metrics.lag_interval_ms / 1000.0
        self._next_lag_at = clock()
        # When the last poll returned: what the next poll returns may have been waiting
        # since then (the batch it opens is due max_wait_ms after that).
        self._polled_at = clock()
        self._committed: dict[tuple[str, int], int] = {}
        # At least once: acknowledged batches not committed yet (their next offsets, and
        # the counting of each, done once committed) and when the next commit is due.
        self._commit_interval_s = config.delivery.commit_interval_ms / 1000.0
        self._commit_due_at = clock()
        self._uncommitted: dict[tuple[str, int], int] = {}
        self._uncounted: list[Callable[[], None]] = []
        self._quiet_ms = max(1, min(IDLE_POLL_MS, config.batching.max_wait_ms))
        # Partitions rewound by an aborted batch during this round: the rest of what this
        # poll returned for them is read again after the rewind, so it is not batched now.
        self._rewound: set[tuple[str, int]] = set()
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
        # With nothing in hand and batches not committed yet, a poll as long as a batch
        # wait that brings nothing means the input went quiet: time to commit them.
        quiet = not len(self._batcher)
        idle_ms = self._quiet_ms if self._uncounted else IDLE_POLL_MS
        timeout_ms = self._batcher.time_left_ms(idle_ms)
        if self._tracker.rebalancing():
            timeout_ms = max(timeout_ms, REBALANCE_POLL_MS)
        # A poll asks for what fits in the batch. One that returns fewer has emptied what
        # the consumer held: polling again would wait for the network and chase a fast
        # stream (at 5,700 windows/s each such poll brought 15-60 records in 2-7 ms and held
        # due batches 20-30 ms: docs/benchmarks.md, "Latency"). One that returns all it
        # asked for filled the batch, or left a due remainder when the batch closed on
        # max_batch_bytes: that remainder takes what the consumer holds without waiting.
        wanted = self._batcher.max_size - len(self._batcher)
        got = came = self._poll_into_batch(timeout_ms, wanted)
        for _ in range(MAX_TOP_UP_POLLS):
            if got < wanted or not self._batcher.due() or self._tracker.rebalancing():
                break
            wanted = self._batcher.max_size - len(self._batcher)
            got = self._poll_into_batch(0, wanted)
        if self._batcher.due() and not self._tracker.rebalancing():
            self.process(self._batcher.take())
        if not self._tracker.rebalancing():
            # (Not after any empty poll: the one that waits for a batch to be due is empty
            # often, and committing there would delay the next batch by a round trip.)
            self.commit_acknowledged(force=quiet and not came)
        if self._clock() >= self._next_lag_at:
            self._next_lag_at = self._clock() + self._lag_interval_s
            self.update_lag()

    def _poll_into_batch(self, timeout_ms: int, max_records: int | None) -> int:
        """Poll once; decode what came into the batcher (delivering batches that fill up);
        return how many records the poll returned."""
        try:
            polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:  # e.g. not authorised: exit 1 with one line, no traceback
            raise BrokerError(f"polling {self._topics.input} failed: {exc!r}") from exc
        waiting_since, self._polled_at = self._polled_at, self._clock()
        # A record's timestamp (set by its producer, or the broker's append time) on this
        # clock: kafka-python fetches only when polled, so what arrived while a batch was
        # published comes one poll late and has waited longer than the poll before. A
        # timestamp ahead of this host's clock changes nothing; one far behind (a replay, a
        # producer's slow clock) makes batches due at once, like a backlog.
        polled_wall_ms = self._wall_ms()
        self._drop_lost_partitions()
        self._rewound.clear()
        for records in polled.values():
            for r in records:
                if (r.topic, r.partition) in self._rewound:
                    continue
                item = decode(
                    r.value,
                    r.key,
                    r.topic,
                    r.partition,
                    r.offset,
                    r.timestamp,
                    self._window_length,
                    self._max_record_bytes,
                    self._field_limits,
                )
                if self._input_check is not None and isinstance(item, Window):
                    item = self._input_check.check(item)
                nbytes = len(r.value or b"") + len(r.key or b"")
                since = waiting_since
                if r.timestamp is not None and r.timestamp >= 0:
                    since = min(since, self._polled_at - (polled_wall_ms - r.timestamp) / 1000.0)
                full = self._batcher.add(item, nbytes, since)
                if full is not None:
                    self.process(full)
        return sum(len(records) for records in polled.values())

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
        self.commit_acknowledged(force=True)

    # ------------------------------------------------------------------ one batch

    def process(self, items: list[Window | Rejected]) -> None:
        """Score, publish and commit one batch; then count it."""
        if not items:
            return
        windows = [i for i in items if isinstance(i, Window)]
        rejected = [i for i in items if isinstance(i, Rejected)]
        started = self._clock()
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: see _drop_unscorable
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
        windows, scores = self._drop_unscorable(windows, scores, rejected)
        batch = _Outputs(self, windows, scores, rejected)
        if self._rollout is not None:  # the shadow's records, published with the batch
            batch.messages += self._rollout.outputs(windows, scores, batch.scored_mask())
        offsets: dict[tuple[str, int], int] = {}
        for item in items:  # records of one partition arrive in offset order
            offsets[(item.topic, item.partition)] = item.offset + 1
        # At least once, publish only waits for the acknowledgements (no offsets: nothing
        # to commit); commit_acknowledged commits. A transaction commits with its batch.
        deferred = not self._delivery.atomic
        try:
            committed = self._delivery.publish(
                batch.messages, {} if deferred else offsets, reroute=batch.reroute
            )
        except ProduceFailed:
            self._metrics.produce_failures.inc()
            raise
        except CommitFailed:
            self._metrics.commit_failures.inc()
            raise
        if not committed:
            self._metrics.commit_failures.inc()
            if self._delivery.atomic:
                self._replay(items)
            return
        acked_ms = self._wall_ms()
        # At least once, scores are readable at the acknowledgement; exactly once, at the
        # commit, which publish includes.
        self._batcher.published(self._clock() - started)
        scored = batch.scored_mask()
        windows = [w for w, ok in zip(windows, scored.tolist(), strict=True) if ok]
        errors = scores.errors[scored]
        # End-to-end latency is that of a score: dead letters are counted, not timed.
        stamps = np.fromiter(
            (w.timestamp_ms for w in windows), dtype=np.float64, count=len(windows)
        )
        latencies = (acked_ms - stamps[stamps >= 0]) / 1000.0
        reasons = Counter(r.reason for r in batch.dead_letters())
        report = BatchReport(
            consumed=len(items),
            scored=len(windows),
            anomalous=int(scores.anomalies[scored].sum()),
            rejected=reasons,
            scoring_s=scoring_s,
            errors=errors,
            latencies_s=np.maximum(latencies, 0.0),
        )
        count_rollout = self._rollout.take_counts() if self._rollout is not None else None

        def count() -> None:
            self._metrics.record_batch(report)
            if self._drift is not None and report.scored:
                self._drift.add(report.errors)
            if count_rollout is not None:
                count_rollout()

        if not deferred:
            self._committed.update(offsets)
            count()
            return
        self._uncommitted.update(offsets)
        self._uncounted.append(count)
        self.commit_acknowledged()

    def commit_acknowledged(self, force: bool = False) -> None:
        """At least once: commit the acknowledged batches' offsets when
        ``delivery.commit_interval_ms`` has passed since the last commit (or when ``force``),
        then count those batches. A commit the group rejected (a rebalance) counts nothing:
        the partitions' new owners replay from the last commit. Raises ``CommitFailed``."""
        if not self._uncounted or not (force or self._clock() >= self._commit_due_at):
            return
        offsets, self._uncommitted = self._uncommitted, {}
        counts, self._uncounted = self._uncounted, []
        try:
            committed = self._delivery.commit(offsets)
        except CommitFailed:
            self._metrics.commit_failures.inc()
            raise
        self._commit_due_at = self._clock() + self._commit_interval_s
        if not committed:
            self._metrics.commit_failures.inc()
            return
        self._committed.update(offsets)
        for count in counts:
            count()

    @staticmethod
    def _drop_unscorable(
        windows: list[Window], scores: Scores, rejected: list[Rejected]
    ) -> tuple[list[Window], Scores]:
        """Dead-letter windows whose error is not finite (values near float32's maximum
        overflow inside the model): such an error is not a score, and would turn the
        error histogram's sum into +Inf."""
        ok = np.isfinite(scores.errors)
        if ok.all():
            return windows, scores
        for w, good in zip(windows, ok.tolist(), strict=True):
            if not good:
                rejected.append(
                    reject_window(
                        w,
                        UNSCORABLE,
                        "the reconstruction error is not finite (values too large for the "
                        "model's float32 arithmetic)",
                    )
                )
        kept = [w for w, good in zip(windows, ok.tolist(), strict=True) if good]
        everything = np.ones(len(kept), dtype=bool)
        return kept, Scores(
            scores.errors[ok], scores.anomalies[ok], scores.sample_errors[ok], everything
        )

    def _too_large(self, key: bytes | None, *values: bytes | None) -> tuple[str, str] | None:
        """OUTPUT_TOO_LARGE when a score record would exceed the producer's request size."""
        key_len = len(key) if key is not None else 0
        for value in values:
            if value is None:
                continue
            if key_len + len(value) + SIZE_CHECK_SLACK_BYTES <= self._max_request_size:
                continue
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
            if size > self._max_request_size:
                return OUTPUT_TOO_LARGE, (
                    f"the score record would be {size} bytes, more than the producer's "
                    f"max_request_size ({self._max_request_size})"
                )
        return None

    def _dead_letter(self, rejected: Rejected, origin: int, max_bytes: int) -> Outgoing:
        dead = encode_dead_letter(rejected, max_bytes)
        return Outgoing(self._topics.dead_letter, dead.key, dead.value, dead.headers, origin)

    def _replay(self, items: list[Window | Rejected]) -> None:
        """An aborted transaction left nothing of the batch visible, so its partitions that
        are still ours are read again from their last commit; the rest of the current poll's
        records for them is skipped (``_rewound``) so that nothing is scored twice or out of
        order (a batch is taken whole, so the batcher holds none of them). At least once
        never needs this: its outputs are out.
        """
        first: dict[tuple[str, int], int] = {}
        for item in items:
            first.setdefault((item.topic, item.partition), item.offset)
        owned = self._tracker.assigned()
        for (topic, partition), offset in first.items():
            if (topic, partition) not in owned:
                continue  # the new owner starts at the last commit
            self._rewound.add((topic, partition))
            tp = TopicPartition(topic, partition)
            try:
                committed = self._consumer.committed(tp)
                self._consumer.seek(tp, offset if committed is None else committed)
            except (KafkaError, AssertionError) as exc:
                raise CommitFailed(
                    f"cannot rewind {topic}[{partition}] after an aborted batch: {exc!r}; "
                    "a restart resumes from the last commit"
                ) from exc
            log.info(
                "aborted batch: %s[%d] is read again from offset %s",
                topic,
                partition,
                offset if committed is None else committed,
            )

    # ------------------------------------------------------------------ partitions, lag

    def _drop_lost_partitions(self) -> None:
        lost = self._tracker.take_lost()
        if not lost:
            return
        self._discard(lambda item: (item.topic, item.partition) not in lost, "rebalance")
        for topic, partition in lost:
            self._committed.pop((topic, partition), None)
            # Acknowledged, not committed: the new owner replays them from the last commit
            # (their batches are still counted with the next commit: their outputs are out).
            self._uncommitted.pop((topic, partition), None)
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


class _Outputs:
    """The records one batch publishes, and which input each came from (its origin), so
    that a record the producer refuses can be replaced by its input's dead letter."""

    def __init__(
        self, loop: WorkerLoop, windows: list[Window], scores: Scores, rejected: list[Rejected]
    ) -> None:
        self._loop = loop
        self.sources: list[Window | Rejected] = []
        self.messages: list[Outgoing] = []
        self.window_origin: list[int] = []  # -1: the window became a dead letter here
        self.replaced: dict[int, Rejected] = {}  # origin -> dead letter sent instead
        self._encode(windows, scores, rejected)

    def _encode(self, windows: list[Window], scores: Scores, rejected: list[Rejected]) -> None:
        loop = self._loop
        topics = loop._topics
        scorer = loop._scorer
        threshold, version, now_ms = scorer.threshold, scorer.model_version, loop._wall_ms()
        errors = scores.errors.tolist()
        flags = scores.anomalies.tolist()
        flagged = np.flatnonzero(scores.anomalies)
        segments = iter(batch_abnormal_segments(scores.sample_errors[flagged]))
        append = self.messages.append
        for i, w in enumerate(windows):
            error, flag = errors[i], flags[i]
            worst = next(segments) if flag else None
            alert: bytes | None = None
            try:
                value, alert = encode_score_and_alert(
                    w, error, flag, threshold, version, now_ms, worst
                )
            except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
                problem: tuple[str, str] | None = (
                    UNENCODABLE,
                    f"the score cannot be encoded as JSON ({exc})",
                )
            else:
                problem = loop._too_large(w.key, value, alert)
            if problem is not None:
                rejected.append(reject_window(w, *problem))
                self.window_origin.append(-1)
                continue
            origin = len(self.sources)
            self.sources.append(w)
            self.window_origin.append(origin)
            append(Outgoing(topics.scores, w.key, value, None, origin))
            if alert is not None:
                append(Outgoing(topics.anomalies, w.key, alert, None, origin))
        for r in rejected:
            origin = len(self.sources)
            self.sources.append(r)
            append(loop._dead_letter(r, origin, loop._max_record_bytes))

    def reroute(self, refused: list[tuple[Outgoing, BaseException]]) -> list[Outgoing]:
        """Replacements for records the producer refused one by one: a refused score
        becomes its window's dead letter (``send_failed``); a refused dead letter is sent
        again with key and value cut to nothing (their size and sha256 stay in headers)."""
        first: dict[int, BaseException] = {}
        for message, exc in refused:
            if message.origin < 0:  # a shadow score: observational, dropped (see rollout.py)
                log.warning("shadow score refused by the producer, dropped: %r", exc)
                continue
            first.setdefault(message.origin, exc)
        out: list[Outgoing] = []
        for origin, exc in first.items():
            source = self.sources[origin]
            if isinstance(source, Window) and origin not in self.replaced:
                dead = reject_window(
                    source, SEND_FAILED, f"the producer refused the score: {exc!r:.300}"
                )
                self.replaced[origin] = dead
                out.append(self._loop._dead_letter(dead, origin, self._loop._max_record_bytes))
                continue
            dead = self.replaced.get(origin) or source  # type: ignore[assignment]
            assert isinstance(dead, Rejected)
            dead = dataclasses.replace(
                dead, detail=f"{dead.detail}; its full dead letter was refused: {exc!r:.300}"
            )
            self.replaced[origin] = dead
            out.append(self._loop._dead_letter(dead, origin, 0))
        return out

    def scored_mask(self) -> np.ndarray:
        """Which windows ended as scores (not dead letters)."""
        return np.array([o >= 0 and o not in self.replaced for o in self.window_origin], dtype=bool)

    def dead_letters(self) -> list[Rejected]:
        """Every dead letter the batch published."""
        out = []
        for origin, source in enumerate(self.sources):
            dead = self.replaced.get(origin)
            if dead is not None:
                out.append(dead)
            elif isinstance(source, Rejected):
                out.append(source)
        return out
