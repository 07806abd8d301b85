"""ecg-demo's measurements: tally of records read back, summary numbers and failure checks,
and the worker's scraped counters against the stream."""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from clients.stream_summary import (
    MetricCheck,
    ScoreRecord,
    StreamTally,
    format_summary,
    metric_differences,
    offline_check,
    parse_score,
    problems,
    summarise,
)
from clients.worker_counters import (
    WorkerCounters,
    counter_problems,
    format_counters,
    parse_counters,
)
from tests.builders import synthetic_windows
from worker.core.errors import DataError
from worker.core.scorer import Scorer
from worker.service.metrics import BatchReport, WorkerMetrics

VERSION = "3f1c2a9b0d4e5f67"


def score(i: int, *, error: float, anomaly: bool, label: int, sent: int, scored: int) -> bytes:
    return orjson.dumps(
        {
            "id": f"test-{i:04d}",
            "error": error,
            "anomaly": anomaly,
            "threshold": 0.5,
            "model_version": VERSION,
            "source": {"topic": "in", "partition": 0, "offset": i, "timestamp_ms": sent},
            "scored_at_ms": scored,
            "fields": {"label": label, "sent_at_ms": sent},
        }
    )


def _four_window_run() -> StreamTally:
    """2 normal (one wrongly flagged), 2 anomalous (one missed); latencies 10, 20, 30, 40 ms."""
    tally = StreamTally(expected_ids=frozenset(f"test-{i:04d}" for i in range(4)))
    rows = [(0.1, False, 1), (0.9, True, 1), (0.8, True, 0), (0.2, False, 0)]
    for i, (error, anomaly, label) in enumerate(rows):
        tally.add_score(
            score(i, error=error, anomaly=anomaly, label=label, sent=1000 + i, scored=1010 + 11 * i)
        )
        if anomaly:
            tally.add_anomaly(score(i, error=error, anomaly=True, label=label, sent=0, scored=0))
    return tally


def test_parse_score_reads_the_measured_fields():
    record = parse_score(score(3, error=0.25, anomaly=False, label=1, sent=100, scored=150))
    assert not isinstance(record, str)
    assert (record.id, record.error, record.anomaly, record.label) == ("test-0003", 0.25, False, 1)
    assert (record.sent_ms, record.scored_at_ms, record.model_version) == (100, 150, VERSION)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"", "empty record"),
        (b"nope", "not JSON"),
        (b"[1]", "expected a JSON object"),
        (b'{"error": 1, "anomaly": true, "threshold": 1}', "field 'id' must be"),
        (b'{"id": "a", "error": "x", "anomaly": true, "threshold": 1}', "field 'error' must be"),
        (b'{"id": "a", "error": 1, "anomaly": 1, "threshold": 1}', "field 'anomaly' must be"),
    ],
)
def test_parse_score_explains_unusable_records(value, problem):
    assert parse_score(value).startswith(problem)


def test_tally_keeps_first_score_counts_duplicates_strangers_and_garbage():
    tally = StreamTally(expected_ids=frozenset({"test-0000", "test-0001"}))
    tally.add_score(score(0, error=0.1, anomaly=False, label=1, sent=1, scored=2))
    tally.add_score(score(0, error=0.1, anomaly=False, label=1, sent=1, scored=99))
    tally.add_score(score(7, error=0.1, anomaly=False, label=1, sent=1, scored=2))
    tally.add_score(b"{", "scores[0]@3")
    tally.add_dead_letter([("dlq.reason", b"not_json"), ("dlq.detail", b"x")])
    tally.add_dead_letter([])
    assert tally.scores["test-0000"].scored_at_ms == 2
    assert (tally.duplicates, tally.unexpected) == (1, 1)
    assert tally.unreadable[0].startswith("scores[0]@3: not JSON")
    assert dict(tally.dead_letters) == {"not_json": 1, "(no reason)": 1}
    assert not tally.complete
    assert tally.missing() == ["test-0001"]


