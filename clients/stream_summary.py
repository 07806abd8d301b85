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

from worker.core.agreement import Agreement, borderline, compare_metrics, compare_scores
from worker.core.codec import ScoreFormatError, decode_score
from worker.core.csv_scoring import score_file
from worker.core.evaluation import detection_metrics, metrics_table
from worker.core.scorer import Scorer


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
    # (labels, errors, flags) of the labelled scores, for the metric comparison's tolerance
    labelled: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

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
    metrics = arrays = None
    if labelled:
        arrays = (
            np.array([r.label for r in labelled]),
            np.array([r.error for r in labelled]),
            np.array([r.anomaly for r in labelled]),
        )
        metrics = detection_metrics(*arrays)
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
        labelled=arrays,
    )


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


@dataclass(frozen=True)
class MetricCheck:
    """Stream metrics against the artifact's recorded test metrics, under the contract."""

    borderline: int  # labelled stream windows within the score tolerance of the threshold
    differences: tuple[str, ...]  # metrics outside what the borderline windows explain
    explained: tuple[str, ...]  # metrics that differ, but within what they explain

    def line(self) -> str:
        """The summary line."""
        if self.differences:
            return "stream metrics DIFFER from the artifact's: " + "; ".join(self.differences)
        if self.explained:
            return (
                f"stream metrics match the artifact's recorded test metrics as far as "
                f"{self.borderline} borderline windows explain: " + "; ".join(self.explained)
            )
        return (
            "stream metrics match the artifact's recorded test metrics "
            f"({self.borderline} borderline windows)"
        )


def metric_differences(
    summary: DemoSummary,
    recorded: Mapping[str, Any] | None,
    *,
    threshold: float,
    window_length: int,
) -> MetricCheck:
    """Compare the stream's metrics with the artifact's recorded test metrics.

    The artifact's were computed by the trainer's ``Scorer`` in one batch, maybe on another
    CPU, so its scores agree with the stream's only under the score-agreement contract:
    any borderline window may be flagged the other way there. A recorded metric is accepted
    when it lies in the range the stream's metric takes under such flips
    (``worker.core.agreement.compare_metrics``); with no borderline window, that range is
    the stream's value itself.
    """
    if summary.labelled is None or recorded is None:
        return MetricCheck(0, (), ())
    labels, errors, flags = summary.labelled
    compared = compare_metrics(
        recorded, labels, errors, flags, threshold=threshold, window_length=window_length
    )
    return MetricCheck(
        borderline=int(borderline(errors, threshold, window_length).sum()),
        differences=tuple(c.describe() for c in compared if not c.agrees),
        explained=tuple(c.describe() for c in compared if c.agrees and not c.equal),
    )


@dataclass(frozen=True)
class OfflineCheck:
    """Streamed scores against ``ecg-score``'s for the same windows, under the contract."""

    ids: tuple[str, ...]  # the windows compared, in the agreement's row order
    agreement: Agreement

    def problems(self) -> list[str]:
        """One line per window that breaks the contract."""
        return [d.describe(self.ids[d.index]) for d in self.agreement.disagreements]

    def line(self) -> str:
        """The summary line: the verdict, the largest difference, the tolerance and the
        borderline windows (shown, never hidden)."""
        a = self.agreement
        detail = (
            f"max error difference {a.max_difference:.2g}, tolerance "
            f"{a.threshold_tolerance():.2g} at the threshold; {a.describe_borderline(self.ids)}"
        )
        if a.ok:
            return (
                f"offline check  all {a.compared} streamed scores agree with ecg-score ({detail})"
            )
        return (
            f"offline check  {len(a.disagreements)} of {a.compared} streamed scores DIFFER "
            f"from ecg-score beyond the tolerance ({detail})"
        )


def offline_check(
    windows: Mapping[str, np.ndarray], scored: Mapping[str, ScoreRecord], scorer: Scorer
) -> OfflineCheck:
    """Compare streamed scores with what ``ecg-score`` computes offline for the same windows.

    ``windows`` maps id -> the raw values sent. The windows are written as the CSV
    ``ecg-score`` reads and scored by its ``score_file`` (in one batch, unlike the
    worker's micro-batches); errors and flags must agree under the score-agreement
    contract (``worker.core.agreement.compare_scores``). Ids never scored are left out:
    the summary reports them as missing.
    """
    ids = tuple(i for i in windows if i in scored)
    offline = []
    if ids:
        text = "\n".join(",".join(repr(float(v)) for v in windows[i]) for i in ids)
        offline = score_file(scorer, io.StringIO(text)).records
    agreement = compare_scores(
        np.array([r.get("error") for r in offline], dtype=np.float64),
        np.array([r.get("anomaly") for r in offline], dtype=bool),
        np.array([scored[i].error for i in ids], dtype=np.float64),
        np.array([scored[i].anomaly for i in ids], dtype=bool),
        threshold=scorer.threshold,
        window_length=scorer.window_length,
    )
    return OfflineCheck(ids, agreement)


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
        check = metric_differences(
            summary,
            recorded_metrics,
            threshold=float(artifact["threshold"]),
            window_length=int(artifact["window_length"]),
        )
        lines.append(check.line())
    return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
