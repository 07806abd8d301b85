"""Short real training runs of the two Fashion-MNIST jobs on a slice of the real data.

Each run goes through the real ``ecg-train`` entry point and must write a loadable
artifact and a report of real PNG images of the documented pixel size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.integration.training_helpers import fashion_mnist_dir
from trainer.cli import main
from trainer.images import report as images_report
from trainer.images.fashion_data import load_fashion_mnist
from worker.core.artifact import read_metadata

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN_N, TEST_N = 2000, 500
SLICE = ["--epochs", "1", "--train-limit", str(TRAIN_N), "--test-limit", str(TEST_N)]


@pytest.fixture(scope="module")
def data_dir() -> str:
    """The installed real Fashion-MNIST; fails under CI=true when it is missing."""
    return fashion_mnist_dir()


@pytest.fixture(scope="module")
def mean_image_mse(data_dir) -> float:
    """Validation MSE of always predicting the mean training image: a model must beat it."""
    data = load_fashion_mnist(data_dir, download=None).limited(TRAIN_N, TEST_N)
    return float(np.mean((data.x_test - data.x_train.mean(axis=0)) ** 2))


def check_png(path: Path, size: tuple[int, int]) -> None:
    from matplotlib.image import imread

    pixels = imread(path)
    assert pixels.shape[:2] == (size[1], size[0]), f"{path.name} is {pixels.shape}"
    assert pixels[..., :3].std() > 0.05, f"{path.name} looks blank"


def check_artifact(out: Path, kind: str, rows: int, mean_image_mse: float) -> dict:
    meta = read_metadata(out)
    assert meta["kind"] == kind
    assert meta["data"]["train_examples"] == TRAIN_N
    assert meta["data"]["test_examples"] == TEST_N
    assert meta["data"]["name"] == "fashion-mnist"
    assert meta["training"]["epochs"] == 1
    assert len(meta["training"]["history"]["val_loss"]) == 1
    assert {"tensorflow", "keras", "numpy"} <= set(meta["library_versions"])
    val = meta["metrics"]["val_mse"]
    assert 0 < val < mean_image_mse, "the model learned less than the mean image"
    assert val == pytest.approx(meta["training"]["history"]["val_loss"][-1], rel=1e-4)
    report = out / "report"
    check_png(report / "reconstructions.png", images_report.rows_figure_pixels(rows))
    check_png(report / "loss_curves.png", images_report.LOSS_FIGURE_PIXELS)
    text = (report / "report.md").read_text(encoding="utf-8")
    assert "](reconstructions.png)" in text and "](loss_curves.png)" in text
    assert f"{val:.5f}" in text
    return meta


def test_dense_autoencoder_trains_writes_artifact_and_report(tmp_path, data_dir, mean_image_mse):
    out = tmp_path / "fashion-ae"
    argv = ["fashion-ae", *SLICE, "--latent-dim", "32", "--data", data_dir, "--seed", "3"]
    assert main([*argv, "--out", str(out)]) == 0
    meta = check_artifact(out, "fashion-dense-ae", rows=2, mean_image_mse=mean_image_mse)
    assert meta["settings"]["latent_dim"] == 32
    assert meta["model"]["layers"] == [
        "Flatten()",
        "Dense(32, relu)",
        "Dense(784, sigmoid)",
        "Reshape((28, 28))",
    ]

    import keras

    model = keras.models.load_model(out / "model.keras")
    x_test = load_fashion_mnist(data_dir, download=None).x_test[:TEST_N]
    reloaded_mse = float(np.mean((model.predict(x_test, verbose=0) - x_test) ** 2))
    assert reloaded_mse == pytest.approx(meta["metrics"]["val_mse"], rel=1e-4)

    # Same seed, same run: the history repeats exactly.
    again = tmp_path / "again"
    assert main([*argv, "--out", str(again)]) == 0
    assert read_metadata(again)["training"]["history"] == meta["training"]["history"]


def test_denoiser_trains_writes_artifact_and_report(tmp_path, data_dir, mean_image_mse):
    out = tmp_path / "denoiser"
    argv = ["denoiser", *SLICE, "--noise-factor", "0.3", "--data", data_dir, "--out", str(out)]
    assert main(argv) == 0
    meta = check_artifact(out, "fashion-denoiser", rows=3, mean_image_mse=mean_image_mse)
    assert meta["settings"]["noise_factor"] == 0.3
    assert meta["settings"]["batch_size"] == 32
    assert meta["model"]["layers"] == [
        "Conv2D(16, 3x3, strides 2x2, relu, same)",
        "Conv2D(8, 3x3, strides 2x2, relu, same)",
        "Conv2DTranspose(8, 3x3, strides 2x2, relu, same)",
        "Conv2DTranspose(16, 3x3, strides 2x2, relu, same)",
        "Conv2D(1, 3x3, strides 1x1, sigmoid, same)",
    ]

    import keras

    model = keras.models.load_model(out / "model.keras")
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 28, 28, 1)
