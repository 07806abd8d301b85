"""Cost of the optional input-schema check (``validation.input_schema``), in windows/s.

    .venv/bin/python benchmarks/input_schema.py [--artifact artifacts/ecg] [--n 20000] [--repeat 3]

For each setting (``none``, ``builtin``, and a site schema that also requires a ``device``
string matching a pattern) it measures, on the same orjson-encoded 140-sample windows:
- decode (+ check): ``codec.decode`` and then ``InputSchemaCheck.check`` per record;
- loop (fakes): the whole ``WorkerLoop`` with an in-memory consumer/producer (as in
  worker_throughput.py), i.e. the worker's own ceiling without a broker.
The settings take turns in each of ``--repeat`` rounds and the best round of each is
kept; ratios are against ``none``. Figures: docs/benchmarks.md.
"""

# ruff: noqa: E402 - the BLAS setting must precede the numpy import, as in ecg-worker.
from __future__ import annotations

import os

from worker.cli.ecg_worker import BLAS_THREAD_VARIABLES

for _name in BLAS_THREAD_VARIABLES:
    os.environ.setdefault(_name, "1")

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry
from worker_throughput import _Consumer, _Producer, _Record, random_artifact

from worker.core.artifact import EcgArtifact, load_ecg_artifact
from worker.core.codec import Window, decode
from worker.core.scorer import Scorer
from worker.service.config import BatchingConfig, ValidationConfig, WorkerConfig
from worker.service.delivery import AtLeastOnceDelivery
from worker.service.http_server import HealthState
from worker.service.input_schema import InputSchemaCheck
from worker.service.loop import WorkerLoop
from worker.service.metrics import WorkerMetrics
from worker.service.rebalance import PartitionTracker

SITE_SCHEMA = {
    "type": "object",
    "required": ["device", "values"],
    "properties": {"device": {"type": "string", "pattern": "^ward-[0-9]+$"}},
}


def make_records(n: int, seed: int = 1) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [
        orjson.dumps({"id": f"b-{i}", "device": f"ward-{i % 7}", "values": row.tolist()})
        for i, row in enumerate(rng.normal(0, 1, (n, 140)))
    ]


def bench_decode(records: list[bytes], check: InputSchemaCheck | None) -> float:
    start = time.perf_counter()
    for offset, value in enumerate(records):
        item = decode(value, b"dev", "ecg.windows", 0, offset, 0, 140, 65536)
        if check is not None and isinstance(item, Window):
            item = check.check(item)
            assert isinstance(item, Window)
    return time.perf_counter() - start


def bench_loop(artifact: EcgArtifact, records: list[bytes], setting: str) -> float:
    now = time.time_ns() // 1_000_000
    recs = [_Record("ecg.windows", 0, i, now, b"dev", v) for i, v in enumerate(records)]
    consumer, producer = _Consumer(recs), _Producer()
    config = replace(
        WorkerConfig(),
        batching=BatchingConfig(256, 50),
        validation=ValidationConfig(setting),
    )
    tracker = PartitionTracker()
    tracker.on_partitions_assigned({TopicPartition("ecg.windows", 0)})
    loop = WorkerLoop(
        config,
        consumer,
        AtLeastOnceDelivery(producer, consumer, 30.0),
        Scorer(artifact),
        WorkerMetrics(artifact, 256, None, CollectorRegistry()),
        tracker,
        HealthState(60000),
    )
    start = time.perf_counter()
    while consumer.committed_offsets.get(TopicPartition("ecg.windows", 0), 0) < len(recs):
        loop.step()
        if consumer._next >= len(recs):
            loop.drain()
    elapsed = time.perf_counter() - start
    assert producer.sent["ecg.scores"] == len(recs), "a window was dead-lettered"
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", default="artifacts/ecg")
    parser.add_argument("--n", type=int, default=20000, help="windows per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best kept)")
    args = parser.parse_args(argv)

    artifact_path = Path(args.artifact)
    if (artifact_path / "artifact.json").is_file():
        artifact = load_ecg_artifact(artifact_path)
        print(f"model: {artifact_path} ({artifact.model_version})")
    else:
        artifact = random_artifact()
        print("model: random weights, tutorial shape (no artifact at --artifact)")
    records = make_records(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site.schema.json"
        site.write_text(json.dumps(SITE_SCHEMA), encoding="utf-8")
        settings = {"none": "none", "builtin": "builtin", "site schema": str(site)}
        print(f"{args.n} windows of 140 samples, best of {args.repeat}\n")
        head = f"{'setting':<12} {'decode (+ check)':>22} {'ratio':>6}"
        print(f"{head} {'loop (fakes)':>18} {'ratio':>6}")
        # Settings take turns within each round, so a change in the machine's load hits
        # all of them alike; the best round of each is kept.
        checks = {label: InputSchemaCheck.from_setting(s) for label, s in settings.items()}
        best = {label: [float("inf"), float("inf")] for label in settings}
        for _ in range(args.repeat):
            for label, setting in settings.items():
                dec = bench_decode(records, checks[label])
                loop = bench_loop(artifact, records, setting)
                best[label] = [min(best[label][0], dec), min(best[label][1], loop)]
        base_dec, base_loop = best["none"]
        for label, (dec, loop) in best.items():
            print(
                f"{label:<12} {args.n / dec:>12,.0f} windows/s {base_dec / dec:>6.2f}"
                f" {args.n / loop:>8,.0f} windows/s {base_loop / loop:>6.2f}"
            )
    print("\nratio = windows/s relative to 'none' (1.00 = no cost; 0.80 = 20 % slower)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
