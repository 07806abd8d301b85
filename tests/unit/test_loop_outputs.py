"""The loop's outputs, metrics, lag and rewinds with fake Kafka (details test_loop leaves out).

What a user or operator would notice: which records a batch publishes and with which key
and timestamps, the latency, scoring-time and error histograms, the lag gauge and how often
it costs a broker round trip, what a shutdown mid-rebalance or an aborted transaction keeps,
and that a refused output is replaced by its window's dead letter rather than lost.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from tests.builders import synthetic_windows, write_artifact_dir
from tests.fakes import FakeClock, FakeConsumer, FakeFuture, FakeProducer, FakeRecord, Sent
from worker.core.artifact import EcgArtifact
from worker.core.codec import decode_score
from worker.core.scorer import Scorer, Scores
from worker.service.config import (
    BatchingConfig,
    DeliveryConfig,
    KafkaConfig,
    LimitsConfig,
    MetricsConfig,
    WorkerConfig,
)
from worker.service.delivery import AtLeastOnceDelivery, CommitFailed, Outgoing, ProduceFailed
from worker.service.http_server import HealthState
from worker.service.loop import MAX_TOP_UP_POLLS, WorkerLoop
from worker.service.metrics import WorkerMetrics
from worker.service.rebalance import PartitionTracker

IN, SCORES, ANOM, DLQ = "ecg.windows", "ecg.scores", "ecg.anomalies", "ecg.windows.dlq"
WALL_MS = 1_700_000_000_000
P0, P1 = TopicPartition(IN, 0), TopicPartition(IN, 1)


class RewindingConsumer(FakeConsumer):
    """A fake consumer that also seeks (the exactly-once rewind) and counts lag lookups."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        super().__init__(clock)
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.end_offset_calls = 0
        self.committed_calls = 0
        self.fail_seek: Exception | None = None
        self.fail_end_offsets: Exception | None = None
        self.starts: dict[TopicPartition, int] = {}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        if self.fail_seek is not None:
            raise self.fail_seek
        self.seeks.append((partition, offset))

    def committed(self, tp: TopicPartition) -> int | None:
        self.committed_calls += 1
        return super().committed(tp)

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.end_offset_calls += 1
        if self.fail_end_offsets is not None:
            raise self.fail_end_offsets
        return super().end_offsets(partitions)

    def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.starts.get(tp, 0) for tp in partitions}


class AbortingDelivery:
    """An exactly-once delivery whose transactions all abort (nothing becomes visible)."""

    atomic = True

    def __init__(self) -> None:
        self.published: list[Sequence[Outgoing]] = []

    def publish(
        self, messages: Sequence[Outgoing], offsets: Mapping[tuple[str, int], int], reroute=None
    ) -> bool:
        self.published.append(messages)
        return False

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> bool:
        return False


def anomaly_refusing_producer() -> FakeProducer:
    """A producer whose broker refuses every anomaly record, record by record."""
    producer = FakeProducer()
    producer.refuse_topics.add(ANOM)
    return producer


class TimedScorer(Scorer):
    """The real scorer on a fake clock that moves by ``seconds`` per batch scored."""

    def __init__(self, artifact: EcgArtifact, clock: FakeClock, seconds: float) -> None:
        super().__init__(artifact)
        self._fake_clock, self._seconds = clock, seconds

    def score(self, windows: np.ndarray) -> Scores:
        self._fake_clock.advance(self._seconds)
        return super().score(windows)


class Rig:
    """A loop on fakes, with the config and collaborators a test chooses."""

    def __init__(
        self,
        artifact: EcgArtifact,
        config: WorkerConfig | None = None,
        producer: Any = None,
        delivery: Any = None,
        scorer: Scorer | None = None,
        consumer_clock: bool = True,
        clock: FakeClock | None = None,
    ) -> None:
        self.clock = clock or FakeClock()
        self.consumer = RewindingConsumer(self.clock if consumer_clock else None)
        self.producer = producer if producer is not None else FakeProducer()
        self.registry = CollectorRegistry()
        self.config = config or with_config()
        self.tracker = PartitionTracker()
        self.tracker.on_partitions_assigned({P0, P1})
        self.metrics = WorkerMetrics(
            artifact, self.config.batching.max_batch_size, None, self.registry, self.clock
        )
        self.delivery = delivery or AtLeastOnceDelivery(
            self.producer, self.consumer, 5.0, clock=self.clock, sleep=self.clock.advance
        )
        self.loop = WorkerLoop(
            self.config,
            self.consumer,
            self.delivery,
            scorer or Scorer(artifact),
            self.metrics,
            self.tracker,
            HealthState(200000, self.clock),
            clock=self.clock,
            wall_ms=lambda: WALL_MS,
        )

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.registry.get_sample_value(name, labels or {})

    def acked(self, topic: str) -> list[Any]:
        return [s for s in self.producer.acked if s.topic == topic]

    def scored_ids(self) -> list[str]:
        return sorted(str(decode_score(s.value).id) for s in self.acked(SCORES))

    def dead_reasons(self) -> list[bytes]:
        return [dict(s.headers)["dlq.reason"] for s in self.acked(DLQ)]


