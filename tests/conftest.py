"""Shared test helpers: a small ECG artifact built in memory, and fakes for Kafka and clocks.

The artifact is a real ``EcgArtifact`` (random dense weights 140 -> 8 -> 140), written to
disk in the worker's artifact format when a test needs a directory; its threshold sits at
the median error of synthetic windows so that both normal and anomalous scores occur.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka.structs import TopicPartition

from worker.core.artifact import (
    ARTIFACT_FILE,
    ECG_KIND,
    SCHEMA_VERSION,
    WEIGHTS_FILE,
    DenseLayer,
    EcgArtifact,
    Normalisation,
    error_quantiles,
    load_ecg_artifact,
)
from worker.core.scorer import Scorer

WINDOW_LENGTH = 140


def synthetic_windows(n: int, seed: int = 0, length: int = WINDOW_LENGTH) -> np.ndarray:
    """ECG-like windows: a beat-shaped bump on a slow wave, plus noise (float64)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, length)
    phase = rng.uniform(0.3, 0.7, size=(n, 1))
    amplitude = rng.uniform(2.0, 4.0, size=(n, 1))
    beat = amplitude * np.exp(-(((t - phase) / 0.03) ** 2))
    wave = 0.5 * np.sin(2 * np.pi * (t * rng.uniform(1, 3, size=(n, 1))))
    return beat + wave + rng.normal(0, 0.2, size=(n, length)) - 1.0


def make_artifact(
    path: Path | None = None, seed: int = 7, hidden: int = 8, length: int = WINDOW_LENGTH
) -> EcgArtifact:
    """A small, valid ECG artifact with random weights and a data-derived threshold."""
    rng = np.random.default_rng(seed)
    layers = (
        DenseLayer(
            rng.normal(0, 0.3, (length, hidden)).astype(np.float32),
            rng.normal(0, 0.1, hidden).astype(np.float32),
            "relu",
        ),
        DenseLayer(
            rng.normal(0, 0.3, (hidden, length)).astype(np.float32),
            rng.normal(0, 0.1, length).astype(np.float32),
            "sigmoid",
        ),
    )
    train = synthetic_windows(400, seed=seed, length=length)
    norm = Normalisation(min=float(train.min()), max=float(train.max()))
    draft = EcgArtifact(
        path=path or Path("memory"),
        model_version="0123456789abcdef",
        window_length=length,
        normalisation=norm,
        threshold=1.0,
        threshold_rule="mean_std",
        profile="tutorial",
        training_error_quantiles=tuple([0.0] * 101),
        layers=layers,
        metadata={},
    )
    errors = Scorer(draft).score(train).errors.astype(np.float64)
    return EcgArtifact(
        path=draft.path,
        model_version=draft.model_version,
        window_length=length,
        normalisation=norm,
        threshold=float(np.median(errors)),
        threshold_rule="mean_std",
        profile="tutorial",
        training_error_quantiles=tuple(error_quantiles(errors)),
        layers=layers,
        metadata={},
    )


