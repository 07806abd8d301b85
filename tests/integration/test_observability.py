"""The operators' view, end to end: a real ``ecg-worker`` on the session's Kafka broker, a
real Prometheus using the project's own ``deploy/prometheus/prometheus.yml`` and alert
rules, and the Grafana dashboard's own queries.

One replay (valid windows on a two-partition input topic plus malformed records of several
reasons) feeds every test of this module; each test then checks one thing an operator
relies on: the exposition passes ``promtool check metrics``, the health endpoints answer,
every dashboard panel and alert expression runs and shows what was sent, and the rules are
healthy with exactly the expected alert firing.

Panel queries run at the timestamp of the last scrape with ``$__rate_interval`` spanning the
whole test. Every counter was scraped at 0 before the replay, so Prometheus's ``rate`` and
``increase`` extrapolate nothing and ``rate * range`` is the exact count.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from clients.kafka_clients import make_producer
from clients.replay import ReplayWindow, replay
from clients.worker_process import WorkerProcess, WorkerProcessError
from tests.builders import synthetic_windows, write_artifact_dir
from tests.integration.services import (
    REPO_ROOT,
    WORKER_JOB,
    KafkaBroker,
    PrometheusServer,
    ServiceError,
    TopicNames,
    dashboard_queries,
    expand_grafana_expr,
    free_port,
    project_prometheus_config,
    unavailable,
)
from tests.integration.worker_helpers import (
    group_offsets,
    http_get,
    inputs_committed,
    parse_scrape,
    read_topic,
    sample,
)
from worker.core.agreement import compare_scores
from worker.core.artifact import EcgArtifact
from worker.core.codec import REASONS, Score, decode_score
from worker.core.scorer import Scorer, Scores
from worker.service.drift import ks, psi
from worker.service.metrics import ERROR_BUCKET_FACTORS, LATENCY_BUCKETS_S

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKER_CONFIG = REPO_ROOT / "deploy" / "worker.yaml"
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
VALID = 300
DEVICES = 8
MAX_BATCH_SIZE = 64
LAG_INTERVAL_MS = 500
READY_TIMEOUT_S = 60.0
CONSUME_TIMEOUT_S = 60.0
SELECTOR = f'job="{WORKER_JOB}"'
_ROW = [round(float(v), 6) for v in synthetic_windows(1, seed=5)[0]]
# (value, reason it must be dead-lettered with). Partitions alternate, so both carry some.
MALFORMED: list[tuple[bytes, str]] = [
    (b"", "empty"),
    (b"[" + b"1.0," * 20000 + b"1.0]", "oversized"),
    (b"\xff\xfe\x00garbage", "not_utf8"),
    (b'{"values": [1, 2', "not_json"),
    (b"hello, world", "not_json"),
    (b'{"id": "m-5"', "not_json"),
    (b'"just a string"', "wrong_type"),
    (orjson.dumps({"id": "m-7", "samples": _ROW}), "missing_values"),
    (orjson.dumps({"id": "m-8", "values": _ROW[:100]}), "wrong_length"),
    (orjson.dumps({"id": "m-9", "values": _ROW[:139]}), "wrong_length"),
    (b'{"id": "m-10", "values": [NaN' + b", 1.0" * 139 + b"]}", "non_finite"),
    # Finite JSON that overflows the model's float32 input: rejected at the batch step.
    (orjson.dumps({"id": "m-11", "values": [1e300] * 140}), "non_finite"),
]


@dataclass
class Observed:
    """One replay through a real worker and what could be seen of it afterwards."""

    worker: WorkerProcess
    port: int
    prometheus: PrometheusServer
    topics: TopicNames
    bootstrap: str
    group: str
    artifact: EcgArtifact
    readiness: list[tuple[int, str]]  # distinct /readyz answers until the first 200
    offline: Scores  # offline scoring of the valid windows
    sent_by_partition: dict[int, int]
    send_started_ms: int
    consumed_ms: int  # when the worker's counters showed everything consumed
    scores: list[Score]
    anomalies: list[Score]
    dead_letters: list[Any]
    at: str  # evaluation time: the timestamp of the last scrape (seconds, as Prometheus says)
    range_s: int  # a range that reaches back before the first scrape

    @property
    def total(self) -> int:
        """Records sent to the input topic."""
        return VALID + len(MALFORMED)

    @property
    def rejected_by_reason(self) -> Counter[str]:
        """Malformed records sent, by the reason they must be rejected with."""
        return Counter(reason for _, reason in MALFORMED)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query at the last scrape; raises ``ServiceError`` on an invalid expression."""
        data = self.prometheus.api("query", query=expr, time=self.at)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def one(self, expr: str) -> float:
        """The value of a query that must return exactly one series."""
        result = self.query(expr)
        assert len(result) == 1, f"{expr!r} returned {result}"
        return float(result[0]["value"][1])

    def log(self) -> str:
        """The end of the worker's log, for failure messages."""
        return self.worker.log_path.read_text(errors="replace")[-4000:]


