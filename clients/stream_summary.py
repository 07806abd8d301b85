"""What ``ecg-demo`` measures from the output topics: a tally of the records read back, and
the summary (counts, quality against the labels, throughput, end-to-end latency).

Pure: records come in as bytes and headers, time as numbers; nothing here talks to Kafka.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker.core.codec import ScoreFormatError, decode_score
from worker.core.csv_scoring import score_file
from worker.core.evaluation import METRIC_NAMES, detection_metrics, metrics_table
from worker.core.scorer import Scorer

# Metrics computed from the stream and recorded in the artifact agree to this (they come
# from the same windows and the same Scorer, so they should be identical).
METRIC_TOLERANCE = 1e-9


@dataclass(frozen=True)
class ScoreRecord:
    """The fields of a score record the demo measures."""

    id: str
    error: float
    anomaly: bool
    label: int | None
    sent_ms: int | None  # the source record's timestamp (the replay's send time)
    scored_at_ms: int | None
    model_version: str | None


def parse_score(value: bytes | None) -> ScoreRecord | str:
    """A score record, or a sentence saying why ``value`` is not one."""
    try:
        score = decode_score(value)
    except ScoreFormatError as exc:
        return str(exc)
    label = score.fields.get("label")
    return ScoreRecord(
        id=str(score.id),
        error=score.error,
        anomaly=score.anomaly,
        label=label if label in (0, 1) and not isinstance(label, bool) else None,
        sent_ms=score.source.timestamp_ms if score.source is not None else None,
        scored_at_ms=score.scored_at_ms,
        model_version=score.model_version,
    )


@dataclass
class StreamTally:
    """Everything read back from the scores, anomalies and dead-letter topics of one run."""

    expected_ids: frozenset[str]
    scores: dict[str, ScoreRecord] = field(default_factory=dict)  # first score per id
    duplicates: int = 0
    unexpected: int = 0  # scores for ids this run did not send
    unreadable: list[str] = field(default_factory=list)
    anomaly_ids: set[str] = field(default_factory=set)
    anomaly_records: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)

    def add_score(self, value: bytes | None, where: str = "") -> None:
        """Count one record from the scores topic."""
        record = parse_score(value)
        if isinstance(record, str):
            self.unreadable.append(f"{where}: {record}")
        elif record.id not in self.expected_ids:
            self.unexpected += 1
        elif record.id in self.scores:
            self.duplicates += 1
        else:
            self.scores[record.id] = record

    def add_anomaly(self, value: bytes | None, where: str = "") -> None:
        """Count one record from the anomalies topic."""
        record = parse_score(value)
        if isinstance(record, str):
            self.unreadable.append(f"{where}: {record}")
            return
        self.anomaly_records += 1
        self.anomaly_ids.add(record.id)

    def add_dead_letter(self, headers: Iterable[tuple[str, bytes | None]]) -> None:
        """Count one dead letter by its ``dlq.reason`` header."""
        reason = dict(headers).get("dlq.reason")
        self.dead_letters[reason.decode("utf-8", "replace") if reason else "(no reason)"] += 1

    @property
    def complete(self) -> bool:
        """Every id this run sent has a score."""
        return len(self.scores) == len(self.expected_ids)

    @property
    def flagged(self) -> int:
        """Scores with ``anomaly: true``."""
        return sum(1 for r in self.scores.values() if r.anomaly)

    def missing(self) -> list[str]:
        """Ids sent but not (yet) scored, sorted."""
        return sorted(self.expected_ids - self.scores.keys())


@dataclass(frozen=True)
class DemoSummary:
    """The demo's measurements."""

    sent: int
    scored: int
    duplicates: int
    missing: tuple[str, ...]
    flagged: int
    anomaly_records: int
    dead_letters: Mapping[str, int]
    unreadable: tuple[str, ...]
    unexpected: int
    duration_s: float | None  # first send -> last score
    throughput_per_s: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    metrics: Mapping[str, Any] | None  # from the stream, against the labels
    model_versions: tuple[str, ...]

    @property
    def dead_letter_count(self) -> int:
        """All dead letters, whatever the reason."""
        return sum(self.dead_letters.values())


def summarise(tally: StreamTally, sent: int, first_send_ms: int) -> DemoSummary:
    """Measure a run: counts, quality, throughput and latency of the first score per id."""
    records = list(tally.scores.values())
    latencies = np.array(
        [
            r.scored_at_ms - r.sent_ms
            for r in records
            if r.scored_at_ms is not None and r.sent_ms is not None
        ],
        dtype=np.float64,
    )
    scored_times = [r.scored_at_ms for r in records if r.scored_at_ms is not None]
    duration_s = throughput = None
    if scored_times:
        duration_s = max(1, max(scored_times) - first_send_ms) / 1000.0
        throughput = len(records) / duration_s
    labelled = [r for r in records if r.label is not None]
    metrics = None
    if labelled:
        metrics = detection_metrics(
            np.array([r.label for r in labelled]),
            np.array([r.error for r in labelled]),
            np.array([r.anomaly for r in labelled]),
        )
    return DemoSummary(
        sent=sent,
        scored=len(records),
        duplicates=tally.duplicates,
        missing=tuple(tally.missing()),
        flagged=tally.flagged,
        anomaly_records=tally.anomaly_records,
        dead_letters=dict(tally.dead_letters),
        unreadable=tuple(tally.unreadable),
        unexpected=tally.unexpected,
        duration_s=duration_s,
        throughput_per_s=throughput,
        latency_p50_ms=_percentile(latencies, 50),
        latency_p99_ms=_percentile(latencies, 99),
        latency_max_ms=float(latencies.max()) if latencies.size else None,
        metrics=metrics,
        model_versions=tuple(sorted({r.model_version or "(none)" for r in records})),
    )


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