def record(
    i: int,
    partition: int = 0,
    offset: int | None = None,
    key: bytes | None = b"dev",
    timestamp: int = WALL_MS,  # fresh: batches wait max_wait_ms from the poll
    values: Any = None,
    **fields: Any,
) -> FakeRecord:
    row = synthetic_windows(1, seed=i)[0].tolist() if values is None else values
    value = orjson.dumps({"id": f"w-{i}", "values": row, **fields})
    return FakeRecord(IN, partition, i if offset is None else offset, timestamp, key, value)


def with_config(**sections: Any) -> WorkerConfig:
    every_batch = DeliveryConfig(commit_interval_ms=0)
    return replace(
        WorkerConfig(),
        **{"batching": BatchingConfig(64, 50), "delivery": every_batch, **sections},
    )


# --------------------------------------------------------------------------- outputs


def test_scores_and_anomalies_carry_the_input_key_and_the_wall_clock_time(
    ecg_artifact: EcgArtifact,
) -> None:
    rig = Rig(ecg_artifact)
    rig.consumer.feed(record(i, key=f"dev-{i}".encode()) for i in range(30))
    rig.loop.step()
    rig.clock.advance(1)
    rig.loop.step()
    scores, anomalies = rig.acked(SCORES), rig.acked(ANOM)
    assert len(scores) == 30 and 0 < len(anomalies) < 30
    for sent in scores + anomalies:
        decoded = decode_score(sent.value)
        assert sent.key == f"dev-{str(decoded.id)[2:]}".encode()
        assert decoded.scored_at_ms == WALL_MS


def test_a_window_without_a_key_is_scored_with_a_null_key(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact)
    rig.consumer.feed([record(0, key=None)])
    rig.loop.step()
    rig.clock.advance(1)
    rig.loop.step()
    (score,) = rig.acked(SCORES)
    assert score.key is None and decode_score(score.value).id == "w-0"


def test_extra_field_limits_come_from_the_config(ecg_artifact: EcgArtifact) -> None:
    limits = LimitsConfig(max_field_depth=2, max_field_keys=3)
    rig = Rig(ecg_artifact, with_config(limits=limits))
    rig.consumer.feed(
        [
            record(0, a={"b": 1}),  # depth 2, two keys: within the limits
            record(1, a={"b": {"c": 1}}),  # depth 3
            record(2, a=1, b=2, c=3, d=4),  # four keys
        ]
    )
    rig.loop.step()
    rig.clock.advance(1)
    rig.loop.step()
    assert rig.scored_ids() == ["w-0"]
    assert rig.dead_reasons() == [b"fields_limit", b"fields_limit"]


def test_a_score_too_large_to_send_is_a_dead_letter_and_the_rest_of_the_batch_is_scored(
    ecg_artifact: EcgArtifact,
) -> None:
    config = with_config(
        kafka=KafkaConfig(client={"max_request_size": 18_000}),
        limits=LimitsConfig(max_record_bytes=12_000, max_field_bytes=12_000),
    )
    rig = Rig(ecg_artifact, config)
    rig.consumer.feed(
        [record(0), record(1, key=b"k" * 11_000, note="y" * 8_500), record(2), record(3)]
    )
    rig.loop.step()
    rig.clock.advance(1)
    rig.loop.step()
    assert rig.scored_ids() == ["w-0", "w-2", "w-3"]
    assert rig.dead_reasons() == [b"output_too_large"]
    assert rig.metric("ecg_windows_scored_total") == 3
    assert rig.metric("ecg_windows_rejected_total", {"reason": "output_too_large"}) == 1
    assert rig.consumer.committed_offsets == {P0: 4}