# --------------------------------------------------------------------------- the replay


def _worker_env(
    broker: KafkaBroker, topics: TopicNames, group: str, artifact: Path, port: int
) -> dict[str, str]:
    """Every ``ECG_*`` override of the worker, so the caller's environment cannot leak in;
    the rest comes from the shipped ``deploy/worker.yaml``."""
    return {
        "ECG_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "ECG_GROUP_ID": group,
        "ECG_CLIENT_ID": "test-observability",
        "ECG_INPUT_TOPIC": topics.input,
        "ECG_SCORES_TOPIC": topics.scores,
        "ECG_ANOMALIES_TOPIC": topics.anomalies,
        "ECG_DLQ_TOPIC": topics.dead_letter,
        "ECG_CREATE_TOPICS": "false",
        "ECG_MAX_BATCH_SIZE": str(MAX_BATCH_SIZE),
        "ECG_MAX_WAIT_MS": "20",
        "ECG_ARTIFACT": str(artifact),
        "ECG_METRICS_HOST": "127.0.0.1",
        "ECG_METRICS_PORT": str(port),
        # The served model also scores in shadow (the rollout panels need a shadow; the
        # same model agrees with itself on every window, so no rollout alert matches).
        "ECG_SHADOW_ARTIFACT": str(artifact),
        "ECG_SHADOW_SCORES_TOPIC": f"{topics.scores}.shadow",
    }


def _watch_until_ready(worker: WorkerProcess, port: int) -> list[tuple[int, str]]:
    """Poll ``/readyz`` from the moment the worker starts; the distinct answers seen."""
    seen: list[tuple[int, str]] = []
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        worker.check_alive()
        try:
            answer = http_get(port, "/readyz", timeout_s=1.0)
        except OSError:
            answer = None  # not listening yet
        if answer is not None:
            answer = (answer[0], answer[1].strip())
            if not seen or seen[-1] != answer:
                seen.append(answer)
            if answer[0] == 200:
                return seen
        time.sleep(0.02)
    raise WorkerProcessError(f"/readyz not 200 within {READY_TIMEOUT_S} s; saw {seen}")


def _send(broker: KafkaBroker, topic: str, windows: np.ndarray) -> dict[int, int]:
    """Replay the valid windows with ``ecg-replay``'s sender, malformed records in between
    (keys ``bad-NN``, alternate partitions); returns the malformed records per partition."""
    producer = make_producer(broker.bootstrap_servers)
    try:
        items = [ReplayWindow(id=f"obs-{i:04d}", values=row) for i, row in enumerate(windows)]
        half = len(items) // 2
        replay(producer, topic, items[:half], devices=DEVICES)
        futures = [
            producer.send(topic, key=f"bad-{i:02d}".encode(), value=value, partition=i % 2)
            for i, (value, _) in enumerate(MALFORMED)
        ]
        producer.flush(timeout=30)
        partitions = Counter(f.get(timeout=30).partition for f in futures)
        replay(producer, topic, items[half:], devices=DEVICES)
    finally:
        producer.close(timeout=5)
    return dict(partitions)


