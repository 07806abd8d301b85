"""deploy/prometheus (config, alert rules and their unit tests) and the Grafana dashboard's
queries, checked by promtool and by a real Prometheus scraping metrics shaped as in
docs/design.md."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from tests.integration.services import (
    REPO_ROOT,
    PrometheusServer,
    dashboard_queries,
    design_metrics,
    expand_grafana_expr,
    project_prometheus_config,
    unavailable,
)

pytestmark = pytest.mark.integration

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        unavailable("promtool not found; run 'make system' (Debian package 'prometheus')")
    return path


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.compose.yml"])
def test_promtool_accepts_the_config(promtool: str, config: str) -> None:
    result = _promtool(promtool, "check", "config", config)

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", "alerts.yml")

    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass_and_cover_every_alert(promtool: str) -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    cases = [c for t in tests["tests"] for c in t.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}

    result = _promtool(promtool, "test", "rules", "alerts_test.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert firing == alerts, f"alerts never shown firing: {alerts - firing}"
    assert silent == alerts, f"alerts never shown silent: {alerts - silent}"


def _design_registry() -> tuple[CollectorRegistry, Callable[[], None]]:
    """Every metric of docs/design.md with its labels, and a step() that moves them."""
    registry = CollectorRegistry()
    made: list[Any] = []
    for name, (kind, labels) in design_metrics().items():
        if kind == "counter":
            metric: Any = Counter(name.removesuffix("_total"), name, labels, registry=registry)
        elif kind == "histogram":
            metric = Histogram(name, name, labels, registry=registry, buckets=(0.01, 0.1, 1, 10))
        else:
            metric = Gauge(name, name, labels, registry=registry)
        made.append((kind, labels, metric))
    values = {
        "reason": "not_json",
        "topic": "ecg.windows",
        "partition": "0",
        "model_version": "3f1c2a9b0d4e5f67",
        "profile": "tutorial",
        "threshold_rule": "mean_std",
        "window_length": "140",
        "role": "primary",
        "result": "applied",
        "primary_version": "3f1c2a9b0d4e5f67",
        "shadow_version": "0a1b2c3d4e5f6789",
        "outcome": "both",
    }

    def step() -> None:
        for kind, labels, metric in made:
            child = metric.labels(*(values[label] for label in labels)) if labels else metric
            if kind == "counter":
                child.inc(3)
            elif kind == "histogram":
                child.observe(0.05)
            else:
                child.set(1.0)

    return registry, step


@pytest.fixture
def design_exporter() -> Iterator[str]:
    """An HTTP /metrics on a free port serving design-shaped metrics that keep moving."""
    registry, step = _design_registry()
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.2):
            step()

    mover = threading.Thread(target=run, daemon=True)
    step()
    mover.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        stop.set()
        server.shutdown()
        mover.join(timeout=5)


@pytest.mark.slow
def test_every_dashboard_query_and_alert_runs_on_a_real_prometheus(
    start_prometheus: Callable[[Mapping[str, Any]], PrometheusServer], design_exporter: str
) -> None:
    prometheus = start_prometheus(project_prometheus_config([design_exporter]))
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    alert_exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    prometheus.wait_for('up{job="ecg-worker"} == 1')
    # rate() needs two samples inside the window; 10s at a 1s scrape interval has ~10.
    prometheus.wait_for("count_over_time(ecg_windows_consumed_total[10s]) >= 4")

    empty = []
    for title, expr in dashboard_queries():
        result = prometheus.query(expand_grafana_expr(expr, rate_interval="10s"))
        if not result:
            empty.append((title, expr))
    for expr in alert_exprs.values():
        prometheus.query(expr)  # raises on an invalid expression
    # Every rule evaluated at least once (health leaves "unknown"), and without an error.
    deadline = time.monotonic() + 30
    while True:
        loaded = prometheus.api("rules")["groups"]
        rule_health = {
            r["name"]: (r["health"], r.get("lastError") or "") for g in loaded for r in g["rules"]
        }
        if all(health != "unknown" for health, _ in rule_health.values()):
            break
        assert time.monotonic() < deadline, f"rules never evaluated: {rule_health}"
        time.sleep(0.5)

    assert not empty, f"dashboard queries without data on design-shaped metrics: {empty}"
    assert set(rule_health) == set(alert_exprs)
    assert all(rule == ("ok", "") for rule in rule_health.values()), rule_health