def test_a_score_exactly_at_max_request_size_is_sent_one_byte_over_is_not(
    ecg_artifact: EcgArtifact,
) -> None:
    from kafka.record.default_records import DefaultRecordBatchBuilder

    def run(max_request_size: int) -> Rig:
        config = with_config(
            kafka=KafkaConfig(client={"max_request_size": max_request_size}),
            limits=LimitsConfig(max_record_bytes=12_000, max_field_bytes=12_000),
        )
        rig = Rig(ecg_artifact, config)
        rig.consumer.feed([record(0, key=b"k", note="x" * 9_000)])
        rig.loop.step()
        rig.clock.advance(1)
        rig.loop.step()
        return rig

    (sent,) = run(1_000_000).acked(SCORES)
    # The edge below is the score's own size: the window must be normal (no larger alert).
    assert not decode_score(sent.value).anomaly
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(b"k", sent.value, [])
    assert len(run(size).acked(SCORES)) == 1
    at_limit_minus_one = run(size - 1)
    assert at_limit_minus_one.acked(SCORES) == []
    assert at_limit_minus_one.dead_reasons() == [b"output_too_large"]


def test_every_refused_score_and_anomaly_becomes_its_windows_dead_letter(
    ecg_artifact: EcgArtifact,
) -> None:
    # The broker refuses records above 2 KB; windows with a 3 KB field have their score
    # (and anomaly record) refused, each ending as one dead letter.
    rig = Rig(ecg_artifact, producer=FakeProducer(broker_max_bytes=2000))
    big = "x" * 3000
    records = [record(i, note=big if i % 2 else "") for i in range(20)]
    rig.consumer.feed(records)
    rig.loop.step()
    rig.clock.advance(1)
    rig.loop.step()
    assert rig.scored_ids() == sorted(f"w-{i}" for i in range(0, 20, 2))
    assert rig.acked(ANOM) == [] or all(
        int(str(decode_score(a.value).id)[2:]) % 2 == 0 for a in rig.acked(ANOM)
    )
    assert rig.dead_reasons() == [b"send_failed"] * 10
    assert rig.metric("ecg_windows_scored_total") == 10
    assert rig.metric("ecg_windows_rejected_total", {"reason": "send_failed"}) == 10
    assert rig.consumer.committed_offsets == {P0: 20}


def test_anomaly_records_are_sent_and_a_refused_one_becomes_its_windows_dead_letter(
    ecg_artifact: EcgArtifact,
) -> None:
    rig = Rig(ecg_artifact, producer=FakeProducer())
    rig.consumer.feed(record(i) for i in range(30))
    rig.loop.step()
    rig.clock.advance(1)
    rig.loop.step()
    flagged = [decode_score(s.value) for s in rig.acked(SCORES)]
    flagged_ids = sorted(str(s.id) for s in flagged if s.anomaly)
    assert flagged_ids and sorted(str(decode_score(a.value).id) for a in rig.acked(ANOM)) == (
        flagged_ids
    )
    assert all(a.key == b"dev" for a in rig.acked(ANOM))
    # Now a broker that takes the score but refuses the anomaly record (e.g. its topic has
    # a smaller max.message.bytes): the window ends as a dead letter, not half-published.
    index = int(flagged_ids[0][2:])
    rig = Rig(ecg_artifact, producer=anomaly_refusing_producer())
    rig.consumer.feed([record(index, offset=0)])
    rig.loop.step()
    rig.clock.advance(1)
    rig.loop.step()
    assert rig.acked(ANOM) == []
    assert rig.dead_reasons() == [b"send_failed"]
    assert rig.metric("ecg_windows_scored_total") == 0
    assert rig.consumer.committed_offsets == {P0: 1}


def test_a_batch_whose_dead_letters_cannot_be_sent_even_cut_fails(
    ecg_artifact: EcgArtifact,
) -> None:
    rig = Rig(ecg_artifact, producer=FakeProducer(broker_max_bytes=10))
    rig.consumer.feed([FakeRecord(IN, 0, 0, WALL_MS, b"dev", b"not json")])
    with pytest.raises(ProduceFailed, match="could not be replaced"):
        rig.loop.step()
        rig.clock.advance(1)
        rig.loop.step()
    assert rig.consumer.commits == []


