"""Worker throughput without a broker: windows per second for each stage of the hot path.

    .venv/bin/python benchmarks/worker_throughput.py [--artifact artifacts/ecg] [--n 20000]

Against a real broker (both Kafka clients, the worker as a process, latency) see
``benchmarks/bench.py`` (``make bench``).

Stages, measured in this process on the same windows:
- decode: ``codec.decode`` of an orjson-encoded ``{"id", "values", "label"}`` record;
- score: ``Scorer.score`` of batches of ``--batch`` windows (one model call each);
- loop (fakes): the whole ``WorkerLoop`` (decode, batch, score, encode, publish, commit)
  with an in-memory consumer/producer, i.e. the worker's own ceiling without a broker.

Without ``--artifact`` (or when it does not exist) a random-weight model of the tutorial's
shape (140-32-16-8-16-32-140) is used; scoring cost depends only on the shape.
"""

# ruff: noqa: E402 - the BLAS setting must precede the numpy import, as in ecg-worker.
from __future__ import annotations

import os

from worker.cli.ecg_worker import BLAS_THREAD_VARIABLES

for _name in BLAS_THREAD_VARIABLES:
    os.environ.setdefault(_name, "1")

import argparse
import itertools
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from worker.core.artifact import DenseLayer, EcgArtifact, Normalisation, load_ecg_artifact
from worker.core.codec import decode
from worker.core.scorer import Scorer
from worker.service.config import BatchingConfig, WorkerConfig
from worker.service.delivery import AtLeastOnceDelivery
from worker.service.http_server import HealthState
from worker.service.loop import WorkerLoop
from worker.service.metrics import WorkerMetrics
from worker.service.rebalance import PartitionTracker

TUTORIAL_SHAPE = (140, 32, 16, 8, 16, 32, 140)


def random_artifact(seed: int = 0) -> EcgArtifact:
    """A tutorial-shaped model with random weights (for timing only)."""
    rng = np.random.default_rng(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(TUTORIAL_SHAPE)):
        act = "sigmoid" if i == len(TUTORIAL_SHAPE) - 2 else "relu"
        layers.append(
            DenseLayer(
                rng.normal(0, 0.2, (n_in, n_out)).astype(np.float32),
                np.zeros(n_out, np.float32),
                act,
            )
        )
    return EcgArtifact.unsaved(
        layers,
        Normalisation(-6.0, 8.0),
        0.05,
        threshold_rule="mean_std",
        profile="tutorial",
        training_error_quantiles=np.linspace(0.01, 0.1, 101).tolist(),
    )


def make_records(n: int, seed: int = 1) -> list[bytes]:
    rng = np.random.default_rng(seed)
    windows = rng.normal(0, 1, (n, 140))
    return [
        orjson.dumps({"id": f"bench-{i}", "values": row.tolist(), "label": 1})
        for i, row in enumerate(windows)
    ]


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f} windows/s  ({seconds * 1e6 / n:7.2f} us/window)"


def bench_decode(records: list[bytes]) -> float:
    start = time.perf_counter()
    for offset, value in enumerate(records):
        decode(value, b"dev", "ecg.windows", 0, offset, 0, 140, 65536)
    return time.perf_counter() - start


def bench_score(artifact: EcgArtifact, n: int, batch: int) -> float:
    scorer = Scorer(artifact)
    windows = np.random.default_rng(2).normal(0, 1, (n, 140))
    start = time.perf_counter()
    for i in range(0, n, batch):
        scorer.score(windows[i : i + batch])
    return time.perf_counter() - start


# --------------------------------------------------------------------------- fakes


@dataclass
class _Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes


class _Future:
    is_done = True
    exception = None


class _Consumer:
    def __init__(self, records: list[_Record], poll_records: int = 500) -> None:
        self._records = records
        self._next = 0
        self._poll_records = poll_records
        self.committed_offsets: dict[Any, int] = {}

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        # As kafka-python: max_records when given, else max_poll_records (all are fetched).
        limit = max_records if max_records is not None else self._poll_records
        chunk = self._records[self._next : self._next + limit]
        self._next += len(chunk)
        return {TopicPartition("ecg.windows", 0): chunk} if chunk else {}

    def commit(self, offsets: Any = None, timeout_ms: Any = None) -> None:
        for tp, meta in offsets.items():
            self.committed_offsets[tp] = meta.offset

    def seek(self, partition: Any, offset: int) -> None:
        raise NotImplementedError("nothing is rewound in this benchmark (no aborted batch)")

    def committed(self, tp: Any) -> int | None:
        return self.committed_offsets.get(tp)

    def end_offsets(self, partitions: list) -> dict:
        return {tp: len(self._records) for tp in partitions}

    def beginning_offsets(self, partitions: list) -> dict:
        return {tp: 0 for tp in partitions}


class _Producer:
    def __init__(self) -> None:
        self.sent: dict[str, int] = defaultdict(int)

    def send(self, topic, value=None, key=None, headers=None, partition=None, timestamp_ms=None):
        self.sent[topic] += 1
        return _Future()

    def flush(self, timeout: float | None = None) -> None:
        pass


def bench_loop_fakes(artifact: EcgArtifact, records: list[bytes], batch: int) -> float:
    now = time.time_ns() // 1_000_000
    recs = [_Record("ecg.windows", 0, i, now, b"dev", v) for i, v in enumerate(records)]
    consumer, producer = _Consumer(recs), _Producer()
    config = replace(WorkerConfig(), batching=BatchingConfig(batch, 50))
    tracker = PartitionTracker()
    tracker.on_partitions_assigned({TopicPartition("ecg.windows", 0)})
    metrics = WorkerMetrics(artifact, batch, None, CollectorRegistry())
    loop = WorkerLoop(
        config,
        consumer,
        AtLeastOnceDelivery(producer, consumer, 30.0),
        Scorer(artifact),
        metrics,
        tracker,
        HealthState(60000),
    )
    start = time.perf_counter()
    while consumer.committed_offsets.get(TopicPartition("ecg.windows", 0), 0) < len(recs):
        loop.step()
        if consumer._next >= len(recs):
            loop.drain()
    elapsed = time.perf_counter() - start
    assert producer.sent["ecg.scores"] == len(recs)
    share = producer.sent["ecg.anomalies"] / len(recs)
    print(f"  (loop: {share:.0%} of the windows flagged, each published twice)")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", default="artifacts/ecg")
    parser.add_argument("--n", type=int, default=20000, help="windows per stage")
    parser.add_argument("--batch", type=int, default=256, help="max_batch_size")
    args = parser.parse_args(argv)
    if Path(args.artifact).is_dir():
        artifact = load_ecg_artifact(args.artifact)
        label = f"{args.artifact} ({artifact.model_version})"
    else:
        artifact = random_artifact()
        label = "random weights, tutorial shape 140-32-16-8-16-32-140"
    records = make_records(args.n)
    print(f"model: {label}; {args.n} windows; batch {args.batch}")
    print(f"decode          {rate(args.n, bench_decode(records))}")
    print(f"score           {rate(args.n, bench_score(artifact, args.n, args.batch))}")
    print(f"loop (fakes)    {rate(args.n, bench_loop_fakes(artifact, records, args.batch))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
