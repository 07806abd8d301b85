"""docker-compose.yml against the Compose Specification's JSON Schema (vendored, offline) and
against the project's own settings: every worker env var is a real override that yields a
config the worker accepts, every port and topic agrees with that config, the Prometheus
scrape target and the local broker (deploy/kafka/local-kafka.sh), every path exists.

No Docker engine runs here; ``docker compose config`` is not needed because the schema is
the one ``docker compose`` itself loads (tests/data/schemas/README.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from clients.alerts import DEFAULT_TOPIC as ALERTS_TOPIC
from clients.kafka_clients import DEFAULT_BOOTSTRAP
from clients.replay import DEFAULT_TOPIC as REPLAY_TOPIC
from worker.service.config import ENV_OVERRIDES, WorkerConfig

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "schemas" / "compose" / "compose-spec.json"
# Settings both brokers must share, or a client that works against one fails on the other.
SHARED_BROKER_SETTINGS = (
    "process.roles",
    "auto.create.topics.enable",
    "num.partitions",
    "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "share.coordinator.state.topic.replication.factor",
    "share.coordinator.state.topic.min.isr",
    "group.initial.rebalance.delay.ms",
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as the container sees it (strings; list or mapping form)."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in raw.items()}  # fmt: skip


def _dockerfile_env() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            found.update(re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", line))
    return found


def _worker_config(compose: dict[str, Any]) -> WorkerConfig:
    """The config the compose worker runs with: the image's worker.yaml, then the image's
    ENV, then the compose environment (later wins, as in Docker)."""
    env = {**_dockerfile_env(), **_env(compose["services"]["worker"])}
    raw = yaml.safe_load((ROOT / "deploy" / "worker.yaml").read_text(encoding="utf-8"))
    return WorkerConfig.from_mapping(raw, where="compose worker", env=env)


def _kafka_properties(env: dict[str, str]) -> dict[str, str]:
    """KAFKA_FOO_BAR -> foo.bar, as the apache/kafka image maps its environment."""
    skip = {"KAFKA_HEAP_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_OPTS", "KAFKA_LOG4J_OPTS"}
    return {
        k.removeprefix("KAFKA_").lower().replace("___", "-").replace("__", "@").replace("_", ".")
        .replace("@", "_"): v
        for k, v in env.items()
        if k.startswith("KAFKA_") and k not in skip
    }  # fmt: skip


def _local_broker_properties() -> dict[str, str]:
    text = (ROOT / "deploy" / "kafka" / "local-kafka.sh").read_text(encoding="utf-8")
    return dict(re.findall(r"^([a-z][a-z0-9.]+)=(\S+)$", text, flags=re.M))


def test_compose_file_is_valid_for_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose)
    ]

    assert errors == []


def test_schema_catches_a_misspelt_service_key(compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["enviroment"] = {"X": "1"}

    assert not jsonschema.Draft202012Validator(schema).is_valid(broken)


def test_worker_env_vars_are_real_overrides_and_load(compose: dict[str, Any]) -> None:
    names = {item.name for item in ENV_OVERRIDES}
    env = _env(compose["services"]["worker"])
    config = _worker_config(compose)

    assert set(env) <= names, set(env) - names
    assert config.topics.create_topics is True  # the broker does not auto-create
    assert str(config.artifact) == env["ECG_ARTIFACT"]


def test_worker_reaches_the_broker_on_its_internal_listener(compose: dict[str, Any]) -> None:
    kafka = _kafka_properties(_env(compose["services"]["kafka"]))
    config = _worker_config(compose)
    listeners = dict(item.split("://") for item in kafka["listeners"].split(","))
    advertised = dict(item.split("://") for item in kafka["advertised.listeners"].split(","))
    protocols = dict(item.split(":") for item in kafka["listener.security.protocol.map"].split(","))

    (server,) = config.kafka.bootstrap_servers
    host, port = server.split(":")
    internal = next(name for name, address in advertised.items() if address == server)
    assert host == "kafka" and "kafka" in compose["services"]
    assert listeners[internal] == f":{port}"
    assert kafka["inter.broker.listener.name"] == internal
    assert set(protocols) == set(listeners)
    assert protocols[internal] == config.kafka.client.get("security_protocol", "PLAINTEXT")
    voters = kafka["controller.quorum.voters"].split("@")[1]
    assert voters == f"kafka{listeners[kafka['controller.listener.names']]}"


def test_host_tools_reach_compose_and_local_broker_alike(compose: dict[str, Any]) -> None:
    kafka_env = _env(compose["services"]["kafka"])
    advertised = dict(
        item.split("://") for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    local = _local_broker_properties()

    script = (ROOT / "deploy" / "kafka" / "local-kafka.sh").read_text(encoding="utf-8")
    port = DEFAULT_BOOTSTRAP.split(":")[1]

    # ecg-replay, ecg-alerts and kcat on the host use one address for both brokers.
    assert advertised["HOST"] == DEFAULT_BOOTSTRAP
    assert f"{DEFAULT_BOOTSTRAP}:{port}" in compose["services"]["kafka"]["ports"]
    assert local["listeners"].startswith("PLAINTEXT://127.0.0.1:$port")
    assert f'port="${{KAFKA_PORT:-{port}}}"' in script


def test_compose_broker_matches_the_local_broker_settings(compose: dict[str, Any]) -> None:
    compose_props = _kafka_properties(_env(compose["services"]["kafka"]))
    local = _local_broker_properties()

    for key in SHARED_BROKER_SETTINGS:
        assert compose_props[key] == local[key], key


def test_topics_agree_with_the_client_tools(compose: dict[str, Any]) -> None:
    config = _worker_config(compose)

    assert config.topics.input == REPLAY_TOPIC
    assert config.topics.anomalies == ALERTS_TOPIC
    # Topics the worker creates get the broker's default partition count.
    broker = _env(compose["services"]["kafka"])
    assert config.topics.partitions == int(broker["KAFKA_NUM_PARTITIONS"])


def test_prometheus_scrapes_the_worker_metrics_port(compose: dict[str, Any]) -> None:
    config = _worker_config(compose)
    scrape = yaml.safe_load(
        (ROOT / "deploy" / "prometheus" / "prometheus.compose.yml").read_text(encoding="utf-8")
    )["scrape_configs"][0]
    dns = scrape["dns_sd_configs"][0]

    assert config.metrics.host == "0.0.0.0"
    assert compose["services"]["worker"]["expose"] == [str(config.metrics.port)]
    assert dns["port"] == config.metrics.port
    assert dns["names"] == ["worker"]
    assert scrape["job_name"] == "ecg-worker"


def test_every_bind_mount_and_config_path_exists(compose: dict[str, Any]) -> None:
    mounts: dict[str, str] = {}
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                mounts[target] = source
                if source != "./artifacts":  # written by `make train`, git-ignored
                    assert (ROOT / source).exists(), f"{name}: {source}"
    config = _worker_config(compose)
    artifact_mount = next(t for t in mounts if str(config.artifact).startswith(t + "/"))
    prometheus_config = next(
        a.split("=", 1)[1]
        for a in compose["services"]["prometheus"]["command"]
        if a.startswith("--config.file=")
    )

    assert mounts[artifact_mount] == "./artifacts"
    assert prometheus_config in mounts
