"""Metrics of model rollout: per-model scoring, hot reloads, and primary-vs-shadow agreement.

Series carry the ``model_version`` that scored, so an old and a new model (or the primary
and its shadow) sit side by side on one dashboard. The error histogram is of
``error / threshold`` so that the models' buckets line up (1.0 is each model's threshold).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from worker.service.metrics import ERROR_BUCKET_FACTORS

ROLES = ("primary", "shadow")
RELOAD_RESULTS = ("applied", "unchanged", "refused")
# Per window: both models flag it, only one does, or neither.
OUTCOMES = ("both", "only_primary", "only_shadow", "neither")


class LabelledBulkHistogram(Collector):
    """A histogram with labels whose ``observe_many`` bins a whole batch in one numpy call."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.upper_bounds = np.array([*sorted(float(b) for b in buckets), np.inf])
        self._bucket_labels = [floatToGoString(b) for b in self.upper_bounds]
        self._series: dict[tuple[str, ...], tuple[np.ndarray, list[float]]] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, labels: Sequence[str], values: np.ndarray) -> None:
        """Record every value (NaN ignored) under ``labels`` (in ``labelnames`` order)."""
        data = np.asarray(values, dtype=np.float64).ravel()
        data = data[~np.isnan(data)]
        index = np.searchsorted(self.upper_bounds, data, side="left")
        counts = np.bincount(index, minlength=self.upper_bounds.size)
        with self._lock:
            series = self._series.setdefault(
                tuple(labels), (np.zeros(self.upper_bounds.size, np.int64), [0.0])
            )
            series[0][:] += counts
            series[1][0] += float(data.sum())

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            items = [(k, np.cumsum(c), s[0]) for k, (c, s) in self._series.items()]
        for labels, cumulative, total in items:
            buckets = [(b, float(c)) for b, c in zip(self._bucket_labels, cumulative, strict=True)]
            family.add_metric(list(labels), buckets, total)
        return [family]


class RolloutMetrics:
    """The rollout series, on the worker's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.scored = Counter(
            "ecg_model_windows_scored",
            "Windows scored and published, by the model that scored them.",
            ["role", "model_version"],
            registry=registry,
        )
        self.anomalous = Counter(
            "ecg_model_windows_anomalous",
            "Windows a model flagged anomalous, by model.",
            ["role", "model_version"],
            registry=registry,
        )
        self.error_ratio = LabelledBulkHistogram(
            "ecg_model_error_ratio",
            "Reconstruction error divided by the scoring model's threshold (>= 1: anomalous).",
            ["role", "model_version"],
            ERROR_BUCKET_FACTORS,
            registry,
        )
        self.reloads = Counter(
            "ecg_model_reloads",
            "Hot-reload attempts, by role (primary or shadow) and result.",
            ["role", "result"],
            registry=registry,
        )
        for role in ROLES:  # every outcome visible from the start, at 0
            for result in RELOAD_RESULTS:
                self.reloads.labels(role, result)
        self.shadow_info = Gauge(
            "ecg_shadow_model_info",
            "The shadow model scoring alongside the primary (value 1; absent without one).",
            ["model_version"],
            registry=registry,
        )
        self.agreement = Counter(
            "ecg_shadow_agreement",
            "Windows scored by primary and shadow, by who flagged them anomalous.",
            ["primary_version", "shadow_version", "outcome"],
            registry=registry,
        )

    def start_model(self, role: str, model_version: str) -> None:
        """Expose a model's series at 0 before its first batch, so that the first batch is
        an increase (rate() sees nothing of a series that starts at its final value)."""
        self.scored.labels(role, model_version)
        self.anomalous.labels(role, model_version)
        self.error_ratio.observe_many((role, model_version), np.empty(0))

    def set_shadow(self, model_version: str | None) -> None:
        """Show the current shadow model (``None``: no shadow)."""
        self.shadow_info.clear()
        if model_version is not None:
            self.shadow_info.labels(model_version).set(1)

    def start_agreement(self, primary_version: str, shadow_version: str) -> None:
        """Expose every outcome of a primary/shadow pair at 0 before its first batch."""
        for outcome in OUTCOMES:
            self.agreement.labels(primary_version, shadow_version, outcome)
