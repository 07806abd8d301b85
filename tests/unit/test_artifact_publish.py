"""Publishing and loading artifacts under concurrency and corruption (issue 10, defect 8).

A fake two-layer "Keras" model (classes named like Keras' so ``dense_stack`` accepts them)
keeps these tests free of TensorFlow.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.cli.ecg_worker import main as worker_main
from worker.core.artifact import (
    ARTIFACT_FILE,
    ECG_KIND,
    WEIGHTS_FILE,
    error_quantiles,
    load_ecg_artifact,
    write_artifact,
)
from worker.core.errors import ArtifactError

L = 140


class Dense:
    """Stands in for ``keras.layers.Dense``."""

    def __init__(self, name: str, kernel: np.ndarray, bias: np.ndarray, activation: str) -> None:
        self.name = name
        self._weights = [kernel, bias]
        self._activation = activation

    def get_config(self) -> dict[str, Any]:
        return {"activation": self._activation}

    def get_weights(self) -> list[np.ndarray]:
        return self._weights


class FakeModel:
    """Stands in for a Keras model of two Dense layers; ``tag`` is in every bias."""

    def __init__(self, tag: float) -> None:
        rng = np.random.default_rng(0)
        self.layers = [
            Dense(
                "enc",
                rng.normal(0, 0.1, (L, 8)).astype(np.float32),
                np.full(8, tag, np.float32),
                "relu",
            ),
            Dense(
                "dec",
                rng.normal(0, 0.1, (8, L)).astype(np.float32),
                np.full(L, tag, np.float32),
                "sigmoid",
            ),
        ]

    def save(self, path: Path) -> None:
        path.write_bytes(b"keras model stand-in")


def metadata(threshold: float) -> dict[str, Any]:
    return {
        "kind": ECG_KIND,
        "window_length": L,
        "normalisation": {"min": -7.0, "max": 5.0},
        "threshold": threshold,
        "threshold_rule": "mean_std",
        "profile": "tutorial",
        "training_error_quantiles": error_quantiles(np.linspace(0.01, 0.05, 50)),
    }


def publish(out: Path, tag: int) -> None:
    write_artifact(out, FakeModel(float(tag)), metadata(float(tag)), dense_weights=True)


def test_readers_never_miss_the_artifact_nor_mix_two_of_them(tmp_path: Path) -> None:
    # Two trainers publish alternately to one path while a worker keeps loading it. Before
    # the fix a reader could find no directory (between the two renames), the trainers
    # collided on the shared ".ecg.old" name, and a reader could pair artifact.json of one
    # version with weights.npz of another.
    out = tmp_path / "ecg"
    publish(out, 1)
    errors: list[BaseException] = []
    loads: list[tuple[float, float]] = []
    stop = threading.Event()

    def trainer(tags: range) -> None:
        try:
            for tag in tags:
                publish(out, tag)
        except BaseException as exc:  # reported below
            errors.append(exc)

    def reader() -> None:
        while not stop.is_set():
            try:
                art = load_ecg_artifact(out)
            except BaseException as exc:
                errors.append(exc)
                return
            loads.append((art.threshold, float(art.layers[0].bias[0])))

    threads = [threading.Thread(target=trainer, args=(range(k, 60, 2),)) for k in (2, 3)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers + threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert len(loads) > 20
    assert all(threshold == bias for threshold, bias in loads)  # one artifact, not two
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ecg"]  # no temporary leftovers


def test_a_bad_new_artifact_is_refused_and_the_old_one_keeps_serving(tmp_path: Path) -> None:
    out = tmp_path / "ecg"
    publish(out, 1)
    bad = FakeModel(2.0)
    bad.layers[1]._weights[0][0, 0] = np.nan
    with pytest.raises(ArtifactError, match="NaN or infinite weights"):
        write_artifact(out, bad, metadata(2.0), dense_weights=True)
    assert load_ecg_artifact(out).threshold == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ecg"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[: len(raw) // 2], "sha256 differs"),
        (lambda raw: b"not a zip file at all", "sha256 differs"),
    ],
)
def test_corrupt_weights_give_an_artifact_error_and_exit_code_2(
    tmp_path: Path, damage: Any, message: str
) -> None:
    out = tmp_path / "ecg"
    publish(out, 1)
    weights = out / WEIGHTS_FILE
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(ArtifactError, match=message):
        load_ecg_artifact(out)
    config = tmp_path / "worker.yaml"
    config.write_text(f"artifact: {out}\n")
    assert worker_main(["--config", str(config)]) == 2  # "bad config/artifact", not a crash


def test_corrupt_weights_without_a_recorded_digest_are_still_an_artifact_error(
    tmp_path: Path,
) -> None:
    # Artifacts written before the digest existed: the .npz itself must fail cleanly.
    out = tmp_path / "ecg"
    publish(out, 1)
    meta_path = out / ARTIFACT_FILE
    meta_path.write_text(meta_path.read_text().replace('"files"', '"old_files"'))
    weights = out / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:300])
    with pytest.raises(ArtifactError, match=r"not a readable \.npz"):
        load_ecg_artifact(out)
