"""Fault injection on the real broker: every output is read back and the id sets compared.

Each test streams uuid-named windows through real ``ecg-worker`` processes, injects one
fault (kill -9 of a worker, kill -9 and restart of the broker, SIGSTOP of a worker past its
session timeout, a worker joining and leaving, the broker frozen during a flush) and then
reads the scores topic back: zero ids may be lost. Duplicates are allowed at least once
and counted; with ``delivery.mode: exactly_once`` a ``read_committed`` reader must see
every id exactly once. Each test prints one ``FAULT`` line (run with ``-s`` to see them;
docs/reliability.md tabulates them).

The workers use short group timeouts (session 6 s, the broker's minimum) so the suite
stays in a few minutes; the defaults (45 s) only make the same recoveries slower.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from tests.builders import synthetic_windows
from tests.integration.services import KafkaBroker, ServiceError, start_kafka, unavailable
from tests.integration.test_worker_stream import Env, Worker, committed_offset

pytestmark = pytest.mark.integration

MODES = ("at_least_once", "exactly_once")
# Kill -9 rounds per worker-kill test; `make soak` raises it (each round adds 3000 windows).
ROUNDS = int(os.environ.get("ECG_FAULT_ROUNDS", "1"))
# Short group timeouts: a dead or frozen worker is noticed in seconds, not 45 s.
FAST_GROUP = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 10000,
}


# --------------------------------------------------------------------------- helpers


@dataclass
class Outcome:
    """What a reader of the scores topic saw, compared with the ids sent."""

    sent: int
    seen: Counter[str]
    docs: list[dict[str, Any]]

    @property
    def lost(self) -> int:
        return self.sent - len(self.seen)

    @property
    def duplicates(self) -> int:
        return sum(self.seen.values()) - len(self.seen)


def duplicate_ranges(outcome: Outcome) -> str:
    """Where the duplicates came from: input partition and offset ranges, for reports."""
    offsets: dict[int, set[int]] = {}
    for doc in outcome.docs:
        if outcome.seen[doc["id"]] > 1:
            offsets.setdefault(doc["source"]["partition"], set()).add(doc["source"]["offset"])
    parts = []
    for partition, found in sorted(offsets.items()):
        ordered = sorted(found)
        start = prev = ordered[0]
        for offset in [*ordered[1:], None]:
            if offset is not None and offset == prev + 1:
                prev = offset
                continue
            parts.append(f"p{partition}:{start}-{prev}")
            if offset is not None:
                start = prev = offset
    return ",".join(parts) or "none"


def fault_line(name: str, outcome: Outcome, recovery_s: float | None, **extra: Any) -> None:
    recovery = "n/a" if recovery_s is None else f"{recovery_s:.1f} s"
    more = "".join(f" {k}={v}" for k, v in extra.items())
    if outcome.duplicates:
        more += f" duplicated_offsets={duplicate_ranges(outcome)}"
    print(
        f"\nFAULT {name}: sent {outcome.sent}, lost {outcome.lost}, "
        f"duplicates {outcome.duplicates}, recovery {recovery}{more}"
    )


def read_scores(
    bootstrap: str,
    topic: str,
    ids: list[str],
    isolation_level: str = "read_uncommitted",
    timeout_s: float = 90.0,
    settle_s: float = 2.0,
) -> Outcome:
    """Read ``topic`` from the beginning until every id arrived (or ``timeout_s``), then
    ``settle_s`` more to catch late duplicates."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation_level,
    )
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        wanted = set(ids)
        seen: Counter[str] = Counter()
        docs: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while True:
            now = time.monotonic()
            if settle_until is None and wanted <= seen.keys():
                settle_until = now + settle_s
            if now >= deadline or (settle_until is not None and now >= settle_until):
                break
            for batch in consumer.poll(timeout_ms=200).values():
                for record in batch:
                    doc = orjson.loads(record.value)
                    seen[doc["id"]] += 1
                    docs.append(doc)
        return Outcome(len(ids), seen, docs)
    finally:
        consumer.close()


