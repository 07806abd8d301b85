"""The Grafana dashboard and the alert rules speak the metric contract of docs/design.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "ecg-worker.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DESIGN = ROOT / "docs" / "design.md"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Labels Prometheus or the histogram format adds to every worker series.
TARGET_LABELS = {"job", "instance", "le"}


def design_metrics() -> dict[str, tuple[str, set[str]]]:
    """``{name: (type, labels)}`` from the metrics table of docs/design.md."""
    table = {}
    for line in DESIGN.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`(ecg_\w+)`\s*\|([^|]*)\|([^|]*)\|", line)
        if match:
            table[match.group(1)] = (
                match.group(2).split()[0],
                set(re.findall(r"`(\w+)`", match.group(3))),
            )
    return table


def leaf_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.extend(panel.get("panels", []))
        if panel["type"] != "row":
            panels.append(panel)
    return panels


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [(p["title"], t["expr"]) for p in leaf_panels(dashboard) for t in p["targets"]]


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [(r.get("alert") or r["record"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: ``ecg_*`` identifiers and selectors like ``up{``."""
    names = set(re.findall(r"\b(ecg_[a-z0-9_]+)\b", expr))
    names |= {n for n in re.findall(r"\b([a-z_][a-z0-9_]*)\s*\{", expr) if not n.startswith("ecg_")}
    return names


def contract_name(name: str, table: dict[str, tuple[str, set[str]]]) -> str | None:
    """The design-table metric ``name`` belongs to (histogram series map to their base)."""
    if name in table:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and table.get(base, ("",))[0] == "histogram":
            return base
    return None


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def test_design_table_parses() -> None:
    table = design_metrics()

    assert len(table) >= 17
    assert table["ecg_consumer_lag_records"] == ("gauge", {"topic", "partition"})
    assert table["ecg_reconstruction_error"][0] == "histogram"


def test_every_panel_has_a_query_and_a_unique_id(dashboard: dict[str, Any]) -> None:
    panels = leaf_panels(dashboard)
    nested = [c for p in dashboard["panels"] for c in p.get("panels", [])]
    ids = [p["id"] for p in dashboard["panels"] + nested]

    assert dashboard["uid"] and dashboard["title"]
    assert panels
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"panel {panel['title']!r}: empty expr"
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    assert len(ids) == len(set(ids))


def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_variables_for_datasource_job_and_instance(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}

    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "ecg_model_info" in variables["job"]["definition"]
    assert "$job" in variables["instance"]["definition"]
    assert variables["instance"]["includeAll"] and variables["instance"]["allValue"] == ".*"


def test_every_worker_series_is_filtered_by_job_and_instance() -> None:
    for title, expr in dashboard_exprs():
        for selector in re.findall(r"\b(?:ecg_[a-z0-9_]+|up)\{([^}]*)\}", expr):
            assert 'job=~"$job"' in selector, f"{title}: {expr}"
            assert 'instance=~"$instance"' in selector, f"{title}: {expr}"


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_metric_and_label_names_exist_in_the_design_table(source: str) -> None:
    table = design_metrics()
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    known_labels = TARGET_LABELS.union(*(labels for _, labels in table.values()))

    for title, expr in exprs:
        for name in metric_names(expr):
            assert name == "up" or contract_name(name, table), f"{title}: unknown metric {name}"
        grouped = re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", expr)
        matched = re.findall(r"[{,]\s*(\w+)\s*(?:=~|!~|!=|=)", expr)
        for label in [x.strip() for g in grouped for x in g.split(",") if x.strip()] + matched:
            assert label in known_labels, f"{title}: unknown label {label!r} in {expr}"


def test_the_panels_operators_asked_for_are_there(dashboard: dict[str, Any]) -> None:
    by_title = {p["title"]: p for p in leaf_panels(dashboard)}
    exprs = {t: " ".join(x["expr"] for x in p["targets"]) for t, p in by_title.items()}
    legends = {t: [x.get("legendFormat") for x in p["targets"]] for t, p in by_title.items()}

    assert legends["Throughput"] == ["consumed", "scored", "anomalous", "rejected"]
    assert "ecg_windows_anomalous_total" in exprs["Anomaly rate"]
    heatmap = by_title["Reconstruction error"]
    assert heatmap["type"] == "heatmap"
    assert heatmap["targets"][0]["format"] == "heatmap"
    assert "ecg_reconstruction_error_bucket" in heatmap["targets"][0]["expr"]
    assert "ecg_anomaly_threshold" in exprs["Reconstruction error vs threshold"]
    assert legends["End-to-end latency"] == ["p50", "p99"]
    assert "ecg_end_to_end_latency_seconds_bucket" in exprs["End-to-end latency"]
    assert "ecg_batch_size_windows" in exprs["Batch size"]
    assert "ecg_scoring_duration_seconds_bucket" in exprs["Scoring duration per batch"]
    assert "by (topic, partition)" in exprs["Consumer lag per partition"]
    assert "by (reason)" in exprs["Dead letters by reason"]
    assert "ecg_error_drift_psi" in exprs["Drift of the error distribution"]
    assert "ecg_error_drift_ks" in exprs["Drift of the error distribution"]
    assert "ecg_model_info" in exprs["Live model"]
    assert "ecg_anomaly_threshold" in exprs["Anomaly threshold"]


def test_every_alert_is_documented_for_on_call() -> None:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")

    for rule in (r for g in rules["groups"] for r in g["rules"] if "alert" in r):
        notes = rule["annotations"]
        assert notes["summary"] and len(notes["description"]) > 100, rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        anchor = notes["runbook"].split("#", 1)[1]
        assert anchor == rule["alert"].lower()
        assert f"### {rule['alert']}" in operations, f"docs/operations.md lacks {rule['alert']}"
