"""``make bench``: one command, one broker, one run: throughput ratios, scoring cost, latency.

    .venv/bin/python benchmarks/bench.py [--rounds 3] [--windows 60000] [--bootstrap HOST:PORT]
        [--artifact artifacts/ecg] [--json PATH] [--markdown PATH] [--scaling] [--quick]

What it does, from one process (the bare loops, the naive loop and the host-stall probe in
child processes of their own, the workers as ``ecg-worker`` processes) against one broker
(its own, on free ports, unless ``--bootstrap``):

1. writes ``--windows`` JSON windows (the ECG5000 test split tiled, ``{"id", "values",
   "label"}``, about 2.6 KB each) once to an input topic of ``--partitions`` partitions;
2. reads all of them with each runner, each with its own consumer group, ``--rounds`` times
   (runners take turns within a round; the best round of each is kept):
   - bare kafka-python / bare confluent-kafka: poll -> send each value unchanged -> flush ->
     commit, each in a child process (the clients' own ceiling for the same work pattern);
   - the worker on kafka-python / on confluent-kafka: a real ``ecg-worker`` process
     (``kafka.library`` in its config), timed through its ``/metrics``;
   a runner that never gets its partitions within ``--join-timeout-s`` is reported as a
   stall, one that does not finish within ``--run-timeout-s`` as a timeout;
3. the tutorial's naive loop (Keras ``model.predict`` per message) on ``--naive-windows``,
   in a child process (so that TensorFlow never loads into this one, see ``CollectionPauses``);
4. the scorer alone at batch 1/64/512 against a plain numpy forward pass of the same weights;
5. end-to-end latency at half of the worker's best kafka-python rate: input record
   timestamp -> the score read back by a consumer (p50/p99/p999/max), ``--latency-rounds``
   runs of each runner, interleaved; the median round by p99 is kept; this process's longest
   garbage-collection pause during the timed runs, and each round's host stalls (``HostStalls``),
   are reported with them;
6. with ``--scaling``: two workers (one group, one partition each) against one.

Rates are timed from a runner's first committed window to its last, so process start-up
and the group join are left out; every rate is also given as a ratio, since the machine
(2 cores shared with the broker) makes absolute numbers noisy. The three targets print as
PASS/FAIL lines; the result is written as JSON and markdown.
"""

# One BLAS thread, as in ecg-worker: set before numpy is imported.
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import contextlib
import gc
import json
import math
import multiprocessing
import multiprocessing.connection
import platform
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from worker.service.config import BatchingConfig  # noqa: E402 - after the path is set

# Target ratios (the issue): worker / bare loop of the same client, and the latency bound.
TARGET_KAFKA_PYTHON = 0.9
TARGET_CONFLUENT = 0.5
LATENCY_MARGIN_MS = 20
# The shipped batching defaults, unless ECG_MAX_BATCH_SIZE / ECG_MAX_WAIT_MS say otherwise (the
# workers read the same variables, so the report names what they ran with).
MAX_WAIT_MS = int(os.environ.get("ECG_MAX_WAIT_MS") or BatchingConfig().max_wait_ms)
MAX_BATCH_SIZE = int(os.environ.get("ECG_MAX_BATCH_SIZE") or BatchingConfig().max_batch_size)
SCORER_BATCHES = (1, 64, 512)
# What deploy/kafka/local-kafka.sh writes in the broker's data directory besides the data.
BROKER_LOGS = ("kafka.log", "console.log")
UNAVAILABLE = "backend not available (config rejected)"
# A longer garbage-collection pause of the bench process is named in the latency report.
HARNESS_PAUSE_LIMIT_MS = 10
# A sleeping probe's wake-up later than this counts as a stall of the host (HostStalls).
HOST_STALL_MS = 10
# kafka.client settings for the benchmarked workers (--worker-client), e.g. to try producer
# batch sizes without a code change.
WORKER_CLIENT: dict[str, Any] = {}


# --------------------------------------------------------------------------- results


@dataclass
class RunResult:
    """One runner's best round: windows per second, or why there is no number."""

    name: str
    rate: float | None = None  # windows/s, None when the runner has no number
    status: str = "ok"  # ok | stall | timeout | unavailable | error
    note: str = ""
    rounds: list[float | None] = field(default_factory=list)

    def best_of(self, other: RunResult) -> RunResult:
        """Merge another round into this one: the best rate wins, every round is kept."""
        rounds = [*self.rounds, *other.rounds]
        if other.rate is not None and (self.rate is None or other.rate > self.rate):
            return RunResult(self.name, other.rate, other.status, other.note, rounds)
        if self.rate is None and other.status != "ok":
            return RunResult(self.name, None, other.status, other.note or self.note, rounds)
        return RunResult(self.name, self.rate, self.status, self.note, rounds)


@dataclass
class Latency:
    """End-to-end latency percentiles in milliseconds, at ``rate`` windows/s."""

    rate: float
    count: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    note: str = ""
    p99_rounds_ms: list[float] = field(default_factory=list)  # every round's p99
    # The longest garbage collection of the bench process during the timed run (with several
    # rounds, the longest of any): it produces the windows and hosts the bare loop, so a
    # pause of its own would be counted as the runner's latency.
    harness_pause_ms: float = 0.0
    # How late a process that only sleeps (``HostStalls``) woke up during the timed run: the
    # longest delay, and the sum of the delays over HOST_STALL_MS.
    host_stall_max_ms: float = 0.0
    host_stall_total_ms: float = 0.0
    host_stall_rounds_ms: list[float] = field(default_factory=list)  # every round's longest


def failed_latency(rate: float, why: str) -> Latency:
    """A latency round that measured nothing (e.g. its loop never got its partitions): it
    ranks as the worst round, so that a failure is never hidden by the other rounds."""
    return Latency(rate, 0, math.inf, math.inf, math.inf, math.inf, why)


