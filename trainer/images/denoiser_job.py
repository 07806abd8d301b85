"""``ecg-train denoiser``: the tutorial's convolutional Fashion-MNIST denoiser.

Input: clip(x + noise_factor * N(0, 1), 0, 1); target: the clean image. Encoder
Conv2D(16) and Conv2D(8), decoder Conv2DTranspose(8), Conv2DTranspose(16), Conv2D(1,
sigmoid); Adam, MSE, 10 epochs, shuffled, validation on the noisy test set. Writes an
artifact (kind ``fashion-denoiser``) with a report of original / noisy / denoised test
images and the loss curves.
"""

from __future__ import annotations

import argparse

import numpy as np

from trainer.images import training as image_training
from worker.cli_support.argtypes import non_negative_float

KIND = "fashion-denoiser"
DEFAULT_OUT = "artifacts/denoiser"
DEFAULT_NOISE_FACTOR = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ecg-train denoiser``."""
    image_training.add_common_arguments(parser, DEFAULT_OUT)
    parser.add_argument(
        "--noise-factor",
        type=non_negative_float,
        default=DEFAULT_NOISE_FACTOR,
        help=f"standard deviation of the Gaussian noise added to inputs ({DEFAULT_NOISE_FACTOR})",
    )


def add_noise(images: np.ndarray, noise_factor: float, rng: np.random.Generator) -> np.ndarray:
    """The tutorial's corruption: clip(x + noise_factor * N(0, 1), 0, 1), as float32."""
    noise = rng.standard_normal(images.shape, dtype=np.float32)
    return np.clip(images + np.float32(noise_factor) * noise, 0.0, 1.0).astype(np.float32)


def run(args: argparse.Namespace) -> int:
    """Train, evaluate, write the artifact and its report; returns the exit code."""
    data = image_training.load_data(args)  # before TensorFlow: a data error fails fast
    from trainer.images.models import build_denoiser

    rng = np.random.default_rng(args.seed)
    x_train, x_test = data.x_train[..., np.newaxis], data.x_test[..., np.newaxis]
    x_train_noisy = add_noise(x_train, args.noise_factor, rng)
    x_test_noisy = add_noise(x_test, args.noise_factor, rng)

    image_training.seed_everything(args.seed)
    model = build_denoiser()
    result = image_training.fit(model, x_train_noisy, x_train, x_test_noisy, x_test, args.epochs)
    n = image_training.images_report.IMAGES_PER_ROW
    denoised = model.predict(x_test_noisy[:n], verbose=0)
    image_training.write_outputs(
        args.out,
        model,
        kind=KIND,
        title="Fashion-MNIST convolutional denoiser",
        settings={"epochs": args.epochs, "seed": args.seed, "noise_factor": args.noise_factor},
        result=result,
        data=data,
        rows=[
            ("original", x_test[:n]),
            ("original + noise", x_test_noisy[:n]),
            ("denoised", denoised),
        ],
    )
    return 0
