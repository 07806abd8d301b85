"""WorkerMetrics: names and labels of docs/design.md, values after a batch, scrape-time gauges."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.fakes import FakeClock
from worker.core.artifact import EcgArtifact
from worker.service.drift import DriftMonitor
from worker.service.metrics import BatchReport, WorkerMetrics, error_buckets
from worker.service.rollout_metrics import RolloutMetrics

DESIGN = Path(__file__).resolve().parents[2] / "docs" / "design.md"


@pytest.fixture
def setup(ecg_artifact: EcgArtifact):
    registry = CollectorRegistry()
    clock = FakeClock()
    drift = DriftMonitor(ecg_artifact.training_error_quantiles, window_size=100, min_samples=10)
    metrics = WorkerMetrics(ecg_artifact, 256, drift, registry, clock)
    return registry, clock, drift, metrics


def value(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    v = registry.get_sample_value(name, labels or {})
    assert v is not None, f"{name} {labels} not exposed"
    return v


def test_every_metric_of_the_design_is_exposed(setup) -> None:
    registry, *_ = setup
    RolloutMetrics(registry)  # the rollout's series live on the same registry in the worker
    documented = set(re.findall(r"^\| `(ecg_[a-z_]+)`", DESIGN.read_text(), flags=re.M))
    assert len(documented) >= 17
    exposed = {m.name for m in registry.collect()}
    # Counters are exposed with _total; prometheus_client names the family without it.
    missing = {
        n for n in documented if n not in exposed and n.removesuffix("_total") not in exposed
    }
    assert not missing


def test_counters_start_at_zero_and_move_with_a_committed_batch(setup) -> None:
    registry, _, _, metrics = setup
    assert value(registry, "ecg_windows_consumed_total") == 0
    assert value(registry, "ecg_windows_rejected_total", {"reason": "not_json"}) == 0
    metrics.record_batch(
        BatchReport(
            consumed=10,
            scored=8,
            anomalous=3,
            rejected={"not_json": 1, "wrong_length": 1},
            scoring_s=0.002,
            errors=np.linspace(0.0, 1.0, 8),
            latencies_s=np.full(10, 0.03),
        )
    )
    assert value(registry, "ecg_windows_consumed_total") == 10
    assert value(registry, "ecg_windows_scored_total") == 8
    assert value(registry, "ecg_windows_anomalous_total") == 3
    assert value(registry, "ecg_windows_rejected_total", {"reason": "wrong_length"}) == 1
    assert value(registry, "ecg_dead_letters_produced_total", {"reason": "not_json"}) == 1
    assert value(registry, "ecg_batch_size_windows_count") == 1
    assert value(registry, "ecg_batch_size_windows_sum") == 10
    assert value(registry, "ecg_scoring_duration_seconds_count") == 1
    assert value(registry, "ecg_reconstruction_error_count") == 8
    assert value(registry, "ecg_end_to_end_latency_seconds_count") == 10
    assert value(registry, "ecg_end_to_end_latency_seconds_bucket", {"le": "0.025"}) == 0
    assert value(registry, "ecg_end_to_end_latency_seconds_bucket", {"le": "0.05"}) == 10


def test_error_histogram_has_the_threshold_as_a_bucket(setup, ecg_artifact: EcgArtifact) -> None:
    registry, _, _, metrics = setup
    t = ecg_artifact.threshold
    assert t in error_buckets(t)
    metrics.reconstruction_error.observe_many(np.array([t * 0.5, t, t * 1.01, t * 20]))
    labels = {
        s.labels["le"]: s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == "ecg_reconstruction_error_bucket"
    }
    at_threshold = [v for k, v in labels.items() if k != "+Inf" and math.isclose(float(k), t)]
    assert at_threshold == [2.0]  # 0.5 t and t itself are <= t
    assert labels["+Inf"] == 4.0


def test_model_info_and_threshold(setup, ecg_artifact: EcgArtifact) -> None:
    registry, *_ = setup
    labels = {
        "model_version": ecg_artifact.model_version,
        "profile": "tutorial",
        "threshold_rule": "mean_std",
        "window_length": "140",
    }
    assert value(registry, "ecg_model_info", labels) == 1
    assert value(registry, "ecg_anomaly_threshold") == pytest.approx(ecg_artifact.threshold)


def test_commit_age_is_computed_at_scrape_time(setup) -> None:
    registry, clock, _, metrics = setup
    clock.advance(7)
    assert value(registry, "ecg_last_commit_age_seconds") == pytest.approx(7)
    metrics.record_batch(BatchReport(1, 1, 0, {}, 0.001, np.array([0.1]), np.array([0.01])))
    clock.advance(2)
    assert value(registry, "ecg_last_commit_age_seconds") == pytest.approx(2)


def test_lag_per_partition_and_forgetting(setup) -> None:
    registry, _, _, metrics = setup
    metrics.set_lag("ecg.windows", 0, 12)
    metrics.set_lag("ecg.windows", 1, 0)
    assert (
        value(registry, "ecg_consumer_lag_records", {"topic": "ecg.windows", "partition": "0"})
        == 12
    )
    metrics.forget_partition("ecg.windows", 0)
    metrics.forget_partition("ecg.windows", 7)  # never set: no error
    assert (
        registry.get_sample_value(
            "ecg_consumer_lag_records", {"topic": "ecg.windows", "partition": "0"}
        )
        is None
    )


def test_drift_gauges_are_nan_then_computed(setup, ecg_artifact: EcgArtifact) -> None:
    registry, _, drift, _ = setup
    assert math.isnan(value(registry, "ecg_error_drift_psi"))
    q = np.array(ecg_artifact.training_error_quantiles)
    drift.add(np.interp(np.random.default_rng(0).uniform(0, 1, 100), np.linspace(0, 1, 101), q))
    assert value(registry, "ecg_error_drift_psi") < 0.2
    assert 0 <= value(registry, "ecg_error_drift_ks") < 0.2


def test_exposition_is_parseable_text(setup) -> None:
    registry, *_ = setup
    text = generate_latest(registry).decode()
    assert "# TYPE ecg_reconstruction_error histogram" in text
    assert "# TYPE ecg_windows_consumed_total counter" in text
