"""``ecg-worker``: score ECG windows from Kafka (see docs/worker.md).

Exit codes (``worker.cli_support.runner``): 0 after a clean shutdown (SIGTERM/SIGINT);
1 when Kafka fails (unreachable, missing topics, a publish not acknowledged): a restart
resumes from the last commit; 2 for a bad config or artifact; 130 after a second signal.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from worker.cli_support.runner import run_cli
from worker.core.errors import BrokerError
from worker.service.config import WorkerConfig, env_help
from worker.service.secrets import install_log_redaction, secret_values

log = logging.getLogger("ecg-worker")
DEFAULT_CONFIG = "deploy/worker.yaml"
# Scoring is a small matrix product per batch: one BLAS thread is faster than two on a busy
# core (measured 2x end to end on 2 cores), and Kafka's IO threads need the other core.
# Scale out with more workers. Takes effect only before numpy is imported (see main()).
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def build_parser() -> argparse.ArgumentParser:
    """The ``ecg-worker`` argument parser (environment overrides in the epilog)."""
    parser = argparse.ArgumentParser(
        prog="ecg-worker",
        description=(
            "Consume ECG windows from Kafka, score them with the autoencoder artifact in "
            "micro-batches, publish scores, anomalies and dead letters, commit after "
            "acknowledgement. Serves /metrics, /healthz and /readyz."
        ),
        epilog=env_help()
        + "\n\nexit codes: 0 clean shutdown, 1 Kafka failure (restart resumes from the last "
        "commit), 2 bad config or artifact, 130 stopped by a second signal",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"worker config YAML (default: {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default: INFO)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 clean, 1 Kafka failure, 2 bad config/artifact,
    130 a second signal)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_log_redaction()
    for name in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    from worker.service.app import run  # imports numpy: after the BLAS settings

    def body() -> int:
        try:
            config = WorkerConfig.from_yaml(args.config)
            # From here on no log line, at any level, shows the SASL or key password.
            install_log_redaction(secret_values(config.kafka.client))
            return run(config)
        except BrokerError as exc:
            log.error("Kafka failure: %s", exc)
            raise
        except KeyboardInterrupt:
            log.warning("stopped by a second signal; uncommitted records will be replayed")
            raise

    return run_cli("ecg-worker", body)


if __name__ == "__main__":
    sys.exit(main())