def median_round(rounds: Sequence[Latency]) -> Latency:
    """The round whose p99 is the median (the higher of the middle two for an even count),
    with every round's p99 attached: one latency run on a shared 2-core host can tell
    60 ms from 130 ms apart only by chance, and a best-of would hide a real tail."""
    ranked = sorted(rounds, key=lambda lat: lat.p99_ms)
    chosen = ranked[len(ranked) // 2]
    notes = "; ".join(dict.fromkeys(lat.note for lat in rounds if lat.note))
    return replace(
        chosen,
        note=notes,
        p99_rounds_ms=[lat.p99_ms for lat in rounds],
        harness_pause_ms=max(lat.harness_pause_ms for lat in rounds),
        host_stall_rounds_ms=[lat.host_stall_max_ms for lat in rounds],
    )


def _probe_sleeps(stop: Any, late: Any, tick_s: float, over_ms: float) -> None:
    """A ``HostStalls`` probe (a child process): say "ready", sleep ``tick_s`` until
    ``stop`` is set, then send the (monotonic time, ms late) of every wake-up more than
    ``over_ms`` late."""
    found: list[tuple[float, float]] = []
    late.send("ready")
    before = time.monotonic()
    while not stop.is_set():
        time.sleep(tick_s)
        now = time.monotonic()
        late_ms = (now - before - tick_s) * 1000.0
        if late_ms > over_ms:
            found.append((now, late_ms))
        before = now
    late.send(found)


class HostStalls:
    """How late a process that does nothing but sleep 2 ms at a time wakes up, over a span.

    On a shared 2-core host the worker can be held off the CPU for tens of milliseconds at a
    time (by the broker, the bench, or the hypervisor); a worker at half of its best rate
    then needs as long again to catch up, so such stalls show in its p99 whatever its code
    does. The probe runs in a process of its own (not behind this one's GIL), and its
    wake-ups say how long any process could have been kept waiting."""

    def __init__(self, tick_s: float = 0.002, over_ms: float = HOST_STALL_MS) -> None:
        self._tick_s, self._over_ms = tick_s, over_ms
        self._span = (0.0, 0.0)
        self.longest_ms = 0.0
        self.total_ms = 0.0

    def __enter__(self) -> HostStalls:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_probe_sleeps, args=(self._stop, send, self._tick_s, self._over_ms)
        )
        self._process.start()
        # Ready, or exited (e.g. it could not import this module), or neither in 30 s.
        multiprocessing.connection.wait([self._receive, self._process.sentinel], timeout=30.0)
        if not (self._receive.poll() and self._receive.recv() == "ready"):
            self._stop.set()
            self._process.join(timeout=5)
            raise RuntimeError(
                "the host-stall probe did not start within 30 s "
                f"(exit code {self._process.exitcode})"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        found: list[tuple[float, float]] = []
        with contextlib.suppress(EOFError):  # a probe that died reports nothing
            if self._receive.poll(10.0):
                found = self._receive.recv()
        self._process.join(timeout=5)
        started, ended = self._span
        within = [late_ms for at, late_ms in found if started <= at <= ended]
        self.longest_ms, self.total_ms = max(within, default=0.0), sum(within)

    @property
    def pid(self) -> int | None:
        """The probe's process id."""
        return self._process.pid

    @contextmanager
    def timing(self) -> Iterator[None]:
        """The span whose stalls count."""
        started = time.monotonic()
        yield
        self._span = (started, time.monotonic())


class CollectionPauses:
    """The longest garbage collection of this process while ``watching()``, in ms.

    Measured because it was the harness's own tail: with the naive loop's TensorFlow loaded
    in the bench process (about 400,000 Python objects), each full collection took 220-270
    ms, several per latency round, each stalling the paced producer and the bare loop."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._started: float | None = None
        self.longest_ms = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """The ``gc.callbacks`` hook."""
        if phase == "start":
            self._started = self._clock()
        elif self._started is not None:
            self.longest_ms = max(self.longest_ms, (self._clock() - self._started) * 1000.0)
            self._started = None

    @contextmanager
    def watching(self) -> Iterator[CollectionPauses]:
        """Hook into ``gc.callbacks`` for the block."""
        gc.callbacks.append(self)
        try:
            yield self
        finally:
            gc.callbacks.remove(self)


@dataclass
class Target:
    """One PASS/FAIL line."""

    name: str
    measured: float | None
    limit: float
    higher_is_better: bool = True

    @property
    def passed(self) -> bool | None:
        """True/False, or None when there is no measurement."""
        if self.measured is None:
            return None
        if self.higher_is_better:
            return self.measured >= self.limit
        return self.measured <= self.limit

    def line(self) -> str:
        """``PASS  worker on kafka-python / bare kafka-python 0.93 >= 0.90``."""
        verdict = {True: "PASS", False: "FAIL", None: "N/A "}[self.passed]
        op = ">=" if self.higher_is_better else "<="
        if self.measured is None:
            measured = "no measurement"
        elif math.isinf(self.measured):
            measured = "failed"
        else:
            measured = f"{self.measured:.2f}"
        return f"{verdict}  {self.name}: {measured} {op} {self.limit:.2f}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def rate_of(result: RunResult | None) -> float | None:
    """A runner's best rate, None when it did not run or has no rate."""
    return result.rate if result is not None else None


def percentiles_ms(latencies_ms: Sequence[float]) -> tuple[float, float, float, float]:
    """p50, p99, p99.9 and max of a non-empty sample."""
    a = np.asarray(latencies_ms, dtype=np.float64)
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return float(p50), float(p99), float(p999), float(a.max())


def targets(results: dict[str, RunResult], latency: dict[str, Latency]) -> list[Target]:
    """The issue's targets, measured in this run: two ratios, and the latency bound for
    each worker whose latency was measured."""
    kp = results.get("bare-kafka-python")
    ck = results.get("bare-confluent")
    wkp = results.get("worker-kafka-python")
    wck = results.get("worker-confluent")
    out = [
        Target(
            "worker on kafka-python / bare kafka-python loop",
            ratio(rate_of(wkp), rate_of(kp)),
            TARGET_KAFKA_PYTHON,
        ),
        Target(
            "worker on confluent-kafka / bare confluent-kafka loop",
            ratio(rate_of(wck), rate_of(ck)),
            TARGET_CONFLUENT,
        ),
    ]
    for which, what in (
        ("worker", "the worker on kafka-python at half its best rate"),
        ("worker-confluent", "the worker on confluent-kafka at that load"),
        ("worker-confluent-own", "the worker on confluent-kafka at half its own best rate"),
    ):
        lat = latency.get(which)
        if lat is None and which == "worker-confluent-own":
            continue
        out.append(
            Target(
                f"p99 end-to-end latency of {what} "
                f"(ms; max_wait_ms {MAX_WAIT_MS} + {LATENCY_MARGIN_MS})",
                lat.p99_ms if lat else None,
                MAX_WAIT_MS + LATENCY_MARGIN_MS,
                higher_is_better=False,
            )
        )
    return out


# Row label, and the runner whose rate is the row's 1.00.
ROWS = {
    "bare-kafka-python": ("bare kafka-python loop (poll, send, flush, commit)", None),
    "worker-kafka-python": ("ecg-worker on kafka-python", "bare-kafka-python"),
    "bare-confluent": ("bare confluent-kafka loop (same steps)", None),
    "worker-confluent": ("ecg-worker on confluent-kafka", "bare-confluent"),
    "naive-keras": ("naive tutorial loop (model.predict per message)", "bare-kafka-python"),
}


def render(
    machine: dict[str, str],
    results: dict[str, RunResult],
    scorer: dict[str, float],
    latency: dict[str, Latency],
    scaling: dict[str, Any] | None,
    setup: dict[str, Any],
) -> str:
    """The whole report as markdown (also what the script prints)."""
    out = ["## Machine", ""]
    out += [f"- {k}: {v}" for k, v in machine.items()]
    out += ["", "## Throughput", ""]
    out.append(
        f"{setup['windows']:,} windows, {setup['partitions']} partitions, best of "
        f"{setup['rounds']} rounds, each runner with its own group; max_batch_size "
        f"{MAX_BATCH_SIZE}, max_wait_ms {MAX_WAIT_MS}. Ratios: to the bare kafka-python loop, "
        "and (second column) to the bare loop of the same client."
    )
    out += ["", "| runner | windows/s | vs bare kafka-python | vs own bare loop | rounds |"]
    out.append("|---|---:|---:|---:|---|")
    base = results.get("bare-kafka-python")
    for key, (label, own) in ROWS.items():
        r = results.get(key)
        if r is None:
            continue
        if r.rate is None:
            rate = f"{r.status}: {r.note}" if r.note else r.status
            out.append(f"| {label} | {rate} | | | |")
            continue
        vs_kp = ratio(r.rate, rate_of(base))
        own_r = results.get(own) if own else None
        vs_own = ratio(r.rate, rate_of(own_r)) if own else 1.0
        rounds = ", ".join("stall" if x is None else f"{x:,.0f}" for x in r.rounds)
        note = f" ({r.note})" if r.note else ""
        out.append(f"| {label}{note} | {r.rate:,.0f} | {_fmt(vs_kp)} | {_fmt(vs_own)} | {rounds} |")
    if scorer:
        out += ["", "## Scorer alone (windows/s, one BLAS thread)", ""]
        out += [
            "| batch | Scorer.score | plain numpy forward pass | ratio |",
            "|---:|---:|---:|---:|",
        ]
        for b in SCORER_BATCHES:
            s, n = scorer.get(f"scorer-{b}"), scorer.get(f"numpy-{b}")
            out.append(f"| {b} | {_num(s)} | {_num(n)} | {_fmt(ratio(s, n))} |")
    out += ["", "## End-to-end latency", ""]
    if not latency:
        out.append("not measured")
    else:
        out.append(
            "At half of the kafka-python worker's best rate above (one row: the confluent-kafka "
            "worker at half of its own). From the moment a window is handed to "
            "the producer (librdkafka, linger.ms 5) to the moment its score is appended to "
            "the scores topic (its LogAppendTime: readable by any consumer)."
        )
        ran = max((len(lat.p99_rounds_ms) for lat in latency.values()), default=0)
        if ran > 1:
            out[-1] += (
                f" Each ran {ran} times, the rounds interleaved; a row is its median round "
                'by p99, and "p99 by round" lists every round\'s p99.'
            )
        out[-1] += (
            " Host stall: the longest delay (ms) of a process that only sleeps 2 ms at a "
            "time, in the timed run (of each round): how long the host kept a process that "
            "was due to run off the CPU. A worker at half of its best rate needs about as long "
            "again to catch up, so long stalls show in its p99."
        )
        out += [
            "",
            "| processing | windows/s | windows | p50 | p99 | p99.9 | max | p99 by round "
            "| host stall by round |",
        ]
        out.append("|---|---:|---:|---:|---:|---:|---:|---|---|")
        for which, lat in latency.items():
            by_round = ", ".join(_ms(p, 0, "") for p in lat.p99_rounds_ms) or "-"
            stalls = lat.host_stall_rounds_ms or [lat.host_stall_max_ms]
            out.append(
                f"| {LATENCY_ROWS.get(which, which)} | {lat.rate:,.0f} | {lat.count:,} "
                f"| {_ms(lat.p50_ms)} | {_ms(lat.p99_ms)} | {_ms(lat.p999_ms)} "
                f"| {_ms(lat.max_ms)} | {by_round} | {', '.join(f'{x:.0f}' for x in stalls)} |"
            )
        notes = [f"{w}: {lat.note}" for w, lat in latency.items() if lat.note]
        if notes:
            out += ["", "; ".join(notes)]
        pause_ms = max(lat.harness_pause_ms for lat in latency.values())
        out += [
            "",
            "The bench process (the windows' producer) paused at most "
            f"{pause_ms:.1f} ms for garbage collection during a timed run"
            + (
                f"; pauses over {HARNESS_PAUSE_LIMIT_MS} ms are counted in the latencies above."
                if pause_ms > HARNESS_PAUSE_LIMIT_MS
                else "."
            ),
        ]
    if scaling:
        out += ["", "## Two workers vs one (same group, one partition each)", ""]
        out.append(
            f"one worker {_num(scaling.get('one'))} windows/s, two workers "
            f"{_num(scaling.get('two'))} windows/s: "
            f"{_fmt(ratio(scaling.get('two'), scaling.get('one')))}x"
            " (the broker and the bench share the same 2 cores)"
        )
    out += ["", "## Targets", "", "```text"]
    out += [t.line() for t in targets(results, latency)]
    out += ["```"]
    return "\n".join(out) + "\n"


LATENCY_ROWS = {
    "worker": f"ecg-worker on kafka-python (max_wait_ms {MAX_WAIT_MS})",
    "worker-confluent": f"ecg-worker on confluent-kafka (max_wait_ms {MAX_WAIT_MS})",
    "bare-kafka-python": "bare kafka-python loop (no batching wait)",
    "worker-confluent-own": "ecg-worker on confluent-kafka, at half of its own best rate",
}


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if value >= 0.1 else f"{value:.4f}"


def _ms(value: float, digits: int = 1, unit: str = " ms") -> str:
    """A latency in a table cell; a failed round's (infinite) one as "failed"."""
    if math.isinf(value):
        return "failed"
    return f"{value:.{digits}f}{unit}"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


# --------------------------------------------------------------------------- machine


def machine_info(bootstrap_note: str) -> dict[str, str]:
    """CPU, cores, Python, numpy/BLAS, client and broker versions, load."""
    import confluent_kafka
    import kafka

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = "unknown"
    try:
        config = np.show_config(mode="dicts")
        deps = config.get("Build Dependencies", {}).get("blas", {})
        blas = f"{deps.get('name', '?')} {deps.get('version', '')}".strip()
    except (TypeError, AttributeError):
        pass
    jars = sorted((REPO_ROOT / ".local" / "kafka" / "libs").glob("kafka-server-*.jar"))
    broker = jars[0].stem.removeprefix("kafka-server-") if jars else "unknown"
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "numpy": f"{np.__version__} ({blas}, {os.environ.get('OPENBLAS_NUM_THREADS')} thread)",
        "kafka-python": kafka.__version__,
        "confluent-kafka": (
            f"{confluent_kafka.version()} (librdkafka {confluent_kafka.libversion()[0]})"
        ),
        "broker": f"Apache Kafka {broker}, {bootstrap_note}",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# --------------------------------------------------------------------------- data


def ecg_windows(count: int) -> list[bytes]:
    """``count`` JSON windows: the ECG5000 test split (1000 windows), tiled."""
    from trainer.ecg.data import load_ecg, tutorial_split

    split = tutorial_split(load_ecg())
    base = [
        (values.astype(np.float64).tolist(), int(label))
        for values, label in zip(split.test_windows, split.test_labels, strict=True)
    ]
    return [
        orjson.dumps(
            {"id": f"w-{i}", "values": base[i % len(base)][0], "label": base[i % len(base)][1]}
        )
        for i in range(count)
    ]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_topics(
    bootstrap: str,
    names: Sequence[str],
    partitions: int,
    configs: dict[str, dict[str, str]] | None = None,
) -> None:
    """Create topics (one replica; ``configs`` by topic name) and wait until they exist."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(n, partitions, 1, config=(configs or {}).get(n, {})) for n in names]
    )
    for f in futures.values():
        f.result(timeout=30)


def produce(bootstrap: str, topic: str, values: Sequence[bytes], partitions: int) -> None:
    """Write ``values`` round-robin over the partitions (acks=all) and wait for every ack."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20, "compression.type": "none"}
    )
    for i, v in enumerate(values):
        while True:
            try:
                producer.produce(topic, v, key=f"device-{i % 8}".encode(), partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError(f"could not write the input windows to {topic}")


# --------------------------------------------------------------------------- runners


class Clock:
    """First and last commit times and the count at each, shared with a watcher."""

    def __init__(self) -> None:
        self.first_at: float | None = None
        self.first_count = 0
        self.last_at: float | None = None
        self.count = 0

    def committed(self, count: int) -> None:
        """``count`` windows are committed in all, now."""
        now = time.perf_counter()
        if self.first_at is None:
            self.first_at, self.first_count = now, count
        self.last_at, self.count = now, count

    def start(self) -> None:
        """Start timing now, from zero windows (instead of at the first commit)."""
        if self.first_at is None:
            self.first_at, self.first_count = time.perf_counter(), 0

    def rate(self) -> float | None:
        """Windows per second from the first commit to the last (the first batch excluded)."""
        if self.first_at is None or self.last_at is None or self.last_at <= self.first_at:
            return None
        return (self.count - self.first_count) / (self.last_at - self.first_at)


def outcome(
    name: str, clock: Clock, total: int, join_timeout_s: float, note: str = ""
) -> RunResult:
    """The result of one round from its clock."""
    if clock.first_at is None:
        return RunResult(
            name, None, "stall", f"no assignment within {join_timeout_s:.0f} s", [None]
        )
    if clock.count < total:
        return RunResult(name, None, "timeout", f"{clock.count:,} of {total:,} in time", [None])
    rate = clock.rate()
    return RunResult(name, rate, "ok", note, [rate])


@dataclass
class Stream:
    """The input topic and where pass-through copies go."""

    bootstrap: str
    topic: str
    out_topic: str
    total: int
    join_timeout_s: float
    run_timeout_s: float
    partitions: int = 2


def input_consumer(stream: Stream, group: str, **settings: Any) -> Any:
    """A kafka-python consumer of the input topic in ``group``: manual commits, from the
    start, plus ``settings``."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        stream.topic,
        bootstrap_servers=stream.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **settings,
    )


def bare_kafka_python(stream: Stream) -> RunResult:
    """poll -> send every value unchanged -> flush -> commit, with kafka-python."""
    from kafka import KafkaProducer

    group = f"bench-kp-{uuid.uuid4().hex[:8]}"
    consumer = input_consumer(stream, group)
    producer = KafkaProducer(bootstrap_servers=stream.bootstrap, acks="all", linger_ms=5)
    clock, seen = Clock(), 0
    started = time.monotonic()
    try:
        while seen < stream.total:
            elapsed = time.monotonic() - started
            if clock.first_at is None and elapsed > stream.join_timeout_s:
                break
            if elapsed > stream.join_timeout_s + stream.run_timeout_s:
                break
            polled = consumer.poll(timeout_ms=100)
            if not polled:
                continue
            for records in polled.values():
                for r in records:
                    producer.send(stream.out_topic, value=r.value, key=r.key)
                seen += len(records)
            producer.flush()
            consumer.commit()
            clock.committed(seen)
    finally:
        producer.close(timeout=5)
        consumer.close(autocommit=False)
    return outcome("bare-kafka-python", clock, stream.total, stream.join_timeout_s)


def bare_confluent(stream: Stream) -> RunResult:
    """The same steps with confluent-kafka: consume a batch, produce, flush, commit (sync)."""
    from confluent_kafka import Consumer, Producer

    group = f"bench-ck-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(
        {
            "bootstrap.servers": stream.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([stream.topic])
    producer = Producer({"bootstrap.servers": stream.bootstrap, "acks": "all", "linger.ms": 5})
    clock, seen = Clock(), 0
    started = time.monotonic()
    try:
        while seen < stream.total:
            elapsed = time.monotonic() - started
            if clock.first_at is None and elapsed > stream.join_timeout_s:
                break
            if elapsed > stream.join_timeout_s + stream.run_timeout_s:
                break
            messages = consumer.consume(500, timeout=0.1)
            if not messages:
                continue
            for m in messages:
                if m.error():
                    continue
                while True:
                    try:
                        producer.produce(stream.out_topic, m.value(), key=m.key())
                        break
                    except BufferError:
                        producer.poll(0.01)
            seen += len(messages)
            producer.flush()
            consumer.commit(asynchronous=False)
            clock.committed(seen)
    finally:
        consumer.close()
    return outcome("bare-confluent", clock, stream.total, stream.join_timeout_s)


def worker_config(
    path: Path,
    bootstrap: str,
    topics: dict[str, str],
    group: str,
    artifact: Path,
    metrics_port: int,
    library: str | None,
    client: dict[str, Any] | None = None,
) -> Path:
    """A worker.yaml for one runner (``kafka.library`` and ``kafka.client`` only when given)."""
    kafka: dict[str, Any] = {"bootstrap_servers": bootstrap, "group_id": group, "client_id": group}
    if client:
        kafka["client"] = client
    if library is not None:
        kafka["library"] = library
    doc = {
        "kafka": kafka,
        "topics": {**topics, "create_topics": False},
        "batching": {"max_batch_size": MAX_BATCH_SIZE, "max_wait_ms": MAX_WAIT_MS},
        "artifact": str(artifact.resolve()),
        "metrics": {"host": "127.0.0.1", "port": metrics_port},
        "reload": {"watch": False},
    }
    path.write_text(json.dumps(doc, indent=2))  # JSON is YAML
    return path


@contextmanager
def workers(
    count: int,
    stream: Stream,
    topics: dict[str, str],
    artifact: Path,
    library: str | None,
    run_dir: Path,
    group: str,
    profile: str | None = None,
) -> Iterator[list[Any]]:
    """``count`` ``ecg-worker`` processes in ``group``; stopped (SIGTERM) on exit."""
    from clients.worker_process import WorkerProcess

    env = {"PYTHONPATH": str(REPO_ROOT)}
    started: list[Any] = []
    try:
        for i in range(count):
            port = free_port()
            config = worker_config(
                run_dir / f"{group}-{i}.yaml",
                stream.bootstrap,
                topics,
                group,
                artifact,
                port,
                library,
                WORKER_CLIENT,
            )
            w = WorkerProcess(config, env, port, run_dir / f"{group}-{i}.log")
            w.start()
            started.append(w)
            if profile:
                _attach_profiler(w.pid, Path(profile))
        yield started
    finally:
        for w in started:
            try:
                w.stop(timeout_s=30)
            except Exception as exc:  # report, keep stopping the others
                print(f"  warning: {exc}", file=sys.stderr)


def _suffixed(path: str | None, suffix: str) -> str | None:
    """``path`` with ``suffix`` before its extension (the confluent worker's profile)."""
    if path is None:
        return None
    p = Path(path)
    return str(p.with_name(p.stem + suffix + p.suffix))


def py_spy_command() -> str | None:
    """The ``py-spy`` executable (on PATH or next to this Python), or None."""
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def _attach_profiler(pid: int | None, out: Path) -> None:
    import subprocess

    py_spy = py_spy_command()
    if pid is None or py_spy is None:  # main() checked py-spy before the run
        return
    subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--format",
            "speedscope",
            "-o",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_workers(
    name: str,
    count: int,
    stream: Stream,
    topics: dict[str, str],
    artifact: Path,
    library: str | None,
    run_dir: Path,
    profile: str | None = None,
) -> RunResult:
    """Time ``count`` workers of one group through all windows: their group's committed
    offsets, read by this process every 50 ms (a broker request; scraping /metrics would
    cost the worker CPU)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from clients.worker_process import WorkerProcessError

    group = f"bench-w-{uuid.uuid4().hex[:8]}"
    # Not subscribed: it only reads the group's committed offsets, never joins the group.
    watcher = Consumer({"bootstrap.servers": stream.bootstrap, "group.id": group})
    partitions = [TopicPartition(stream.topic, p) for p in range(stream.partitions)]
    clock = Clock()
    try:
        with workers(count, stream, topics, artifact, library, run_dir, group, profile) as procs:
            started = time.monotonic()
            while True:
                elapsed = time.monotonic() - started
                try:
                    for w in procs:
                        w.check_alive()
                except WorkerProcessError as exc:
                    if "exited with code 2" in str(exc) and library is not None:
                        return RunResult(name, None, "unavailable", UNAVAILABLE, [None])
                    return RunResult(name, None, "error", str(exc).splitlines()[0], [None])
                try:
                    committed = watcher.committed(partitions, timeout=5)
                    total = sum(max(tp.offset, 0) for tp in committed)
                except KafkaException:
                    total = 0
                if total:
                    clock.committed(total)
                if total >= stream.total:
                    break
                if clock.first_at is None and elapsed > stream.join_timeout_s:
                    break
                if elapsed > stream.join_timeout_s + stream.run_timeout_s:
                    break
                time.sleep(0.05)
    finally:
        watcher.close()
    return outcome(name, clock, stream.total, stream.join_timeout_s)


# --------------------------------------------------------------------------- latency


def measure_latency(
    stream: Stream,
    topics: dict[str, str],
    rate: float,
    seconds: float,
    processor: Callable[[], Any],
) -> Latency:
    """Paced windows into a fresh topic, handled by ``processor()`` (a context manager that
    starts a worker or a bare loop and returns once it owns its partitions).

    Latency is the output record's broker append time (the scores topic is created with
    ``message.timestamp.type=LogAppendTime``: the moment any consumer can read it) minus
    the time the input window was handed to the producer (same host clock). Each input
    carries its own key, which its score keeps, so nothing is parsed and no reader competes
    for the 2 cores while the run is timed: the outputs are read after it.

    The producer is what a device gateway would run: confluent-kafka with librdkafka's
    default ``linger.ms`` (5 ms, counted in the latency), paced in 1 ms ticks.
    """
    from confluent_kafka import Producer

    values = ecg_windows(1000)
    producer = Producer({"bootstrap.servers": stream.bootstrap, "acks": "all", "linger.ms": 5})
    n = int(rate * seconds)
    sent_ms = np.full(n, np.nan)
    with processor():
        # Warm up until an output appears (the processor may still be joining), then 1 s
        # at the rate so that connections and caches are warm; neither is timed.
        reader = _latency_reader(stream, topics["scores"])
        warm, seen = 0, False
        while warm < 300 and not seen:
            producer.produce(
                stream.topic,
                values[warm % 1000],
                key=f"warm-{warm}".encode(),
                partition=warm % stream.partitions,
            )
            producer.flush(5)
            warm += 1
            seen = bool(reader.consume(1, timeout=0.1))
        reader.close()
        if not seen:
            raise RuntimeError(
                f"no output on {topics['scores']} for 300 warm-up windows: the runner "
                "is not processing"
            )
        with HostStalls() as stalls:  # up during the warm-up: the timed run is all probed
            _paced(producer, stream, values, rate, int(rate), "warm", None)
            with CollectionPauses().watching() as pauses, stalls.timing():
                _paced(producer, stream, values, rate, n, "lat", sent_ms)
        if producer.flush(30) != 0:
            raise RuntimeError("the latency run's inputs were not all acknowledged")
        appended = _read_appended(stream, topics["scores"], n, deadline_s=30.0)
    latencies = [appended_ms - sent_ms[i] for i, appended_ms in appended.items()]
    if not latencies:
        raise RuntimeError("nothing read back in the latency run")
    p50, p99, p999, worst = percentiles_ms(latencies)
    note = "" if len(latencies) >= n else f"only {len(latencies)} of {n} outputs read back"
    return Latency(
        rate,
        len(latencies),
        p50,
        p99,
        p999,
        worst,
        note,
        harness_pause_ms=pauses.longest_ms,
        host_stall_max_ms=stalls.longest_ms,
        host_stall_total_ms=stalls.total_ms,
    )


def _paced(
    producer: Any,
    stream: Stream,
    values: Sequence[bytes],
    rate: float,
    count: int,
    prefix: str,
    sent_ms: np.ndarray | None,
) -> None:
    """Produce ``count`` windows at ``rate`` per second: each 1 ms tick sends what is due."""
    start = time.perf_counter()
    i = 0
    while i < count:
        due = min(count, int((time.perf_counter() - start) * rate) + 1)
        now_ms = time.time_ns() // 1_000_000
        while i < due:
            producer.produce(
                stream.topic,
                values[i % len(values)],
                key=f"{prefix}-{i}".encode(),
                partition=i % stream.partitions,
                timestamp=now_ms,
            )
            if sent_ms is not None:
                sent_ms[i] = now_ms
            i += 1
        producer.poll(0)
        time.sleep(max(0.0, start + i / rate - time.perf_counter()))


def _latency_reader(stream: Stream, topic: str) -> Any:
    from confluent_kafka import Consumer, TopicPartition

    reader = Consumer(
        {
            "bootstrap.servers": stream.bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    reader.assign([TopicPartition(topic, p, 0) for p in range(stream.partitions)])
    return reader


def _read_appended(stream: Stream, topic: str, count: int, deadline_s: float) -> dict[int, float]:
    """Append time (ms) of each ``lat-<i>`` output, by ``i``, once ``count`` are read or the
    deadline passes."""
    reader = _latency_reader(stream, topic)
    appended: dict[int, float] = {}
    deadline = time.monotonic() + deadline_s
    try:
        while len(appended) < count and time.monotonic() < deadline:
            for m in reader.consume(10000, timeout=0.5):
                key = m.key() if m.error() is None else None
                if key and key.startswith(b"lat-"):
                    appended.setdefault(int(key[4:]), float(m.timestamp()[1]))
    finally:
        reader.close()
    return appended


def _kafka_python_producer(stream: Stream) -> Any:
    """The bare kafka-python loop's producer."""
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=stream.bootstrap, acks="all", linger_ms=5)


