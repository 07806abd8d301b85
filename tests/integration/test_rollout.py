"""Model rollout on the real broker: a real ``ecg-worker`` whose artifact is replaced while
a stream runs, a corrupt replacement, and a shadow model whose agreement metrics must equal
an offline comparison of the two artifacts on the same windows.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml
from kafka import KafkaProducer

from clients.worker_process import WorkerProcess
from tests.builders import synthetic_windows, write_artifact_dir
from tests.integration.services import KafkaBroker, TopicNames, free_port
from tests.integration.worker_helpers import parse_scrape, read_topic, sample
from worker.core.agreement import compare_scores
from worker.core.artifact import WEIGHTS_FILE, EcgArtifact
from worker.core.codec import Score, decode_score
from worker.core.scorer import Scorer
from worker.service.shadow import FlagAgreement

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 60.0


@dataclass
class Rollout:
    """A test's broker, topics, artifacts and worker."""

    broker: KafkaBroker
    topics: TopicNames
    tmp: Path
    shadow_topic: str
    live: Path
    artifact: EcgArtifact
    producer: KafkaProducer
    workers: list[WorkerProcess] = field(default_factory=list)
    port: int = 0

    def start(self, **overrides: Any) -> WorkerProcess:
        self.port = free_port()
        config: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": self.broker.bootstrap_servers,
                "group_id": f"test-rollout-{uuid.uuid4().hex[:8]}",
            },
            "topics": {**self.topics.as_config(), "shadow_scores": self.shadow_topic},
            "batching": {"max_batch_size": 32, "max_wait_ms": 20},
            "artifact": str(self.live),
            "metrics": {"port": self.port},
            "reload": {"poll_interval_ms": 200},
            **overrides,
        }
        path = self.tmp / f"worker-{len(self.workers)}.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        env = {k: "" for k in os.environ if k.startswith("ECG_")}  # nothing leaks in
        worker = WorkerProcess(path, env, self.port, self.tmp / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        worker.start()
        worker.wait_ready(READY_TIMEOUT_S)
        return worker

    def send(self, ids: list[str], windows: np.ndarray, pause_s: float = 0.0) -> None:
        for record_id, row in zip(ids, windows, strict=True):
            value = orjson.dumps({"id": record_id, "values": row.tolist()})
            self.producer.send(self.topics.input, value=value, key=b"device-00")
            if pause_s:
                time.sleep(pause_s)
        self.producer.flush(timeout=30)

    def metrics(self) -> dict[Any, float]:
        return parse_scrape(self.workers[-1].scrape_metrics())

    def wait_metric(self, name: str, at_least: float, timeout_s: float = 30.0, **labels: str):
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            self.workers[-1].check_alive()
            value = sample(self.metrics(), name, **labels)
            if value is not None and value >= at_least:
                return value
            time.sleep(0.1)
        raise AssertionError(f"{name}{labels} = {value}, wanted >= {at_least}")

    def post(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.port}{path}"
        request = urllib.request.Request(url, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=40) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def scores(self, topic: str, n: int) -> list[Score]:
        return [
            decode_score(r.value)
            for r in read_topic(self.broker.bootstrap_servers, topic, n, 30, 0.5)
        ]


@pytest.fixture
def rollout(
    kafka_broker: KafkaBroker, topic_names: TopicNames, tmp_path: Path
) -> Iterator[Rollout]:
    shadow_topic = f"{topic_names.scores}.shadow"
    kafka_broker.create_topics([shadow_topic])
    live = tmp_path / "live"
    env = Rollout(
        kafka_broker,
        topic_names,
        tmp_path,
        shadow_topic,
        live,
        write_artifact_dir(live, seed=7),
        KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all"),
    )
    try:
        yield env
    finally:
        for worker in env.workers:
            worker.stop()
        env.producer.close(timeout=5)


def assert_scored_by_named_model(
    scores: list[Score], windows: dict[str, np.ndarray], models: dict[str, EcgArtifact]
) -> int:
    """Every score agrees (the score-agreement contract: batch sizes differ, so no float
    ``==``) with what the model it names gives that window offline. Returns how many
    borderline windows flipped their flag."""
    flipped = 0
    for version, artifact in models.items():
        mine = [s for s in scores if s.model_version == version]
        if not mine:
            continue
        offline = Scorer(artifact).score(np.array([windows[s.id] for s in mine]))
        agreement = compare_scores(
            offline.errors,
            offline.anomalies,
            np.array([s.error for s in mine]),
            np.array([s.anomaly for s in mine]),
            threshold=artifact.threshold,
            window_length=artifact.window_length,
        )
        assert agreement.ok, [d.describe(mine[d.index].id) for d in agreement.disagreements]
        assert all(s.threshold == artifact.threshold for s in mine)
        flipped += len(agreement.borderline_flipped)
    return flipped


# --------------------------------------------------------------------------- tests


def test_an_artifact_replaced_while_the_stream_runs_takes_over_without_loss(
    rollout: Rollout,
) -> None:
    n = 600
    ids = [f"r-{i:04d}" for i in range(n)]
    windows = synthetic_windows(n, seed=21)
    rollout.start()
    sender = threading.Thread(target=rollout.send, args=(ids, windows, 0.005))
    sender.start()
    rollout.wait_metric("ecg_windows_scored_total", 150)
    new = write_artifact_dir(rollout.live, seed=8)  # what ecg-train --out does: atomic swap
    sender.join(timeout=60)
    scores = rollout.scores(rollout.topics.scores, n)

    assert sorted(s.id for s in scores) == ids  # every id exactly once, none lost
    by_offset = sorted(scores, key=lambda s: s.source.offset)
    versions = [s.model_version for s in by_offset]
    switch = versions.index(new.model_version)
    assert 0 < switch < n - 100, "the swap happened while the stream ran"
    assert versions == [rollout.artifact.model_version] * switch + [new.model_version] * (
        n - switch
    )
    assert_scored_by_named_model(
        scores,
        dict(zip(ids, windows, strict=True)),
        {rollout.artifact.model_version: rollout.artifact, new.model_version: new},
    )
    metrics = rollout.metrics()
    assert sample(metrics, "ecg_model_reloads_total", role="primary", result="applied") == 1
    assert sample(metrics, "ecg_model_windows_scored_total", role="primary",
                  model_version=new.model_version) == n - switch  # fmt: skip
    assert "swapped in" in rollout.workers[-1].log_path.read_text()


def test_a_corrupt_replacement_is_refused_and_the_old_model_keeps_scoring(
    rollout: Rollout,
) -> None:
    worker = rollout.start(reload={"poll_interval_ms": 200, "http": True})
    broken = rollout.tmp / "broken"
    shutil.copytree(rollout.live, broken)
    (broken / WEIGHTS_FILE).write_bytes(b"PK\x03\x04 half written")
    shutil.rmtree(rollout.live)
    broken.rename(rollout.live)
    rollout.wait_metric("ecg_model_reloads_total", 1, role="primary", result="refused")
    status, text = rollout.post("/reload")  # an operator insists: refused again, with why
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGHUP)  # and once more by signal
    rollout.wait_metric("ecg_model_reloads_total", 3, role="primary", result="refused")
    ids = [f"c-{i:03d}" for i in range(100)]
    windows = synthetic_windows(100, seed=22)
    rollout.send(ids, windows)
    scores = rollout.scores(rollout.topics.scores, 100)

    assert status == 409 and "weights.npz" in text
    assert sorted(s.id for s in scores) == ids
    assert {s.model_version for s in scores} == {rollout.artifact.model_version}
    assert_scored_by_named_model(scores, dict(zip(ids, windows, strict=True)),
                                 {rollout.artifact.model_version: rollout.artifact})  # fmt: skip
    log = worker.log_path.read_text()
    assert log.count("reload (watch) refused") == 1 and "reload (signal) refused" in log
    info = {"profile": "tutorial", "threshold_rule": "mean_std", "window_length": "140"}
    version = rollout.artifact.model_version
    assert sample(rollout.metrics(), "ecg_model_info", model_version=version, **info) == 1


