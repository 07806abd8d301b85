"""``ecg-worker`` as a real process against the session's real Kafka broker.

Each test runs the worker's console script with a temporary config on its own uuid-named
topics and a small artifact (random dense weights, written in the worker's format), sends
windows with kafka-python (or kcat), and reads the outputs back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from tests.builders import synthetic_windows, write_artifact_dir
from tests.integration.services import KafkaBroker, TopicNames, free_port
from tests.integration.worker_helpers import client_settings, inputs_committed
from tests.integration.worker_helpers import read_topic as read
from worker.core.agreement import compare_scores
from worker.core.artifact import load_ecg_artifact
from worker.core.codec import Score, decode_score
from worker.core.scorer import Scorer

pytestmark = pytest.mark.integration

WORKER = Path(sys.executable).parent / "ecg-worker"
READY_TIMEOUT_S = 60.0
# ECG_TEST_WORKER_LOG_LEVEL=DEBUG keeps kafka-python's detail in the workers' logs.
LOG_LEVEL = os.environ.get("ECG_TEST_WORKER_LOG_LEVEL", "INFO")


# --------------------------------------------------------------------------- helpers


class Worker:
    """One ``ecg-worker`` child process with its own config and log file."""

    def __init__(self, config_path: Path, log_path: Path, metrics_port: int) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.metrics_port = metrics_port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(
            [str(WORKER), "--config", str(self.config_path), "--log-level", LOG_LEVEL],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if not k.startswith("ECG_")},
        )
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"worker exited {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail(f"worker not ready within {timeout_s} s:\n{self.log()[-3000:]}")

    def metric(self, name: str) -> float:
        status, body = self.get("/metrics")
        assert status == 200
        for line in body.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not exposed")

    def terminate(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class Env:
    """A test's broker, topics, artifact and workers (killed at the end). ``library`` is
    the workers' Kafka backend; tests give ``kafka.client`` settings in kafka-python's
    names, translated for the other backend."""

    def __init__(
        self, broker: KafkaBroker, topics: TopicNames, tmp: Path, library: str = "kafka-python"
    ) -> None:
        self.library = library
        self.broker = broker
        self.topics = topics
        self.tmp = tmp
        self.artifact_dir = tmp / "artifact"
        self.artifact = write_artifact_dir(self.artifact_dir)
        self.group = f"test-worker-{uuid.uuid4().hex[:8]}"
        self.workers: list[Worker] = []
        self.producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")

    def config(self, **overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": self.broker.bootstrap_servers,
                "group_id": self.group,
                "client_id": "test-worker",
            },
            "topics": self.topics.as_config(),
            "batching": {"max_batch_size": 64, "max_wait_ms": 20},
            "artifact": str(self.artifact_dir),
            "metrics": {"port": free_port(), "lag_interval_ms": 500},
            "startup": {"timeout_ms": 10000},
            "drift": {"window_size": 200, "min_samples": 20},
        }
        for section, values in overrides.items():
            if isinstance(values, dict):
                config.setdefault(section, {}).update(values)
            else:
                config[section] = values
        kafka = config["kafka"]
        kafka["library"] = self.library
        kafka["client"] = client_settings(self.library, kafka.get("client") or {})
        return config

    def worker(self, **overrides: Any) -> Worker:
        config = self.config(**overrides)
        index = len(self.workers)
        path = self.tmp / f"worker-{index}.yaml"
        path.write_text(yaml.safe_dump(config))
        worker = Worker(path, self.tmp / f"worker-{index}.log", config["metrics"]["port"])
        self.workers.append(worker)
        return worker.start()

    def send(self, values: list[bytes], key: bytes | None = b"device-00") -> None:
        for value in values:
            self.producer.send(self.topics.input, value=value, key=key)
        self.producer.flush(timeout=30)

    def send_windows(self, ids: list[str], windows: np.ndarray, devices: int = 4) -> None:
        for i, (record_id, row) in enumerate(zip(ids, windows, strict=True)):
            value = orjson.dumps({"id": record_id, "values": row.tolist(), "label": 1})
            self.producer.send(
                self.topics.input, value=value, key=f"device-{i % devices:02d}".encode()
            )
        self.producer.flush(timeout=30)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.producer.close(timeout=5)


@pytest.fixture
def env(
    kafka_broker: KafkaBroker, topic_names: TopicNames, tmp_path: Path, kafka_library: str
) -> Iterator[Env]:
    environment = Env(kafka_broker, topic_names, tmp_path, kafka_library)
    try:
        yield environment
    finally:
        environment.close()


def score_docs(records: list[Any]) -> list[Score]:
    return [decode_score(r.value) for r in records]


def committed_offset(bootstrap: str, group: str, topic: str, partition: int = 0) -> int | None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return consumer.committed(TopicPartition(topic, partition))
    finally:
        consumer.close()


# --------------------------------------------------------------------------- tests


def test_valid_windows_get_one_score_each_equal_to_offline_scoring(env: Env) -> None:
    n = 300
    windows = synthetic_windows(n, seed=11)
    ids = [f"w-{i:04d}" for i in range(n)]
    worker = env.worker()
    worker.wait_ready()
    env.send_windows(ids, windows)

    bootstrap = env.broker.bootstrap_servers
    done = inputs_committed(bootstrap, env.group, env.topics.input)
    scores = score_docs(read(bootstrap, env.topics.scores, n, settled=done))
    offline = Scorer(load_ecg_artifact(env.artifact_dir)).score(windows)
    by_id = {s.id: s for s in scores}
    assert len(scores) == n and sorted(by_id) == ids  # exactly one score per id
    agreement = compare_scores(
        offline.errors,
        offline.anomalies,
        np.array([by_id[i].error for i in ids]),
        np.array([by_id[i].anomaly for i in ids]),
        threshold=env.artifact.threshold,
        window_length=env.artifact.window_length,
    )
    assert agreement.ok, [d.describe(ids[d.index]) for d in agreement.disagreements]
    for record_id in ids:
        s = by_id[record_id]
        assert s.model_version == env.artifact.model_version
        assert s.fields == {"label": 1}
        assert s.source.topic == env.topics.input
    flagged = {i for i in ids if by_id[i].anomaly}
    assert 0 < len(flagged) < n
    anomalies = score_docs(
        read(env.broker.bootstrap_servers, env.topics.anomalies, len(flagged), exact_wait_s=0.5)
    )
    assert sorted(a.id for a in anomalies) == sorted(flagged)
    assert all(a.segments and a.anomaly is True for a in anomalies)
    # The operators' view agrees with the stream once the last commit is counted.
    deadline = time.monotonic() + 10
    while worker.metric("ecg_windows_scored_total") < n and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker.metric("ecg_windows_consumed_total") == n
    assert worker.metric("ecg_windows_scored_total") == n
    assert worker.metric("ecg_windows_anomalous_total") == len(flagged)
    assert worker.terminate() == 0


def test_malformed_records_go_to_the_dead_letter_topic_and_the_stream_goes_on(env: Env) -> None:
    good = synthetic_windows(12, seed=2)
    row = good[0].tolist()
    malformed = [
        (b"", "empty"),
        (b"[" + b"1.0," * 20000 + b"1.0]", "oversized"),
        (b"\xff\xfe\x00garbage", "not_utf8"),
        (b'{"values": [1, 2', "not_json"),
        (b'"just a string"', "wrong_type"),
        (orjson.dumps({"id": "m-6", "samples": row}), "missing_values"),
        (orjson.dumps({"id": ["x"], "values": row}), "bad_id"),
        (orjson.dumps({"id": "m-8", "values": row[:100]}), "wrong_length"),
        (orjson.dumps({"id": "m-9", "values": ["a", *row[1:]]}), "non_numeric"),
        (b'{"id": "m-10", "values": [NaN' + b", 1.0" * 139 + b"]}", "non_finite"),
        (orjson.dumps({"id": "m-11", "values": [True] * 140}), "non_numeric"),
    ]
    worker = env.worker()
    worker.wait_ready()
    expected_offsets: dict[int, str] = {}
    offset = 0
    for i in range(12):  # valid, malformed, valid, malformed, ...
        env.send([orjson.dumps({"id": f"ok-{i}", "values": good[i].tolist()})])
        offset += 1
        if i < len(malformed):
            env.send([malformed[i][0]], key=f"bad-{i}".encode())
            expected_offsets[offset] = malformed[i][1]
            offset += 1

    dead = read(
        env.broker.bootstrap_servers, env.topics.dead_letter, len(malformed), exact_wait_s=0.5
    )
    scores = score_docs(read(env.broker.bootstrap_servers, env.topics.scores, 12, exact_wait_s=0.5))
    assert sorted(s.id for s in scores) == sorted(f"ok-{i}" for i in range(12))
    assert len(dead) == len(malformed)
    sent_by_key = {f"bad-{i}".encode(): value for i, (value, _) in enumerate(malformed)}
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        source_offset = int(headers["dlq.source.offset"])
        assert headers["dlq.reason"] == expected_offsets[source_offset]
        assert headers["dlq.source.topic"] == env.topics.input
        assert headers["dlq.source.partition"] == "0"
        assert headers["dlq.detail"]
        original = sent_by_key[record.key]
        if headers["dlq.reason"] == "oversized":  # cut to max_record_bytes, size in headers
            assert record.value == original[:65536]
            assert headers["dlq.original.value.size"] == str(len(original))
        else:
            assert record.value == original  # original bytes and key
    assert {h for r in dead for k, h in r.headers if k == "dlq.reason"} >= {
        reason.encode() for _, reason in malformed
    }
    assert worker.process is not None and worker.process.poll() is None  # still running
    assert worker.get("/healthz")[0] == 200
    env.send_windows(["after"], synthetic_windows(1, seed=9))
    later = score_docs(read(env.broker.bootstrap_servers, env.topics.scores, 13))
    assert "after" in {s.id for s in later}
    assert worker.terminate() == 0


def test_sigterm_mid_stream_then_restart_loses_nothing(env: Env) -> None:
    n = 3000
    ids = [f"s-{i:05d}" for i in range(n)]
    env.send_windows(ids, synthetic_windows(n, seed=4))
    config = {"batching": {"max_batch_size": 16, "max_wait_ms": 5}}
    first = env.worker(**config)
    first.wait_ready()
    deadline = time.monotonic() + 30
    # The first batch is committed at once, the next ones a second later
    # (delivery.commit_interval_ms): stopped then, the worker holds acknowledged batches
    # not committed yet, and must commit them on its way out.
    while first.metric("ecg_windows_consumed_total") < 16 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first.terminate() == 0, first.log()[-3000:]
    assert "stopped cleanly" in first.log()
    done_before = committed_offset(env.broker.bootstrap_servers, env.group, env.topics.input)
    assert done_before is not None and 0 < done_before < n, "stop did not land mid-stream"

    second = env.worker(**config)
    done = inputs_committed(env.broker.bootstrap_servers, env.group, env.topics.input)
    scores = score_docs(
        read(env.broker.bootstrap_servers, env.topics.scores, n, timeout_s=60, settled=done)
    )
    seen = [s.id for s in scores]
    assert set(seen) == set(ids)  # nothing lost
    assert len(seen) == n  # and, after a clean stop, nothing scored twice
    assert second.terminate() == 0


def test_sigterm_publishes_and_commits_the_batch_in_hand(env: Env) -> None:
    # A batch that closes only in 20 s: SIGTERM must close it, publish it and commit it
    # (a drain that dropped it would pass any test that restarts the worker afterwards).
    worker = env.worker(batching={"max_batch_size": 64, "max_wait_ms": 20000})
    worker.wait_ready()
    windows = synthetic_windows(69, seed=6)
    ids = [f"h-{i:02d}" for i in range(69)]
    env.send_windows(ids[:64], windows[:64])  # one full batch: published at once
    deadline = time.monotonic() + 30
    while worker.metric("ecg_windows_consumed_total") < 64 and time.monotonic() < deadline:
        time.sleep(0.1)
    env.send_windows(ids[64:], windows[64:])
    time.sleep(3)  # polled within 0.2 s into the open batch, which is due only in 20 s
    assert worker.metric("ecg_windows_consumed_total") == 64  # the five are still in hand
    bootstrap = env.broker.bootstrap_servers
    assert committed_offset(bootstrap, env.group, env.topics.input) == 64
    assert worker.terminate() == 0, worker.log()[-3000:]

    assert committed_offset(bootstrap, env.group, env.topics.input) == 69
    done = inputs_committed(bootstrap, env.group, env.topics.input)
    scores = score_docs(read(bootstrap, env.topics.scores, 69, settled=done))
    assert sorted(s.id for s in scores) == ids  # each once, by the worker that was stopped


def test_two_workers_in_one_group_share_a_two_partition_topic(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    topics = kafka_broker.topic_set(partitions=2)
    environment = Env(kafka_broker, topics, tmp_path)
    try:
        a = environment.worker()
        b = environment.worker()
        a.wait_ready()
        b.wait_ready()
        deadline = time.monotonic() + 30  # wait until the group settled on one partition each
        while time.monotonic() < deadline:
            if a.get("/readyz")[1].startswith("ok (1") and b.get("/readyz")[1].startswith("ok (1"):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"no 1+1 assignment: {a.get('/readyz')} {b.get('/readyz')}")
        n = 400
        ids = [f"p-{i:04d}" for i in range(n)]
        environment.send_windows(ids, synthetic_windows(n, seed=8), devices=16)
        done = inputs_committed(kafka_broker.bootstrap_servers, environment.group, topics.input)
        scores = score_docs(read(kafka_broker.bootstrap_servers, topics.scores, n, settled=done))
        assert sorted(s.id for s in scores) == ids
        assert {s.source.partition for s in scores} == {0, 1}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            per_worker = [w.metric("ecg_windows_scored_total") for w in (a, b)]
            if sum(per_worker) == n:
                break
            time.sleep(0.2)
        assert sum(per_worker) == n and min(per_worker) > 0  # both did part of the work
        assert a.terminate() == 0 and b.terminate() == 0
    finally:
        environment.close()


def test_kcat_produces_a_window_and_reads_its_score(env: Env, kcat: str) -> None:
    worker = env.worker()
    worker.wait_ready()
    window = [round(float(v), 6) for v in synthetic_windows(1, seed=21)[0]]
    line = orjson.dumps({"id": "kcat-1", "values": window}).decode()
    bootstrap = env.broker.bootstrap_servers
    # The commands of docs/worker.md ("kcat examples"), with this test's names.
    subprocess.run(
        [kcat, "-P", "-b", bootstrap, "-t", env.topics.input, "-K", ":"],
        input=f"device-7:{line}\n",
        text=True,
        check=True,
        timeout=30,
    )
    deadline = time.monotonic() + 30
    while True:  # the documented read command stops at the end; retry until scored
        result = subprocess.run(
            [kcat, "-C", "-b", bootstrap, "-t", env.topics.scores, "-o", "beginning", "-e",
             "-f", "%k %s\n"],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        if result.stdout.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    key, _, value = result.stdout.strip().partition(" ")
    doc = decode_score(value.encode())
    assert key == "device-7" and doc.id == "kcat-1"
    offline = Scorer(env.artifact).score(np.array([window]))
    assert compare_scores(
        offline.errors,
        offline.anomalies,
        np.array([doc.error]),
        np.array([doc.anomaly]),
        threshold=env.artifact.threshold,
        window_length=env.artifact.window_length,
    ).ok
    assert worker.terminate() == 0


def test_unreachable_broker_fails_fast_with_a_clear_error(
    tmp_path: Path, kafka_library: str
) -> None:
    write_artifact_dir(tmp_path / "artifact")
    port = free_port()  # nothing listens there
    config = {
        "kafka": {"bootstrap_servers": f"127.0.0.1:{port}", "library": kafka_library},
        "artifact": str(tmp_path / "artifact"),
        "metrics": {"port": free_port()},
        "startup": {"timeout_ms": 2000},
    }
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    result = subprocess.run(
        [str(WORKER), "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in result.stderr
    assert elapsed < 20


def test_missing_topics_fail_at_startup_unless_created(env: Env) -> None:
    missing = dict(env.topics.as_config(), scores=f"missing-{uuid.uuid4().hex[:8]}")
    worker = env.worker(topics=missing)
    assert worker.process is not None
    assert worker.process.wait(timeout=60) == 1
    assert f"topics missing on {env.broker.bootstrap_servers}: {missing['scores']}" in worker.log()
    created = env.worker(topics={**missing, "create_topics": True})
    created.wait_ready()
    env.send_windows(["c-1"], synthetic_windows(1))
    scores = score_docs(read(env.broker.bootstrap_servers, missing["scores"], 1))
    assert [s.id for s in scores] == ["c-1"]
    assert created.terminate() == 0


def test_failed_publish_commits_nothing_exits_nonzero_and_restart_replays(env: Env) -> None:
    bootstrap = env.broker.bootstrap_servers
    fast_fail = {
        "kafka": {
            "client": {
                "max_block_ms": 3000,
                "delivery_timeout_ms": 4000,
                "request_timeout_ms": 3000,
            }
        }
    }
    worker = env.worker(**fast_fail)
    worker.wait_ready()
    env.send_windows([f"a-{i}" for i in range(20)], synthetic_windows(20, seed=1))
    assert len(read(bootstrap, env.topics.scores, 20)) == 20
    deadline = time.monotonic() + 10
    while committed_offset(bootstrap, env.group, env.topics.input) != 20:
        assert time.monotonic() < deadline, "first batch never committed"
        time.sleep(0.1)

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([env.topics.scores], timeout_ms=10000)
    finally:
        admin.close()
    env.send_windows([f"b-{i}" for i in range(20)], synthetic_windows(20, seed=2))
    assert worker.process is not None
    code = worker.process.wait(timeout=60)
    assert code == 1
    assert "offsets not committed" in worker.log()
    assert committed_offset(bootstrap, env.group, env.topics.input) == 20  # no commit

    deadline = time.monotonic() + 30
    while True:  # topic deletion is asynchronous; recreate once the name is free
        try:
            env.broker.create_topics([env.topics.scores])
            break
        except Exception:
            assert time.monotonic() < deadline, "could not recreate the scores topic"
            time.sleep(0.5)
    restarted = env.worker(**fast_fail)
    replayed = score_docs(read(bootstrap, env.topics.scores, 20, timeout_s=60))
    assert sorted(s.id for s in replayed) == sorted(f"b-{i}" for i in range(20))
    assert restarted.terminate() == 0