def write_artifact_dir(directory: Path, seed: int = 7) -> EcgArtifact:
    """Write ``make_artifact`` in the worker's on-disk format and load it back."""
    art = make_artifact(directory, seed=seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, layer in enumerate(art.layers):
        arrays[f"kernel_{i}"], arrays[f"bias_{i}"] = layer.kernel, layer.bias
    np.savez(directory / WEIGHTS_FILE, **arrays)  # type: ignore[arg-type]
    meta = {
        "schema_version": SCHEMA_VERSION,
        "kind": ECG_KIND,
        "model_version": art.model_version,
        "window_length": art.window_length,
        "normalisation": {"min": art.normalisation.min, "max": art.normalisation.max},
        "threshold": art.threshold,
        "threshold_rule": art.threshold_rule,
        "profile": art.profile,
        "training_error_quantiles": list(art.training_error_quantiles),
        "model": {"activations": [layer.activation for layer in art.layers]},
        "data": {"source": "synthetic test windows"},
    }
    (directory / ARTIFACT_FILE).write_text(json.dumps(meta), encoding="utf-8")
    return load_ecg_artifact(directory)


@pytest.fixture(scope="session")
def ecg_artifact() -> EcgArtifact:
    """A small in-memory ECG artifact."""
    return make_artifact()


@pytest.fixture
def artifact_dir(tmp_path: Path) -> Path:
    """A small ECG artifact written to a temporary directory."""
    write_artifact_dir(tmp_path / "artifact")
    return tmp_path / "artifact"


# --------------------------------------------------------------------------- fakes


class FakeClock:
    """A monotonic clock (seconds) that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeRecord:
    """The fields of a kafka-python ``ConsumerRecord`` the worker reads."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class FakeConsumer:
    """A consumer over in-memory partitions; ``poll`` hands out queued records in order."""

    def __init__(
        self,
        clock: FakeClock | None = None,
        poll_batch: int = 1000,
        events: list[str] | None = None,
    ) -> None:
        self.events = events if events is not None else []
        self.queues: dict[tuple[str, int], list[FakeRecord]] = defaultdict(list)
        self.commits: list[dict[TopicPartition, Any]] = []
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.fail_commit: Exception | None = None
        self.clock = clock
        self.poll_batch = poll_batch
        self.poll_timeouts: list[int] = []
        self.on_poll: list[Any] = []  # callables run at the start of the next poll

    def feed(self, records: Iterable[FakeRecord]) -> None:
        for r in records:
            self.queues[(r.topic, r.partition)].append(r)

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        self.poll_timeouts.append(timeout_ms)
        while self.on_poll:
            self.on_poll.pop(0)()
        limit = min(max_records or self.poll_batch, self.poll_batch)
        out: dict[TopicPartition, list[FakeRecord]] = {}
        for (topic, partition), queue in self.queues.items():
            if not queue or limit <= 0:
                continue
            take, self.queues[(topic, partition)] = queue[:limit], queue[limit:]
            limit -= len(take)
            out[TopicPartition(topic, partition)] = take
        if not out and self.clock is not None:
            self.clock.advance(timeout_ms / 1000.0)  # an idle poll waits its full timeout
        return out

    def commit(self, offsets: dict | None = None, timeout_ms: Any = None) -> None:
        if self.fail_commit is not None:
            raise self.fail_commit
        assert offsets, "the worker always commits explicit offsets"
        self.events.append("commit")
        self.commits.append(dict(offsets))
        for tp, meta in offsets.items():
            self.committed_offsets[tp] = meta.offset

    def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offsets.get(tp)

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        ends = {}
        for tp in partitions:
            queue = self.queues.get((tp.topic, tp.partition), [])
            ends[tp] = (queue[-1].offset + 1) if queue else self.committed_offsets.get(tp, 0)
        return ends

    def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in partitions}


class FakeFuture:
    """A settled produce future."""

    def __init__(self, exception: Exception | None = None) -> None:
        self.is_done = True
        self.exception = exception


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None


class FakeProducer:
    """Records sends; ``flush`` acknowledges them (or fails those of ``fail_topics``)."""

    def __init__(self, events: list[str] | None = None) -> None:
        self.pending: list[Sent] = []
        self.acked: list[Sent] = []
        self.fail_topics: set[str] = set()
        self.events = events if events is not None else []
        self._futures: list[tuple[Sent, FakeFuture]] = []

    def send(self, topic, value=None, key=None, headers=None, partition=None, timestamp_ms=None):
        sent = Sent(topic, key, value, headers)
        future = FakeFuture()
        future.is_done = False
        self._futures.append((sent, future))
        self.events.append(f"send:{topic}")
        return future

    def flush(self, timeout: float | None = None) -> None:
        self.events.append("flush")
        for sent, future in self._futures:
            future.is_done = True
            if sent.topic in self.fail_topics:
                future.exception = RuntimeError(f"UnknownTopicOrPartition: {sent.topic}")
            else:
                self.acked.append(sent)
        self._futures = []

    def by_topic(self, topic: str) -> list[Sent]:
        return [s for s in self.acked if s.topic == topic]


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
