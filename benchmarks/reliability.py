"""Reliability figures that need real processes: fail-over time and exactly-once throughput.

    .venv/bin/python benchmarks/reliability.py failover   [--runs 2] [--bootstrap-servers H:P]
    .venv/bin/python benchmarks/reliability.py throughput [--n 20000] [--batch 256,32]

``failover``: a worker scores a steady stream (200 windows/s); it is killed with SIGKILL
and a replacement with the same config is started at once (what a pod restart does). The
figure is the time from the kill to the first score published after it, with dynamic
membership and with static membership (``kafka.group_instance_id``). The group timeouts are
kafka-python's defaults (session 45 s), as in production.

``throughput``: ``--n`` windows are produced first; a worker then scores them all, once
with ``delivery.mode: at_least_once`` and once with ``exactly_once``. The figure is windows
per second from the worker's readiness until the group's committed offset reaches the end.

Without ``--bootstrap-servers`` a throw-away broker is started on free ports with
``deploy/kafka/local-kafka.sh`` (its data in a temporary directory). Without
``--artifact`` a small random-weight model is written (scoring time barely matters here).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from clients.local_broker import LocalBroker
from clients.worker_process import WorkerProcess

READY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def windows(n: int, seed: int = 3) -> list[bytes]:
    from tests.builders import synthetic_windows

    rows = synthetic_windows(n, seed=seed)
    return [
        orjson.dumps({"id": f"r-{i:06d}", "values": row.tolist()}) for i, row in enumerate(rows)
    ]


class Bench:
    """A broker (ours or given), an artifact and a scratch directory."""

    def __init__(self, bootstrap: str | None, artifact: str | None, work: Path) -> None:
        self.work = work
        self.broker: LocalBroker | None = None
        if bootstrap is None:
            port = free_port()
            self.broker = LocalBroker(port=port, data_dir=work / "kafka")
            self.broker.ensure_running()
            bootstrap = self.broker.bootstrap_servers
        self.bootstrap = bootstrap
        if artifact is None:
            from tests.builders import write_artifact_dir

            write_artifact_dir(work / "artifact")
            artifact = str(work / "artifact")
        self.artifact = artifact
        self.runs = 0

    def close(self) -> None:
        if self.broker is not None:
            self.broker.stop_if_started()

    def topics(self) -> dict[str, str]:
        tag = uuid.uuid4().hex[:10]
        names = {
            "input": f"bench-{tag}.windows",
            "scores": f"bench-{tag}.scores",
            "anomalies": f"bench-{tag}.anomalies",
            "dead_letter": f"bench-{tag}.dlq",
        }
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics(
                {name: {"num_partitions": 1, "replication_factor": 1} for name in names.values()},
                timeout_ms=30000,
                wait_for_metadata=True,
            )
        finally:
            admin.close()
        return names

    def worker(self, topics: dict[str, str], group: str, **sections: Any) -> WorkerProcess:
        self.runs += 1
        port = free_port()
        config: dict[str, Any] = {
            "kafka": {"bootstrap_servers": self.bootstrap, "group_id": group},
            "topics": topics,
            "artifact": self.artifact,
            "metrics": {"port": port},
        }
        for name, values in sections.items():
            config.setdefault(name, {}).update(values)
        path = self.work / f"worker-{self.runs}.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_")}
        worker = WorkerProcess(path, env, port, self.work / f"worker-{self.runs}.log")
        worker.start()
        return worker


def first_score_after(bootstrap: str, topic: str, after_ms: int, timeout_s: float) -> float:
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
        raise SystemExit(f"no score within {timeout_s:.0f} s of the kill")
    finally:
        consumer.close()


def failover_once(bench: Bench, static: bool) -> float:
    topics = bench.topics()
    group = f"bench-{uuid.uuid4().hex[:8]}"
    kafka = {"group_instance_id": "worker-0"} if static else {}
    first = bench.worker(topics, group, kafka=kafka)
    first.wait_ready(READY_TIMEOUT_S)
    records = windows(20000)
    stop = threading.Event()
    producer = KafkaProducer(bootstrap_servers=bench.bootstrap, acks="all", linger_ms=5)

    def stream() -> None:
        for i, value in enumerate(records):
            if stop.is_set():
                return
            producer.send(topics["input"], value=value, key=b"device-1")
            time.sleep(1 / 200)
            if i % 200 == 0:
                producer.flush()

    sender = threading.Thread(target=stream, daemon=True)
    sender.start()
    try:
        time.sleep(3.0)  # scoring is under way
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        killed_ms = time.time_ns() // 1_000_000
        second = bench.worker(topics, group, kafka=kafka)
        seconds = first_score_after(bench.bootstrap, topics["scores"], killed_ms, 180.0)
        second.stop()
        first.stop()
        return seconds
    finally:
        stop.set()
        sender.join(timeout=10)
        producer.close(timeout=5)


def throughput_once(bench: Bench, mode: str, n: int, batch: int) -> float:
    topics = bench.topics()
    producer = KafkaProducer(bootstrap_servers=bench.bootstrap, acks="all", linger_ms=20)
    for i, value in enumerate(windows(n)):
        producer.send(topics["input"], value=value, key=f"device-{i % 16}".encode())
    producer.flush()
    producer.close()
    group = f"bench-{uuid.uuid4().hex[:8]}"
    worker = bench.worker(
        topics, group, delivery={"mode": mode}, batching={"max_batch_size": batch}
    )
    # Reads the group's committed offset (read_committed: only committed transactions).
    watcher = KafkaConsumer(
        bootstrap_servers=bench.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    tp = TopicPartition(topics["input"], 0)
    try:
        worker.wait_ready(READY_TIMEOUT_S)
        started = time.monotonic()
        while (watcher.committed(tp) or 0) < n:
            worker.check_alive()
            time.sleep(0.1)
        seconds = time.monotonic() - started
    finally:
        watcher.close()
    worker.stop()
    return n / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("measure", choices=["failover", "throughput"])
    parser.add_argument("--bootstrap-servers", help="use this broker instead of starting one")
    parser.add_argument("--artifact", help="model artifact (default: a random small one)")
    parser.add_argument("--runs", type=int, default=1, help="repetitions per variant")
    parser.add_argument("--n", type=int, default=20000, help="windows per throughput run")
    parser.add_argument("--batch", default="256,32", help="max_batch_size values (throughput)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ecg-reliability-") as scratch:
        bench = Bench(args.bootstrap_servers, args.artifact, Path(scratch))
        try:
            if args.measure == "failover":
                results = {
                    label: [failover_once(bench, static) for _ in range(args.runs)]
                    for label, static in (("dynamic", False), ("static", True))
                }
                print(
                    "kill -9 of a worker, replacement started at once; time to the first new score"
                )
                for label, values in results.items():
                    shown = ", ".join(f"{v:.1f}" for v in values)
                    median = statistics.median(values)
                    print(f"  {label:<8} membership  median {median:5.1f} s  ({shown})")
                ratio = statistics.median(results["dynamic"]) / statistics.median(results["static"])
                print(f"  static membership recovers {ratio:.1f}x faster")
            else:
                print(f"{args.n} windows, one partition, one worker; windows/s until all committed")
                for batch in (int(b) for b in args.batch.split(",")):
                    rates = {
                        mode: statistics.median(
                            throughput_once(bench, mode, args.n, batch) for _ in range(args.runs)
                        )
                        for mode in ("at_least_once", "exactly_once")
                    }
                    ratio = rates["exactly_once"] / rates["at_least_once"]
                    print(
                        f"  batch {batch:>4}: at_least_once {rates['at_least_once']:8.0f}/s  "
                        f"exactly_once {rates['exactly_once']:8.0f}/s  ratio {ratio:.2f}"
                    )
        finally:
            bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
