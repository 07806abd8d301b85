"""The chart's values.schema.json and values.yaml (no helm needed): the defaults pass the
schema, and the schema's worker-config section names exactly the worker's config keys, so a
new config key cannot be forgotten in the chart (or a removed one linger)."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from pathlib import Path

import jsonschema
import yaml

from worker.service.config import WorkerConfig

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "ecg-worker"
# Set by the chart's templates from other values, so not settable under `config`.
CHART_OWNED = {
    "kafka": {"bootstrap_servers", "group_id", "group_instance_id"},
    "topics": {"input", "scores", "anomalies", "dead_letter"},
    "metrics": {"host", "port"},
}


def schema() -> dict:
    return json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))


def test_default_values_pass_the_schema() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema())
    assert list(jsonschema.Draft7Validator(schema()).iter_errors(values)) == []


def test_config_section_names_every_worker_config_key() -> None:
    config = schema()["properties"]["config"]["properties"]
    top = {f.name for f in fields(WorkerConfig)}

    assert set(config) | {"artifact"} == top
    defaults = WorkerConfig()
    sections = {f.name: getattr(defaults, f.name) for f in fields(WorkerConfig)}
    for section, value in sections.items():
        if not is_dataclass(value):
            continue
        keys = set(config[section]["properties"]) | CHART_OWNED.get(section, set())
        assert keys == {f.name for f in fields(value)}, section
        assert config[section]["additionalProperties"] is False


def test_default_values_config_loads_with_the_worker_loader() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    loaded = WorkerConfig.from_mapping(values["config"], where="values.yaml config", env={})
    assert loaded.topics.create_topics is False
