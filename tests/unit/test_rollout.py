"""Model rollout in the loop, with fake Kafka and a fake clock, and real artifact directories.

What an operator would notice: a replaced artifact is picked up between batches and every
score names the model that scored it; a bad replacement is refused with a metric while the
old model keeps scoring; a shadow model's scores go to their own topic and the agreement
counters match an offline comparison; promote makes the shadow the primary.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from tests.builders import make_artifact, synthetic_windows, write_artifact_dir
from tests.fakes import FakeClock, FakeConsumer, FakeProducer, FakeRecord
from worker.core.artifact import WEIGHTS_FILE, load_ecg_artifact, save_ecg_artifact
from worker.core.codec import decode_score
from worker.core.errors import ArtifactError, ConfigError
from worker.core.scorer import Scorer
from worker.core.selftest import SECTION, check_self_test
from worker.service.config import BatchingConfig, WorkerConfig
from worker.service.delivery import AtLeastOnceDelivery
from worker.service.drift import DriftMonitor
from worker.service.http_server import HealthState, MetricsServer
from worker.service.loop import WorkerLoop
from worker.service.metrics import WorkerMetrics
from worker.service.rebalance import PartitionTracker
from worker.service.rollout import Rollout
from worker.service.rollout_metrics import RolloutMetrics
from worker.service.shadow import FlagAgreement

IN, SCORES, ANOM, SHADOW = "ecg.windows", "ecg.scores", "ecg.anomalies", "ecg.scores.shadow"
DLQ = "ecg.windows.dlq"
POLL_S = 1.0


class Rig:
    """A loop with a rollout hook, wired to fakes; the artifact lives in ``tmp/live``."""

    def __init__(self, tmp: Path, shadow: Path | None = None, watch: bool = True) -> None:
        self.clock = FakeClock()
        self.consumer = FakeConsumer(self.clock)
        self.producer = FakeProducer()
        self.registry = CollectorRegistry()
        self.path = tmp / "live"
        self.artifact = write_artifact_dir(self.path, seed=7)
        config = replace(WorkerConfig(), batching=BatchingConfig(4, 50))
        tracker = PartitionTracker()
        tracker.on_partitions_assigned({TopicPartition(IN, 0)})
        self.drift = DriftMonitor(self.artifact.training_error_quantiles, 100, 10)
        metrics = WorkerMetrics(self.artifact, 4, self.drift, self.registry, self.clock)
        self.rollout = Rollout(
            Scorer(self.artifact),
            RolloutMetrics(self.registry),
            metrics,
            artifact_path=self.path,
            shadow_path=shadow,
            shadow_topic=SHADOW,
            watch=watch,
            poll_interval_s=POLL_S,
            drift=self.drift,
            clock=self.clock,
        )
        self.loop = WorkerLoop(
            config,
            self.consumer,
            AtLeastOnceDelivery(self.producer, self.consumer, 5.0),
            Scorer(self.artifact),
            metrics,
            tracker,
            HealthState(60000, self.clock),
            self.drift,
            clock=self.clock,
            rollout=self.rollout,
        )
        self.sent = 0

    def send(self, windows: np.ndarray) -> None:
        records = []
        for row in windows:
            value = orjson.dumps({"id": f"w-{self.sent}", "values": row.tolist()})
            records.append(FakeRecord(IN, 0, self.sent, 1_700_000_000_000, b"dev", value))
            self.sent += 1
        self.consumer.feed(records)

    def rounds(self, n: int) -> None:
        """``n`` loop rounds, one poll interval apart (each batch closes by size)."""
        for _ in range(n):
            self.loop.step()
            self.clock.advance(POLL_S)

    def versions(self, topic: str = SCORES) -> list[str]:
        return [decode_score(s.value).model_version for s in self.producer.by_topic(topic)]

    def value(self, name: str, **labels: str) -> float:
        got = self.registry.get_sample_value(name, labels)
        return 0.0 if got is None else got


def replace_artifact(path: Path, seed: int) -> str:
    """What ``ecg-train --out path`` does: an atomic directory swap."""
    return write_artifact_dir(path, seed=seed).model_version


# --------------------------------------------------------------------------- self-test


def test_saved_artifacts_carry_reference_windows_that_pass_their_self_test(tmp_path: Path) -> None:
    artifact = write_artifact_dir(tmp_path / "a")
    assert len(artifact.metadata[SECTION]["windows"]) == 8
    assert check_self_test(artifact) == 8


def test_weights_of_another_model_fail_the_self_test(tmp_path: Path) -> None:
    # (On disk the weights' sha256 catches this first; the self-test is the second line,
    # for an artifact whose digest was rewritten too or that predates it.)
    a = write_artifact_dir(tmp_path / "a", seed=7)
    b = write_artifact_dir(tmp_path / "b", seed=8)

    with pytest.raises(ArtifactError, match="self-test failed"):
        check_self_test(replace(a, layers=b.layers))


def test_an_artifact_from_before_the_self_test_still_loads(tmp_path: Path) -> None:
    artifact = write_artifact_dir(tmp_path / "a")
    meta_path = tmp_path / "a" / "artifact.json"
    meta = json.loads(meta_path.read_text())
    del meta[SECTION]
    meta_path.write_text(json.dumps(meta))

    assert check_self_test(load_ecg_artifact(tmp_path / "a")) == 0
    assert load_ecg_artifact(tmp_path / "a").model_version == artifact.model_version


def test_given_reference_windows_are_the_ones_stored(tmp_path: Path) -> None:
    rows = synthetic_windows(5, seed=2)
    saved = save_ecg_artifact(make_artifact(), tmp_path / "a", reference_windows=rows)
    assert np.array_equal(np.asarray(saved.metadata[SECTION]["windows"]), rows)


# --------------------------------------------------------------------------- hot reload


def test_a_replaced_artifact_scores_from_the_next_batch_on(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    old = rig.artifact.model_version
    rig.send(synthetic_windows(8, seed=1))
    rig.rounds(2)
    new = replace_artifact(rig.path, seed=8)
    rig.rounds(2)  # one poll sees the change, the next (stable) swaps it in
    rig.send(synthetic_windows(8, seed=2))
    rig.rounds(2)

    assert rig.versions() == [old] * 8 + [new] * 8
    ids = [decode_score(s.value).id for s in rig.producer.by_topic(SCORES)]
    assert ids == [f"w-{i}" for i in range(16)]
    assert rig.value("ecg_model_reloads_total", role="primary", result="applied") == 1
    assert rig.value("ecg_model_info", model_version=new, profile="tutorial",
                     threshold_rule="mean_std", window_length="140") == 1  # fmt: skip
    assert rig.value("ecg_model_windows_scored_total", role="primary", model_version=old) == 8
    assert rig.value("ecg_model_windows_scored_total", role="primary", model_version=new) == 8


def test_per_model_counts_move_when_their_batch_is_committed(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    version = rig.artifact.model_version
    rig.send(synthetic_windows(8, seed=1))
    rig.loop.step()  # a full batch, committed at once (the first commit is due)
    rig.loop.step()  # another: published, its commit waits for commit_interval_ms
    assert len(rig.producer.by_topic(SCORES)) == 8
    assert rig.value("ecg_model_windows_scored_total", role="primary", model_version=version) == 4
    rig.loop.step()  # the input went quiet: committed, counted
    assert rig.value("ecg_model_windows_scored_total", role="primary", model_version=version) == 8


def test_the_new_model_scores_with_its_own_threshold(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    replace_artifact(rig.path, seed=8)
    rig.rounds(2)
    windows = synthetic_windows(4, seed=5)
    rig.send(windows)
    rig.rounds(1)

    expected = Scorer(load_ecg_artifact(rig.path)).score(windows)
    got = [decode_score(s.value) for s in rig.producer.by_topic(SCORES)]
    assert [s.threshold for s in got] == [
        pytest.approx(float(load_ecg_artifact(rig.path).threshold))
    ] * 4
    np.testing.assert_allclose([s.error for s in got], expected.errors, rtol=1e-5)


def test_a_corrupt_replacement_is_refused_and_the_old_model_keeps_scoring(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    old = rig.artifact.model_version
    staging = tmp_path / "broken"
    shutil.copytree(rig.path, staging)
    (staging / WEIGHTS_FILE).write_bytes(b"half a file")
    shutil.rmtree(rig.path)
    staging.rename(rig.path)
    rig.rounds(3)
    rig.send(synthetic_windows(4, seed=1))
    rig.rounds(3)  # refused once, not retried while the directory stays as it is

    assert rig.versions() == [old] * 4
    assert rig.value("ecg_model_reloads_total", role="primary", result="refused") == 1


def test_weights_copied_in_place_from_another_model_are_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    write_artifact_dir(tmp_path / "other", seed=8)
    shutil.copy(tmp_path / "other" / WEIGHTS_FILE, rig.path / WEIGHTS_FILE)
    rig.rounds(3)
    rig.send(synthetic_windows(4, seed=1))
    rig.rounds(1)

    assert rig.versions() == [rig.artifact.model_version] * 4
    assert rig.value("ecg_model_reloads_total", role="primary", result="refused") == 1


def test_a_symlink_swap_is_picked_up(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    v1 = tmp_path / "v1"
    rig.path.rename(v1)
    rig.path.symlink_to(v1)
    rig.rounds(3)  # the same model behind a symlink: nothing to do
    new = write_artifact_dir(tmp_path / "v2", seed=9).model_version
    link = tmp_path / "live.tmp"
    link.symlink_to(tmp_path / "v2")
    link.replace(rig.path)
    rig.rounds(2)
    rig.send(synthetic_windows(4, seed=1))
    rig.rounds(1)

    assert rig.versions() == [new] * 4
    assert rig.value("ecg_model_reloads_total", role="primary", result="applied") == 1


def test_with_watching_off_only_a_request_reloads(tmp_path: Path) -> None:
    rig = Rig(tmp_path, watch=False)
    new = replace_artifact(rig.path, seed=8)
    rig.rounds(3)
    assert rig.rollout.primary.model_version == rig.artifact.model_version

    request = rig.rollout.request("reload", "signal")
    rig.rounds(1)
    assert (request.result, rig.rollout.primary.model_version) == ("applied", new)
    again = rig.rollout.request("reload", "signal")
    rig.rounds(1)
    assert again.result == "unchanged"


def test_a_reload_restarts_the_drift_window_on_the_new_training_errors(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.send(synthetic_windows(8, seed=1))
    rig.rounds(2)
    assert rig.drift.window().size == 8
    replace_artifact(rig.path, seed=8)
    rig.rounds(2)

    assert rig.drift.window().size == 0
    assert rig.drift.quantiles == load_ecg_artifact(rig.path).training_error_quantiles


# --------------------------------------------------------------------------- shadow


def test_shadow_scores_go_to_their_topic_and_agreement_matches_offline(tmp_path: Path) -> None:
    shadow = write_artifact_dir(tmp_path / "candidate", seed=11)
    rig = Rig(tmp_path, shadow=shadow.path)
    windows = synthetic_windows(40, seed=4)
    rig.send(windows)
    rig.rounds(12)

    shadow_scores = [decode_score(s.value) for s in rig.producer.by_topic(SHADOW)]
    assert [s.model_version for s in shadow_scores] == [shadow.model_version] * 40
    assert {decode_score(s.value).model_version for s in rig.producer.by_topic(ANOM)} <= {
        rig.artifact.model_version
    }
    offline = FlagAgreement.of(
        Scorer(rig.artifact).score(windows).anomalies, Scorer(shadow).score(windows).anomalies
    )
    versions = {"primary_version": rig.artifact.model_version,
                "shadow_version": shadow.model_version}  # fmt: skip
    counted = {
        k: rig.value("ecg_shadow_agreement_total", outcome=k, **versions) for k in offline.as_dict()
    }
    assert counted == offline.as_dict()
    assert offline.only_primary + offline.only_shadow > 0  # two different models
    assert rig.value("ecg_shadow_model_info", model_version=shadow.model_version) == 1


def test_a_shadow_that_appears_later_is_picked_up(tmp_path: Path) -> None:
    rig = Rig(tmp_path, shadow=tmp_path / "candidate")
    rig.send(synthetic_windows(4, seed=1))
    rig.rounds(1)
    assert rig.producer.by_topic(SHADOW) == []
    write_artifact_dir(tmp_path / "candidate", seed=11)
    rig.rounds(2)
    rig.send(synthetic_windows(4, seed=2))
    rig.rounds(1)

    assert len(rig.producer.by_topic(SHADOW)) == 4
    assert rig.value("ecg_model_reloads_total", role="shadow", result="applied") == 1


def test_promote_makes_the_shadow_the_primary(tmp_path: Path) -> None:
    shadow = write_artifact_dir(tmp_path / "candidate", seed=11)
    rig = Rig(tmp_path, shadow=shadow.path)
    rig.send(synthetic_windows(4, seed=1))
    rig.rounds(1)
    request = rig.rollout.request("promote", "http")
    rig.rounds(1)
    rig.send(synthetic_windows(4, seed=2))
    rig.rounds(1)

    assert request.result == "applied"
    assert rig.versions() == [rig.artifact.model_version] * 4 + [shadow.model_version] * 4
    assert len(rig.producer.by_topic(SHADOW)) == 4  # no shadow after the promotion
    assert rig.value("ecg_shadow_model_info", model_version=shadow.model_version) == 0


def test_promote_without_a_shadow_is_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    request = rig.rollout.request("promote", "http")
    rig.rounds(1)
    assert request.result == "refused"


# --------------------------------------------------------------------------- HTTP, config


def _post(port: int, path: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_post_reload_answers_with_the_outcome_and_is_off_by_default() -> None:
    registry = CollectorRegistry()
    health = HealthState(60000)
    plain = MetricsServer(registry, health, "127.0.0.1", 0).start()
    calls: list[str] = []

    def reload() -> tuple[int, str]:
        calls.append("reload")
        return 409, "refused: bad artifact\n"

    server = MetricsServer(registry, health, "127.0.0.1", 0, actions={"/reload": reload}).start()
    try:
        assert _post(plain.port, "/reload")[0] == 405
        assert _post(server.port, "/reload") == (409, "refused: bad artifact\n")
        assert _post(server.port, "/metrics")[0] == 405
    finally:
        plain.stop()
        server.stop()
    assert calls == ["reload"]


def test_shadow_scores_may_not_go_to_the_anomaly_topic() -> None:
    with pytest.raises(ConfigError, match="shadow_scores"):
        WorkerConfig.from_mapping({"topics": {"shadow_scores": "ecg.anomalies"}})


def test_shadow_and_reload_settings_from_yaml_and_env() -> None:
    config = WorkerConfig.from_mapping(
        {"reload": {"poll_interval_ms": 500}},
        env={"ECG_SHADOW_ARTIFACT": "artifacts/candidate", "ECG_RELOAD_HTTP": "true"},
    )
    assert config.shadow_artifact == Path("artifacts/candidate")
    assert config.reload.http and config.reload.watch
    assert config.reload.poll_interval_ms == 500
    assert config.required_topics()[-1] == SHADOW
    assert WorkerConfig().shadow_artifact is None
    assert SHADOW not in WorkerConfig().required_topics()


def test_a_weights_file_that_is_not_a_zip_is_an_artifact_error(tmp_path: Path) -> None:
    write_artifact_dir(tmp_path / "a")
    (tmp_path / "a" / WEIGHTS_FILE).write_bytes(b"PK\x03\x04 half written")
    with pytest.raises(ArtifactError, match=r"weights\.npz"):
        load_ecg_artifact(tmp_path / "a")


def test_making_a_promotion_durable_by_a_symlink_swap_changes_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path, shadow=write_artifact_dir(tmp_path / "candidate", seed=11).path)
    rig.rollout.request("promote", "http")
    rig.rounds(1)
    link = tmp_path / "live.new"
    link.symlink_to(tmp_path / "candidate")
    shutil.rmtree(rig.path)
    link.replace(rig.path)
    rig.rounds(3)

    assert rig.value("ecg_model_reloads_total", role="primary", result="applied") == 1
    assert rig.value("ecg_model_reloads_total", role="primary", result="unchanged") == 1


class RefusingShadowProducer(FakeProducer):
    """Refuses every record for the shadow topic one by one, as for a too-large record."""

    def send(self, topic, value=None, key=None, headers=None, partition=None, timestamp_ms=None):
        if topic == SHADOW:
            raise ValueError("record too large for the shadow topic")
        return super().send(topic, value, key, headers, partition, timestamp_ms)


def test_a_refused_shadow_record_is_dropped_and_the_primary_scores_stay(tmp_path: Path) -> None:
    rig = Rig(tmp_path, shadow=write_artifact_dir(tmp_path / "candidate", seed=11).path)
    producer = RefusingShadowProducer()
    rig.loop._delivery = AtLeastOnceDelivery(producer, rig.consumer, 5.0)
    rig.send(synthetic_windows(4, seed=1))
    rig.rounds(1)

    assert [decode_score(s.value).id for s in producer.by_topic(SCORES)] == [
        f"w-{i}" for i in range(4)
    ]
    assert producer.by_topic(DLQ) == [] and producer.by_topic(SHADOW) == []
    assert rig.consumer.committed_offsets[TopicPartition(IN, 0)] == 4