def metric_differences(
    stream: Mapping[str, Any] | None, recorded: Mapping[str, Any] | None
) -> list[str]:
    """Metrics where the stream disagrees with the artifact's recorded test metrics."""
    if stream is None or recorded is None:
        return []
    out = []
    for name in METRIC_NAMES:
        a, b = stream.get(name), recorded.get(name)
        if a is None or b is None:
            continue
        if abs(float(a) - float(b)) > METRIC_TOLERANCE:
            out.append(f"{name} {a:.4f} (stream) vs {b:.4f} (artifact)")
    return out


def offline_mismatches(
    windows: Mapping[str, np.ndarray], scored: Mapping[str, ScoreRecord], scorer: Scorer
) -> list[str]:
    """Streamed scores that differ from what ``ecg-score`` computes offline for the window.

    ``windows`` maps id -> the raw values sent. The windows are written as the CSV
    ``ecg-score`` reads and scored by its ``score_file``; error and flag must be identical.
    """
    ids = [i for i in windows if i in scored]
    if not ids:
        return []
    text = "\n".join(",".join(repr(float(v)) for v in windows[i]) for i in ids)
    offline = score_file(scorer, io.StringIO(text)).records
    out = []
    for window_id, expected in zip(ids, offline, strict=True):
        got = scored[window_id]
        if got.error != expected.get("error") or got.anomaly != expected.get("anomaly"):
            out.append(
                f"{window_id}: stream error {got.error!r} anomaly {got.anomaly}, ecg-score "
                f"error {expected.get('error')!r} anomaly {expected.get('anomaly')}"
            )
    return out


def problems(summary: DemoSummary, model_version: str) -> list[str]:
    """Everything that makes the run a failure (empty when it worked)."""
    out = []
    if summary.missing:
        shown = ", ".join(summary.missing[:5]) + (" ..." if len(summary.missing) > 5 else "")
        out.append(f"{len(summary.missing)} of {summary.sent} windows were not scored ({shown})")
    if summary.dead_letter_count:
        out.append(f"{summary.dead_letter_count} valid windows went to the dead-letter topic")
    if summary.unreadable:
        out.append(
            f"{len(summary.unreadable)} unreadable output records (first: {summary.unreadable[0]})"
        )
    if summary.anomaly_records < summary.flagged:
        out.append(
            f"{summary.flagged} scores are flagged but only {summary.anomaly_records} alerts "
            "reached the anomalies topic"
        )
    if summary.model_versions and summary.model_versions != (model_version,):
        out.append(
            f"scores name model version(s) {', '.join(summary.model_versions)}, "
            f"the artifact is {model_version}"
        )
    return out


def format_summary(
    summary: DemoSummary,
    *,
    run_id: str,
    topics: Mapping[str, str],
    artifact: Mapping[str, Any],
    recorded_metrics: Mapping[str, Any] | None,
    comparable_note: str | None = None,
) -> str:
    """The summary block ``ecg-demo`` prints."""
    dlq = ", ".join(f"{n} {r}" for r, n in sorted(summary.dead_letters.items())) or "none"
    lines = [
        f"ECG demo summary (run {run_id})",
        f"  model          {artifact['model_version']} (profile {artifact['profile']}, "
        f"threshold {artifact['threshold']:.6f} by {artifact['threshold_rule']})",
        f"  sent           {summary.sent} windows to {topics['input']}",
        f"  scored         {summary.scored} of {summary.sent} ids on {topics['scores']} "
        f"({len(summary.missing)} missing, {summary.duplicates} duplicates)",
        f"  anomalies      {summary.flagged} flagged; {summary.anomaly_records} alerts on "
        f"{topics['anomalies']}",
        f"  dead letters   {summary.dead_letter_count} ({dlq}) on {topics['dead_letter']}",
        f"  throughput     {_fmt(summary.throughput_per_s, '.1f')} windows/s "
        f"(first send -> last score: {_fmt(summary.duration_s, '.2f')} s)",
        f"  latency        p50 {_fmt(summary.latency_p50_ms, '.0f')} ms, "
        f"p99 {_fmt(summary.latency_p99_ms, '.0f')} ms, "
        f"max {_fmt(summary.latency_max_ms, '.0f')} ms (scored_at_ms - record timestamp)",
    ]
    if summary.unexpected:
        lines.append(f"  ignored        {summary.unexpected} scores for ids this run did not send")
    if summary.metrics is None:
        lines.append("  quality        no labelled scores to measure")
        return "\n".join(lines)
    m = summary.metrics
    lines += [
        f"  quality        precision {m['precision']:.4f}, recall {m['recall']:.4f} "
        "(positive = normal, the tutorial's convention)",
        f"                 anomaly precision {m['anomaly_precision']:.4f}, "
        f"anomaly recall {m['anomaly_recall']:.4f} (positive = anomaly)",
        f"                 {m['tp']} true alerts, {m['fp']} false alerts, "
        f"{m['fn']} missed anomalies, {m['tn']} normal windows passed",
        "",
    ]
    columns: dict[str, dict[str, Any]] = {"stream (measured)": dict(m)}
    if recorded_metrics is not None:
        columns["artifact (recorded test)"] = dict(recorded_metrics)
    lines.append(metrics_table(columns))
    if comparable_note:
        lines.append(comparable_note)
    elif recorded_metrics is not None:
        diffs = metric_differences(m, recorded_metrics)
        lines.append(
            "stream metrics match the artifact's recorded test metrics"
            if not diffs
            else "stream metrics DIFFER from the artifact's: " + "; ".join(diffs)
        )
    return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