def test_shadow_agreement_equals_an_offline_comparison_and_promote_swaps_it_in(
    rollout: Rollout,
) -> None:
    candidate = write_artifact_dir(rollout.tmp / "candidate", seed=11)
    primary = rollout.artifact
    rollout.start(
        shadow_artifact=str(candidate.path), reload={"poll_interval_ms": 200, "http": True}
    )
    n = 400
    ids = [f"s-{i:04d}" for i in range(n)]
    windows = synthetic_windows(n, seed=23)
    rollout.send(ids, windows)
    shadow = rollout.scores(rollout.shadow_topic, n)
    scores = rollout.scores(rollout.topics.scores, n)
    flagged = sum(1 for s in scores if s.anomaly)
    anomalies = rollout.scores(rollout.topics.anomalies, flagged)
    rollout.wait_metric("ecg_model_windows_scored_total", n, role="shadow",
                        model_version=candidate.model_version)  # fmt: skip
    metrics = rollout.metrics()
    versions = {"primary_version": primary.model_version, "shadow_version": candidate.model_version}
    counted = {o: sample(metrics, "ecg_shadow_agreement_total", outcome=o, **versions)
               for o in ("both", "only_primary", "only_shadow", "neither")}  # fmt: skip

    # Shadow records: one per window, on their own topic only.
    assert sorted(s.id for s in shadow) == ids
    assert {s.model_version for s in shadow} == {candidate.model_version}
    assert {s.model_version for s in anomalies} == {primary.model_version}
    # The counters are exactly what the two topics say, window by window...
    p_flags = {s.id: s.anomaly for s in scores}
    s_flags = {s.id: s.anomaly for s in shadow}
    from_topics = FlagAgreement.of(
        np.array([p_flags[i] for i in ids]), np.array([s_flags[i] for i in ids])
    )
    assert counted == from_topics.as_dict()
    # ...and equal the offline comparison of the two artifacts, except where a borderline
    # window (error within the agreement tolerance of a threshold) flipped.
    windows_by_id = dict(zip(ids, windows, strict=True))
    flipped = assert_scored_by_named_model(scores, windows_by_id, {primary.model_version: primary})
    flipped += assert_scored_by_named_model(
        shadow, windows_by_id, {candidate.model_version: candidate}
    )
    offline = FlagAgreement.of(
        Scorer(primary).score(windows).anomalies, Scorer(candidate).score(windows).anomalies
    ).as_dict()
    assert sum(abs(counted[k] - offline[k]) for k in offline) <= 2 * flipped
    assert offline["only_primary"] + offline["only_shadow"] > 0  # two different models

    # Promote while a stream runs: every id once, old model up to a point, new one after it.
    more = [f"p-{i:03d}" for i in range(400)]
    sender = threading.Thread(
        target=rollout.send, args=(more, synthetic_windows(400, seed=24), 0.005)
    )
    sender.start()
    rollout.wait_metric("ecg_windows_scored_total", n + 100)
    status, text = rollout.post("/promote")
    sender.join(timeout=60)
    after = sorted(
        (s for s in rollout.scores(rollout.topics.scores, n + 400) if s.id.startswith("p-")),
        key=lambda s: s.source.offset,
    )
    versions = [s.model_version for s in after]
    switch = versions.index(candidate.model_version)

    assert status == 200 and candidate.model_version in text
    assert sorted(s.id for s in after) == more
    assert 0 < switch < 400
    assert versions == [primary.model_version] * switch + [candidate.model_version] * (400 - switch)
    shadowed = [s.id for s in rollout.scores(rollout.shadow_topic, n + switch)]
    assert len(shadowed) == n + switch  # the shadow slot is empty after the promotion


def test_shadow_scores_ride_the_exactly_once_transaction(rollout: Rollout) -> None:
    candidate = write_artifact_dir(rollout.tmp / "candidate", seed=11)
    rollout.start(shadow_artifact=str(candidate.path), delivery={"mode": "exactly_once"})
    ids = [f"x-{i:03d}" for i in range(150)]
    rollout.send(ids, synthetic_windows(150, seed=25))
    shadow = rollout.scores(rollout.shadow_topic, 150)
    scores = rollout.scores(rollout.topics.scores, 150)

    assert sorted(s.id for s in shadow) == ids == sorted(s.id for s in scores)
    assert {s.model_version for s in shadow} == {candidate.model_version}
    assert "delivery mode exactly_once" in rollout.workers[-1].log_path.read_text()
