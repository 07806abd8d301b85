"""``ecg-alerts``: follow the anomalies topic and print one readable line per alert.

    2025-11-27 14:00:00.051Z  device-03  test-0012  error 0.0521 >= threshold 0.0321 (1.62x)
        abnormal: samples 88-104 err 0.112, samples 10-20 err 0.080

(one line; wrapped here). Sample ranges are ``start-end`` with ``end`` exclusive, as in the
record. A record that is not a readable alert prints a line starting with ``!!`` naming
where it is and what is wrong, and the command carries on. Control characters in ids, keys
and messages are printed escaped (``\\x1b``), never sent to the terminal as they are.

An alert for a window already alerted on (the same ``source`` topic, partition and offset)
is not printed again: a worker that restarts or takes over partitions replays up to
``delivery.commit_interval_ms`` of acknowledged windows, and their alerts come twice.
``--show-repeats`` prints them too.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from kafka import TopicPartition
from kafka.errors import KafkaError

from clients.kafka_clients import (
    BOOTSTRAP_EPILOG,
    add_bootstrap_argument,
    add_kafka_config_argument,
    load_kafka_config,
    make_consumer,
    require_topic,
)
from clients.terminal import printable
from worker.cli_support.argtypes import positive_float, positive_int
from worker.cli_support.runner import run_cli
from worker.core.codec import Score, ScoreFormatError, decode_score, score_from_doc
from worker.core.errors import BrokerError
from worker.core.wire import ANOMALIES_TOPIC

DEFAULT_TOPIC = ANOMALIES_TOPIC


# A record that is not a readable alert: the wire format's own error (names the field).
AlertFormatError = ScoreFormatError
# Sources of the most recent alerts remembered to recognise a replay: a worker's replay
# reaches back one commit interval (seconds), and this is minutes of alerts at a high rate,
# in about 40 MB (measured with tracemalloc).
REMEMBERED_SOURCES = 200_000


class RepeatFilter:
    """Recognises alerts for windows already seen, by their source (topic, partition,
    offset), remembering the ``capacity`` sources seen most recently."""

    def __init__(self, capacity: int = REMEMBERED_SOURCES) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, int, int], None] = OrderedDict()

    def first_time(self, score: Score) -> bool:
        """True unless an alert for the same source window was seen (an alert without a
        source is always new)."""
        source = score.source
        if source is None:
            return True
        where = (source.topic, source.partition, source.offset)
        if where in self._seen:
            self._seen.move_to_end(where)
            return False
        self._seen[where] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True


def format_alert(record: Score | Mapping[str, Any], key: bytes | str | None) -> str:
    """One line for an alert record: time, device (the record key), id, error vs threshold
    and the abnormal segments. ``record`` is a decoded ``Score`` or its JSON document;
    raises ``AlertFormatError`` naming a missing or wrong field.
    """
    score = record if isinstance(record, Score) else score_from_doc(record)
    error, threshold = score.error, score.threshold
    ratio = f"{error / threshold:.2f}x" if threshold > 0 else "n/a"
    relation = ">=" if error >= threshold else "<"
    parts = [
        _format_time(score.scored_at_ms),
        _format_key(key),
        str(score.id),
        f"error {error:.4f} {relation} threshold {threshold:.4f} ({ratio})",
    ]
    if score.segments:
        parts.append(
            "abnormal: "
            + ", ".join(f"samples {s.start}-{s.end} err {s.mean_error:.3f}" for s in score.segments)
        )
    return "  ".join(parts)


def render_record(value: bytes | None, key: bytes | None, where: str) -> str:
    """The line printed for one raw record; never raises (unreadable -> a ``!!`` line).
    Control characters from the record are escaped (``clients.terminal.printable``)."""
    return _read(value, key, where)[0]


def _read(value: bytes | None, key: bytes | None, where: str) -> tuple[str, Score | None]:
    """The printable line for a record, and its alert (None when unreadable)."""
    if not value:
        return printable(f"!! {where}: empty record, not an alert"), None
    try:
        score = decode_score(value)
    except ScoreFormatError as exc:
        if str(exc).startswith("not JSON"):
            return printable(f"!! {where}: {exc}, {len(value)} bytes"), None
        return printable(f"!! {where}: not a readable alert: {exc}"), None
    return printable(format_alert(score, key)), score


def _format_time(ms: int | None) -> str:
    if ms is None:
        return "(no time)"
    try:
        moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return f"(time {ms})"
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}Z"


def _format_key(key: bytes | str | None) -> str:
    if key is None or key in (b"", ""):
        return "(no device)"
    return key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else key


# --------------------------------------------------------------------------- following


@dataclass
class Tally:
    """What ``follow`` printed so far (kept up to date, so Ctrl-C still reports it)."""

    alerts: int = 0
    unreadable: int = 0
    repeats: int = 0  # alerts for windows already alerted on (a worker's replay)

    def summary(self) -> str:
        """``N alerts, M unreadable records[, K repeats of alerts already shown ...]``."""
        text = f"{self.alerts} alerts, {self.unreadable} unreadable records"
        if self.repeats:
            text += f", {self.repeats} repeats of alerts already shown (a worker's replay)"
        return text


def follow(
    consumer: Any,
    out: TextIO,
    max_messages: int | None = None,
    tally: Tally | None = None,
    repeats: RepeatFilter | None = None,
) -> Tally:
    """Print a line per record until ``max_messages`` records or the consumer's idle timeout;
    with ``repeats``, an alert for a window it has seen is counted, not printed."""
    tally = tally if tally is not None else Tally()
    for message in consumer:
        where = f"{message.topic}[{message.partition}]@{message.offset}"
        line, score = _read(message.value, message.key, where)
        if score is not None and repeats is not None and not repeats.first_time(score):
            tally.repeats += 1
        else:
            if score is None:
                tally.unreadable += 1
            else:
                tally.alerts += 1
            print(line, file=out, flush=True)
        read = tally.alerts + tally.unreadable + tally.repeats
        if max_messages is not None and read >= max_messages:
            break
    return tally


def open_follower(
    bootstrap_servers: str,
    topic: str,
    from_beginning: bool,
    idle_timeout_s: float | None,
    settings: dict[str, Any] | None = None,
) -> Any:
    """A group-less consumer on every partition of ``topic``, positioned at the start or end;
    ``settings`` are extra kafka-python settings (security).

    The end position is resolved here, so every alert produced after this returns is shown.
    """
    consumer = make_consumer(
        bootstrap_servers,
        **(settings or {}),
        consumer_timeout_ms=float("inf") if idle_timeout_s is None else idle_timeout_s * 1000,
    )
    try:
        require_topic(consumer, topic, bootstrap_servers)
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))
        ]
        consumer.assign(partitions)
        if from_beginning:
            consumer.seek_to_beginning(*partitions)
        else:
            consumer.seek_to_end(*partitions)
        for tp in partitions:
            consumer.position(tp)
    except BaseException:
        consumer.close()
        raise
    return consumer


def build_parser() -> argparse.ArgumentParser:
    """The ``ecg-alerts`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="ecg-alerts",
        description="Follow the anomalies topic and print one line per alert.",
        epilog=BOOTSTRAP_EPILOG,
    )
    add_bootstrap_argument(parser)
    add_kafka_config_argument(parser)
    parser.add_argument(
        "--topic", default=DEFAULT_TOPIC, help="anomalies topic (default: %(default)s)"
    )
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest alert still on the topic (default: only new alerts)",
    )
    parser.add_argument(
        "--max-messages",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop after N records (default: follow until Ctrl-C)",
    )
    parser.add_argument(
        "--show-repeats",
        action="store_true",
        help="also print alerts for windows already alerted on (by default a worker's "
        "replay after a restart or a rebalance is counted, not printed)",
    )
    parser.add_argument(
        "--timeout-s",
        type=positive_float,
        default=None,
        help="stop after this many seconds without a new record (default: wait forever)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 also on Ctrl-C, the normal way to stop following)."""
    args = build_parser().parse_args(argv)
    return run_cli("ecg-alerts", lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    kafka = load_kafka_config(args.kafka_config)
    bootstrap = args.bootstrap_servers or ",".join(kafka.bootstrap_servers)
    tally = Tally()
    consumer = open_follower(
        bootstrap, args.topic, args.from_beginning, args.timeout_s, kafka.consumer_settings()
    )
    try:
        repeats = None if args.show_repeats else RepeatFilter()
        follow(consumer, sys.stdout, args.max_messages, tally, repeats)
    except KeyboardInterrupt:
        pass  # following until Ctrl-C is the normal use: report what was shown, exit 0
    except KafkaError as exc:
        raise BrokerError(f"{args.topic!r} on {bootstrap}: {exc}") from exc
    finally:
        consumer.close()
    print(f"ecg-alerts: {tally.summary()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
