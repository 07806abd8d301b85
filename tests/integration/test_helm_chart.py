"""The Helm chart (deploy/helm/ecg-worker) rendered by the real ``helm`` binary, offline.

What a cluster operator would notice: the chart lints; every rendered core object is valid
for the Kubernetes API (schemas bundled by ``kubernetes-validate``); the ScaledObject,
TriggerAuthentication, ServiceMonitor and PrometheusRule are valid for their CRDs (vendored
in tests/data/schemas/crds); the ConfigMap is a config the worker itself accepts; the alert
rules are deploy/prometheus/alerts.yml and pass promtool; bad values fail at install time.
``helm`` comes from ``scripts/install-helm.sh`` (``make helm``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import orjson
import pytest
import yaml
from kafka import KafkaProducer

from tests.builders import synthetic_windows, write_artifact_dir
from tests.integration.services import (
    REPO_ROOT,
    KafkaBroker,
    TopicNames,
    free_port,
    unavailable,
)
from tests.integration.test_worker_stream import Worker
from tests.integration.worker_helpers import read_topic
from worker.service.config import WorkerConfig

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "deploy" / "helm" / "ecg-worker"
CRD_DIR = REPO_ROOT / "tests" / "data" / "schemas" / "crds"
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "ecg-worker.json"
# The oldest and the newest Kubernetes API the objects are checked against.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
CORE_KINDS = {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
CRD_FILES = {
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}

# Realistic installs besides the defaults (docs/deploy.md uses the first two).
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "production-sasl": {
        "image": {"repository": "registry.example.com/ecg-worker", "tag": "0.1.0"},
        "kafka": {
            "bootstrapServers": ["kafka-0.kafka:9093", "kafka-1.kafka:9093"],
            "inputPartitions": 12,
            "sasl": {"enabled": True, "existingSecret": "ecg-kafka-credentials"},
            "tls": {"caSecret": "ecg-kafka-ca"},
        },
        "config": {
            "kafka": {"client": {"request_timeout_ms": 40000}},
            "batching": {"max_batch_size": 512},
            "validation": {"input_schema": "builtin"},
        },
        "autoscaling": {"maxReplicas": 12, "lagThreshold": 5000},
        "serviceMonitor": {"labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"labels": {"release": "kube-prometheus-stack"}},
        "grafanaDashboard": {"folder": "ECG", "namespace": "monitoring"},
        "resources": {"requests": {"cpu": "500m", "memory": "384Mi"}, "limits": {"memory": "1Gi"}},
    },
    "fixed-replicas": {
        "autoscaling": {"enabled": False},
        "replicaCount": 3,
        "podDisruptionBudget": {"enabled": False},
        "serviceMonitor": {"enabled": False},
        "prometheusRule": {"enabled": False},
        "grafanaDashboard": {"enabled": False},
        "model": {
            "path": "ecg-2026-11",
            "volume": {
                "nfs": {"server": "nfs.example.com", "path": "/ecg-models", "readOnly": True}
            },
        },
    },
    "scale-to-zero": {"autoscaling": {"minReplicas": 0, "activationLagThreshold": 10}},
}


def _docs_values() -> dict[str, Any]:
    """The values file that docs/deploy.md tells a user to write (``# ecg-values.yaml``)."""
    text = (REPO_ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(# ecg-values\.yaml\n.*?)```", text, flags=re.S)
    assert block is not None, "docs/deploy.md lost its example values file"
    values: dict[str, Any] = yaml.safe_load(block.group(1))
    return values


SCENARIOS["docs-deploy-md"] = _docs_values()


def _helm_binary() -> str | None:
    found = shutil.which("helm")
    if found:
        return found
    for candidate in (
        REPO_ROOT / ".local" / "bin" / "helm",
        Path(os.environ.get("GOPATH", Path.home() / "go")) / "bin" / "helm",
    ):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@pytest.fixture(scope="module")
def helm() -> str:
    path = _helm_binary()
    if path is None:
        unavailable("helm not found; run 'make helm' (scripts/install-helm.sh)")
    return path


def run_helm(helm: str, *args: str, values: dict[str, Any] | None = None, tmp: Path) -> Any:
    command = [helm, *args]
    if values:
        path = tmp / "values.override.yaml"
        path.write_text(yaml.safe_dump(values), encoding="utf-8")
        command += ["-f", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def render(helm: str, values: dict[str, Any], tmp: Path) -> list[dict[str, Any]]:
    result = run_helm(
        helm, "template", "ecg", str(CHART), "--namespace", "ecg", values=values, tmp=tmp
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module", params=list(SCENARIOS))
def rendered(
    request: pytest.FixtureRequest, helm: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    name = request.param
    docs = render(helm, SCENARIOS[name], tmp_path_factory.mktemp(name))
    by_kind: dict[str, dict[str, Any]] = {}
    for doc in docs:
        key = doc["kind"] if doc["kind"] != "ConfigMap" else doc["metadata"]["name"]
        assert key not in by_kind, f"two {key} objects"
        by_kind[key] = doc
    yield name, by_kind


def _strict(schema: Any) -> Any:
    """A CRD's structural schema, but refusing unknown fields (the API server would silently
    prune them, so a misspelt field would vanish instead of failing)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def crd_validator(kind: str, api_version: str) -> jsonschema.Validator:
    crd = yaml.safe_load((CRD_DIR / CRD_FILES[kind]).read_text(encoding="utf-8"))
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    assert version in served, f"{kind} {api_version} is not served by the vendored CRD"
    schema = _strict(served[version]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def worker_config_of(objects: dict[str, dict[str, Any]], env: dict[str, str]) -> WorkerConfig:
    text = objects["ecg-ecg-worker"]["data"]["worker.yaml"]
    return WorkerConfig.from_mapping(yaml.safe_load(text), where="rendered worker.yaml", env=env)


# --------------------------------------------------------------------------- the chart itself


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_chart_lints_strictly(helm: str, scenario: str, tmp_path: Path) -> None:
    result = run_helm(
        helm, "lint", "--strict", str(CHART), values=SCENARIOS[scenario], tmp=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_objects_are_valid_kubernetes_objects(
    rendered: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    name, objects = rendered
    core = [o for o in objects.values() if o["kind"] in CORE_KINDS]
    assert {o["kind"] for o in core} >= {"ConfigMap", "Deployment", "Service"}, name
    for version in KUBE_VERSIONS:
        for obj in core:
            kubernetes_validate.validate(obj, version, strict=True)


def test_custom_resources_are_valid_for_their_crds(
    rendered: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    name, objects = rendered
    custom = [o for o in objects.values() if o["kind"] not in CORE_KINDS]
    for obj in custom:
        assert obj["kind"] in CRD_FILES, f"{name}: no CRD schema vendored for {obj['kind']}"
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in crd_validator(obj["kind"], obj["apiVersion"]).iter_errors(obj)
        ]
        assert errors == [], f"{name} {obj['kind']}: {errors}"
    values = _merged_values(name)
    wanted = {
        "PrometheusRule": values["prometheusRule"]["enabled"],
        "ServiceMonitor": values["serviceMonitor"]["enabled"],
        "ScaledObject": values["autoscaling"]["enabled"],
        "TriggerAuthentication": values["autoscaling"]["enabled"]
        and (values["kafka"]["sasl"]["enabled"] or bool(values["kafka"]["tls"]["caSecret"])),
    }
    assert {o["kind"] for o in custom} == {kind for kind, on in wanted.items() if on}


def test_a_misspelt_crd_field_is_caught() -> None:
    validator = crd_validator("ScaledObject", "keda.sh/v1alpha1")
    obj = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "maxReplicas": 3, "triggers": []},
    }
    assert any("maxReplicas" in e.message for e in validator.iter_errors(obj))


def test_rendered_config_loads_with_the_worker_loader_and_agrees_with_the_pod(
    rendered: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    name, objects = rendered
    values = _merged_values(name)
    config = worker_config_of(objects, env={})
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    service_port = objects["Service"]["spec"]["ports"][0]

    assert container["args"] == ["ecg-worker", "--config", f"{mounts['config']}/worker.yaml"]
    assert config.kafka.bootstrap_servers == tuple(values["kafka"]["bootstrapServers"])
    assert config.topics.input == values["kafka"]["topics"]["input"]
    assert config.artifact == Path(mounts["models"]) / values["model"]["path"]
    assert config.metrics.host == "0.0.0.0"
    assert config.metrics.port == container["ports"][0]["containerPort"]
    assert service_port["targetPort"] == container["ports"][0]["name"] == "metrics"
    assert "sasl_plain_password" not in objects["ecg-ecg-worker"]["data"]["worker.yaml"]


def test_sasl_credentials_come_from_the_secret_and_reach_the_client(
    helm: str, tmp_path: Path
) -> None:
    objects = {
        (d["kind"] if d["kind"] != "ConfigMap" else d["metadata"]["name"]): d
        for d in render(helm, SCENARIOS["production-sasl"], tmp_path)
    }
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    # What the kubelet would put in the environment from the Secret:
    config = worker_config_of(objects, {"ECG_SASL_USERNAME": "ecg", "ECG_SASL_PASSWORD": "s3cret"})
    auth = objects["TriggerAuthentication"]["spec"]["secretTargetRef"]

    assert env["ECG_SASL_USERNAME"] == {"name": "ecg-kafka-credentials", "key": "username"}
    assert env["ECG_SASL_PASSWORD"] == {"name": "ecg-kafka-credentials", "key": "password"}
    assert dict(config.kafka.client) == {
        "request_timeout_ms": 40000,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "ssl_cafile": "/etc/ecg-kafka-ca/ca.crt",
        "sasl_plain_username": "ecg",
        "sasl_plain_password": "s3cret",
    }
    assert {a["parameter"]: a["name"] for a in auth} == {
        "username": "ecg-kafka-credentials",
        "password": "ecg-kafka-credentials",
        "ca": "ecg-kafka-ca",
    }
    trigger = objects["ScaledObject"]["spec"]["triggers"][0]["metadata"]
    assert (trigger["sasl"], trigger["tls"]) == ("scram_sha512", "enable")


def test_pod_is_hardened(rendered: tuple[str, dict[str, dict[str, Any]]]) -> None:
    _, objects = rendered
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {p: container[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe")} == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
    }
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = container["startupProbe"]
    # The startup probe must outlast the worker's own start-up timeout (broker, topics).
    config = worker_config_of(objects, env={})
    assert startup["periodSeconds"] * startup["failureThreshold"] * 1000 > (
        config.startup.timeout_ms
    )
    assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"] != "tmp")
    # No mount inside another: the kubelet cannot create a mount point in a ConfigMap volume.
    paths = [m["mountPath"].rstrip("/") + "/" for m in container["volumeMounts"]]
    assert not [(a, b) for a in paths for b in paths if a != b and b.startswith(a)]


def test_keda_scales_the_worker_on_its_own_group_and_topic(
    rendered: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    name, objects = rendered
    deployment = objects["Deployment"]
    if "ScaledObject" not in objects:
        assert deployment["spec"]["replicas"] == _merged_values(name)["replicaCount"]
        return
    scaled = objects["ScaledObject"]["spec"]
    trigger = scaled["triggers"][0]
    config = worker_config_of(objects, env={})
    values = _merged_values(name)

    assert "replicas" not in deployment["spec"]  # KEDA's HPA owns the count
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["bootstrapServers"] == ",".join(config.kafka.bootstrap_servers)
    assert trigger["metadata"]["consumerGroup"] == config.kafka.group_id
    assert trigger["metadata"]["topic"] == config.topics.input
    assert trigger["metadata"]["offsetResetPolicy"] == config.kafka.auto_offset_reset
    assert scaled["maxReplicaCount"] <= values["kafka"]["inputPartitions"]
    assert int(trigger["metadata"]["lagThreshold"]) == values["autoscaling"]["lagThreshold"]


def test_service_monitor_scrapes_the_service_as_the_job_the_alerts_use(
    rendered: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    _, objects = rendered
    if "ServiceMonitor" not in objects:
        return
    monitor = objects["ServiceMonitor"]["spec"]
    service = objects["Service"]
    endpoint = monitor["endpoints"][0]
    alert_exprs = " ".join(
        r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
    )

    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["namespaceSelector"] == {"matchNames": ["ecg"]}
    job = next(r["replacement"] for r in endpoint["relabelings"] if r["targetLabel"] == "job")
    assert f'job="{job}"' in alert_exprs


def test_prometheus_rule_is_alerts_yml_and_passes_promtool(helm: str, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool not found; run 'make system' (Debian package 'prometheus')")
    rule = next(d for d in render(helm, {}, tmp_path) if d["kind"] == "PrometheusRule")
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rule["spec"]), encoding="utf-8")
    shutil.copy(ALERTS.with_name("alerts_test.yml"), tmp_path / "alerts_test.yml")

    assert rule["spec"] == yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run(
            [promtool, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_config_map_is_the_dashboard_for_the_grafana_sidecar(
    helm: str, tmp_path: Path
) -> None:
    docs = render(helm, SCENARIOS["production-sasl"], tmp_path)
    dashboard = next(d for d in docs if d["metadata"]["name"].endswith("-dashboard"))

    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "ECG"}
    assert json.loads(dashboard["data"]["ecg-worker.json"]) == json.loads(DASHBOARD.read_text())


def test_chart_files_are_links_to_the_single_sources() -> None:
    assert (CHART / "files" / "alerts.yml").resolve() == ALERTS.resolve()
    assert (CHART / "files" / "ecg-worker.json").resolve() == DASHBOARD.resolve()


def test_a_new_model_path_rolls_the_pods(helm: str, tmp_path: Path) -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = next(d for d in render(helm, values, tmp_path) if d["kind"] == "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"model": {"path": "ecg-2026-12"}})


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"config": {"batching": {"max_batch": 3}}}, "additional properties 'max_batch'"),
        ({"replicas": 3}, "additional properties 'replicas'"),
        ({"metricsPort": "9108"}, "/metricsPort"),
        ({"kafka": {"bootstrapServers": ["kafka"]}}, "/kafka/bootstrapServers/0"),
        ({"autoscaling": {"maxReplicas": 8}}, "exceeds kafka.inputPartitions (4)"),
        ({"autoscaling": {"minReplicas": 5}}, "minReplicas (5) exceeds"),
        ({"autoscaling": {"enabled": False}, "replicaCount": 9}, "replicaCount (9) exceeds"),
        ({"kafka": {"sasl": {"enabled": True}}}, "needs kafka.sasl.existingSecret"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
        ({"config": {"kafka": {"client": {"sasl_plain_password": "x"}}}}, "sasl_plain_password"),
        ({"kafka": {"sasl": {"mechanism": "GSSAPI"}}}, "/kafka/sasl/mechanism"),
    ],
)
def test_bad_values_fail_before_anything_is_installed(
    helm: str, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    result = run_helm(helm, "template", "ecg", str(CHART), values=values, tmp=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


# --------------------------------------------------------------------------- helpers


def _merged_values(scenario: str) -> dict[str, Any]:
    merged = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))

    def merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value

    merge(merged, SCENARIOS[scenario])
    return merged


# --------------------------------------------------------------------------- a real worker


def test_rendered_config_runs_a_real_worker_and_a_new_model_path_rolls_out(
    helm: str, kafka_broker: KafkaBroker, topic_names: TopicNames, tmp_path: Path
) -> None:
    """docs/deploy.md "Roll out a new model", as far as this machine goes: the ConfigMap the
    chart renders runs a real ``ecg-worker`` on the real broker; re-rendered with a new
    ``model.path`` it runs the new model. (The pod, the volume and the rollout itself need a
    cluster.)"""
    models = tmp_path / "models"  # stands in for the volume mounted at model.mountPath
    versions = {"ecg-v1": "1111111111111111", "ecg-v2": "2222222222222222"}
    for path, version in versions.items():
        write_artifact_dir(models / path, seed=7)
        meta_path = models / path / "artifact.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta_path.write_text(json.dumps({**meta, "model_version": version}), encoding="utf-8")
    values = {
        "kafka": {
            "bootstrapServers": [kafka_broker.bootstrap_servers],
            "groupId": f"helm-{topic_names.input}",
            "topics": {
                "input": topic_names.input,
                "scores": topic_names.scores,
                "anomalies": topic_names.anomalies,
                "deadLetter": topic_names.dead_letter,
            },
        },
        "model": {"mountPath": str(models)},
        "metricsPort": free_port(),
    }
    producer_windows = synthetic_windows(20, seed=3)
    seen = 0
    for step, path in enumerate(versions):
        values["model"]["path"] = path
        objects = {
            (d["kind"] if d["kind"] != "ConfigMap" else d["metadata"]["name"]): d
            for d in render(helm, values, tmp_path)
        }
        text = objects["ecg-ecg-worker"]["data"]["worker.yaml"]
        config = yaml.safe_load(text)
        config["metrics"]["host"] = "127.0.0.1"  # the pod binds 0.0.0.0; this test, loopback
        config_path = tmp_path / f"worker-{step}.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        worker = Worker(config_path, tmp_path / f"worker-{step}.log", values["metricsPort"])
        worker.start()
        try:
            worker.wait_ready()
            producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
            for i, row in enumerate(producer_windows):
                doc = {"id": f"{path}-{i}", "values": row.tolist()}
                producer.send(topic_names.input, orjson.dumps(doc))
            producer.flush(timeout=30)
            producer.close(timeout=5)
            seen += len(producer_windows)
            scores = [
                orjson.loads(r.value)
                for r in read_topic(kafka_broker.bootstrap_servers, topic_names.scores, seen)
            ]
            mine = [s for s in scores if s["id"].startswith(path)]
            assert len(mine) == len(producer_windows)
            assert {s["model_version"] for s in mine} == {versions[path]}
            assert worker.terminate() == 0
        finally:
            worker.kill()
