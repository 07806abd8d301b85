"""What the two Fashion-MNIST jobs share: options, seeding, the fit loop with per-epoch
progress, and writing the artifact plus its ``report/``.

TensorFlow is imported inside the functions that need it, never at module import.
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.images import report as images_report
from trainer.images.fashion_data import FashionMnist, load_fashion_mnist
from trainer.images.models import LEARNING_SETTINGS, layer_summary
from worker.cli_support.argtypes import positive_int
from worker.core.artifact import write_artifact

log = logging.getLogger(__name__)

BATCH_SIZE = 32  # Keras' default, which the tutorial uses
EVAL_BATCH_SIZE = 256  # evaluation only: the mean over all examples does not depend on it
DEFAULT_EPOCHS = 10
REPORT_DIR = "report"
ROWS_PNG = "reconstructions.png"
LOSS_PNG = "loss_curves.png"
REPORT_MD = "report.md"


def add_common_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """Options both image jobs take."""
    parser.add_argument(
        "--epochs", type=positive_int, default=DEFAULT_EPOCHS, help="training epochs (10)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for weights, shuffling and noise (0)"
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="directory with the four Fashion-MNIST IDX .gz files; default: look in "
        "/usr/share/datasets/fashion-mnist, then the Keras cache, then download",
    )
    parser.add_argument(
        "--out", metavar="DIR", default=default_out, help=f"artifact directory ({default_out})"
    )
    parser.add_argument(
        "--train-limit",
        metavar="N",
        type=positive_int,
        help="train on the first N training images only (quick runs, tests)",
    )
    parser.add_argument(
        "--test-limit",
        metavar="N",
        type=positive_int,
        help="validate on the first N test images only",
    )


def load_data(args: argparse.Namespace) -> FashionMnist:
    """The data set as the options ask (lookup order in ``trainer.images.fashion_data``)."""
    return load_fashion_mnist(args.data).limited(args.train_limit, args.test_limit)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow and make TF ops deterministic: same seed, same run."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@dataclass(frozen=True)
class TrainResult:
    """Per-epoch history plus the final MSE with the final weights."""

    history: dict[str, list[float]]
    train_mse: float
    val_mse: float
    wall_time_s: float


def fit(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    epochs: int,
) -> TrainResult:
    """``model.fit`` as the tutorial (shuffle, validation on the test set), logging each epoch."""
    started = time.monotonic()
    history = model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        shuffle=True,
        validation_data=(x_val, y_val),
        verbose=0,
        callbacks=[_progress_callback(epochs)],
    )
    wall = time.monotonic() - started
    train_mse = float(model.evaluate(x, y, batch_size=EVAL_BATCH_SIZE, verbose=0))
    val_mse = float(model.evaluate(x_val, y_val, batch_size=EVAL_BATCH_SIZE, verbose=0))
    return TrainResult(
        history={k: [float(v) for v in vals] for k, vals in history.history.items()},
        train_mse=train_mse,
        val_mse=val_mse,
        wall_time_s=wall,
    )


def _progress_callback(epochs: int) -> Any:
    import keras

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._started = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            log.info(
                "epoch %d/%d: loss %.5f  val_loss %.5f  (%.1f s)",
                epoch + 1,
                epochs,
                logs.get("loss", float("nan")),
                logs.get("val_loss", float("nan")),
                time.monotonic() - self._started,
            )

    return EpochProgress()


def library_versions() -> dict[str, str]:
    """Versions that decide whether a run can be reproduced."""
    import keras
    import matplotlib
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
    }


def write_outputs(
    out_dir: str | Path,
    model: Any,
    *,
    kind: str,
    title: str,
    settings: Mapping[str, Any],
    result: TrainResult,
    data: FashionMnist,
    rows: Sequence[tuple[str, np.ndarray]],
) -> dict[str, Any]:
    """Write the artifact, then ``report/`` (image rows, loss curves, report.md) inside it.

    The report goes in after the atomic artifact write, which replaces the whole directory,
    so a re-run never leaves a stale report behind.
    """
    metadata = {
        "kind": kind,
        "model": {"name": model.name, "layers": layer_summary(model)},
        "settings": {**settings, **LEARNING_SETTINGS, "batch_size": BATCH_SIZE},
        "metrics": {"train_mse": result.train_mse, "val_mse": result.val_mse},
        "training": {
            "epochs": len(result.history.get("loss", [])),
            "seed": settings.get("seed"),
            "batch_size": BATCH_SIZE,
            "history": result.history,
        },
        "run": {"wall_time_s": round(result.wall_time_s, 1)},
        "data": {
            "name": "fashion-mnist",
            "source": data.source,
            "location": data.location,
            "sha256": data.sha256,
            "train_examples": len(data.x_train),
            "test_examples": len(data.x_test),
        },
        "library_versions": library_versions(),
    }
    written = write_artifact(out_dir, model, metadata, dense_weights=False)
    report = Path(out_dir) / REPORT_DIR
    images_report.save_image_rows(report / ROWS_PNG, rows)
    images_report.save_loss_curves(report / LOSS_PNG, result.history, f"{title}: MSE per epoch")
    facts = {
        "model version": written["model_version"],
        **{k: v for k, v in written["settings"].items()},
        "train MSE": f"{result.train_mse:.5f}",
        "validation MSE (test set)": f"{result.val_mse:.5f}",
        "training time": f"{result.wall_time_s:.0f} s",
        "data": f"{data.source} ({data.location}), {len(data.x_train)} train / "
        f"{len(data.x_test)} test images",
    }
    images_report.write_report_md(
        report / REPORT_MD,
        title,
        facts,
        {"Test images": ROWS_PNG, "Loss curves": LOSS_PNG},
    )
    log.info(
        "wrote %s (model version %s): train MSE %.5f, val MSE %.5f; report in %s",
        out_dir,
        written["model_version"],
        result.train_mse,
        result.val_mse,
        report,
    )
    return written