def test_summary_counts_quality_throughput_and_latency():
    summary = summarise(_four_window_run(), sent=4, first_send_ms=1000)
    assert (summary.sent, summary.scored, summary.flagged, summary.anomaly_records) == (4, 4, 2, 2)
    assert summary.missing == ()
    # positive = normal: passed ids 0 (normal) and 3 (anomalous) -> precision 1/2, and
    # 1 of the 2 normal windows passed -> recall 1/2. Same shape for the anomaly class.
    assert summary.metrics["precision"] == pytest.approx(0.5)
    assert summary.metrics["recall"] == pytest.approx(0.5)
    assert summary.metrics["anomaly_precision"] == pytest.approx(0.5)
    assert summary.metrics["anomaly_recall"] == pytest.approx(0.5)
    # Latencies 10, 20, 30, 40 ms; last score at 1043 -> 4 windows in 43 ms.
    assert summary.latency_p50_ms == pytest.approx(25.0)
    assert summary.latency_p99_ms == pytest.approx(39.7)
    assert summary.latency_max_ms == 40.0
    assert summary.duration_s == pytest.approx(0.043)
    assert summary.throughput_per_s == pytest.approx(4 / 0.043)
    assert summary.model_versions == (VERSION,)
    assert problems(summary, VERSION) == []


def test_problems_name_missing_scores_dead_letters_lost_alerts_and_wrong_model():
    tally = _four_window_run()
    del tally.scores["test-0002"]  # one flagged window never scored
    tally.anomaly_records = 0
    tally.add_dead_letter([("dlq.reason", b"wrong_length")])
    found = problems(summarise(tally, sent=4, first_send_ms=1000), "another-version")
    assert found[0] == "1 of 4 windows were not scored (test-0002)"
    assert "1 valid windows went to the dead-letter topic" in found
    assert "1 scores are flagged but only 0 alerts reached the anomalies topic" in found
    assert any("the artifact is another-version" in p for p in found)


def test_metric_differences_beyond_what_borderline_windows_explain_are_reported():
    # threshold 0.5: no stream error is within the tolerance of it, so nothing may differ
    summary = summarise(_four_window_run(), sent=4, first_send_ms=1000)
    check = metric_differences(summary, dict(summary.metrics), threshold=0.5, window_length=140)
    assert check == MetricCheck(borderline=0, differences=(), explained=())
    recorded = {**summary.metrics, "recall": 0.75}
    check = metric_differences(summary, recorded, threshold=0.5, window_length=140)
    assert check.differences == (
        "recall 0.5000 (stream) vs 0.7500 (artifact), outside [0.5000, 0.5000]",
    )
    assert "DIFFER" in check.line()
    assert metric_differences(summary, None, threshold=0.5, window_length=140).differences == ()


def test_metric_differences_within_borderline_flips_are_shown_not_failed():
    # Window 1 (normal, error 0.9, flagged) sits on the threshold: scored elsewhere it may
    # pass, giving 1 false alert fewer: recall (positive = normal) 1/2 -> 2/2.
    summary = summarise(_four_window_run(), sent=4, first_send_ms=1000)
    recorded = {**summary.metrics, "recall": 1.0, "precision": 2 / 3, "accuracy": 0.75}
    recorded.update(anomaly_precision=1.0, anomaly_recall=0.5, anomaly_f1=2 / 3)
    check = metric_differences(summary, recorded, threshold=0.9, window_length=140)
    assert check.borderline == 1 and check.differences == ()
    assert "recall 0.5000 (stream) vs 1.0000 (artifact)" in check.explained
    assert check.line().startswith(
        "stream metrics match the artifact's recorded test metrics as far as 1 borderline "
        "windows explain: accuracy 0.5000 (stream) vs 0.7500 (artifact)"
    )
    # A flip of a window far from the threshold (0.8, anomalous) is not explained.
    recorded = {**summary.metrics, "anomaly_recall": 0.0}
    check = metric_differences(summary, recorded, threshold=0.9, window_length=140)
    assert [d.split(" ")[0] for d in check.differences] == ["anomaly_recall"]