def test_scoring_near_float32_max_raises_no_numpy_warnings(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact)
    rig.consumer.feed(
        [
            record(0, values=[1e300] * 140),
            record(1, values=[3.0e38] * 140),
            record(2, values=[-3.0e38, 3.0e38] * 70),
            record(3),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rig.loop.step()
        rig.clock.advance(1)
        rig.loop.step()
    assert rig.scored_ids() == ["w-3"]
    assert len(rig.dead_reasons()) == 3


# --------------------------------------------------------------------------- metrics


def test_latency_is_wall_clock_at_acknowledgement_minus_the_record_timestamp(
    ecg_artifact: EcgArtifact,
) -> None:
    rig = Rig(ecg_artifact)
    rig.consumer.feed(
        [
            record(0, timestamp=WALL_MS - 250),
            record(1, timestamp=WALL_MS + 5000),  # a producer clock ahead: counted as 0
            record(2, timestamp=-1),  # no timestamp: not timed
            record(3, timestamp=0),  # the epoch is a timestamp
        ]
    )
    rig.loop.step()
    rig.clock.advance(1)
    rig.loop.step()
    assert rig.metric("ecg_end_to_end_latency_seconds_count") == 3
    total = rig.metric("ecg_end_to_end_latency_seconds_sum")
    assert total == pytest.approx(0.25 + 0.0 + WALL_MS / 1000.0, rel=0, abs=1e-3)


def test_scoring_time_and_errors_are_observed_per_committed_batch(
    ecg_artifact: EcgArtifact,
) -> None:
    clock = FakeClock()
    rig = Rig(ecg_artifact, scorer=TimedScorer(ecg_artifact, clock, 0.25), clock=clock)
    rig.consumer.feed(record(i) for i in range(5))
    rig.loop.step()
    rig.clock.advance(1)
    rig.loop.step()
    assert rig.metric("ecg_scoring_duration_seconds_count") == 1
    assert rig.metric("ecg_scoring_duration_seconds_sum") == pytest.approx(0.25)
    errors = [decode_score(s.value).error for s in rig.acked(SCORES)]
    assert rig.metric("ecg_reconstruction_error_count") == 5
    assert rig.metric("ecg_reconstruction_error_sum") == pytest.approx(sum(errors), rel=1e-5)


def test_key_bytes_count_towards_the_batch_byte_budget(ecg_artifact: EcgArtifact) -> None:
    first, second = record(0, key=b"k" * 2000), record(1, key=b"k" * 2000)
    budget = len(first.value or b"") + len(second.value or b"") + 2 * 2000
    config = with_config(
        batching=BatchingConfig(100, 10_000),
        limits=LimitsConfig(max_batch_bytes=budget),
    )
    rig = Rig(ecg_artifact, config)
    rig.consumer.feed([first, second, record(2, key=b"k" * 2000)])
    rig.loop.step()
    assert rig.consumer.committed_offsets == {P0: 2}  # closed by bytes after two records


# --------------------------------------------------------------------------- lag


def test_lag_is_refreshed_once_per_lag_interval(ecg_artifact: EcgArtifact) -> None:
    config = with_config(metrics=MetricsConfig(lag_interval_ms=1000))
    rig = Rig(ecg_artifact, config, consumer_clock=False)
    rig.loop.step()
    assert rig.consumer.end_offset_calls == 1
    rig.clock.advance(0.5)
    rig.loop.step()
    rig.clock.advance(0.4995)
    rig.loop.step()
    assert rig.consumer.end_offset_calls == 1
    rig.clock.advance(0.0005)  # exactly one interval after the first refresh
    rig.loop.step()
    assert rig.consumer.end_offset_calls == 2
    rig.loop.step()
    assert rig.consumer.end_offset_calls == 2


def test_lag_uses_the_groups_commit_then_the_log_start_and_looks_each_up_once(
    ecg_artifact: EcgArtifact,
) -> None:
    rig = Rig(ecg_artifact)
    rig.consumer.feed(record(i, partition=0) for i in range(8))
    rig.consumer.feed(record(i, partition=1) for i in range(6))
    rig.consumer.committed_offsets[P0] = 3  # committed by the previous owner
    rig.consumer.starts[P1] = 2  # never committed; the log starts at 2 (retention)
    rig.loop.update_lag()
    assert rig.metric("ecg_consumer_lag_records", {"topic": IN, "partition": "0"}) == 5
    assert rig.metric("ecg_consumer_lag_records", {"topic": IN, "partition": "1"}) == 4
    calls = rig.consumer.committed_calls
    rig.loop.update_lag()
    assert rig.consumer.committed_calls == calls + 1  # P0's commit is remembered, P1 asked


def test_a_lost_partition_loses_its_lag_series_and_its_remembered_commit(
    ecg_artifact: EcgArtifact,
) -> None:
    rig = Rig(ecg_artifact)
    rig.consumer.feed(record(i, partition=1) for i in range(4))
    rig.loop.step()
    rig.clock.advance(1)
    rig.loop.step()  # committed P1 at 4
    rig.loop.update_lag()
    assert rig.metric("ecg_consumer_lag_records", {"topic": IN, "partition": "1"}) == 0
    rig.tracker.on_partitions_lost({P1})
    rig.loop.step()
    assert rig.metric("ecg_consumer_lag_records", {"topic": IN, "partition": "1"}) is None
    assert rig.metric("ecg_consumer_lag_records", {"topic": IN, "partition": "0"}) == 0
    # Another member went on to commit 9 before P1 came back: the lag is read afresh.
    rig.consumer.committed_offsets[P1] = 9
    rig.tracker.on_partitions_assigned({P1})
    rig.consumer.feed(record(i, partition=1) for i in range(4, 10))
    rig.loop.update_lag()
    assert rig.metric("ecg_consumer_lag_records", {"topic": IN, "partition": "1"}) == 1


def test_a_lag_refresh_that_fails_is_logged_and_the_loop_goes_on(
    ecg_artifact: EcgArtifact, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(ecg_artifact)
    rig.consumer.fail_end_offsets = KafkaTimeoutError("no answer from the broker")
    with caplog.at_level(logging.WARNING, "worker.service.loop"):
        rig.loop.update_lag()
    (logged,) = caplog.records
    assert "consumer lag" in logged.getMessage()
    assert "no answer from the broker" in logged.getMessage()


# --------------------------------------------------------------------------- control


def test_stopping_is_reported_only_after_stop(ecg_artifact: EcgArtifact) -> None:
    rig = Rig(ecg_artifact)
    assert rig.loop.stopping is False
    rig.loop.stop()
    assert rig.loop.stopping is True


def test_a_shutdown_mid_rebalance_delivers_only_the_partitions_still_owned(
    ecg_artifact: EcgArtifact, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(ecg_artifact, with_config(batching=BatchingConfig(100, 10_000)))
    rig.consumer.feed([record(i, partition=i % 2, offset=i // 2) for i in range(6)])
    rig.loop.step()  # six records in hand
    rig.tracker.on_partitions_revoked({P1})  # a cooperative rebalance takes P1 away
    with caplog.at_level(logging.INFO, "worker.service.loop"):
        rig.loop.drain()
    assert rig.scored_ids() == ["w-0", "w-2", "w-4"]
    assert rig.consumer.committed_offsets == {P0: 3}
    assert any("shutdown: dropped 3 uncommitted" in r.getMessage() for r in caplog.records)


def test_an_aborted_batch_is_read_again_from_the_last_commit(
    ecg_artifact: EcgArtifact, caplog: pytest.LogCaptureFixture
) -> None:
    delivery = AbortingDelivery()
    p0 = [record(i, partition=0, offset=10 + i) for i in range(4)]
    # A batch closes on bytes in the middle of a poll: at P0's third record.
    three = LimitsConfig(max_batch_bytes=sum(len(r.value) + len(r.key) for r in p0[:3]))
    config = with_config(batching=BatchingConfig(10, 10_000), limits=three)
    rig = Rig(ecg_artifact, config, delivery=delivery)
    rig.consumer.committed_offsets[P0] = 9  # offset 9 was compacted away; P1 never committed
    rig.consumer.feed(p0)
    rig.consumer.feed([record(9, partition=1, offset=7)])
    with caplog.at_level(logging.INFO, "worker.service.loop"):
        rig.loop.step()
    # P0's batch (10..12) aborted: P0 is rewound to its commit (9), and the rest of this poll
    # for P0 (offset 13) is not batched, or it would be scored before 10..12 come again.
    assert rig.consumer.seeks == [(P0, 9)]
    assert "aborted batch: ecg.windows[0] is read again from offset 9" in [
        r.getMessage() for r in caplog.records
    ]
    with caplog.at_level(logging.INFO, "worker.service.loop"):
        rig.loop.drain()  # only P1's record was held; its batch aborts too (never committed)
    # Never committed: read again from the aborted batch's first offset.
    assert "aborted batch: ecg.windows[1] is read again from offset 7" in [
        r.getMessage() for r in caplog.records
    ]
    scores = [[m for m in batch if m.topic == SCORES] for batch in delivery.published]
    assert [len(batch) for batch in scores] == [3, 1]
    assert decode_score(scores[1][0].value).id == "w-9"
    assert rig.consumer.seeks == [(P0, 9), (P1, 7)]
    assert rig.metric("ecg_commit_failures_total") == 2
    assert rig.metric("ecg_windows_consumed_total") == 0


@pytest.mark.parametrize(("lost", "owned"), [(P0, P1), (P1, P0)])
def test_an_aborted_batch_of_a_partition_no_longer_owned_is_not_rewound(
    ecg_artifact: EcgArtifact, lost: TopicPartition, owned: TopicPartition
) -> None:
    # Both orders: whichever partition comes first in the batch, a lost one is skipped and
    # the owned one after it is still rewound (else its aborted records were never re-read).
    delivery = AbortingDelivery()
    rig = Rig(ecg_artifact, with_config(batching=BatchingConfig(2, 10_000)), delivery=delivery)
    # One batch of two: P0's and P1's first record (the fake polls P0 first).
    rig.consumer.feed([record(0, partition=0, offset=0), record(1, partition=1, offset=0)])

    def lose_during_publish(messages, offsets, reroute=None):
        rig.tracker.on_partitions_lost({lost})
        rig.tracker.take_lost()  # consumed by the loop's next round, not this batch
        return AbortingDelivery.publish(delivery, messages, offsets)

    delivery.publish = lose_during_publish  # type: ignore[method-assign]
    rig.loop.step()
    assert rig.consumer.seeks == [(owned, 0)]


def test_a_rewind_that_fails_stops_the_worker_naming_the_partition(
    ecg_artifact: EcgArtifact,
) -> None:
    rig = Rig(
        ecg_artifact, with_config(batching=BatchingConfig(1, 10_000)), delivery=AbortingDelivery()
    )
    rig.consumer.fail_seek = KafkaConnectionError("broker gone")
    rig.consumer.feed([record(0, partition=1, offset=3)])
    with pytest.raises(CommitFailed, match=r"cannot rewind ecg\.windows\[1\].*broker gone"):
        rig.loop.step()


# --------------------------------------------------------------------------- with a shadow

SHADOW = "ecg.scores.shadow"


class ShadowRefusingProducer:
    """Refuses shadow records at send and the scores of ``refused_ids`` at the broker, both
    one by one (as for records too large); acknowledges the rest at flush."""

    def __init__(self, refused_ids: set[str]) -> None:
        self.refused_ids = refused_ids
        self.acked: list[Sent] = []
        self._pending: list[tuple[Sent, FakeFuture]] = []

    def send(self, topic, value=None, key=None, headers=None, partition=None, timestamp_ms=None):
        if topic == SHADOW:
            raise ValueError("record too large for the shadow topic")
        refused = topic == SCORES and str(decode_score(value).id) in self.refused_ids
        future = FakeFuture(MessageSizeTooLargeError("MESSAGE_TOO_LARGE") if refused else None)
        future.is_done = False
        self._pending.append((Sent(topic, key, value, headers), future))
        return future

    def flush(self, timeout: float | None = None) -> None:
        for sent, future in self._pending:
            future.is_done = True
            if future.exception is None:
                self.acked.append(sent)
        self._pending = []


def shadow_rig(
    tmp_path: Path, artifact: EcgArtifact, config: WorkerConfig, producer: Any = None
) -> Rig:
    from worker.service.rollout import Rollout
    from worker.service.rollout_metrics import RolloutMetrics

    live = write_artifact_dir(tmp_path / "live", seed=7)
    candidate = write_artifact_dir(tmp_path / "candidate", seed=11)
    rig = Rig(live, config, producer=producer)
    rig.loop._rollout = Rollout(
        Scorer(live),
        RolloutMetrics(rig.registry),
        rig.metrics,
        artifact_path=tmp_path / "live",
        shadow_path=candidate.path,
        shadow_topic=SHADOW,
        watch=False,
        poll_interval_s=1.0,
        clock=rig.clock,
    )
    return rig


def test_the_shadow_scores_only_the_windows_the_primary_publishes(
    tmp_path: Path, ecg_artifact: EcgArtifact
) -> None:
    config = with_config(
        kafka=KafkaConfig(client={"max_request_size": 18_000}),
        limits=LimitsConfig(max_record_bytes=12_000, max_field_bytes=12_000),
    )
    rig = shadow_rig(tmp_path, ecg_artifact, config)
    rig.consumer.feed(
        [record(0), record(1, key=b"k" * 11_000, note="y" * 8_500), record(2), record(3)]
    )
    rig.loop.step()
    rig.clock.advance(1)
    rig.loop.step()
    assert rig.scored_ids() == ["w-0", "w-2", "w-3"]
    shadow_ids = sorted(str(decode_score(s.value).id) for s in rig.acked(SHADOW))
    assert shadow_ids == ["w-0", "w-2", "w-3"]


def test_a_refused_shadow_record_does_not_stop_refused_scores_from_being_replaced(
    tmp_path: Path, ecg_artifact: EcgArtifact, caplog: pytest.LogCaptureFixture
) -> None:
    producer = ShadowRefusingProducer(refused_ids={"w-1", "w-2"})
    rig = shadow_rig(tmp_path, ecg_artifact, with_config(), producer)
    rig.consumer.feed(record(i) for i in range(4))
    rig.loop.step()
    rig.clock.advance(1)
    with caplog.at_level(logging.WARNING, "worker.service.loop"):
        rig.loop.step()
    dropped = [r.getMessage() for r in caplog.records if "shadow score" in r.getMessage()]
    assert len(dropped) == 4
    assert all("record too large for the shadow topic" in m for m in dropped)
    assert rig.scored_ids() == ["w-0", "w-3"]
    assert rig.dead_reasons() == [b"send_failed", b"send_failed"]
    assert rig.acked(SHADOW) == []
    assert rig.consumer.committed_offsets == {P0: 4}


# --------------------------------------------------------------------------- batch timing


def test_windows_that_arrived_during_the_last_batch_wait_max_wait_ms_from_the_last_poll(
    ecg_artifact: EcgArtifact,
) -> None:
    """Scoring and publishing batch A takes 6 ms; windows B arrive meanwhile. Their batch is
    due max_wait_ms after the poll that preceded A's processing (not after the poll that
    returns them, which would make them wait 6 + 50 ms), less the reserve for publishing
    (6 ms plus three times its deviation, 3 ms after one batch): their scores are out within
    50 ms of when they could first have been seen."""
    clock = FakeClock()
    rig = Rig(ecg_artifact, scorer=TimedScorer(ecg_artifact, clock, 0.006), clock=clock)
    rig.consumer.feed(record(i) for i in range(3))
    rig.loop.step()  # A polled; its batch is open
    rig.loop.step()  # an idle poll until A is due (nothing published yet: no reserve)
    assert rig.consumer.poll_timeouts[-1] == 50
    assert rig.scored_ids() == ["w-0", "w-1", "w-2"]  # scored in 6 ms
    rig.consumer.feed(record(i) for i in range(3, 6))
    rig.loop.step()  # B polled 6 ms after the last poll
    assert len(rig.scored_ids()) == 3
    rig.loop.step()  # an idle poll: 50 - (6 + 3 * 3) (publishing) - 6 (waited already)
    assert rig.consumer.poll_timeouts[-1] == 29
    assert rig.scored_ids() == [f"w-{i}" for i in range(6)]


def test_a_window_older_than_the_poll_before_is_due_by_its_own_timestamp(
    ecg_artifact: EcgArtifact,
) -> None:
    """kafka-python fetches only while polled: windows that reached the broker while a
    batch was published come one poll late. Their timestamps say how long they waited."""
    rig = Rig(ecg_artifact)
    rig.consumer.feed([record(0), record(1, partition=1, timestamp=WALL_MS - 30)])
    rig.loop.step()
    rig.loop.step()  # the batch is due 50 ms after the older window: 20 ms from now
    assert rig.consumer.poll_timeouts[-1] == 20
    assert rig.scored_ids() == ["w-0", "w-1"]

    late = Rig(ecg_artifact)
    late.consumer.feed([record(0, timestamp=WALL_MS - 80)])  # waited longer than max_wait_ms
    late.loop.step()
    assert late.scored_ids() == ["w-0"]  # no wait at all

    unstamped = Rig(ecg_artifact)
    unstamped.consumer.feed([record(0, timestamp=-1)])  # no timestamp (old message format)
    unstamped.loop.step()
    unstamped.loop.step()
    assert unstamped.consumer.poll_timeouts[-1] == 50  # waits from the poll
    assert unstamped.scored_ids() == ["w-0"]

    ahead = Rig(ecg_artifact)
    ahead.consumer.feed([record(0, timestamp=WALL_MS + 60_000)])  # its producer's clock is fast
    ahead.loop.step()
    ahead.loop.step()
    assert ahead.consumer.poll_timeouts[-1] == 50  # waits from the poll, as without a timestamp
    assert ahead.scored_ids() == ["w-0"]


def waiting_records(
    artifact: EcgArtifact,
    max_batch_size: int,
    poll_batch: int,
    count: int,
    limits: LimitsConfig | None = None,
) -> Rig:
    """A loop (max_wait_ms 50) behind ``count`` records that have been waiting for 100 ms,
    on a consumer that holds ``poll_batch`` of them at a time (the rest not fetched yet)."""
    config = with_config(batching=BatchingConfig(max_batch_size, 50))
    rig = Rig(artifact, config=replace(config, limits=limits or config.limits))
    rig.consumer.poll_batch = poll_batch
    rig.consumer.feed(record(i, timestamp=WALL_MS - 100) for i in range(count))
    rig.clock.advance(0.100)
    return rig


def test_a_poll_asks_for_what_fits_in_the_batch_and_leaves_the_rest_in_the_consumer(
    ecg_artifact: EcgArtifact,
) -> None:
    """Behind the log, one poll fills the batch to max_batch_size; nothing more is taken
    into hand, so a shutdown right after it has nothing left to publish."""
    rig = waiting_records(ecg_artifact, max_batch_size=10, poll_batch=1000, count=13)
    rig.loop.step()
    assert rig.metric("ecg_batch_size_windows_count") == 1
    assert rig.metric("ecg_batch_size_windows_sum") == 10
    assert len(rig.consumer.poll_timeouts) == 1
    assert rig.consumer.committed_offsets == {P0: 10}
    rig.loop.drain()  # a shutdown now: nothing was in hand beyond the batch
    assert rig.consumer.committed_offsets == {P0: 10}


def test_a_poll_asks_only_for_the_room_left_by_the_records_in_hand(
    ecg_artifact: EcgArtifact,
) -> None:
    rig = Rig(ecg_artifact, config=with_config(batching=BatchingConfig(10, 50)))
    rig.consumer.feed(record(i) for i in range(3))
    rig.loop.step()  # three in hand, not due yet
    assert rig.metric("ecg_batch_size_windows_count") == 0
    rig.consumer.feed(record(i) for i in range(3, 13))
    rig.loop.step()  # asks for 7: the batch is full, the other 3 stay in the consumer
    assert rig.consumer.committed_offsets == {P0: 10}
    rig.loop.drain()
    assert rig.consumer.committed_offsets == {P0: 10}


def test_a_due_batch_is_published_once_a_poll_returns_fewer_records_than_it_asked_for(
    ecg_artifact: EcgArtifact,
) -> None:
    """Fewer than asked: the consumer held no more, and polling again would wait for the
    network while the due batch waits (a fast stream always has a few more)."""
    rig = waiting_records(ecg_artifact, max_batch_size=100, poll_batch=4, count=6)
    rig.loop.step()
    assert rig.metric("ecg_batch_size_windows_sum") == 4
    assert len(rig.consumer.poll_timeouts) == 1
    rig.loop.step()  # the other two, into the next batch
    rig.loop.drain()
    assert rig.metric("ecg_batch_size_windows_sum") == 6


def test_a_remainder_left_by_max_batch_bytes_is_topped_up_without_waiting_but_boundedly(
    ecg_artifact: EcgArtifact,
) -> None:
    """A batch closed on max_batch_bytes leaves a due remainder: polls that do not wait top
    it up while each returns all it asked for; a step still comes back (heartbeat, stop,
    rollout) when every one does."""
    smallest = min(len(record(i).value) + len(b"dev") for i in range(100))
    two_records = LimitsConfig(max_batch_bytes=2 * smallest)
    rig = waiting_records(ecg_artifact, 3, poll_batch=1000, count=100, limits=two_records)
    rig.loop.step()
    assert rig.consumer.poll_timeouts[1:] == [0] * MAX_TOP_UP_POLLS
    # All that was polled is published: pairs closed on bytes, then the due remainder.
    assert rig.metric("ecg_batch_size_windows_sum") == 3 + 2 * MAX_TOP_UP_POLLS
