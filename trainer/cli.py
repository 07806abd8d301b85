"""``ecg-train``: one sub-command per training job.

Each job module exposes ``add_arguments(parser)`` and ``run(args) -> int``; this file only
wires them together, so jobs stay independent of each other.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from worker.cli_support.runner import run_cli

# sub-command -> (module, one-line help). Modules are imported lazily: `--help` stays fast.
JOBS = {
    "ecg": ("trainer.ecg.job", "ECG5000 autoencoder: the artifact the worker serves"),
    "fashion-ae": (
        "trainer.images.fashion_ae_job",
        "Fashion-MNIST dense autoencoder (tutorial part 1)",
    ),
    "denoiser": (
        "trainer.images.denoiser_job",
        "Fashion-MNIST convolutional denoiser (tutorial part 2)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``ecg-train`` argument parser with every job's options."""
    parser = argparse.ArgumentParser(
        prog="ecg-train", description="Train a model and write a versioned artifact + report."
    )
    sub = parser.add_subparsers(dest="job", required=True, metavar="JOB")
    for name, (module_name, help_text) in JOBS.items():
        job = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module_name).add_arguments(job)
        job.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (``worker.cli_support.runner.ExitCode``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    # A missing training extra (TensorFlow, scikit-learn, ...) is reported by the runner.
    return run_cli("ecg-train", lambda: int(importlib.import_module(args._module).run(args)))


if __name__ == "__main__":
    sys.exit(main())