def _bare_loop(
    stream: Stream,
    out_topic: str,
    group: str,
    stop: Any,
    report: Any,
    consumer_of: Callable[..., Any],
    producer_of: Callable[[Stream], Any],
) -> None:
    """The bare kafka-python loop, in a child process of ``bare_loop_running``, until
    ``stop`` is set. Sends ``("owns", "")`` once it owns partitions, and the failure that
    ends it early, if any, as ``(what, why)``."""
    try:
        producer = producer_of(stream)
        consumer = consumer_of(stream, group)
    except Exception as e:
        report.send(("could not start", str(e)))
        return
    owns = False
    try:
        while not stop.is_set():
            polled = consumer.poll(timeout_ms=50)
            if not owns and consumer.assignment():
                owns = True
                report.send(("owns", ""))
            if not polled:
                continue
            for records in polled.values():
                for r in records:
                    producer.send(out_topic, value=r.value, key=r.key)
            producer.flush()
            consumer.commit()
    except Exception as e:
        report.send(("failed during the run", repr(e)))
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=5)


def _received(receive: Any) -> tuple[str, str] | None:
    """The next message from a child, if one is there (None once the child is gone)."""
    try:
        return receive.recv() if receive.poll() else None
    except EOFError:
        return None


BARE_LOOP_PROCESS = "bare-kafka-python-loop"