def _wait_consumed(worker: WorkerProcess, port: int, total: int) -> None:
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    consumed = None
    while time.monotonic() < deadline:
        worker.check_alive()
        consumed = sample(parse_scrape(http_get(port, "/metrics")[1]), "ecg_windows_consumed_total")
        if consumed == total:
            return
        time.sleep(0.1)
    raise AssertionError(f"worker consumed {consumed} of {total} in {CONSUME_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def observed(
    kafka_broker: KafkaBroker, prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Observed]:
    tmp = tmp_path_factory.mktemp("observability")
    try:
        topics = kafka_broker.topic_set(partitions=2)
        kafka_broker.create_topics([f"{topics.scores}.shadow"])
    except Exception as exc:
        unavailable(f"cannot create topics: {exc}\n{kafka_broker.log_tail()}")
    artifact = write_artifact_dir(tmp / "artifact")
    windows = synthetic_windows(VALID, seed=31)
    offline = Scorer(artifact).score(windows)
    config = yaml.safe_load(WORKER_CONFIG.read_text(encoding="utf-8"))
    config["metrics"]["lag_interval_ms"] = LAG_INTERVAL_MS  # lag back at 0 within a second
    (tmp / "worker.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    group = f"test-observability-{uuid.uuid4().hex[:8]}"
    env = _worker_env(kafka_broker, topics, group, artifact.path, port)
    worker = WorkerProcess(tmp / "worker.yaml", env, port, tmp / "worker.log")
    prometheus: PrometheusServer | None = None
    worker.start()
    try:
        readiness = _watch_until_ready(worker, port)
        started_s = time.time()
        try:
            prometheus = PrometheusServer.start(
                project_prometheus_config([f"127.0.0.1:{port}"], scrape_interval_s=1.0),
                tmp / "prometheus",
                prometheus_bin,
            )
        except ServiceError as exc:
            unavailable(f"prometheus did not start: {exc}")
        # A zero sample of every counter before the first record: nothing to extrapolate.
        prometheus.wait_for(f"ecg_windows_consumed_total{{{SELECTOR}}} == 0", timeout_s=20)

        send_started_ms = time.time_ns() // 1_000_000
        malformed_by_partition = _send(kafka_broker, topics.input, windows)
        _wait_consumed(worker, port, VALID + len(MALFORMED))
        consumed_ms = time.time_ns() // 1_000_000

        bootstrap = kafka_broker.bootstrap_servers
        # Read to each output's end once every input is committed: no extra can come later.
        done = inputs_committed(bootstrap, group, topics.input)
        scores = [
            decode_score(r.value)
            for r in read_topic(bootstrap, topics.scores, VALID, 30, settled=done)
        ]
        flagged = sum(1 for s in scores if s.anomaly is True)
        anomalies = [
            decode_score(r.value)
            for r in read_topic(bootstrap, topics.anomalies, flagged, 30, settled=done)
        ]
        dead = read_topic(bootstrap, topics.dead_letter, len(MALFORMED), 30, settled=done)
        sent_by_partition = Counter(s.source.partition for s in scores)
        sent_by_partition.update(malformed_by_partition)

        # Prometheus has the final state once it scraped everything consumed and lag 0.
        prometheus.wait_for(
            f"sum(ecg_windows_consumed_total{{{SELECTOR}}}) == {VALID + len(MALFORMED)}"
            f" and sum(ecg_consumer_lag_records{{{SELECTOR}}}) == 0"
            f" and count(ecg_consumer_lag_records{{{SELECTOR}}}) == 2",
            timeout_s=20,
        )
        at = prometheus.query(f"timestamp(up{{{SELECTOR}}})")[0]["value"][1]
        yield Observed(
            worker=worker,
            port=port,
            prometheus=prometheus,
            topics=topics,
            bootstrap=bootstrap,
            group=group,
            artifact=artifact,
            readiness=readiness,
            offline=offline,
            sent_by_partition=dict(sent_by_partition),
            send_started_ms=send_started_ms,
            consumed_ms=consumed_ms,
            scores=scores,
            anomalies=anomalies,
            dead_letters=dead,
            at=at,
            range_s=math.ceil(float(at) - started_s) + 5,
        )
    finally:
        try:
            worker.stop()
        finally:
            if prometheus is not None:
                prometheus.stop()


# --------------------------------------------------------------------------- the tests


def test_the_stream_itself_is_what_was_sent(observed: Observed) -> None:
    """The ground truth the metrics are compared with: one score per valid window, the
    offline scorer's anomalies, one dead letter per malformed record, both partitions used."""
    assert sorted(s.id for s in observed.scores) == [f"obs-{i:04d}" for i in range(VALID)]
    by_id = {s.id: s for s in observed.scores}
    streamed = [by_id[f"obs-{i:04d}"] for i in range(VALID)]
    agreement = compare_scores(
        observed.offline.errors,
        observed.offline.anomalies,
        np.array([s.error for s in streamed]),
        np.array([s.anomaly for s in streamed]),
        threshold=observed.artifact.threshold,
        window_length=observed.artifact.window_length,
    )
    assert agreement.ok, [d.describe(str(d.index)) for d in agreement.disagreements]
    flagged = [s.id for s in observed.scores if s.anomaly is True]
    assert 0 < len(flagged) < VALID
    assert sorted(a.id for a in observed.anomalies) == sorted(flagged)
    reasons = Counter(dict(r.headers)["dlq.reason"].decode() for r in observed.dead_letters)
    assert reasons == observed.rejected_by_reason
    assert sorted(observed.sent_by_partition) == [0, 1]
    assert sum(observed.sent_by_partition.values()) == observed.total


def test_promtool_check_metrics_finds_nothing_in_a_real_scrape(observed: Observed) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool not found; run 'make system' (Debian package 'prometheus')")
    status, body = http_get(observed.port, "/metrics")
    assert status == 200 and "ecg_reconstruction_error_bucket" in body

    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=body,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_health_endpoints(observed: Observed) -> None:
    assert http_get(observed.port, "/healthz") == (200, "ok\n")
    assert http_get(observed.port, "/readyz") == (200, "ok (2 partitions)\n")
    # Watched from the start: not ready until the group gave it its partitions.
    first_status, first_reason = observed.readiness[0]
    assert first_status == 503, observed.readiness
    assert first_reason in ("processing loop is not running", "not yet joined the consumer group")
    assert observed.readiness[-1][0] == 200
    assert http_get(observed.port, "/nothing-here")[0] == 404


def test_counters_in_prometheus_equal_what_was_sent(observed: Observed) -> None:
    def total(name: str) -> float:
        return observed.one(f"sum({name}{{{SELECTOR}}})")

    def by_reason(name: str) -> dict[str, float]:
        result = observed.query(f"sum by (reason) ({name}{{{SELECTOR}}})")
        return {r["metric"]["reason"]: float(r["value"][1]) for r in result}

    expected_reasons = {reason: observed.rejected_by_reason.get(reason, 0) for reason in REASONS}
    flagged_on_scores = sum(1 for s in observed.scores if s.anomaly is True)
    consumed = total("ecg_windows_consumed_total")
    scored = total("ecg_windows_scored_total")
    rejected = total("ecg_windows_rejected_total")

    assert consumed == observed.total
    assert scored == VALID
    assert scored + rejected == consumed
    assert total("ecg_windows_anomalous_total") == flagged_on_scores
    assert by_reason("ecg_windows_rejected_total") == expected_reasons
    assert by_reason("ecg_dead_letters_produced_total") == expected_reasons
    assert total("ecg_produce_failures_total") == 0
    assert total("ecg_commit_failures_total") == 0
    assert total("ecg_reconstruction_error_count") == VALID
    assert total("ecg_batch_size_windows_sum") == observed.total


def test_end_to_end_latency_is_observed_once_per_score(observed: Observed) -> None:
    """The latency panel and alert are about scores ("record timestamp to acknowledged
    publish of its score", docs/operations.md); dead letters must not dilute them."""
    count = observed.one(f"sum(ecg_end_to_end_latency_seconds_count{{{SELECTOR}}})")

    assert count == VALID


# --------------------------------------------------------------------------- dashboard


def _panel(observed: Observed, title: str, contains: str = "") -> list[dict[str, Any]]:
    """The result of the one target of dashboard panel ``title`` whose expression contains
    ``contains``, with ``$__rate_interval`` spanning the whole test."""
    exprs = [e for t, e in dashboard_queries() if t == title and contains in e]
    assert len(exprs) == 1, f"dashboard panel {title!r}, target with {contains!r}: {exprs}"
    return observed.query(expand_grafana_expr(exprs[0], rate_interval=f"{observed.range_s}s"))


def _single(result: list[dict[str, Any]]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def _as_count(observed: Observed, result: list[dict[str, Any]]) -> int:
    """A whole-test ``rate`` back to the number of events (exact: nothing extrapolated)."""
    events = _single(result) * observed.range_s
    assert abs(events - round(events)) < 0.01, f"{events} events is not a whole count"
    return round(events)


def _bucket_bounds(upper: float, bounds: list[float]) -> tuple[float, float]:
    """The histogram bucket ``(lower, upper]`` that holds ``upper`` (0 below the first)."""
    index = int(np.searchsorted(bounds, upper, side="left"))
    return (bounds[index - 1] if index else 0.0), bounds[index]


def _quantile_of(observed: Observed, q: float, bucket_metric: str) -> float:
    """Prometheus's ``histogram_quantile`` over the worker's final cumulative bucket counts
    (linear inside the bucket holding the rank; the highest finite bound past it)."""
    counts: dict[float, float] = {}
    for series in observed.query(f"{bucket_metric}{{{SELECTOR}}}"):
        le = float(series["metric"]["le"])
        counts[le] = counts.get(le, 0.0) + float(series["value"][1])
    bounds = sorted(counts)
    rank = q * counts[math.inf]
    lower, below = 0.0, 0.0
    for upper in bounds:
        if counts[upper] >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / (counts[upper] - below)
        lower, below = upper, counts[upper]
    raise AssertionError(f"{bucket_metric}: no bucket holds rank {rank}")


def test_every_dashboard_query_runs_and_shows_data(observed: Observed) -> None:
    missing, not_finite = [], []
    for title, expr in dashboard_queries():
        expanded = expand_grafana_expr(expr, rate_interval=f"{observed.range_s}s")
        result = observed.query(expanded)  # raises with Prometheus's message when invalid
        if not result:
            missing.append((title, expanded))
        not_finite += [(title, expanded) for r in result if not math.isfinite(float(r["value"][1]))]

    assert len(dashboard_queries()) >= 20
    assert not missing, f"panels without data after a replay: {missing}"
    assert not not_finite, f"panels showing NaN/Inf after a replay: {not_finite}"


def test_lag_is_zero_per_partition_and_matches_the_broker(observed: Observed) -> None:
    lag = {
        (r["metric"]["topic"], r["metric"]["partition"]): float(r["value"][1])
        for r in _panel(observed, "Consumer lag per partition")
    }
    offsets = group_offsets(observed.bootstrap, observed.group, observed.topics.input, [0, 1])

    assert lag == {(observed.topics.input, "0"): 0.0, (observed.topics.input, "1"): 0.0}
    # The broker agrees: everything sent to a partition was committed by the worker's group.
    assert offsets == {p: (n, n) for p, n in observed.sent_by_partition.items()}


def test_overview_panels_show_the_live_model_and_what_was_sent(observed: Observed) -> None:
    art = observed.artifact
    flagged = sum(1 for s in observed.scores if s.anomaly is True)
    (model,) = _panel(observed, "Live model")

    assert _single(_panel(observed, "Workers up")) == 1
    assert model["metric"] == {
        "__name__": "ecg_model_info",
        "job": WORKER_JOB,
        "instance": f"127.0.0.1:{observed.port}",
        "model_version": art.model_version,
        "profile": art.profile,
        "threshold_rule": art.threshold_rule,
        "window_length": str(art.window_length),
    }
    assert float(model["value"][1]) == 1
    assert _single(_panel(observed, "Anomaly threshold")) == art.threshold
    assert _single(_panel(observed, "Anomaly share (1h)")) == pytest.approx(flagged / VALID)
    assert _single(_panel(observed, "Dead letters (1h)")) == pytest.approx(len(MALFORMED))


def test_flow_panels_match_the_replay(observed: Observed) -> None:
    flagged = sum(1 for s in observed.scores if s.anomaly is True)

    def throughput(metric: str) -> int:
        return _as_count(observed, _panel(observed, "Throughput", metric))

    dead = {
        r["metric"]["reason"]: _as_count(observed, [r])
        for r in _panel(observed, "Dead letters by reason")
    }
    failures = _panel(observed, "Produce and commit failures", "produce") + _panel(
        observed, "Produce and commit failures", "commit_failures"
    )

    assert throughput("ecg_windows_consumed_total") == observed.total
    assert throughput("ecg_windows_scored_total") == VALID
    assert throughput("ecg_windows_anomalous_total") == flagged
    assert throughput("ecg_windows_rejected_total") == len(MALFORMED)
    assert _single(_panel(observed, "Anomaly rate")) == pytest.approx(flagged / VALID)
    assert {reason: n for reason, n in dead.items() if n} == observed.rejected_by_reason
    assert set(dead) == set(REASONS)  # every reason is shown, at 0 when none came
    assert [float(r["value"][1]) for r in failures] == [0.0, 0.0]


def test_latency_and_batching_panels_match_the_replay(observed: Observed) -> None:
    # Each window's true latency lies between its score's scored_at_ms and the moment the
    # test saw it counted, so each quantile lies between those bounds' buckets.
    stamps = np.array([s.source.timestamp_ms for s in observed.scores], dtype=np.float64)
    scored_at = np.array([s.scored_at_ms for s in observed.scores], dtype=np.float64)
    low = np.sort((scored_at - stamps) / 1000.0)
    high = np.sort((observed.consumed_ms - stamps) / 1000.0)
    bounds = [*LATENCY_BUCKETS_S, math.inf]
    for q, legend in ((0.5, "histogram_quantile(0.5,"), (0.99, "histogram_quantile(0.99,")):
        shown = _single(_panel(observed, "End-to-end latency", legend))
        k = math.ceil(q * VALID) - 1
        assert _bucket_bounds(low[k], bounds)[0] <= shown <= _bucket_bounds(high[k], bounds)[1]
    # A quantile panel cannot leave its histogram's finite buckets, so a bound proves
    # nothing: each must be the quantile of the worker's own final bucket counts.
    for q, legend in ((0.5, "histogram_quantile(0.5,"), (0.99, "histogram_quantile(0.99,")):
        shown = _single(_panel(observed, "Scoring duration per batch", legend))
        expected = _quantile_of(observed, q, "ecg_scoring_duration_seconds_bucket")
        assert 0 < shown == pytest.approx(expected, rel=1e-6)
    mean = _single(_panel(observed, "Batch size", "_sum"))
    assert 1 <= mean <= MAX_BATCH_SIZE
    shown = _single(_panel(observed, "Batch size", "histogram_quantile(0.99,"))
    assert shown == pytest.approx(_quantile_of(observed, 0.99, "ecg_batch_size_windows_bucket"))
    age = _single(_panel(observed, "Seconds since last commit"))
    assert 0 <= age <= float(observed.at) - observed.send_started_ms / 1000.0


def test_model_panels_match_the_scores_on_the_topic(observed: Observed) -> None:
    art = observed.artifact
    errors = np.sort(np.array([s.error for s in observed.scores], dtype=np.float64))
    heatmap = {
        float(r["metric"]["le"]): round(float(r["value"][1]))
        for r in _panel(observed, "Reconstruction error")
    }
    expected = {le: int(np.searchsorted(errors, le, side="right")) for le in heatmap}
    bounds = sorted(heatmap)

    assert heatmap == expected  # every bucket of the heatmap, counted from ecg.scores
    assert math.isinf(bounds[-1]) and heatmap[math.inf] == VALID
    assert art.threshold in heatmap  # a bucket boundary sits exactly at the threshold
    assert heatmap[art.threshold] == sum(1 for s in observed.scores if s.anomaly is False)
    panel = "Reconstruction error vs threshold"
    assert _single(_panel(observed, panel, "ecg_anomaly_threshold")) == art.threshold
    for q in (0.5, 0.9, 0.99):
        shown = _single(_panel(observed, panel, f"histogram_quantile({q},"))
        lower, upper = _bucket_bounds(errors[math.ceil(q * VALID) - 1], bounds)
        assert lower <= shown <= upper, (q, shown, lower, upper)
    drift_psi = _single(_panel(observed, "Drift of the error distribution", "psi"))
    drift_ks = _single(_panel(observed, "Drift of the error distribution", "ks"))
    assert drift_psi == pytest.approx(psi(errors, art.training_error_quantiles), rel=1e-9)
    assert drift_ks == pytest.approx(ks(errors, art.training_error_quantiles), rel=1e-9)


# --------------------------------------------------------------------------- alerts


def _alert_rules() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


def test_alert_expressions_run_and_only_the_dead_letter_alert_matches(observed: Observed) -> None:
    results = {name: observed.query(expr) for name, expr in _alert_rules().items()}
    dead = {
        r["metric"]["reason"]: float(r["value"][1]) for r in results.pop("EcgDeadLettersAppearing")
    }

    assert dead == pytest.approx(dict(observed.rejected_by_reason))
    assert {name: result for name, result in results.items() if result} == {}


def test_rules_are_healthy_and_dead_letters_fire_an_alert_per_reason(observed: Observed) -> None:
    expected = {("EcgDeadLettersAppearing", reason) for reason in observed.rejected_by_reason}
    deadline = time.monotonic() + 20
    while True:  # rules are evaluated every second; wait for one round after the replay
        rules = [r for g in observed.prometheus.api("rules")["groups"] for r in g["rules"]]
        alerts = observed.prometheus.api("alerts")["alerts"]
        active = {(a["labels"]["alertname"], a["labels"].get("reason")) for a in alerts}
        if active == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    assert {r["name"] for r in rules} == set(_alert_rules())
    assert [(r["name"], r["health"], r.get("lastError", "")) for r in rules] == [
        (r["name"], "ok", "") for r in rules
    ]
    assert active == expected, alerts
    for alert in alerts:
        reason = alert["labels"]["reason"]
        assert alert["state"] == "firing"
        assert alert["labels"]["severity"] == "warning"
        annotations = alert["annotations"]
        assert f"(reason {reason})" in annotations["summary"]
        assert f'rejected with reason "{reason}"' in annotations["description"]
        assert not any("error expanding" in text for text in annotations.values()), annotations


def test_worker_stops_cleanly_and_prometheus_sees_it_down(observed: Observed) -> None:
    """Last: stops the worker. The worker-down alert starts its 2-minute wait."""
    code = observed.worker.stop()

    assert code == 0, observed.log()
    assert "stopped cleanly" in observed.log()
    observed.prometheus.wait_for(f"up{{{SELECTOR}}} == 0", timeout_s=15)
    deadline = time.monotonic() + 15
    while True:
        alerts = observed.prometheus.api("alerts")["alerts"]
        down = [a for a in alerts if a["labels"]["alertname"] == "EcgWorkerDown"]
        if down or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [(a["state"], a["labels"]["instance"]) for a in down] == [
        ("pending", f"127.0.0.1:{observed.port}")
    ]


def test_rollout_panels_show_primary_and_shadow_side_by_side(observed: Observed) -> None:
    version = observed.artifact.model_version
    flagged = sum(1 for s in observed.scores if s.anomaly is True)
    models = {r["metric"]["role"]: r["metric"]["model_version"] for r in
              _panel(observed, "Primary and shadow models", "ecg_model_info")
              + _panel(observed, "Primary and shadow models", "ecg_shadow_model_info")}  # fmt: skip
    reloads = {(r["metric"]["role"], r["metric"]["result"]): float(r["value"][1])
               for r in _panel(observed, "Model reloads")}  # fmt: skip
    agreement = {r["metric"]["outcome"]: _as_count(observed, [r])
                 for r in _panel(observed, "Shadow agreement", "by (outcome)")}  # fmt: skip
    rates = {r["metric"]["role"]: float(r["value"][1])
             for r in _panel(observed, "Anomaly rate per model")}  # fmt: skip

    assert models == {"primary": version, "shadow": version}
    assert set(reloads.values()) == {0.0} and len(reloads) == 6
    assert agreement == {"both": flagged, "neither": VALID - flagged,
                         "only_primary": 0, "only_shadow": 0}  # fmt: skip
    assert _single(_panel(observed, "Shadow agreement", "1 - sum")) == 0
    assert rates == {
        "primary": pytest.approx(flagged / VALID),
        "shadow": pytest.approx(flagged / VALID),
    }
    ratios = np.sort([s.error / s.threshold for s in observed.scores])
    bounds = [*ERROR_BUCKET_FACTORS, math.inf]
    for q in (0.5, 0.9):
        # The median sits at the threshold (ratio 1.0, a bucket bound): allow either side.
        ratio = ratios[math.ceil(q * VALID) - 1]
        lower = _bucket_bounds(ratio * (1 - 1e-6), bounds)[0]
        upper = _bucket_bounds(ratio * (1 + 1e-6), bounds)[1]
        shown = _panel(observed, "Error / threshold per model", f"histogram_quantile({q},")
        assert len(shown) == 2  # primary and shadow
        assert all(lower <= float(r["value"][1]) <= upper for r in shown), (q, shown)
