"""``ecg-train fashion-ae``: the tutorial's dense Fashion-MNIST autoencoder.

Flatten -> Dense(latent, relu) -> Dense(784, sigmoid) -> Reshape(28, 28); Adam, MSE,
10 epochs, validation on the test set. Writes an artifact (kind ``fashion-dense-ae``) with
a report of original vs reconstructed test images and the loss curves.
"""

from __future__ import annotations

import argparse

from trainer.images import training as image_training
from worker.cli_support.argtypes import positive_int

KIND = "fashion-dense-ae"
DEFAULT_OUT = "artifacts/fashion-ae"
DEFAULT_LATENT_DIM = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ecg-train fashion-ae``."""
    image_training.add_common_arguments(parser, DEFAULT_OUT)
    parser.add_argument(
        "--latent-dim",
        type=positive_int,
        default=DEFAULT_LATENT_DIM,
        help=f"size of the code layer ({DEFAULT_LATENT_DIM})",
    )


def run(args: argparse.Namespace) -> int:
    """Train, evaluate, write the artifact and its report; returns the exit code."""
    data = image_training.load_data(args)  # before TensorFlow: a data error fails fast
    from trainer.images.models import build_dense_autoencoder

    image_training.seed_everything(args.seed)
    model = build_dense_autoencoder(args.latent_dim)
    result = image_training.fit(
        model, data.x_train, data.x_train, data.x_test, data.x_test, args.epochs
    )
    shown = data.x_test[: image_training.images_report.IMAGES_PER_ROW]
    reconstructed = model.predict(shown, verbose=0)
    image_training.write_outputs(
        args.out,
        model,
        kind=KIND,
        title="Fashion-MNIST dense autoencoder",
        settings={"epochs": args.epochs, "seed": args.seed, "latent_dim": args.latent_dim},
        result=result,
        data=data,
        rows=[("original", shown), ("reconstructed", reconstructed)],
    )
    return 0