def test_formatted_summary_shows_every_number_and_the_comparison():
    summary = summarise(_four_window_run(), sent=4, first_send_ms=1000)
    topics = {"input": "in.x", "scores": "s.x", "anomalies": "a.x", "dead_letter": "d.x"}
    artifact = {
        "model_version": VERSION,
        "profile": "tutorial",
        "threshold": 0.5,
        "threshold_rule": "mean_std",
        "window_length": 140,
    }
    text = format_summary(
        summary, run_id="demo-1", topics=topics, artifact=artifact, recorded_metrics=summary.metrics
    )
    for expected in (
        "sent           4 windows to in.x",
        "scored         4 of 4 ids on s.x (0 missing, 0 duplicates)",
        "anomalies      2 flagged; 2 alerts on a.x",
        "dead letters   0 (none) on d.x",
        "throughput     93.0 windows/s",
        "latency        p50 25 ms, p99 40 ms, max 40 ms",
        "precision 0.5000, recall 0.5000 (positive = normal",
        "anomaly precision 0.5000, anomaly recall 0.5000 (positive = anomaly)",
        "stream metrics match the artifact's recorded test metrics (0 borderline windows)",
    ):
        assert expected in text
    differing = {**summary.metrics, "accuracy": 0.9}
    text = format_summary(
        summary, run_id="demo-1", topics=topics, artifact=artifact, recorded_metrics=differing
    )
    assert "stream metrics DIFFER from the artifact's: accuracy 0.5000 (stream) vs 0.9000" in text


def _streamed(window_id: str, error: float, anomaly: bool) -> ScoreRecord:
    return ScoreRecord(window_id, error, anomaly, None, None, None, None)


def test_offline_check_accepts_last_bit_differences_and_names_real_ones(ecg_artifact):
    scorer = Scorer(ecg_artifact)
    values = synthetic_windows(3, seed=4)
    offline = scorer.score(values)
    windows = {f"w{i}": values[i] for i in range(3)}
    # What the worker publishes: the float32 error as a JSON double, and the flag.
    exact = {
        f"w{i}": _streamed(f"w{i}", float(offline.errors[i]), bool(offline.anomalies[i]))
        for i in range(3)
    }
    check = offline_check(windows, exact, scorer)
    assert check.problems() == []
    assert check.line().startswith(
        "offline check  all 3 streamed scores agree with ecg-score (max error difference 0, "
        "tolerance "
    )
    # Another BLAS kernel: one float32 step off. Agrees, and the difference is shown.
    off_by_one_ulp = float(np.nextafter(offline.errors[1], np.float32(1.0)))
    drifted = {**exact, "w1": _streamed("w1", off_by_one_ulp, bool(offline.anomalies[1]))}
    check = offline_check(windows, drifted, scorer)
    assert check.problems() == []
    assert f"max error difference {off_by_one_ulp - float(offline.errors[1]):.2g}" in check.line()
    # A real difference, and a flag flipped far from the threshold, break the contract.
    wrong = {**exact, "w1": _streamed("w1", float(offline.errors[1]) + 1e-4, False)}
    flipped = {**exact, "w2": _streamed("w2", float(offline.errors[2]), not offline.anomalies[2])}
    assert [m.split(":")[0] for m in offline_check(windows, wrong, scorer).problems()] == ["w1"]
    check = offline_check(windows, flipped, scorer)
    assert [m.split(":")[0] for m in check.problems()] == ["w2"]
    assert check.line().startswith("offline check  1 of 3 streamed scores DIFFER from ecg-score")
    # Windows the stream never scored are the summary's "missing", not a mismatch.
    assert offline_check(windows, {"w0": exact["w0"]}, scorer).agreement.compared == 1


def test_offline_check_agrees_with_scores_streamed_in_other_batch_sizes(ecg_artifact):
    # The worker scores micro-batches (here 1, 2 and 5 windows); ecg-score scores all 8 at
    # once: another batch shape, maybe another BLAS kernel, and the check must still agree.
    scorer = Scorer(ecg_artifact)
    values = synthetic_windows(8, seed=11)
    windows = {f"w{i}": values[i] for i in range(8)}
    streamed = {}
    for start, stop in ((0, 1), (1, 3), (3, 8)):
        batch = scorer.score(values[start:stop])
        for i in range(start, stop):
            error, flag = float(batch.errors[i - start]), bool(batch.anomalies[i - start])
            streamed[f"w{i}"] = _streamed(f"w{i}", error, flag)
    check = offline_check(windows, streamed, scorer)
    assert check.problems() == []
    assert check.agreement.compared == 8
    assert check.line().startswith("offline check  all 8 streamed scores agree with ecg-score")


