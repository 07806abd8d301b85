"""What model rollout costs the loop: the pause of a hot reload, and shadow scoring.

    .venv/bin/python benchmarks/rollout_cost.py [--artifact artifacts/ecg]
        [--shadow artifacts/ecg-candidate] [--n 20000] [--batch 256]

- reload pause: ``load_candidate`` (start-up validation + self-test) of ``--artifact``, the
  time the loop spends between two batches when it swaps models (median of 20);
- shadow: the whole ``WorkerLoop`` with in-memory Kafka, windows per second without and
  with a shadow model; the ratio is what shadowing costs in throughput.

Without artifacts, random-weight models of the tutorial's shape are written to a temporary
directory (scoring cost depends only on the shape).
"""

# ruff: noqa: E402 - the BLAS setting must precede the numpy import, as in ecg-worker.
from __future__ import annotations

import os

from worker.cli.ecg_worker import BLAS_THREAD_VARIABLES

for _name in BLAS_THREAD_VARIABLES:
    os.environ.setdefault(_name, "1")

import argparse
import itertools
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from tests.fakes import FakeConsumer, FakeProducer, FakeRecord
from worker.core.artifact import DenseLayer, EcgArtifact, Normalisation, save_ecg_artifact
from worker.core.scorer import Scorer
from worker.service.config import BatchingConfig, WorkerConfig
from worker.service.delivery import AtLeastOnceDelivery
from worker.service.http_server import HealthState
from worker.service.loop import WorkerLoop
from worker.service.metrics import WorkerMetrics
from worker.service.model_reload import load_candidate
from worker.service.rebalance import PartitionTracker
from worker.service.rollout import Rollout
from worker.service.rollout_metrics import RolloutMetrics

SHAPE = (140, 32, 16, 8, 16, 32, 140)


def random_artifact(directory: Path, seed: int) -> Path:
    """A random-weight model of the tutorial's shape, saved like ``ecg-train`` saves."""
    rng = np.random.default_rng(seed)
    layers = [
        DenseLayer(
            rng.normal(0, 0.2, (a, b)).astype(np.float32),
            np.zeros(b, np.float32),
            "sigmoid" if i == len(SHAPE) - 2 else "relu",
        )
        for i, (a, b) in enumerate(itertools.pairwise(SHAPE))
    ]
    save_ecg_artifact(EcgArtifact.unsaved(layers, Normalisation(-5.0, 5.0), 0.05), directory)
    return directory


def loop_rate(primary: Path, shadow: Path | None, windows: np.ndarray, batch: int) -> float:
    """Windows per second through the whole loop with in-memory Kafka."""
    consumer, producer = FakeConsumer(poll_batch=batch), FakeProducer()
    records = [
        FakeRecord("in", 0, i, 0, b"d", orjson.dumps({"id": i, "values": row.tolist()}))
        for i, row in enumerate(windows)
    ]
    consumer.feed(records)
    registry = CollectorRegistry()
    scorer = Scorer(load_candidate(primary, 140)[0])
    metrics = WorkerMetrics(scorer.artifact, batch, None, registry)
    rollout = Rollout(scorer, RolloutMetrics(registry), metrics, artifact_path=primary,
                      shadow_path=shadow, shadow_topic="shadow", watch=False)  # fmt: skip
    tracker = PartitionTracker()
    tracker.on_partitions_assigned({TopicPartition("in", 0)})
    config = replace(WorkerConfig(), batching=BatchingConfig(batch, 50))
    loop = WorkerLoop(config, consumer, AtLeastOnceDelivery(producer, consumer, 5.0), scorer,
                      metrics, tracker, HealthState(60000), rollout=rollout)  # fmt: skip
    started = time.perf_counter()
    while len(consumer.commits) == 0 or max(consumer.committed_offsets.values(), default=0) < len(
        windows
    ):
        loop.step()
    return len(windows) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path)
    parser.add_argument("--shadow", type=Path)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rollout-bench-"))
    primary = args.artifact if args.artifact else random_artifact(tmp / "a", 1)
    shadow = args.shadow if args.shadow else random_artifact(tmp / "b", 2)

    pauses = []
    for _ in range(20):
        started = time.perf_counter()
        load_candidate(primary, 140)
        pauses.append(time.perf_counter() - started)
    print(f"reload pause (validate + self-test), median of 20: "
          f"{statistics.median(pauses) * 1000:.1f} ms")  # fmt: skip

    windows = np.random.default_rng(0).normal(0, 1, (args.n, 140))
    plain = max(loop_rate(primary, None, windows, args.batch) for _ in range(3))
    shadowed = max(loop_rate(primary, shadow, windows, args.batch) for _ in range(3))
    print(f"loop, in-memory Kafka, batch {args.batch}: {plain:,.0f} windows/s alone, "
          f"{shadowed:,.0f} windows/s with a shadow; ratio {shadowed / plain:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