def first_score_after(
    bootstrap: str, topic: str, after_ms: int, timeout_s: float = 120.0
) -> float | None:
    """Seconds from ``after_ms`` (wall clock) to the first score scored after it."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                for record in batch:
                    scored = orjson.loads(record.value)["scored_at_ms"]
                    if scored > after_ms:
                        return (scored - after_ms) / 1000.0
        return None
    finally:
        consumer.close()


def assert_consistent(outcome: Outcome) -> None:
    """Every copy of a duplicated id carries the same score (a replay, not a corruption)."""
    first: dict[str, dict[str, Any]] = {}
    for doc in outcome.docs:
        earlier = first.setdefault(doc["id"], doc)
        assert abs(earlier["error"] - doc["error"]) <= 1e-6, (earlier, doc)
        assert earlier["anomaly"] == doc["anomaly"]
        assert earlier["source"]["offset"] == doc["source"]["offset"]


class Stream:
    """Sends windows in the background at a steady rate (its own producer)."""

    def __init__(
        self, bootstrap: str, topic: str, n: int, per_s: float, tag: str, devices: int = 8
    ) -> None:
        self.ids = [f"{tag}-{i:05d}" for i in range(n)]
        self._rows = synthetic_windows(n, seed=5)
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5,
            # Back within a second of the broker, so recovery times measure the worker.
            reconnect_backoff_max_ms=1000,
            delivery_timeout_ms=300_000,
        )
        self._topic = topic
        self._interval = 1.0 / per_s
        self._devices = devices
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        for i, (record_id, row) in enumerate(zip(self.ids, self._rows, strict=True)):
            value = orjson.dumps({"id": record_id, "values": row.tolist()})
            key = f"device-{i % self._devices:02d}".encode()
            self._producer.send(self._topic, value=value, key=key)
            self.sent += 1
            delay = started + (i + 1) * self._interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def wait_sent(self, count: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.sent < count:
            assert time.monotonic() < deadline, f"only {self.sent} of {count} sent"
            time.sleep(0.05)

    def finish(self, timeout_s: float = 180.0) -> None:
        self._thread.join(timeout=timeout_s)
        self._producer.flush(timeout=timeout_s)
        self._producer.close(timeout=10)


def wait_for(predicate: Any, timeout_s: float, what: str, worker: Worker | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            tail = worker.log()[-3000:] if worker else ""
            pytest.fail(f"{what} not within {timeout_s} s\n{tail}")
        time.sleep(0.05)


def scored(worker: Worker) -> float:
    try:
        return worker.metric("ecg_windows_consumed_total")
    except (OSError, AssertionError):
        return 0.0


def mode_config(mode: str, instance: str | None = None, **client: Any) -> dict[str, Any]:
    kafka: dict[str, Any] = {"client": {**FAST_GROUP, **client}}
    if instance is not None:
        kafka["group_instance_id"] = instance
    return {"kafka": kafka, "delivery": {"mode": mode}}


def isolation(mode: str) -> str:
    return "read_committed" if mode == "exactly_once" else "read_uncommitted"


def check(outcome: Outcome, mode: str) -> None:
    assert outcome.lost == 0, f"{outcome.lost} of {outcome.sent} ids lost"
    assert_consistent(outcome)
    if mode == "exactly_once":
        assert outcome.duplicates == 0, "read_committed reader saw duplicates"


@pytest.fixture
def fault_env(
    kafka_broker: KafkaBroker, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Env]:
    partitions = getattr(request, "param", 1)
    environment = Env(kafka_broker, kafka_broker.topic_set(partitions=partitions), tmp_path)
    try:
        yield environment
    finally:
        environment.close()


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A broker of this module's own, which the tests kill, freeze and restart."""
    try:
        broker = start_kafka(tmp_path_factory.mktemp("fault-kafka"))
    except ServiceError as exc:
        unavailable(f"second Kafka broker did not start: {exc}")
    try:
        yield broker
    finally:
        pid = broker_pid(broker)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        broker.stop()


def broker_pid(broker: KafkaBroker) -> int | None:
    try:
        return int((broker.data_dir / "kafka.pid").read_text().strip())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("mode", MODES)