def test_offline_check_shows_borderline_windows_by_name(ecg_artifact):
    scorer = Scorer(ecg_artifact)
    values = synthetic_windows(2, seed=4)
    offline = scorer.score(values)
    at_threshold = dataclasses.replace(ecg_artifact, threshold=float(offline.errors[0]))
    scorer = Scorer(at_threshold)  # window a's error is exactly the threshold
    below = float(np.nextafter(offline.errors[0], np.float32(0.0)))
    streamed = {
        "a": _streamed("a", below, False),  # one step below: not flagged, the offline one is
        "b": _streamed("b", float(offline.errors[1]), bool(offline.errors[1] >= offline.errors[0])),
    }
    check = offline_check({"a": values[0], "b": values[1]}, streamed, scorer)
    assert check.problems() == []
    assert check.line().endswith("1 borderline: a (flag differs))")


def _worker_scrape(ecg_artifact, batches: list[BatchReport]) -> str:
    """What the worker's /metrics serves after committing ``batches``."""
    metrics = WorkerMetrics(ecg_artifact, max_batch_size=64, registry=CollectorRegistry())
    for batch in batches:
        metrics.record_batch(batch)
    return generate_latest(metrics.registry).decode()


def _batch(consumed: int, scored: int, anomalous: int, rejected: dict[str, int]) -> BatchReport:
    return BatchReport(
        consumed=consumed,
        scored=scored,
        anomalous=anomalous,
        rejected=rejected,
        scoring_s=0.001,
        errors=np.full(scored, 0.01),
        latencies_s=np.full(consumed, 0.05),
    )


def test_counters_are_read_from_the_workers_real_exposition(ecg_artifact):
    text = _worker_scrape(
        ecg_artifact,
        [_batch(10, 9, 4, {"not_json": 1}), _batch(5, 3, 1, {"wrong_length": 1, "not_json": 1})],
    )
    # Rejected is summed over its reason labels; the _created samples are not counted.
    assert parse_counters(text) == WorkerCounters(consumed=15, scored=12, rejected=3, anomalous=5)
    assert parse_counters(_worker_scrape(ecg_artifact, [])) == WorkerCounters(0, 0, 0, 0)


def test_a_scrape_without_the_counters_or_not_in_the_text_format_is_a_data_error(ecg_artifact):
    text = _worker_scrape(ecg_artifact, [])
    without_anomalous = "\n".join(
        line for line in text.splitlines() if "ecg_windows_anomalous" not in line
    )
    with pytest.raises(DataError, match=r"^http://w/metrics: no ecg_windows_anomalous_total"):
        parse_counters(without_anomalous, "http://w/metrics")
    with pytest.raises(DataError, match=r"^/metrics: not a Prometheus text exposition"):
        parse_counters("<html>502 Bad Gateway</html>")


def test_counters_that_equal_the_stream_pass():
    counters = WorkerCounters(consumed=1000, scored=998, rejected=2, anomalous=434)
    assert counter_problems(counters, sent=1000, flagged=434, dead_letters=2) == []
    assert format_counters(counters, []) == (
        "metrics        consumed 1000, scored 998, rejected 2, anomalous 434 (match the stream)"
    )


@pytest.mark.parametrize(
    ("counters", "problem"),
    [
        (
            WorkerCounters(consumed=998, scored=998, rejected=0, anomalous=434),
            "the worker counted 998 windows consumed, the demo sent 1000",
        ),
        (
            WorkerCounters(consumed=1000, scored=999, rejected=0, anomalous=434),
            "the worker's scored 999 + rejected 0 = 999, not the 1000 windows it consumed",
        ),
        (
            WorkerCounters(consumed=1000, scored=1000, rejected=0, anomalous=433),
            "the worker counted 433 anomalous windows, but 434 scores read back have anomaly: true",
        ),
        (
            WorkerCounters(consumed=1000, scored=999, rejected=1, anomalous=434),
            "the worker counted 1 rejected windows, but 0 dead letters were read back",
        ),
    ],
)
def test_each_counter_that_differs_from_the_stream_is_named(counters, problem):
    found = counter_problems(counters, sent=1000, flagged=434, dead_letters=0)
    assert found == [problem]
    assert format_counters(counters, found).endswith("(DIFFER from the stream)")
