"""Wiring of one worker process: artifact, metrics endpoint, Kafka clients, the loop, signals.

``run(config)`` is what ``ecg-worker`` does after parsing its arguments (``worker.cli.ecg_worker``).
"""

from __future__ import annotations

import gc
import logging
import signal
from types import FrameType

from prometheus_client import CollectorRegistry

from worker.core.artifact import load_ecg_artifact
from worker.core.errors import ConfigError
from worker.core.scorer import Scorer
from worker.core.selftest import check_self_test
from worker.service.config import WorkerConfig
from worker.service.delivery import AtLeastOnceDelivery, Delivery
from worker.service.drift import DriftMonitor
from worker.service.http_server import HealthState, MetricsServer
from worker.service.kafka_backend import connect, ensure_topics
from worker.service.loop import WorkerLoop
from worker.service.metrics import WorkerMetrics
from worker.service.rebalance import PartitionTracker
from worker.service.rollout import Rollout, install_sighup
from worker.service.rollout_metrics import RolloutMetrics
from worker.service.transactions import ExactlyOnceDelivery

log = logging.getLogger("ecg-worker")


def run(config: WorkerConfig) -> int:
    """Run the worker until a signal; raises ``EcgError`` subclasses for known failures."""
    artifact = load_ecg_artifact(config.artifact)
    check_self_test(artifact)  # the same check every hot reload runs
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
    rollout = _rollout(config, scorer, metrics, drift, registry)
    actions = (
        {"/reload": lambda: rollout.http_action("reload"),
         "/promote": lambda: rollout.http_action("promote")}
        if config.reload.http
        else None
    )  # fmt: skip
    try:
        server = MetricsServer(
            registry, health, config.metrics.host, config.metrics.port, actions=actions
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {config.metrics.host}:{config.metrics.port}: {exc} "
            "(set metrics.port or ECG_METRICS_PORT)"
        ) from exc
    server.start()
    log.info(
        "metrics on http://%s:%d/metrics (also /healthz, /readyz)",
        config.metrics.host,
        server.port,
    )

    def on_assignment(partitions: frozenset[tuple[str, int]]) -> None:
        health.partitions = partitions
        health.joined = True

    tracker = PartitionTracker(on_change=on_assignment)
    try:
        ensure_topics(config)
        clients = connect(config, tracker)
        tracker.cooperative = clients.cooperative
        # Cooperative rebalancing calls no listener for an empty assignment, so there the
        # running loop is the only sign of a working consumer.
        health.joined = health.joined or tracker.cooperative
        flush_s = config.kafka.flush_bound_ms / 1000.0
        delivery: Delivery
        if config.delivery.mode == "exactly_once":
            delivery = ExactlyOnceDelivery(clients.producer, clients.consumer, flush_s)
        else:
            delivery = AtLeastOnceDelivery(clients.producer, clients.consumer, flush_s)
        log.info("delivery mode %s on %s", config.delivery.mode, config.kafka.library)
        loop = WorkerLoop(
            config, clients.consumer, delivery, scorer, metrics, tracker, health, drift,
            rollout=rollout,
        )  # fmt: skip
        # Start-up objects (the model, numpy, the clients' modules) live as long as the
        # process: moved out of the collector's reach, a full collection in a long run scans
        # only what the loop allocates (they took 100-300 ms each here, see docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        previous = _install_signals(loop)
        restore_sighup = install_sighup(rollout)
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
            restore_sighup()
            _restore_signals(previous)
            clients.close(timeout_s=10.0 if clean else 2.0)
        log.info("stopped cleanly: batch in hand published and committed, left the group")
        return 0
    finally:
        server.stop()


def _rollout(
    config: WorkerConfig,
    scorer: Scorer,
    metrics: WorkerMetrics,
    drift: DriftMonitor,
    registry: CollectorRegistry,
) -> Rollout:
    """Hot reload and shadow scoring (``worker.service.rollout``), on the worker's registry."""
    return Rollout(
        scorer,
        RolloutMetrics(registry),
        metrics,
        artifact_path=config.artifact,
        shadow_path=config.shadow_artifact,
        shadow_topic=config.topics.shadow_scores,
        watch=config.reload.watch,
        poll_interval_s=config.reload.poll_interval_ms / 1000.0,
        drift=drift,
    )


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