@contextmanager
def bare_loop_running(
    stream: Stream,
    out_topic: str,
    consumer_of: Callable[..., Any] = input_consumer,
    producer_of: Callable[[Stream], Any] = _kafka_python_producer,
) -> Iterator[Any]:
    """The bare kafka-python loop in a process of its own (as each worker is, so that the
    paced producer in this one never shares its GIL) until the block ends; each output
    keeps its input's key, so the reader can time it. Returns once the loop owns
    partitions, and gives the loop's process."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    receive, send = context.Pipe(duplex=False)
    group = f"bench-lat-kp-{uuid.uuid4().hex[:8]}"
    process = context.Process(
        target=_bare_loop,
        args=(stream, out_topic, group, stop, send, consumer_of, producer_of),
        name=BARE_LOOP_PROCESS,
        daemon=True,
    )
    process.start()
    send.close()  # this end is the child's: a child that is gone then reads as EOF here
    try:
        multiprocessing.connection.wait([receive, process.sentinel], stream.join_timeout_s)
        first = _received(receive)
        if first is not None and first[0] == "could not start":
            raise RuntimeError(f"the bare kafka-python loop could not start: {first[1]}")
        if first is None and not process.is_alive():
            process.join()
            raise RuntimeError(
                f"the bare kafka-python loop exited at start (exit code {process.exitcode})"
            )
        if first is None:
            raise RuntimeError(
                f"the bare kafka-python loop got no partitions of {stream.topic} within "
                f"{stream.join_timeout_s:.0f} s (a stalled group join)"
            )
        yield process
        # A loop that died mid-run fails its round, not a partial one.
        ended = _received(receive)
        if ended is not None:
            raise RuntimeError(f"the bare kafka-python loop failed during the run: {ended[1]}")
        if not process.is_alive():
            process.join()
            raise RuntimeError(
                f"the bare kafka-python loop exited during the run (exit code {process.exitcode})"
            )
    finally:
        stop.set()
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()
        receive.close()


@contextmanager
def worker_running(
    stream: Stream,
    topics: dict[str, str],
    artifact: Path,
    run_dir: Path,
    library: str | None = None,
) -> Iterator[None]:
    """One ``ecg-worker`` (kafka-python unless ``library``) until the block ends; returns
    once it is ready."""
    group = f"bench-lat-{uuid.uuid4().hex[:8]}"
    with workers(1, stream, topics, artifact, library, run_dir, group) as procs:
        procs[0].wait_ready(stream.join_timeout_s)
        yield


# --------------------------------------------------------------------------- scorer, naive


def bench_scorer(artifact_dir: Path, n: int = 20480) -> dict[str, float]:
    """Windows/s of ``Scorer.score`` and of a plain numpy forward pass at batch 1/64/512."""
    from worker.core.artifact import load_ecg_artifact
    from worker.core.scorer import Scorer

    artifact = load_ecg_artifact(artifact_dir)
    scorer = Scorer(artifact)
    layers = [(lay.kernel, lay.bias, lay.activation) for lay in artifact.layers]
    norm = artifact.normalisation
    windows = np.asarray([orjson.loads(v)["values"] for v in ecg_windows(n)], dtype=np.float64)

    def plain(batch: np.ndarray) -> np.ndarray:
        x = ((batch - norm.min) / (norm.max - norm.min)).astype(np.float32)
        h = x
        for kernel, bias, activation in layers:
            h = h @ kernel + bias
            h = np.maximum(h, 0) if activation == "relu" else 1.0 / (1.0 + np.exp(-h))
        return np.abs(h - x).mean(axis=1)

    out: dict[str, float] = {}
    for b in SCORER_BATCHES:
        count = n if b > 1 else n // 4
        for name, fn in (("scorer", scorer.score), ("numpy", plain)):
            best = 0.0
            for _ in range(3):
                start = time.perf_counter()
                for i in range(0, count, b):
                    fn(windows[i : i + b])
                best = max(best, count / (time.perf_counter() - start))
            out[f"{name}-{b}"] = best
    return out


Result = TypeVar("Result")


def in_child_process(fn: Callable[..., Result], *args: Any) -> Result:
    """``fn(*args)`` in a fresh (spawned) Python process: its result, or its exception
    raised here. ``fn`` and its arguments must pickle."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def naive_keras(stream: Stream, artifact_dir: Path, count: int) -> RunResult:
    """The tutorial's loop: ``json.loads`` and ``model.predict`` on one window at a time,
    send the result; flush and commit per poll (kafka-python), on the first ``count``
    windows."""
    from kafka import KafkaProducer

    from trainer.ecg.model import build_autoencoder
    from worker.core.artifact import load_ecg_artifact

    artifact = load_ecg_artifact(artifact_dir)
    model = build_autoencoder(artifact.window_length)
    weights = []
    for lay in artifact.layers:
        weights += [lay.kernel, lay.bias]
    model.set_weights(weights)
    norm = artifact.normalisation
    threshold = float(artifact.threshold)
    model.predict(np.zeros((1, artifact.window_length), np.float32), verbose=0)  # warm up
    consumer = input_consumer(stream, f"bench-naive-{uuid.uuid4().hex[:8]}", max_poll_records=50)
    producer = KafkaProducer(bootstrap_servers=stream.bootstrap, acks="all", linger_ms=5)
    clock, seen = Clock(), 0
    started = time.monotonic()
    limit_s = stream.join_timeout_s + stream.run_timeout_s
    try:
        while seen < count and time.monotonic() - started < limit_s:
            for records in consumer.poll(timeout_ms=100, max_records=count - seen).values():
                clock.start()  # few windows: time from the first one received
                for r in records:
                    doc = json.loads(r.value)
                    x = np.array([doc["values"]], np.float32)
                    x = (x - norm.min) / (norm.max - norm.min)
                    rec = model.predict(x, verbose=0)  # one call per message
                    error = float(np.mean(np.abs(rec - x)))
                    result = {"id": doc["id"], "error": error, "anomaly": error >= threshold}
                    producer.send(stream.out_topic, json.dumps(result).encode())
                    seen += 1
                producer.flush()
                consumer.commit()
                clock.committed(seen)
    finally:
        producer.close(timeout=5)
        consumer.close(autocommit=False)
    return outcome("naive-keras", clock, count, stream.join_timeout_s, note=f"{count} windows")


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--artifact", default="artifacts/ecg", type=Path)
    parser.add_argument("--windows", type=int, default=60000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many (default 3)")
    parser.add_argument("--join-timeout-s", type=float, default=60.0)
    parser.add_argument("--run-timeout-s", type=float, default=120.0)
    parser.add_argument("--naive-windows", type=int, default=200)
    parser.add_argument("--latency-s", type=float, default=20.0, help="latency run length")
    parser.add_argument(
        "--latency-rounds",
        type=int,
        default=3,
        help="latency runs per runner, interleaved; each row is the median round by p99",
    )
    parser.add_argument(
        "--latency-rate", type=float, help="windows/s (default: half of the worker's best rate)"
    )
    parser.add_argument(
        "--latency-runners",
        default="",
        help="comma-separated subset of worker,worker-confluent,bare-kafka-python,"
        "worker-confluent-own (default: all)",
    )
    parser.add_argument("--scaling", action="store_true", help="also two workers vs one")
    parser.add_argument(
        "--profile",
        help="py-spy the workers of round 1 to FILE (the confluent-kafka one to FILE-confluent)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated runners (bare-kafka-python,worker-kafka-python,"
        "bare-confluent,worker-confluent,naive,scorer,latency)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny run (tests): 3000 windows, 1 round"
    )
    parser.add_argument(
        "--worker-client", default="{}", help="JSON kafka.client settings for the workers"
    )
    parser.add_argument("--json", default=".local/bench/result.json")
    parser.add_argument("--markdown", default=".local/bench/result.md")
    return parser


def latency_run(
    args: argparse.Namespace,
    bootstrap: str,
    topics: dict[str, str],
    tag: str,
    artifact: Path,
    run_dir: Path,
    which: str,
    latency_rate: float,
) -> Latency:
    """One latency run of ``which`` on topics of its own."""
    lat_tag = uuid.uuid4().hex[:6]
    lat_topics = {k: v.replace(tag, lat_tag) for k, v in topics.items()}
    create_topics(
        bootstrap,
        list(lat_topics.values()),
        args.partitions,
        {lat_topics["scores"]: {"message.timestamp.type": "LogAppendTime"}},
    )
    lat_stream = Stream(
        bootstrap,
        lat_topics["input"],
        lat_topics["scores"],
        0,
        args.join_timeout_s,
        args.run_timeout_s,
        args.partitions,
    )
    processor: Callable[[], Any]
    if which == "worker":
        processor = partial(worker_running, lat_stream, lat_topics, artifact, run_dir)
    elif which.startswith("worker-confluent"):
        processor = partial(
            worker_running, lat_stream, lat_topics, artifact, run_dir, "confluent-kafka"
        )
    else:
        processor = partial(bare_loop_running, lat_stream, lat_topics["scores"])
    return measure_latency(lat_stream, lat_topics, latency_rate, args.latency_s, processor)


def main(argv: list[str] | None = None) -> int:
    """Run everything; print the report; write JSON and markdown."""
    args = build_parser().parse_args(argv)
    if args.quick:
        args.windows, args.rounds, args.naive_windows, args.latency_s = 3000, 1, 20, 3.0
        args.latency_rounds = 1
    only = {s for s in args.only.split(",") if s}
    WORKER_CLIENT.update(json.loads(args.worker_client))

    def wanted(name: str) -> bool:
        return not only or name in only

    artifact = args.artifact
    if not (artifact / "artifact.json").is_file():
        print(f"no artifact in {artifact}: run `make train` first", file=sys.stderr)
        return 2
    if args.profile and py_spy_command() is None:
        print(
            f"--profile {args.profile}: py-spy is not installed (make setup installs it, "
            "or pip install py-spy)",
            file=sys.stderr,
        )
        return 2
    broker = None
    run_dir = Path(tempfile.mkdtemp(prefix="ecg-bench-"))
    if args.bootstrap:
        bootstrap, where = args.bootstrap, f"at {args.bootstrap}"
    else:
        from clients.local_broker import LocalBroker

        broker = LocalBroker(port=free_port(), data_dir=run_dir / "kafka")
        print(broker.ensure_running(), flush=True)
        bootstrap, where = broker.bootstrap_servers, "started by the bench on loopback"
    try:
        return _run(args, wanted, bootstrap, where, artifact, run_dir)
    finally:
        if broker is not None:
            broker.stop_if_started()
            # The broker's data (the windows, several times over) goes; its logs stay with
            # the workers', so that a broker that failed mid-run can be looked into.
            for name in BROKER_LOGS:
                with contextlib.suppress(OSError):
                    shutil.copyfile(run_dir / "kafka" / name, run_dir / f"broker-{name}")
            shutil.rmtree(run_dir / "kafka", ignore_errors=True)
            print(f"logs of the broker and the workers: {run_dir}", file=sys.stderr)


def _run(
    args: argparse.Namespace,
    wanted: Callable[[str], bool],
    bootstrap: str,
    where: str,
    artifact: Path,
    run_dir: Path,
) -> int:
    machine = machine_info(where)
    tag = uuid.uuid4().hex[:6]
    topics = {
        "input": f"bench-{tag}.windows",
        "scores": f"bench-{tag}.scores",
        "anomalies": f"bench-{tag}.anomalies",
        "dead_letter": f"bench-{tag}.dlq",
    }
    passthrough = f"bench-{tag}.copy"
    create_topics(bootstrap, [*topics.values(), passthrough], args.partitions)
    print(f"writing {args.windows:,} windows to {topics['input']} ...", flush=True)
    started = time.monotonic()
    produce(bootstrap, topics["input"], ecg_windows(args.windows), args.partitions)
    print(f"  written in {time.monotonic() - started:.1f} s", flush=True)
    stream = Stream(
        bootstrap,
        topics["input"],
        passthrough,
        args.windows,
        args.join_timeout_s,
        args.run_timeout_s,
        args.partitions,
    )
    runners: dict[str, Callable[[int], RunResult]] = {
        # Each bare loop in a process of its own, as each worker is.
        "bare-kafka-python": lambda r: in_child_process(bare_kafka_python, stream),
        "worker-kafka-python": lambda r: run_workers(
            "worker-kafka-python",
            1,
            stream,
            topics,
            artifact,
            None,
            run_dir,
            args.profile if r == 0 else None,
        ),
        "bare-confluent": lambda r: in_child_process(bare_confluent, stream),
        "worker-confluent": lambda r: run_workers(
            "worker-confluent",
            1,
            stream,
            topics,
            artifact,
            "confluent-kafka",
            run_dir,
            _suffixed(args.profile, "-confluent") if r == 0 else None,
        ),
    }
    results: dict[str, RunResult] = {}
    for r in range(args.rounds):
        for name, runner in runners.items():
            if not wanted(name):
                continue
            if name in results and results[name].status == "unavailable":
                continue
            try:
                result = runner(r)
            except Exception as exc:  # one runner's failure is a row
                result = RunResult(
                    name, None, "error", f"{type(exc).__name__}: {exc}"[:200], [None]
                )
            shown = (
                f"{result.rate:,.0f} windows/s" if result.rate else f"{result.status} {result.note}"
            )
            print(f"round {r + 1}: {name:<22} {shown}", flush=True)
            results[name] = results[name].best_of(result) if name in results else result
    if wanted("naive"):
        # In a process of its own: TensorFlow's objects would stay in this one and make each
        # of its full garbage collections a 220-270 ms pause in the latency runs' producer.
        try:
            naive = in_child_process(naive_keras, stream, artifact, args.naive_windows)
        except Exception as exc:  # one runner's failure is a row
            naive = RunResult(
                "naive-keras", None, "error", f"{type(exc).__name__}: {exc}"[:200], [None]
            )
        results["naive-keras"] = naive
        print(f"naive: {naive.rate or 0:,.1f} windows/s {naive.note}", flush=True)
    scorer = bench_scorer(artifact) if wanted("scorer") else {}
    # One load for all (half of the default worker's best rate), and the confluent-kafka
    # worker again at half of its own.
    wkp, wck = results.get("worker-kafka-python"), results.get("worker-confluent")
    half = args.latency_rate or (wkp.rate / 2 if wkp is not None and wkp.rate else None)
    plan = {
        "worker": half,
        "worker-confluent": half,
        "bare-kafka-python": half,
        "worker-confluent-own": None
        if args.latency_rate or not (wck and wck.rate)
        else wck.rate / 2,
    }
    chosen = set(args.latency_runners.split(",")) if args.latency_runners else set(plan)
    # What this process holds by now is never collected again: a full collection during a
    # timed run then scans only what that run allocated.
    gc.freeze()
    rounds: dict[str, list[Latency]] = {}
    for r in range(args.latency_rounds if wanted("latency") else 0):
        for which, latency_rate in plan.items():
            if not latency_rate or which not in chosen:
                continue
            try:
                lat = latency_run(
                    args, bootstrap, topics, tag, artifact, run_dir, which, latency_rate
                )
            except Exception as exc:  # one failed round is a result, not the end of the run
                lat = failed_latency(
                    latency_rate, f"round {r + 1}: {type(exc).__name__}: {exc}"[:200]
                )
            rounds.setdefault(which, []).append(lat)
            print(
                f"latency round {r + 1}: {which} at {latency_rate:,.0f}/s: "
                + (
                    f"p50 {lat.p50_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms, max {lat.max_ms:.1f} ms"
                    f" (bench's longest GC pause {lat.harness_pause_ms:.1f} ms; host stalls"
                    f" over {HOST_STALL_MS} ms: longest {lat.host_stall_max_ms:.0f},"
                    f" total {lat.host_stall_total_ms:.0f} ms)"
                    if lat.count
                    else f"failed ({lat.note})"
                ),
                flush=True,
            )
    latency = {which: median_round(runs) for which, runs in rounds.items()}
    scaling = None
    if args.scaling:
        scaling = two_vs_one(bootstrap, args, artifact, run_dir)
    machine["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    setup = {"windows": args.windows, "partitions": args.partitions, "rounds": args.rounds}
    report = render(machine, results, scorer, latency, scaling, setup)
    print()
    print(report)
    Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
    Path(args.markdown).write_text(report)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps(
            {
                "machine": machine,
                "setup": setup,
                "results": {k: asdict(v) for k, v in results.items()},
                "scorer": scorer,
                "latency": {k: asdict(v) for k, v in latency.items()},
                "scaling": scaling,
                "targets": [
                    {"name": t.name, "measured": t.measured, "limit": t.limit, "passed": t.passed}
                    for t in targets(results, latency)
                ],
            },
            indent=2,
        )
    )
    print(f"written: {args.markdown}, {args.json}")
    return 0


def two_vs_one(
    bootstrap: str, args: argparse.Namespace, artifact: Path, run_dir: Path
) -> dict[str, Any]:
    """One worker, then two in one group, each on a fresh copy of the 2-partition stream."""
    out: dict[str, Any] = {}
    for label, count in (("one", 1), ("two", 2)):
        tag = uuid.uuid4().hex[:6]
        topics = {
            "input": f"scale-{tag}.windows",
            "scores": f"scale-{tag}.scores",
            "anomalies": f"scale-{tag}.anomalies",
            "dead_letter": f"scale-{tag}.dlq",
        }
        create_topics(bootstrap, list(topics.values()), 2)
        produce(bootstrap, topics["input"], ecg_windows(args.windows), 2)
        stream = Stream(
            bootstrap, topics["input"], "", args.windows, args.join_timeout_s, args.run_timeout_s
        )
        result = run_workers(f"workers-{count}", count, stream, topics, artifact, None, run_dir)
        out[label] = result.rate
        print(
            f"scaling: {count} worker(s): {result.rate or 0:,.0f} windows/s ({result.status})",
            flush=True,
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
