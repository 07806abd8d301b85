"""``ecg-replay``: send ECG windows to the input topic, keyed by a device id.

The windows come from the tutorial's ECG5000 test split (1000 windows, offline) or from a
CSV file (140 values per line, optionally followed by a 0/1 label). Each window is sent as
``{"id": "test-0001", "values": [...], "label": 1, "row": 4211, "sent_at_ms": ...}`` (or a
bare array with ``--format array``), round-robin over ``--devices`` keys ``device-00``..,
as fast as possible or at ``--rate`` windows per second. Every send must be acknowledged
by the broker (``acks=all``) before the command reports success.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from clients.kafka_clients import (
    BOOTSTRAP_EPILOG,
    add_bootstrap_argument,
    add_kafka_config_argument,
    load_kafka_config,
    make_producer,
)
from worker.cli_support.argtypes import positive_float, positive_int
from worker.cli_support.runner import run_cli
from worker.core.errors import BrokerError, ConfigError, DataError
from worker.core.windows_csv import CsvRejected, read_windows_file
from worker.core.wire import INPUT_TOPIC, WINDOW_LENGTH

DEFAULT_TOPIC = INPUT_TOPIC
DEFAULT_DEVICES = 8
FORMATS = ("object", "array")
# How long to wait for the broker to acknowledge everything still in flight at the end.
FLUSH_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ReplayWindow:
    """One window to send: an id, its raw samples and, when known, its label (1 = normal)."""

    id: str
    values: np.ndarray  # (window_length,) float64
    label: int | None = None
    row: int | None = None  # row index in the source data set, for tracing back


@dataclass(frozen=True)
class ReplayReport:
    """What a replay sent."""

    topic: str
    sent: int
    devices: int
    first_send_ms: int  # wall-clock time of the first send (ms since the epoch)
    duration_s: float  # first send -> last acknowledgement

    @property
    def rate_per_s(self) -> float:
        """Achieved windows per second (acknowledged)."""
        return self.sent / self.duration_s if self.duration_s > 0 else float("inf")


# --------------------------------------------------------------------------- pacing


def pace_delay_s(start_s: float, now_s: float, index: int, rate_per_s: float) -> float:
    """Seconds to wait before sending window ``index`` (0-based) of a paced stream.

    Window ``i`` is due at ``start_s + i / rate_per_s``: an absolute schedule, so time
    spent sending does not accumulate as drift. A late sender does not wait (it catches up).
    """
    return max(0.0, start_s + index / rate_per_s - now_s)


class Pacer:
    """Spaces sends to ``rate_per_s`` with a monotonic clock; ``None`` means no limit."""

    def __init__(
        self,
        rate_per_s: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_s is not None and not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ConfigError(
                f"rate must be a positive number of windows per second, got {rate_per_s}"
            )
        self.rate_per_s = rate_per_s
        self._clock = clock
        self._sleep = sleep
        self._start_s: float | None = None
        self._index = 0

    def wait_turn(self) -> None:
        """Block until the next window is due; the first one is due at once."""
        if self.rate_per_s is None:
            return
        now = self._clock()
        if self._start_s is None:
            self._start_s = now
        delay = pace_delay_s(self._start_s, now, self._index, self.rate_per_s)
        if delay > 0:
            self._sleep(delay)
        self._index += 1


# --------------------------------------------------------------------------- sources


def read_csv(path: str | Path, window_length: int = WINDOW_LENGTH) -> list[ReplayWindow]:
    """Windows from a CSV: ``window_length`` numbers per line, optionally then a 0/1 label.

    Parsed by ``worker.core.windows_csv`` like ``ecg-score``'s input, so both tools accept the
    same files. Blank lines are skipped. Ids are ``<file stem>-<line number>``. Unlike
    ``ecg-score``, replay sends nothing from a file with a bad row: it raises ``DataError``
    naming the file, line and problem of the first one.
    """
    path = Path(path)
    windows: list[ReplayWindow] = []
    for item in read_windows_file(path, window_length):
        if isinstance(item, CsvRejected):
            raise DataError(item.message(path))
        values = np.asarray(item.values, dtype=np.float64)
        windows.append(ReplayWindow(f"{path.stem}-{item.row:04d}", values, item.label))
    if not windows:
        raise DataError(f"{path}: no windows (the file has no data lines)")
    return windows


def ecg5000_test_windows(source: str | None = None) -> list[ReplayWindow]:
    """The tutorial's ECG5000 test split (1000 windows) with labels, ids ``test-0000``..

    Uses the trainer's loader and split, so the windows are exactly those the artifact's
    test metrics were measured on.
    """
    from trainer.ecg.data import load_ecg, tutorial_split

    return split_windows(tutorial_split(load_ecg(source)))


def split_windows(split: Any) -> list[ReplayWindow]:
    """The test windows of a ``trainer.ecg.data.EcgSplit``, ids ``test-0000``.. in split order."""
    return [
        ReplayWindow(id=f"test-{i:04d}", values=values, label=int(label), row=int(row))
        for i, (values, label, row) in enumerate(
            zip(split.test_windows, split.test_labels, split.test_rows, strict=True)
        )
    ]


def take(windows: Sequence[ReplayWindow], count: int | None) -> Iterator[ReplayWindow]:
    """The first ``count`` windows; past the end the source repeats with ids ``<id>.1``, ``.2``.."""
    if not windows:
        return
    total = len(windows) if count is None else count
    for i in range(total):
        rnd, pos = divmod(i, len(windows))
        window = windows[pos]
        yield window if rnd == 0 else _renamed(window, f"{window.id}.{rnd}")


def _renamed(window: ReplayWindow, new_id: str) -> ReplayWindow:
    return ReplayWindow(id=new_id, values=window.values, label=window.label, row=window.row)


# --------------------------------------------------------------------------- messages


def device_key(index: int, devices: int) -> bytes:
    """Record key of the ``index``-th window: devices take turns, ``device-00``, ``device-01``.."""
    return f"device-{index % devices:02d}".encode()


def build_message(window: ReplayWindow, sent_at_ms: int, fmt: str = "object") -> bytes:
    """The record value: a JSON object (id, values, label, row, sent_at_ms) or a bare array."""
    if fmt == "array":
        return orjson.dumps(window.values, option=orjson.OPT_SERIALIZE_NUMPY)
    if fmt != "object":
        raise ConfigError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    body: dict[str, Any] = {"id": window.id, "values": window.values}
    if window.label is not None:
        body["label"] = window.label
    if window.row is not None:
        body["row"] = window.row
    body["sent_at_ms"] = sent_at_ms
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


# --------------------------------------------------------------------------- sending


def replay(
    producer: Any,
    topic: str,
    windows: Iterable[ReplayWindow],
    *,
    devices: int = DEFAULT_DEVICES,
    fmt: str = "object",
    pacer: Pacer | None = None,
    on_sent: Callable[[], None] | None = None,
    flush_timeout_s: float = FLUSH_TIMEOUT_S,
) -> ReplayReport:
    """Send ``windows`` to ``topic`` and wait until the broker acknowledged every one.

    Raises ``BrokerError`` when any send fails or is not acknowledged in time.
    """
    if devices < 1:
        raise ConfigError(f"devices must be at least 1, got {devices}")
    pacer = pacer or Pacer(None)
    failures: list[BaseException] = []
    first_send_ms = 0
    start_s = time.monotonic()
    sent = 0
    for index, window in enumerate(windows):
        pacer.wait_turn()
        now_ms = time.time_ns() // 1_000_000
        if index == 0:
            first_send_ms, start_s = now_ms, time.monotonic()
        try:
            future = producer.send(
                topic,
                key=device_key(index, devices),
                value=build_message(window, now_ms, fmt),
                timestamp_ms=now_ms,
            )
        except Exception as exc:  # kafka-python raises KafkaError or its own timeouts here
            raise BrokerError(f"cannot send window {window.id!r} to {topic!r}: {exc}") from exc
        future.add_errback(failures.append)
        sent += 1
        if on_sent is not None:
            on_sent()
    try:
        producer.flush(timeout=flush_timeout_s)
    except Exception as exc:
        raise BrokerError(
            f"{topic!r}: not every window was acknowledged within {flush_timeout_s:.0f} s: {exc}"
        ) from exc
    if failures:
        raise BrokerError(
            f"{topic!r}: {len(failures)} of {sent} windows were not acknowledged "
            f"(first error: {failures[0]})"
        )
    return ReplayReport(
        topic=topic,
        sent=sent,
        devices=devices,
        first_send_ms=first_send_ms,
        duration_s=time.monotonic() - start_s,
    )


def describe(report: ReplayReport, bootstrap_servers: str) -> str:
    """The one-line summary ``ecg-replay`` prints."""
    last = f"device-{min(report.devices, report.sent) - 1:02d}" if report.sent else "-"
    return (
        f"sent {report.sent} windows to {report.topic!r} at {bootstrap_servers} in "
        f"{report.duration_s:.2f} s ({report.rate_per_s:.1f} windows/s), all acknowledged, "
        f"keyed by {min(report.devices, report.sent)} devices (device-00..{last})"
    )


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The ``ecg-replay`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="ecg-replay",
        description="Send ECG windows (the ECG5000 test split, or a CSV) to the input topic.",
        epilog=BOOTSTRAP_EPILOG,
    )
    add_bootstrap_argument(parser)
    add_kafka_config_argument(parser)
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help="input topic (default: %(default)s)")
    parser.add_argument(
        "--input",
        metavar="CSV",
        default=None,
        help=f"CSV with {WINDOW_LENGTH} values per line, optionally then a 0/1 label "
        "(default: the 1000-window ECG5000 test split of the tutorial)",
    )
    parser.add_argument(
        "--count",
        type=positive_int,
        default=None,
        help="windows to send (default: all; more than the source repeats it, ids get .1, .2..)",
    )
    parser.add_argument(
        "--rate",
        type=positive_float,
        default=None,
        metavar="WINDOWS_PER_S",
        help="send at most this many windows per second (default: as fast as possible)",
    )
    parser.add_argument(
        "--devices",
        type=positive_int,
        default=DEFAULT_DEVICES,
        help="number of device keys device-00.. to spread windows over (default: %(default)s)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="object",
        help="object: JSON with id, values, label; array: bare array of values "
        "(default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (``worker.cli_support.runner.ExitCode``)."""
    args = build_parser().parse_args(argv)
    return run_cli("ecg-replay", lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    kafka = load_kafka_config(args.kafka_config)
    bootstrap = args.bootstrap_servers or ",".join(kafka.bootstrap_servers)
    windows = read_csv(args.input) if args.input else ecg5000_test_windows()
    total = args.count if args.count is not None else len(windows)
    producer = make_producer(bootstrap, **kafka.producer_settings())
    try:
        # disable=None: a bar on a terminal, silence when stderr is a pipe or a file.
        with tqdm(total=total, unit="win", file=sys.stderr, disable=None) as bar:
            report = replay(
                producer,
                args.topic,
                take(windows, args.count),
                devices=args.devices,
                fmt=args.format,
                pacer=Pacer(args.rate),
                on_sent=bar.update,
            )
    finally:
        producer.close(timeout=5)
    print(describe(report, bootstrap), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
