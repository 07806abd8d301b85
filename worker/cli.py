"""``ecg-worker``: score ECG windows from Kafka (see docs/worker.md).

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT); 1 when Kafka fails (unreachable,
missing topics, a publish not acknowledged): a restart resumes from the last commit;
2 for a bad config or artifact.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from prometheus_client import CollectorRegistry

from worker.artifact import load_ecg_artifact
from worker.config import WorkerConfig, env_help
from worker.delivery import AtLeastOnceDelivery
from worker.drift import DriftMonitor
from worker.errors import BrokerError, EcgError
from worker.health import HealthState, MetricsServer
from worker.kafka_io import connect, ensure_topics
from worker.loop import WorkerLoop
from worker.metrics import WorkerMetrics
from worker.rebalance import PartitionTracker
from worker.scorer import Scorer

log = logging.getLogger("ecg-worker")
DEFAULT_CONFIG = "deploy/worker.yaml"
# Extra time granted to a flush beyond the producer's own delivery timeout.
FLUSH_MARGIN_S = 5.0


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
        "commit), 2 bad config or artifact",
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


def run(config: WorkerConfig) -> int:
    """Run the worker until a signal; raises ``EcgError`` subclasses for known failures."""
    artifact = load_ecg_artifact(config.artifact)
    scorer = Scorer(artifact)
    log.info(
        "model %s loaded from %s (profile %s, threshold %.6g by %s, window %d)",
        artifact.model_version,
        artifact.path,
        artifact.profile,
        artifact.threshold,
        artifact.threshold_rule,
        artifact.window_length,
    )
    registry = CollectorRegistry()
    drift = DriftMonitor(
        artifact.training_error_quantiles, config.drift.window_size, config.drift.min_samples
    )
    metrics = WorkerMetrics(artifact, config.batching.max_batch_size, drift, registry)
    health = HealthState(config.metrics.stall_timeout_ms)
    health.model_loaded = True
    try:
        server = MetricsServer(registry, health, config.metrics.host, config.metrics.port)
    except OSError as exc:
        raise BrokerError(
            f"cannot serve metrics on {config.metrics.host}:{config.metrics.port}: {exc}"
        ) from exc
    server.start()
    log.info(
        "metrics on http://%s:%d/metrics (also /healthz, /readyz)",
        config.metrics.host,
        server.port,
    )

    def on_assignment(partitions: frozenset[tuple[str, int]]) -> None:
        health.partitions = partitions

    tracker = PartitionTracker(on_change=on_assignment)
    try:
        ensure_topics(config)
        clients = connect(config, tracker)
        flush_s = float(clients.producer.config["delivery_timeout_ms"]) / 1000.0 + FLUSH_MARGIN_S
        delivery = AtLeastOnceDelivery(clients.producer, clients.consumer, flush_s)
        loop = WorkerLoop(
            config, clients.consumer, delivery, scorer, metrics, tracker, health, drift
        )
        previous = _install_signals(loop)
        clean = False
        try:
            log.info(
                "consuming %s as group %s from %s",
                config.topics.input,
                config.kafka.group_id,
                ",".join(config.kafka.bootstrap_servers),
            )
            loop.run()
            clean = True
        finally:
            _restore_signals(previous)
            clients.close(timeout_s=10.0 if clean else 2.0)
        log.info("stopped cleanly: batch in hand published and committed, left the group")
        return 0
    finally:
        server.stop()


def _install_signals(loop: WorkerLoop) -> dict[int, object]:
    def handler(signum: int, frame: FrameType | None) -> None:
        if loop.stopping:
            raise KeyboardInterrupt  # second signal: stop now, nothing more is committed
        log.info("%s received: finishing the batch in hand", signal.Signals(signum).name)
        loop.stop()

    previous: dict[int, object] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    return previous


def _restore_signals(previous: dict[int, object]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 clean, 1 Kafka failure, 2 bad config/artifact)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = WorkerConfig.from_yaml(args.config)
        return run(config)
    except BrokerError as exc:
        log.error("Kafka failure: %s", exc)
        print(f"ecg-worker: error: {exc}", file=sys.stderr)
        return 1
    except EcgError as exc:
        print(f"ecg-worker: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ecg-worker: interrupted; uncommitted records will be replayed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
