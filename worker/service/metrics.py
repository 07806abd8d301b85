"""Every ``ecg_*`` metric of docs/design.md, on an injectable ``CollectorRegistry``.

Counters about windows move only after their batch is committed (``record_batch``), all
together, so ``scored + rejected == consumed`` between batches. Failure counters move when
the failure happens. The commit age and the drift statistics are computed at scrape time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.core.artifact import EcgArtifact
from worker.core.codec import REASONS
from worker.service.drift import DriftMonitor
from worker.service.histogram import BulkHistogram

# Multiples of the threshold: fine resolution around it, so that the share of windows near
# the decision boundary and the normal/anomalous split (le = threshold) are readable.
ERROR_BUCKET_FACTORS = (
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0,
    1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0,
)  # fmt: skip
SCORING_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 0.5, 1.0)  # fmt: skip
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                     10.0, 30.0, 60.0)  # fmt: skip


def error_buckets(threshold: float) -> list[float]:
    """Reconstruction-error histogram bounds placed around ``threshold``."""
    return [threshold * f for f in ERROR_BUCKET_FACTORS]


def batch_size_buckets(max_batch_size: int) -> list[float]:
    """Powers of two up to and including ``max_batch_size``."""
    bounds, size = [], 1
    while size < max_batch_size:
        bounds.append(float(size))
        size *= 2
    bounds.append(float(max_batch_size))
    return bounds


@dataclass(frozen=True)
class BatchReport:
    """What one committed batch did, for the metrics."""

    consumed: int
    scored: int
    anomalous: int
    rejected: Mapping[str, int]  # reason -> count
    scoring_s: float
    errors: np.ndarray = field(repr=False)  # per scored window
    latencies_s: np.ndarray = field(repr=False)  # record timestamp -> acknowledged publish


class WorkerMetrics:
    """The worker's metrics. Create one per registry (tests pass a fresh registry)."""

    def __init__(
        self,
        artifact: EcgArtifact,
        max_batch_size: int,
        drift: DriftMonitor | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        reg = registry if registry is not None else CollectorRegistry()
        self.registry = reg
        self._clock = clock
        self._last_commit = clock()
        self.consumed = Counter(
            "ecg_windows_consumed", "Input records consumed and committed.", registry=reg
        )
        self.scored = Counter("ecg_windows_scored", "Windows scored and published.", registry=reg)
        self.anomalous = Counter(
            "ecg_windows_anomalous", "Scored windows flagged anomalous.", registry=reg
        )
        self.rejected = Counter(
            "ecg_windows_rejected",
            "Input records rejected, by reason code.",
            ["reason"],
            registry=reg,
        )
        self.dead_letters = Counter(
            "ecg_dead_letters_produced",
            "Records published to the dead-letter topic, by reason code.",
            ["reason"],
            registry=reg,
        )
        for reason in REASONS:  # every reason visible from the start, at 0
            self.rejected.labels(reason)
            self.dead_letters.labels(reason)
        self.produce_failures = Counter(
            "ecg_produce_failures", "Batches whose publish was not acknowledged.", registry=reg
        )
        self.commit_failures = Counter(
            "ecg_commit_failures", "Offset commits that failed.", registry=reg
        )
        self.batch_size = BulkHistogram(
            "ecg_batch_size_windows",
            "Records per committed batch.",
            batch_size_buckets(max_batch_size),
            reg,
        )
        self.scoring_duration = BulkHistogram(
            "ecg_scoring_duration_seconds",
            "Time to score one batch in one model call.",
            SCORING_BUCKETS_S,
            reg,
        )
        self.end_to_end = BulkHistogram(
            "ecg_end_to_end_latency_seconds",
            "From the input record's timestamp to the acknowledged publish of its result.",
            LATENCY_BUCKETS_S,
            reg,
        )
        self.reconstruction_error = BulkHistogram(
            "ecg_reconstruction_error",
            "Reconstruction error (mean absolute error) of scored windows.",
            error_buckets(artifact.threshold),
            reg,
        )
        self.lag = Gauge(
            "ecg_consumer_lag_records",
            "Log end offset minus committed offset, per assigned input partition.",
            ["topic", "partition"],
            registry=reg,
        )
        commit_age = Gauge(
            "ecg_last_commit_age_seconds",
            "Seconds since the last successful offset commit (since start-up before the first).",
            registry=reg,
        )
        commit_age.set_function(lambda: self._clock() - self._last_commit)
        self.model_info = Gauge(
            "ecg_model_info",
            "The model being served (value is always 1).",
            ["model_version", "profile", "threshold_rule", "window_length"],
            registry=reg,
        )
        self.threshold = Gauge(
            "ecg_anomaly_threshold",
            "Reconstruction error at or above which a window is anomalous.",
            registry=reg,
        )
        self.set_model(artifact)
        if drift is not None:
            reg.register(_DriftCollector(drift))

    def set_model(self, artifact: EcgArtifact) -> None:
        """Show ``artifact`` as the model being served (at start-up and after a hot reload).

        ``ecg_reconstruction_error`` keeps the buckets of the start-up threshold; the
        per-model series of ``worker.service.rollout_metrics`` follow each model's own.
        """
        self.model_info.clear()
        self.model_info.labels(
            artifact.model_version,
            artifact.profile,
            artifact.threshold_rule,
            str(artifact.window_length),
        ).set(1)
        self.threshold.set(artifact.threshold)

    def record_batch(self, report: BatchReport) -> None:
        """Count a batch whose outputs are acknowledged and whose offsets are committed."""
        self._last_commit = self._clock()
        self.consumed.inc(report.consumed)
        self.scored.inc(report.scored)
        self.anomalous.inc(report.anomalous)
        for reason, count in report.rejected.items():
            self.rejected.labels(reason).inc(count)
            self.dead_letters.labels(reason).inc(count)
        self.batch_size.observe(report.consumed)
        if report.scored:
            self.scoring_duration.observe(report.scoring_s)
            self.reconstruction_error.observe_many(report.errors)
        self.end_to_end.observe_many(report.latencies_s)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        """Set the consumer lag of one assigned partition."""
        self.lag.labels(topic, str(partition)).set(max(0, lag))

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the lag series of a partition this worker no longer owns."""
        with contextlib.suppress(KeyError):
            self.lag.remove(topic, str(partition))


class _DriftCollector(Collector):
    """Computes the drift gauges at scrape time (NaN until the window has enough errors)."""

    def __init__(self, monitor: DriftMonitor) -> None:
        self._monitor = monitor

    def describe(self) -> Iterable[Metric]:
        return [
            GaugeMetricFamily("ecg_error_drift_psi", _PSI_HELP),
            GaugeMetricFamily("ecg_error_drift_ks", _KS_HELP),
        ]

    def collect(self) -> Iterable[Metric]:
        stats = self._monitor.stats()
        return [
            GaugeMetricFamily("ecg_error_drift_psi", _PSI_HELP, value=stats.psi),
            GaugeMetricFamily("ecg_error_drift_ks", _KS_HELP, value=stats.ks),
        ]


_PSI_HELP = (
    "Population stability index of the rolling window of live errors against the training "
    "error deciles (NaN until enough windows)."
)
_KS_HELP = (
    "Kolmogorov-Smirnov distance between the rolling window of live errors and the training "
    "error distribution (NaN until enough windows)."
)