def test_kill9_worker_mid_batch_then_restart(fault_env: Env, mode: str, kafka_library: str) -> None:
    env = fault_env
    env.library = kafka_library
    bootstrap = env.broker.bootstrap_servers
    n = 3000 * ROUNDS
    # A static member with a stable transactional id: the restart fences the dead one.
    config = {**mode_config(mode, instance="w0"), "batching": {"max_batch_size": 32}}
    worker = env.worker(**config)
    worker.wait_ready()
    # Started once the worker is ready (3 s a round), so that windows still arrive after
    # each kill: a worker that had scored and committed everything would leave nothing to
    # recover.
    stream = Stream(bootstrap, env.topics.input, n, per_s=1000, tag="k9").start()
    recoveries = []
    for _ in range(ROUNDS):
        # Window counters move at a commit; the first batch is committed at once, the next
        # ones a second later (delivery.commit_interval_ms). Killed 0.3 s after the first,
        # an at-least-once worker holds acknowledged batches that are not committed yet.
        wait_for(lambda w=worker: scored(w) >= 1, 60, "a first batch committed", worker)
        time.sleep(0.3)
        worker.kill()  # SIGKILL: no flush, no commit, no leave-group
        killed_ms = time.time_ns() // 1_000_000
        worker = env.worker(**config)
        recoveries.append(first_score_after(bootstrap, env.topics.scores, killed_ms))
    stream.finish()
    outcome = read_scores(bootstrap, env.topics.scores, stream.ids, isolation(mode))
    raw = read_scores(bootstrap, env.topics.scores, stream.ids, settle_s=0.5)

    measured = [r for r in recoveries if r is not None]
    fault_line(
        f"kill -9 worker x{ROUNDS} ({mode})",
        outcome,
        max(measured) if measured else None,
        uncommitted_copies=raw.duplicates if mode == "exactly_once" else "-",
    )
    check(outcome, mode)
    assert len(measured) == ROUNDS, "no score after a kill"
    assert worker.terminate() == 0, worker.log()[-3000:]


@pytest.mark.slow
def test_kill9_broker_and_immediate_restart_mid_stream(
    own_broker: KafkaBroker, tmp_path: Path
) -> None:
    """One broker crash under both delivery modes at once. The broker is started again
    while its old connections linger in TIME_WAIT (defect 11: local-kafka.sh refused that
    for a minute). Choice: the worker rides the outage out (no exit, no restart)."""
    broker = own_broker
    bootstrap = broker.bootstrap_servers
    envs = {mode: Env(broker, broker.topic_set(), _mkdir(tmp_path / mode)) for mode in MODES}
    try:
        workers = {
            mode: env.worker(**mode_config(mode, instance="w0")) for mode, env in envs.items()
        }
        streams = {}
        for mode, env in envs.items():
            workers[mode].wait_ready()
            streams[mode] = Stream(bootstrap, env.topics.input, 3000, 300, f"b9{mode[0]}").start()
        wait_for(lambda: all(scored(w) >= 400 for w in workers.values()), 60, "both scoring")

        pid = broker_pid(broker)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        down_at = time.monotonic()
        time.sleep(0.5)  # the kernel closes the dead JVM's sockets
        lingering = time_wait_connections(broker)
        restarted = broker.script("start")
        assert restarted.returncode == 0, restarted.stderr + broker.log_tail()
        up_ms = time.time_ns() // 1_000_000
        outage_s = time.monotonic() - down_at
        recovery = {
            mode: first_score_after(bootstrap, env.topics.scores, up_ms)
            for mode, env in envs.items()
        }
        for mode, env in envs.items():
            streams[mode].finish()
            ids = streams[mode].ids
            outcome = read_scores(bootstrap, env.topics.scores, ids, isolation(mode))
            fault_line(
                f"kill -9 broker ({mode})", outcome, recovery[mode], outage=f"{outage_s:.1f}s"
            )
            check(outcome, mode)

        assert lingering, "no TIME_WAIT connection on the broker's ports: defect 11 not exercised"
        for worker in workers.values():  # rode it out: the same processes, stopping cleanly
            assert worker.process is not None and worker.process.poll() is None, worker.log()[
                -3000:
            ]
            assert worker.terminate() == 0, worker.log()[-3000:]
    finally:
        for env in envs.values():
            env.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault_env", [2], indirect=True)
