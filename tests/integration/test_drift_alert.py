"""The drift alert fires for a worker whose inputs really drifted, and only for it.

Two real ``ecg-worker`` processes on the same artifact: one is fed windows like the ones the
artifact's training errors came from (PSI about 0.06), the other the same windows with a
sensor gain of 1.5 (PSI about 8). A real Prometheus scrapes both and evaluates
``EcgErrorDistributionDrifted`` exactly as shipped in ``deploy/prometheus/alerts.yml``,
except that its ``for: 30m`` is zero, so the test need not wait half an hour (promtool's
unit tests cover the ``for``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from kafka import KafkaProducer

from clients.worker_process import WorkerProcess
from tests.builders import synthetic_windows, write_artifact_dir
from tests.integration.services import (
    KafkaBroker,
    PrometheusServer,
    free_port,
    project_prometheus_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
ALERT = "EcgErrorDistributionDrifted"
WINDOWS = 300


def _drift_rule_only(path: Path) -> Path:
    """The shipped drift rule, unchanged but for ``for``, alone in a rule file."""
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    [rule] = [r for g in groups for r in g["rules"] if r.get("alert") == ALERT]
    rule["for"] = "0s"
    path.write_text(yaml.safe_dump({"groups": [{"name": "drift", "rules": [rule]}]}))
    return path


@pytest.fixture
def workers(kafka_broker: KafkaBroker, tmp_path: Path) -> Iterator[dict[str, WorkerProcess]]:
    """A worker on in-distribution windows ("steady") and one on drifted ones ("drifted"),
    each with its own topics and group, both already fed and done."""
    artifact = write_artifact_dir(tmp_path / "artifact")
    clean = synthetic_windows(WINDOWS, seed=21)
    drifted = clean * 1.5  # a sensor gain changed
    started: dict[str, WorkerProcess] = {}
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        for name, windows in (("steady", clean), ("drifted", drifted)):
            topics = kafka_broker.topic_set()
            port = free_port()
            config = {
                "kafka": {
                    "bootstrap_servers": kafka_broker.bootstrap_servers,
                    "group_id": f"drift-{name}-{tmp_path.name[-12:]}",
                },
                "topics": topics.as_config(),
                "artifact": str(artifact.path),
                "metrics": {"host": "127.0.0.1", "port": port},
                "drift": {"window_size": 200, "min_samples": 50},
            }
            (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
            worker = WorkerProcess(tmp_path / f"{name}.yaml", {}, port, tmp_path / f"{name}.log")
            started[name] = worker
            worker.start()
            worker.wait_ready(60)
            for i, row in enumerate(windows):
                value = orjson.dumps({"id": f"{name}-{i}", "values": row.tolist()})
                producer.send(topics.input, value=value, key=b"device-1")
            producer.flush(timeout=30)
        yield started
    finally:
        producer.close(timeout=5)
        for worker in started.values():
            worker.stop()


def _instance(worker: WorkerProcess) -> str:
    return f"127.0.0.1:{worker.metrics_port}"


def test_the_drift_alert_fires_for_the_drifting_worker_only(
    workers: dict[str, WorkerProcess],
    start_prometheus: Callable[[Mapping[str, Any]], PrometheusServer],
    tmp_path: Path,
) -> None:
    config = project_prometheus_config([_instance(w) for w in workers.values()])
    config["rule_files"] = [str(_drift_rule_only(tmp_path / "drift.yml"))]
    prometheus = start_prometheus(config)
    # Both workers scored everything and expose a PSI (not NaN) before the rule is judged.
    prometheus.wait_for(f"count(ecg_windows_scored_total == {WINDOWS}) == 2", timeout_s=60)
    prometheus.wait_for("count(ecg_error_drift_psi >= 0) == 2", timeout_s=30)

    psi = {
        r["metric"]["instance"]: float(r["value"][1])
        for r in prometheus.query('ecg_error_drift_psi{job="ecg-worker"}')
    }
    firing = prometheus.wait_for(f'ALERTS{{alertname="{ALERT}", alertstate="firing"}}', 30)
    assert [r["metric"]["instance"] for r in firing] == [_instance(workers["drifted"])], psi
    assert psi[_instance(workers["steady"])] < 0.25 < psi[_instance(workers["drifted"])]
    # The rule's own evaluation is healthy (an error would also leave it silent).
    [group] = prometheus.api("rules")["groups"]
    [rule] = group["rules"]
    assert (rule["health"], rule.get("lastError") or "") == ("ok", "")
