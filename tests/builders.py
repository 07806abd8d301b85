"""Builders of test data: ECG-like windows and a small, valid ECG artifact.

The artifact is a real ``EcgArtifact`` (random dense weights 140 -> 8 -> 140); its threshold
sits at the median error of synthetic windows, so both normal and anomalous scores occur.
On disk it is written by the product's own ``save_ecg_artifact``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from trainer.images.idx import IDX_DTYPES
from worker.core.artifact import (
    DenseLayer,
    EcgArtifact,
    Normalisation,
    error_quantiles,
    save_ecg_artifact,
)
from worker.core.scorer import Scorer
from worker.core.wire import WINDOW_LENGTH


def synthetic_windows(n: int, seed: int = 0, length: int = WINDOW_LENGTH) -> np.ndarray:
    """ECG-like windows: a beat-shaped bump on a slow wave, plus noise (float64)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, length)
    phase = rng.uniform(0.3, 0.7, size=(n, 1))
    amplitude = rng.uniform(2.0, 4.0, size=(n, 1))
    beat = amplitude * np.exp(-(((t - phase) / 0.03) ** 2))
    wave = 0.5 * np.sin(2 * np.pi * (t * rng.uniform(1, 3, size=(n, 1))))
    return beat + wave + rng.normal(0, 0.2, size=(n, length)) - 1.0


def make_artifact(seed: int = 7, hidden: int = 8, length: int = WINDOW_LENGTH) -> EcgArtifact:
    """A small, valid, unsaved ECG artifact with random weights and a data-derived threshold."""
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
    errors = Scorer(EcgArtifact.unsaved(layers, norm, 1.0)).score(train).errors.astype(np.float64)
    return EcgArtifact.unsaved(
        layers,
        norm,
        float(np.median(errors)),
        threshold_rule="mean_std",
        profile="tutorial",
        training_error_quantiles=error_quantiles(errors),
        metadata={"data": {"source": "synthetic test windows"}},
    )


def write_artifact_dir(directory: Path, seed: int = 7) -> EcgArtifact:
    """``make_artifact`` saved to ``directory`` and loaded back, as the worker loads it."""
    return save_ecg_artifact(make_artifact(seed=seed), directory)


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of ``array`` (uncompressed): small Fashion-MNIST-format fixtures."""
    native = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    if native.dtype not in codes:
        raise ValueError(f"IDX cannot store dtype {native.dtype}")
    code, file_dtype = codes[native.dtype], IDX_DTYPES[codes[native.dtype]]
    if not 1 <= native.ndim <= 255:
        raise ValueError(f"IDX stores 1 to 255 dimensions, got {native.ndim}")
    header = bytes([0, 0, code, native.ndim]) + struct.pack(f">{native.ndim}I", *native.shape)
    return header + np.ascontiguousarray(native, dtype=file_dtype).tobytes()