def test_sigstop_worker_past_its_session_while_another_takes_over(
    fault_env: Env, mode: str
) -> None:
    env = fault_env
    bootstrap = env.broker.bootstrap_servers
    config = {**mode_config(mode), "batching": {"max_batch_size": 32}}
    a = env.worker(**config)
    b = env.worker(**config)
    a.wait_ready()
    b.wait_ready()
    wait_for(
        lambda: a.get("/readyz")[1].startswith("ok (1") and b.get("/readyz")[1].startswith("ok (1"),
        30,
        "a 1+1 assignment",
    )
    stream = Stream(bootstrap, env.topics.input, 4000, per_s=250, tag="st").start()
    wait_for(lambda: scored(a) >= 200 and scored(b) >= 200, 60, "both workers scoring")

    assert a.process is not None
    a.process.send_signal(signal.SIGSTOP)
    stopped_ms = time.time_ns() // 1_000_000
    # b owns both partitions once a's session (6 s) expired.
    wait_for(lambda: b.get("/readyz")[1].startswith("ok (2"), 30, "takeover by b", b)
    takeover_s = (time.time_ns() // 1_000_000 - stopped_ms) / 1000.0
    time.sleep(max(0.0, 12.0 - takeover_s))  # frozen past max_poll_interval_ms (10 s) too
    a.process.send_signal(signal.SIGCONT)
    stream.finish()
    outcome = read_scores(bootstrap, env.topics.scores, stream.ids, isolation(mode))

    fault_line(f"SIGSTOP worker 12 s ({mode})", outcome, takeover_s)
    check(outcome, mode)
    # The woken worker carried on (or left with exit 1 for a restart); b is healthy.
    assert a.process.poll() in (None, 1), a.log()[-3000:]
    assert b.terminate() == 0, b.log()[-3000:]
    a.terminate()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault_env", [4], indirect=True)
def test_add_and_remove_a_worker_during_a_stream(
    fault_env: Env, mode: str, kafka_library: str
) -> None:
    env = fault_env
    env.library = kafka_library
    bootstrap = env.broker.bootstrap_servers
    config = {**mode_config(mode), "batching": {"max_batch_size": 32}}
    a = env.worker(**config)
    a.wait_ready()
    stream = Stream(bootstrap, env.topics.input, 4000, per_s=400, tag="ar").start()
    stream.wait_sent(1000)
    b = env.worker(**config)  # joins mid-stream: a rebalance
    b.wait_ready()
    wait_for(lambda: scored(b) >= 100, 60, "the new worker scoring", b)
    stream.wait_sent(2500)
    assert a.terminate() == 0, a.log()[-3000:]  # leaves mid-stream: another rebalance
    stream.finish()
    outcome = read_scores(bootstrap, env.topics.scores, stream.ids, isolation(mode))

    fault_line(f"add + remove worker ({mode})", outcome, None)
    check(outcome, mode)
    assert b.terminate() == 0, b.log()[-3000:]


def test_broker_frozen_mid_stream_loses_nothing(own_broker: KafkaBroker, tmp_path: Path) -> None:
    """The broker stops answering (SIGSTOP) for 20 s, past the workers' 4 s delivery
    timeout, under both delivery modes. A worker with a batch in hand cannot get it
    acknowledged: it exits 1 without committing and is restarted (as a supervisor would);
    a worker that was between batches just waits. Either way nothing is lost."""
    broker = own_broker
    bootstrap = broker.bootstrap_servers
    envs = {mode: Env(broker, broker.topic_set(), _mkdir(tmp_path / mode)) for mode in MODES}
    pid = broker_pid(broker)
    assert pid is not None
    short = {"max_block_ms": 3000, "delivery_timeout_ms": 4000, "request_timeout_ms": 3000}
    config = {
        mode: {**mode_config(mode, instance="w0", **short), "batching": {"max_batch_size": 16}}
        for mode in MODES
    }
    try:
        workers = {mode: env.worker(**config[mode]) for mode, env in envs.items()}
        streams = {}
        for mode, env in envs.items():
            workers[mode].wait_ready()
            streams[mode] = Stream(bootstrap, env.topics.input, 3000, 300, f"fz{mode[0]}").start()
        wait_for(lambda: all(scored(w) >= 300 for w in workers.values()), 60, "both scoring")

        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(20.0)
        finally:
            os.kill(pid, signal.SIGCONT)
        back_ms = time.time_ns() // 1_000_000
        codes = {}
        for mode, env in envs.items():
            worker = workers[mode]
            assert worker.process is not None
            codes[mode] = worker.process.poll()
            if codes[mode] is not None:  # exited during the outage: restart it
                assert codes[mode] == 1, worker.log()[-3000:]
                # Either the batch was never acknowledged (nothing committed) or it was and
                # the commit itself timed out: both exit 1 and a restart replays from the
                # last commit, which the id comparison below checks.
                log = worker.log()
                assert "offsets not committed" in log or "offset commit failed" in log, log[-3000:]
                workers[mode] = env.worker(**config[mode])
        for mode, env in envs.items():
            recovery = first_score_after(bootstrap, env.topics.scores, back_ms)
            streams[mode].finish()
            ids = streams[mode].ids
            outcome = read_scores(bootstrap, env.topics.scores, ids, isolation(mode))
            exited = "running" if codes[mode] is None else f"exit {codes[mode]}, restarted"
            fault_line(f"broker frozen 20 s ({mode})", outcome, recovery, worker=exited)
            check(outcome, mode)
        for worker in workers.values():
            assert worker.terminate() == 0, worker.log()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        for env in envs.values():
            env.close()


def test_output_topic_deleted_exits_1_without_commit_and_restart_resumes(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    """A produce failure, under both delivery modes: the scores topic disappears while
    windows arrive. Each worker exits 1 and commits nothing; once the topic is back, a
    restarted worker scores everything from the last commit."""
    bootstrap = kafka_broker.bootstrap_servers
    envs = {
        mode: Env(kafka_broker, kafka_broker.topic_set(), _mkdir(tmp_path / mode)) for mode in MODES
    }
    short = {"max_block_ms": 3000, "delivery_timeout_ms": 4000, "request_timeout_ms": 3000}
    try:
        before = [f"pb-{i:04d}" for i in range(500)]
        after = [f"pa-{i:04d}" for i in range(500)]
        workers = {
            mode: env.worker(**mode_config(mode, instance="w0", **short))
            for mode, env in envs.items()
        }
        for mode, env in envs.items():
            workers[mode].wait_ready()
            env.send_windows(before, synthetic_windows(len(before), seed=7))
        first_part = {}
        for mode, env in envs.items():
            first_part[mode] = read_scores(
                bootstrap, env.topics.scores, before, isolation(mode), settle_s=0.5
            )
            wait_for(
                lambda env=env: committed_offset(bootstrap, env.group, env.topics.input) == 500,
                30,
                f"{mode}: the first 500 committed",
            )

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.delete_topics([env.topics.scores for env in envs.values()], timeout_ms=10000)
        finally:
            admin.close()
        for env in envs.values():
            env.send_windows(after, synthetic_windows(len(after), seed=8))
        codes = {mode: exit_code(w, 90) for mode, w in workers.items()}
        failed_ms = time.time_ns() // 1_000_000
        held = {
            mode: committed_offset(bootstrap, env.group, env.topics.input)
            for mode, env in envs.items()
        }
        for env in envs.values():
            recreate(kafka_broker, env.topics.scores)
        restarted = {
            mode: env.worker(**mode_config(mode, instance="w0")) for mode, env in envs.items()
        }

        for mode, env in envs.items():
            recovery = first_score_after(bootstrap, env.topics.scores, failed_ms)
            second_part = read_scores(bootstrap, env.topics.scores, after, isolation(mode))
            outcome = Outcome(
                len(before) + len(after),
                first_part[mode].seen + second_part.seen,
                first_part[mode].docs + second_part.docs,
            )
            fault_line(f"scores topic deleted ({mode})", outcome, recovery, exit=codes[mode])
            log = workers[mode].log()
            assert codes[mode] == 1, log[-3000:]
            assert "offsets not committed" in log
            assert held[mode] == 500  # nothing of the failed batches was committed
            check(outcome, mode)
        for worker in restarted.values():
            assert worker.terminate() == 0, worker.log()[-3000:]
    finally:
        for env in envs.values():
            env.close()


def recreate(broker: KafkaBroker, topic: str, timeout_s: float = 30.0) -> None:
    """Create ``topic`` again once its deletion (asynchronous) has finished."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            broker.create_topics([topic])
            return
        except Exception:
            assert time.monotonic() < deadline, f"could not recreate {topic}"
            time.sleep(0.5)


def exit_code(worker: Worker, timeout_s: float) -> int:
    assert worker.process is not None
    return worker.process.wait(timeout=timeout_s)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def time_wait_connections(broker: KafkaBroker) -> str:
    """``ss`` lines of TCP connections in TIME_WAIT on the broker's two ports."""
    ports = f"( sport = :{broker.port} or sport = :{broker.controller_port} )"
    return subprocess.run(
        ["ss", "-Htan", "state", "time-wait", ports], capture_output=True, text=True, check=False
    ).stdout.strip()
