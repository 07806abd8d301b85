"""The worker's window counters as ``ecg-demo`` scrapes them from ``/metrics``, and the checks
that tie them to what the demo sent and read back: consumed = sent, scored + rejected =
consumed, anomalous = scores with ``anomaly: true``, rejected = dead letters.

Pure: the scrape comes in as text; fetching it is the demo's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from worker.core.errors import DataError

# Field -> the sample that carries it (summed over labels: rejected is per reason).
COUNTER_SAMPLES = {
    "consumed": "ecg_windows_consumed_total",
    "scored": "ecg_windows_scored_total",
    "rejected": "ecg_windows_rejected_total",
    "anomalous": "ecg_windows_anomalous_total",
}


@dataclass(frozen=True)
class WorkerCounters:
    """The worker's window counters at one scrape (committed batches only)."""

    consumed: int
    scored: int
    rejected: int
    anomalous: int


def parse_counters(text: str, source: str = "/metrics") -> WorkerCounters:
    """The window counters of a Prometheus text exposition.

    Raises ``DataError`` naming ``source`` when the text does not parse or a counter is absent.
    """
    totals: dict[str, float] = {}
    wanted = set(COUNTER_SAMPLES.values())
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in wanted:
                    totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
    except ValueError as exc:
        raise DataError(f"{source}: not a Prometheus text exposition ({exc})") from exc
    missing = [name for name in COUNTER_SAMPLES.values() if name not in totals]
    if missing:
        raise DataError(f"{source}: no {', '.join(missing)} sample")
    return WorkerCounters(**{f: int(totals[name]) for f, name in COUNTER_SAMPLES.items()})


def counter_problems(
    counters: WorkerCounters, *, sent: int, flagged: int, dead_letters: int
) -> list[str]:
    """Where the worker's counters disagree with the stream (empty when they all agree).

    ``sent``: windows the demo sent; ``flagged``: scores read back with ``anomaly: true``;
    ``dead_letters``: records read back from the dead-letter topic.
    """
    c = counters
    out = []
    if c.consumed != sent:
        out.append(f"the worker counted {c.consumed} windows consumed, the demo sent {sent}")
    if c.scored + c.rejected != c.consumed:
        out.append(
            f"the worker's scored {c.scored} + rejected {c.rejected} = "
            f"{c.scored + c.rejected}, not the {c.consumed} windows it consumed"
        )
    if c.anomalous != flagged:
        out.append(
            f"the worker counted {c.anomalous} anomalous windows, but {flagged} scores read "
            "back have anomaly: true"
        )
    if c.rejected != dead_letters:
        out.append(
            f"the worker counted {c.rejected} rejected windows, but {dead_letters} dead "
            "letters were read back"
        )
    return out


def format_counters(counters: WorkerCounters, problems: list[str]) -> str:
    """The summary line: the four counters and whether they match the stream."""
    c = counters
    verdict = "match the stream" if not problems else "DIFFER from the stream"
    return (
        f"metrics        consumed {c.consumed}, scored {c.scored}, rejected {c.rejected}, "
        f"anomalous {c.anomalous} ({verdict})"
    )
