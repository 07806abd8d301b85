"""The processing loop with fake Kafka and a fake clock.

What a user would notice: results are committed only after they are acknowledged, a failed
publish commits nothing and stops the worker, every record ends as exactly one score or
dead letter, batches close on size or time, a rebalance loses nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import orjson
import pytest
from kafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAuthorizationFailedError,
)
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from tests.builders import synthetic_windows
from tests.fakes import FakeClock, FakeConsumer, FakeProducer, FakeRecord
from worker.core.agreement import compare_scores
from worker.core.artifact import EcgArtifact
from worker.core.codec import ScoreSource, decode_score
from worker.core.errors import BrokerError
from worker.core.scorer import Scorer
from worker.service.config import BatchingConfig, DeliveryConfig, WorkerConfig
from worker.service.delivery import AtLeastOnceDelivery, CommitFailed, ProduceFailed
from worker.service.drift import DriftMonitor
from worker.service.http_server import HealthState
from worker.service.loop import WorkerLoop
from worker.service.metrics import WorkerMetrics
from worker.service.rebalance import PartitionTracker

IN, SCORES, ANOM, DLQ = "ecg.windows", "ecg.scores", "ecg.anomalies", "ecg.windows.dlq"


class Rig:
    """A loop wired to fakes."""

    def __init__(
        self,
        artifact: EcgArtifact,
        max_batch_size: int = 8,
        max_wait_ms: int = 50,
        commit_interval_ms: int = 0,
    ):
        self.clock = FakeClock()
        self.events: list[str] = []
        self.consumer = FakeConsumer(self.clock, events=self.events)
        self.producer = FakeProducer(self.events)
        self.registry = CollectorRegistry()
        self.config = replace(
            WorkerConfig(),
            batching=BatchingConfig(max_batch_size, max_wait_ms),
            delivery=DeliveryConfig(commit_interval_ms=commit_interval_ms),
        )
        self.tracker = PartitionTracker()
        self.tracker.on_partitions_assigned({TopicPartition(IN, 0), TopicPartition(IN, 1)})
        self.health = HealthState(60000, self.clock)
        self.drift = DriftMonitor(artifact.training_error_quantiles, 100, 10)
        self.metrics = WorkerMetrics(
            artifact, max_batch_size, self.drift, self.registry, self.clock
        )
        self.scorer = Scorer(artifact)
        self.wall = [1_700_000_000_000]
        self.loop = WorkerLoop(
            self.config,
            self.consumer,
            AtLeastOnceDelivery(
                self.producer, self.consumer, 5.0, clock=self.clock, sleep=self.clock.advance
            ),
            self.scorer,
            self.metrics,
            self.tracker,
            self.health,
            self.drift,
            clock=self.clock,
            wall_ms=lambda: self.wall[0],
        )

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.registry.get_sample_value(name, labels or {})
        assert value is not None
        return value

    def committed(self, partition: int = 0) -> int | None:
        return self.consumer.committed_offsets.get(TopicPartition(IN, partition))


def window_record(i: int, values: np.ndarray, partition: int = 0, offset: int | None = None):
    value = orjson.dumps({"id": f"w-{i}", "values": values.tolist(), "label": 1})
    return FakeRecord(
        IN, partition, i if offset is None else offset, 1_700_000_000_000, b"dev", value
    )


def test_every_record_ends_as_exactly_one_score_or_dead_letter(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=4)
    windows = synthetic_windows(10, seed=3)
    records = [window_record(i, windows[i]) for i in range(10)]
    bad = [b"hello", b"", orjson.dumps([1.0] * 3), orjson.dumps([True] * 140)]
    for j, value in enumerate(bad):  # interleave: offsets 10..13
        records.insert(2 * j + 1, FakeRecord(IN, 0, 0, 1, b"dev", value))
    for offset, r in enumerate(records):
        r.offset = offset
    rig.consumer.feed(records)
    for _ in range(4):  # three full batches of four, then two due
        rig.loop.step()
    rig.clock.advance(0.05)
    rig.loop.step()
    scores = [decode_score(s.value) for s in rig.producer.by_topic(SCORES)]
    dead = rig.producer.by_topic(DLQ)
    assert sorted(s.id for s in scores) == sorted(f"w-{i}" for i in range(10))
    assert sorted(d.value for d in dead) == sorted(bad)
    assert {dict(d.headers)["dlq.reason"] for d in dead} == {
        b"not_json",
        b"empty",
        b"wrong_length",
        b"non_numeric",
    }
    assert all(d.key == b"dev" for d in dead) and all(
        s.key == b"dev" for s in rig.producer.by_topic(SCORES)
    )
    assert rig.committed() == 14
    assert rig.metric("ecg_windows_consumed_total") == 14
    assert rig.metric("ecg_windows_scored_total") == 10
    rejected = sum(
        rig.metric("ecg_windows_rejected_total", {"reason": r})
        for r in ("not_json", "empty", "wrong_length", "non_numeric")
    )
    assert rejected == 4


def test_scores_equal_the_offline_scorer_and_anomalies_carry_segments(
    ecg_artifact: EcgArtifact,
) -> None:
    rig = Rig(ecg_artifact, max_batch_size=64)
    windows = synthetic_windows(40, seed=5)
    rig.consumer.feed(window_record(i, windows[i]) for i in range(40))
    rig.loop.step()
    rig.clock.advance(1)
    rig.loop.step()
    offline = Scorer(ecg_artifact).score(windows)
    scores = {s.id: s for s in (decode_score(x.value) for x in rig.producer.by_topic(SCORES))}
    anomalies = [decode_score(x.value) for x in rig.producer.by_topic(ANOM)]
    streamed = [scores[f"w-{i}"] for i in range(40)]
    agreement = compare_scores(
        offline.errors,
        offline.anomalies,
        np.array([s.error for s in streamed]),
        np.array([s.anomaly for s in streamed]),
        threshold=ecg_artifact.threshold,
        window_length=ecg_artifact.window_length,
    )
    assert agreement.ok, [d.describe(f"w-{d.index}") for d in agreement.disagreements]
    for i in range(40):
        s = scores[f"w-{i}"]
        assert s.threshold == ecg_artifact.threshold
        assert s.fields == {"label": 1}
        assert s.source == ScoreSource(IN, 0, i, 1_700_000_000_000)
    flagged = {s.id for s in streamed if s.anomaly}
    assert 0 < len(flagged) < 40
    assert {a.id for a in anomalies} == flagged
    for a in anomalies:
        assert a.anomaly is True and a.segments is not None and 1 <= len(a.segments) <= 3
        for seg in a.segments:
            assert 0 <= seg.start < seg.end <= 140
    assert rig.metric("ecg_windows_anomalous_total") == len(flagged)


def test_scores_and_anomalies_keep_the_input_key(ecg_artifact: EcgArtifact) -> None:
    # README, topics: "the key (e.g. a device id) is kept on every output".
    rig = Rig(ecg_artifact, max_batch_size=64)
    windows = synthetic_windows(40, seed=5)
    records = [window_record(i, windows[i]) for i in range(40)]
    for i, r in enumerate(records):
        r.key = None if i == 0 else b"device-%d" % (i % 7)
    rig.consumer.feed(records)
    rig.loop.step()
    rig.clock.advance(1)
    rig.loop.step()
    sent_key = {f"w-{i}": r.key for i, r in enumerate(records)}
    for topic in (SCORES, ANOM):
        out = rig.producer.by_topic(topic)
        assert out, topic
        assert [s.key for s in out] == [sent_key[decode_score(s.value).id] for s in out]
    assert rig.producer.by_topic(SCORES)[0].key is None  # no key in, no key out


def test_commit_happens_only_after_every_send_is_acknowledged(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=3)
    windows = synthetic_windows(6)
    rig.consumer.feed(window_record(i, windows[i]) for i in range(6))
    rig.loop.step()
    rig.loop.step()
    # Two batches of three: sends, flush, commit - never a commit before its flush.
    assert rig.events.count("commit") == 2
    for i, event in enumerate(rig.events):
        if event == "commit":
            assert rig.events[i - 1] == "flush"
    assert [c[TopicPartition(IN, 0)].offset for c in rig.consumer.commits] == [3, 6]


def test_failed_publish_commits_nothing_and_raises(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=4)
    rig.producer.fail_topics = {SCORES}
    windows = synthetic_windows(4)
    rig.consumer.feed(window_record(i, windows[i]) for i in range(4))
    with pytest.raises(ProduceFailed, match=r"not acknowledged.*offsets not committed"):
        rig.loop.step()
    assert rig.consumer.commits == []
    assert rig.metric("ecg_produce_failures_total") == 1
    assert rig.metric("ecg_windows_consumed_total") == 0  # nothing counted without a commit


def test_a_flush_that_times_out_commits_nothing(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=4)
    rig.producer.stall_flush = True  # kafka-python's flush(timeout) raising KafkaTimeoutError
    rig.consumer.feed(window_record(i, w) for i, w in enumerate(synthetic_windows(4)))
    with pytest.raises(ProduceFailed, match="Timeout waiting for future"):
        rig.loop.step()
    assert rig.consumer.commits == [] and rig.producer.acked == []
    assert rig.metric("ecg_produce_failures_total") == 1


def test_a_poll_that_raises_is_a_broker_failure(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=4)
    rig.consumer.poll_errors.append(TopicAuthorizationFailedError())
    with pytest.raises(BrokerError, match=r"polling ecg\.windows failed: TopicAuthorization"):
        rig.loop.step()
    assert rig.consumer.commits == []


def test_send_raising_is_a_produce_failure(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=1)

    def boom(*args, **kwargs):
        raise KafkaTimeoutError("Failed to update metadata after 5.0 secs.")

    rig.producer.send = boom  # type: ignore[method-assign]
    rig.consumer.feed([window_record(0, synthetic_windows(1)[0])])
    with pytest.raises(ProduceFailed, match="Failed to update metadata"):
        rig.loop.step()
    assert rig.consumer.commits == []


def test_commit_rejected_by_a_rebalance_is_not_fatal(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=2)
    rig.consumer.fail_commit = CommitFailedError("group rebalanced")
    rig.consumer.feed(window_record(i, w) for i, w in enumerate(synthetic_windows(2)))
    rig.loop.step()  # no exception: the outputs are published, the new owner replays
    assert rig.metric("ecg_commit_failures_total") == 1
    assert rig.metric("ecg_windows_consumed_total") == 0


def batches_of_two(rig: Rig, count: int, partition: int = 0, start: int = 0) -> None:
    """Feed ``count`` batches of two windows to ``partition`` (offsets from ``start``) and
    step the loop through each (max_batch_size 2: every poll closes a batch)."""
    windows = synthetic_windows(2 * count, seed=start)
    for b in range(count):
        offsets = [start + 2 * b, start + 2 * b + 1]
        rig.consumer.feed(
            window_record(o, windows[o - start], partition=partition) for o in offsets
        )
        rig.loop.step()


def test_acknowledged_batches_are_committed_together_at_most_every_interval(
    ecg_artifact: EcgArtifact,
) -> None:
    rig = Rig(ecg_artifact, max_batch_size=2, commit_interval_ms=1000)
    batches_of_two(rig, 1)
    assert rig.committed() == 2  # the first batch commits at once
    batches_of_two(rig, 2, start=2)
    # Published and acknowledged, not committed yet, and not counted yet either.
    assert len(rig.producer.by_topic(SCORES)) == 6
    assert rig.committed() == 2
    assert rig.metric("ecg_windows_consumed_total") == 2
    rig.clock.advance(0.998)
    batches_of_two(rig, 1, start=6)
    assert rig.committed() == 2  # the interval is not up yet
    rig.clock.advance(0.002)
    batches_of_two(rig, 1, start=8)
    assert rig.committed() == 10  # one commit for the four batches
    assert len(rig.consumer.commits) == 2
    assert rig.metric("ecg_windows_consumed_total") == 10
    # Never ahead of the acknowledgements: each commit follows a flush.
    for i, event in enumerate(rig.events):
        if event == "commit":
            assert "flush" in rig.events[:i]


def test_when_the_input_goes_quiet_the_acknowledged_batches_are_committed_at_once(
    ecg_artifact: EcgArtifact,
) -> None:
    rig = Rig(ecg_artifact, max_batch_size=2, commit_interval_ms=60_000)
    batches_of_two(rig, 2)
    assert rig.committed() == 2
    rig.loop.step()  # an empty poll, nothing in hand
    assert rig.consumer.poll_timeouts[-1] == 50  # as long as a batch wait
    assert rig.committed() == 4
    assert rig.metric("ecg_windows_scored_total") == 4
    rig.loop.step()  # nothing left to commit: idle polls are long again
    assert rig.consumer.poll_timeouts[-1] == 200


def test_a_batch_still_open_is_not_delayed_by_a_commit(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=2, commit_interval_ms=60_000)
    batches_of_two(rig, 2)
    rig.consumer.feed([window_record(4, synthetic_windows(1)[0], offset=4)])
    rig.loop.step()  # one window in hand: the batch waits, and so does the commit
    assert rig.committed() == 2
    rig.loop.step()  # an empty poll until the batch is due: published, still not committed
    assert len(rig.producer.by_topic(SCORES)) == 5 and rig.committed() == 2
    rig.loop.step()  # nothing in hand, nothing for a batch wait: the input went quiet
    assert rig.consumer.poll_timeouts[-1] == 50
    assert rig.committed() == 5


def test_a_batch_due_at_once_is_not_followed_by_a_commit(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=2, commit_interval_ms=60_000)
    batches_of_two(rig, 1)
    old = window_record(2, synthetic_windows(1)[0])
    old.timestamp -= 500  # waited past max_wait_ms: due at once; the top-up poll is empty
    rig.consumer.feed([old])
    rig.loop.step()
    assert len(rig.producer.by_topic(SCORES)) == 3
    assert rig.committed() == 2  # records flow: the commit waits for its interval


def test_stopping_commits_every_acknowledged_batch(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=2, commit_interval_ms=60_000)
    batches_of_two(rig, 3)
    assert rig.committed() == 2
    rig.loop.stop()
    rig.loop.run()
    assert rig.committed() == 6
    assert rig.metric("ecg_windows_consumed_total") == 6


def test_a_deferred_commit_rejected_by_a_rebalance_counts_nothing(
    ecg_artifact: EcgArtifact,
) -> None:
    rig = Rig(ecg_artifact, max_batch_size=2, commit_interval_ms=1000)
    batches_of_two(rig, 2)
    rig.consumer.fail_commit = CommitFailedError("group rebalanced")
    rig.clock.advance(1.0)
    batches_of_two(rig, 1, start=4)  # commits batches 2 and 3: rejected, not fatal
    assert rig.metric("ecg_commit_failures_total") == 1
    assert rig.metric("ecg_windows_consumed_total") == 2  # the new owner replays 2..5
    rig.consumer.fail_commit = None
    rig.clock.advance(1.0)
    batches_of_two(rig, 1, start=6)
    assert rig.committed() == 8
    assert rig.metric("ecg_windows_consumed_total") == 4


def test_a_lost_partition_takes_its_uncommitted_offsets_with_it(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=2, commit_interval_ms=60_000)
    batches_of_two(rig, 1, partition=0)
    batches_of_two(rig, 1, partition=0, start=2)
    batches_of_two(rig, 1, partition=1)
    assert rig.committed(0) == 2 and rig.committed(1) is None
    # Partition 0 is taken away: its new owner replays offsets 2-3 from the last commit.
    rig.tracker.on_partitions_lost({TopicPartition(IN, 0)})
    rig.loop.stop()
    rig.loop.run()
    assert rig.committed(0) == 2 and rig.committed(1) == 2


def test_other_commit_failures_stop_the_worker(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=2)
    rig.consumer.fail_commit = KafkaTimeoutError("coordinator unavailable")
    rig.consumer.feed(window_record(i, w) for i, w in enumerate(synthetic_windows(2)))
    with pytest.raises(CommitFailed):
        rig.loop.step()
    assert rig.metric("ecg_commit_failures_total") == 1


def test_a_commit_the_broker_cannot_take_for_a_moment_is_retried(ecg_artifact: EcgArtifact) -> None:
    # A broker restarting between the acknowledgements and the commit: the worker rides it
    # out instead of exiting (and scoring the batch again after a restart).
    rig = Rig(ecg_artifact, max_batch_size=2)
    real_commit = rig.consumer.commit
    failures = [KafkaConnectionError("111 ECONNREFUSED")] * 3

    def flaky(offsets: Any = None, timeout_ms: Any = None) -> None:
        if failures:
            raise failures.pop()
        real_commit(offsets, timeout_ms)

    rig.consumer.commit = flaky  # type: ignore[method-assign]
    rig.consumer.feed(window_record(i, w) for i, w in enumerate(synthetic_windows(2)))
    rig.loop.step()
    assert rig.consumer.committed_offsets == {TopicPartition(IN, 0): 2}
    assert rig.metric("ecg_commit_failures_total") == 0
    assert rig.metric("ecg_windows_scored_total") == 2


def test_a_commit_error_that_retrying_cannot_mend_stops_the_worker_at_once(
    ecg_artifact: EcgArtifact,
) -> None:
    rig = Rig(ecg_artifact, max_batch_size=2)
    rig.consumer.fail_commit = KafkaError("not retriable")
    started = rig.clock()
    rig.consumer.feed(window_record(i, w) for i, w in enumerate(synthetic_windows(2)))
    with pytest.raises(CommitFailed, match="not retriable"):
        rig.loop.step()
    assert rig.clock() == started  # no retry pause


def test_batch_closes_on_time_when_not_full(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=100, max_wait_ms=50)
    windows = synthetic_windows(3)
    rig.consumer.feed(window_record(i, windows[i]) for i in range(3))
    rig.loop.step()
    assert rig.producer.acked == []  # not full, not yet due
    rig.loop.step()  # idle poll: waits (fake clock) only until the batch is due
    assert rig.consumer.poll_timeouts[-1] == 50
    assert len(rig.producer.by_topic(SCORES)) == 3
    assert rig.committed() == 3
    assert rig.metric("ecg_batch_size_windows_sum") == 3


def test_batch_closes_on_size_without_waiting(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=5, max_wait_ms=10_000)
    windows = synthetic_windows(12)
    rig.consumer.feed(window_record(i, windows[i]) for i in range(12))
    rig.loop.step()
    rig.loop.step()
    assert rig.committed() == 10  # a full batch per step, without waiting
    rig.loop.step()
    assert rig.committed() == 10  # the last two are in hand until due
    assert rig.metric("ecg_batch_size_windows_count") == 2


def test_stop_finishes_the_batch_in_hand(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=100, max_wait_ms=10_000)
    windows = synthetic_windows(7)
    rig.consumer.feed(window_record(i, windows[i]) for i in range(7))
    rig.consumer.on_poll.append(rig.loop.stop)  # a SIGTERM arriving during the poll
    rig.loop.run()
    assert len(rig.producer.by_topic(SCORES)) == 7
    assert rig.committed() == 7
    assert rig.health.alive()[0] is False  # the loop is over


def test_values_overflowing_float32_are_dead_lettered_not_fatal(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=3)
    windows = synthetic_windows(2)
    huge = FakeRecord(IN, 0, 1, 1, b"dev", orjson.dumps([1e300] * 140))
    rig.consumer.feed([window_record(0, windows[0]), huge, window_record(2, windows[1], offset=2)])
    rig.loop.step()
    assert len(rig.producer.by_topic(SCORES)) == 2
    (dead,) = rig.producer.by_topic(DLQ)
    assert dead.value == huge.value
    assert dict(dead.headers)["dlq.reason"] == b"non_finite"
    assert dict(dead.headers)["dlq.source.offset"] == b"1"
    assert rig.committed() == 3


def test_offsets_are_committed_per_partition(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=6)
    w = synthetic_windows(6)
    rig.consumer.feed(
        [window_record(i, w[i], partition=i % 2, offset=10 + i // 2) for i in range(6)]
    )
    rig.loop.step()
    assert rig.committed(0) == 13 and rig.committed(1) == 13


def test_lost_partition_records_in_hand_are_dropped_not_published(
    ecg_artifact: EcgArtifact,
) -> None:
    rig = Rig(ecg_artifact, max_batch_size=100, max_wait_ms=50)
    w = synthetic_windows(4)
    rig.consumer.feed([window_record(i, w[i], partition=i % 2, offset=i // 2) for i in range(4)])
    rig.loop.step()  # four records in hand, none published
    # Eager rebalance during the next poll, called by the consumer as kafka-python does:
    # everything revoked, only partition 0 comes back.
    rig.consumer.listener = rig.tracker
    rig.consumer.schedule_rebalance({TopicPartition(IN, 0)})
    rig.consumer.feed([window_record(9, w[0], partition=1, offset=2)])  # not ours any more
    rig.loop.step()
    published = sorted(decode_score(s.value).id for s in rig.producer.by_topic(SCORES))
    assert published == ["w-0", "w-2"]  # partition 1's records are left to its new owner
    assert rig.committed(0) == 2 and rig.committed(1) is None
    assert rig.tracker.assigned() == {(IN, 0)}


def test_no_batch_is_delivered_while_a_rebalance_is_in_progress(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=100, max_wait_ms=50)
    w = synthetic_windows(2)
    rig.consumer.feed([window_record(i, w[i]) for i in range(2)])
    rig.loop.step()
    rig.tracker.on_partitions_revoked({TopicPartition(IN, 0), TopicPartition(IN, 1)})
    rig.clock.advance(1)
    rig.loop.step()
    assert rig.producer.acked == []
    rig.tracker.on_partitions_assigned({TopicPartition(IN, 0)})
    rig.loop.step()
    assert len(rig.producer.by_topic(SCORES)) == 2


def test_lag_is_log_end_minus_committed(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=2)
    w = synthetic_windows(5)
    rig.consumer.feed(window_record(i, w[i]) for i in range(5))
    rig.consumer.poll_batch = 2
    rig.loop.step()  # two scored and committed; three more on the log
    rig.loop.update_lag()
    assert rig.metric("ecg_consumer_lag_records", {"topic": IN, "partition": "0"}) == 3


def test_lag_counts_records_in_hand_that_are_not_committed(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=10)
    w = synthetic_windows(5)
    rig.consumer.feed(window_record(i, w[i]) for i in range(5))
    rig.loop.step()  # all five polled into an open batch: none published, none committed
    assert rig.producer.acked == [] and rig.committed() is None
    rig.loop.update_lag()
    assert rig.metric("ecg_consumer_lag_records", {"topic": IN, "partition": "0"}) == 5


def test_drift_window_fills_only_with_committed_errors(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact, max_batch_size=10)
    w = synthetic_windows(20)
    # The first batch is published but its commit is refused (a rebalance): not counted.
    rig.consumer.fail_commit = CommitFailedError("group rebalanced")
    rig.consumer.feed(window_record(i, w[i]) for i in range(10))
    rig.loop.step()
    assert len(rig.producer.by_topic(SCORES)) == 10 and rig.committed() is None
    assert rig.drift.window().size == 0
    rig.consumer.fail_commit = None
    rig.consumer.feed(window_record(i, w[i]) for i in range(10, 20))
    rig.loop.step()
    assert rig.committed() == 20
    committed = [decode_score(s.value).error for s in rig.producer.by_topic(SCORES)[10:]]
    # The window holds exactly the committed batch's errors (the very numbers published).
    assert sorted(rig.drift.window().tolist()) == sorted(committed)
