"""docker-compose.yml, the Dockerfile, the Kubernetes sketch and the Grafana provisioning hang
together: services present, mounts point at files that exist, settings the worker accepts.
(No Docker engine here: these are static checks; the images themselves are not built.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.service.config import ENV_OVERRIDES, WorkerConfig

ROOT = Path(__file__).resolve().parents[2]
ENV_NAMES = {item.name for item in ENV_OVERRIDES}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Bind mounts of a compose service as ``{container path: host path}``."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            found[target] = source
    return found


def test_compose_has_the_four_services_on_loopback_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]

    assert set(services) == {"kafka", "worker", "prometheus", "grafana"}
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["ports"] == ["127.0.0.1:9092:9092"]
    assert services["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]
    assert services["grafana"]["ports"] == ["127.0.0.1:3000:3000"]
    assert services["worker"]["expose"] == ["9108"]


def test_compose_bind_mounts_point_at_existing_files(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for target, source in _mounts(service).items():
            if source == "./artifacts":  # written by `make train`, git-ignored
                continue
            assert (ROOT / source).exists(), f"{name}: {source} (for {target}) does not exist"


def test_compose_kafka_is_single_node_kraft(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]

    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR",
    ):
        assert env[key] == 1, key
    internal = next(
        a for a in env["KAFKA_ADVERTISED_LISTENERS"].split(",") if a.startswith("INTERNAL://")
    )
    worker_bootstrap = compose["services"]["worker"]["environment"]["ECG_BOOTSTRAP_SERVERS"]
    assert internal == f"INTERNAL://{worker_bootstrap}"


def test_compose_worker_uses_real_overrides_and_the_dockerfile(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    dockerfile_env = set(re.findall(r"\b(ECG_[A-Z_]+)=", dockerfile))

    assert worker["build"] == "."
    assert set(worker["environment"]) <= ENV_NAMES
    assert dockerfile_env <= ENV_NAMES
    assert dockerfile.startswith("#") and "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    assert 'CMD ["ecg-worker", "--config", "/app/deploy/worker.yaml"]' in dockerfile
    assert "COPY deploy ./deploy" in dockerfile
    assert (ROOT / "deploy" / "worker.yaml").is_file()


def test_compose_prometheus_and_grafana_load_the_project_files(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    grafana = compose["services"]["grafana"]
    config_arg = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = config_arg.split("=", 1)[1]
    mounts = _mounts(prometheus)
    config = yaml.safe_load((ROOT / mounts[config_path]).read_text(encoding="utf-8"))
    rules_dir = Path(config_path).parent
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yml").read_text()
    )

    for rule_file in config["rule_files"]:
        assert str(rules_dir / rule_file) in mounts, f"{rule_file} is not mounted"
    assert _mounts(grafana)[provider["providers"][0]["options"]["path"]] == (
        "./deploy/grafana/dashboards"
    )
    assert "/etc/grafana/provisioning/datasources" in _mounts(grafana)


def test_compose_prometheus_config_matches_the_main_one() -> None:
    main = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.compose.yml").read_text())
    strip = ("static_configs", "dns_sd_configs")

    assert compose["global"] == main["global"]
    assert compose["rule_files"] == main["rule_files"]
    assert [
        {k: v for k, v in job.items() if k not in strip} for job in compose["scrape_configs"]
    ] == [{k: v for k, v in job.items() if k not in strip} for job in main["scrape_configs"]]
    assert main["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:9108"]}]


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]

    assert [(d["type"], d["url"]) for d in datasources] == [
        ("prometheus", "http://prometheus:9090")
    ]


def test_k8s_sketch_is_a_valid_worker_deployment() -> None:
    docs = {
        d["kind"]: d
        for d in yaml.safe_load_all((ROOT / "deploy/k8s/worker.yaml").read_text(encoding="utf-8"))
    }
    config = WorkerConfig.from_mapping(
        yaml.safe_load(docs["ConfigMap"]["data"]["worker.yaml"]), env={}
    )
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    config_mount = next(m for m in container["volumeMounts"] if m["name"] == "config")

    assert set(docs) == {"ConfigMap", "Deployment", "Service", "NetworkPolicy"}
    assert config.metrics.port == port == 9108
    assert config.metrics.host == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["args"][-1] == f"{config_mount['mountPath']}/worker.yaml"
    assert docs["Service"]["spec"]["ports"][0]["port"] == 9108
    assert (
        docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    )
    # Defect 7 of issue 10: the grace period must outlast the flush bound, and a slow
    # start must not be killed by liveness.
    assert pod["terminationGracePeriodSeconds"] * 1000 > config.kafka.flush_bound_ms
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] * 1000 > config.startup.timeout_ms


# --------------------------------------------------------------------------- hardening (issue 11)

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def _k8s_docs() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((ROOT / "deploy/k8s/worker.yaml").read_text(encoding="utf-8")))


def _lock_names(path: Path) -> set[str]:
    return {
        m.group(1).lower().replace("_", "-")
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", path.read_text(encoding="utf-8"), re.M)
    }


def test_dockerfile_base_image_is_pinned_by_digest_and_runs_as_a_numeric_user() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    images = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]

    assert images and all(image == "${PYTHON_IMAGE}" for image in images)
    assert DIGEST.search(args["PYTHON_IMAGE"]), args["PYTHON_IMAGE"]
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert ":latest" not in text


def test_dockerfile_installs_only_hash_locked_dependencies() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    installs = re.findall(r"pip (?:install|wheel) ([^\n]+)", text)

    for lock in ("requirements/worker.lock", "requirements/build.lock"):
        assert f"--require-hashes --only-binary=:all: -r {lock}" in text
    # Everything else pip touches is our own wheel, without dependencies.
    for command in installs:
        assert "--require-hashes" in command or "--no-deps" in command, command


@pytest.mark.parametrize("lock", ["requirements/worker.lock", "requirements/build.lock"])
def test_every_locked_requirement_is_pinned_with_hashes(lock: str) -> None:
    text = (ROOT / lock).read_text(encoding="utf-8")
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text.split("\n", 1)[1])
    requirements = [b for b in blocks if re.match(r"[A-Za-z0-9_.-]+==", b)]

    assert requirements
    for block in requirements:
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), block.splitlines()[0]


def test_worker_lock_covers_every_runtime_dependency() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = {
        re.match(r"[A-Za-z0-9_.-]+", dep).group(0).lower().replace("_", "-")  # type: ignore[union-attr]
        for dep in project["dependencies"]
    }
    assert wanted <= _lock_names(ROOT / "requirements/worker.lock")


def test_k8s_pod_is_hardened_and_pinned() -> None:
    docs = {d["kind"]: d for d in _k8s_docs()}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    image = container["image"]
    assert ":" in image and not image.endswith(":latest"), image


def test_k8s_secret_comes_from_a_secret_volume_never_the_configmap() -> None:
    docs = {d["kind"]: d for d in _k8s_docs()}
    raw = yaml.safe_load(docs["ConfigMap"]["data"]["worker.yaml"])
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    secret_volumes = {v["name"] for v in pod["volumes"] if "secret" in v}
    secret_mounts = [
        m["mountPath"] for m in container["volumeMounts"] if m["name"] in secret_volumes
    ]

    assert not any("password" in key for key in raw["kafka"]["client"])
    assert raw["kafka"]["client"]["security_protocol"] == "SASL_SSL"
    assert any(env["ECG_SASL_PASSWORD_FILE"].startswith(f"{m}/") for m in secret_mounts)
    assert set(env) <= ENV_NAMES


def test_k8s_network_policy_admits_only_prometheus_to_the_metrics_port() -> None:
    docs = {d["kind"]: d for d in _k8s_docs()}
    policy = docs["NetworkPolicy"]["spec"]
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    (rule,) = policy["ingress"]
    (source,) = rule["from"]

    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9108}]
    assert source["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert "namespaceSelector" in source


def test_compose_services_have_healthchecks_and_restart_policies(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service.get("restart") in ("on-failure", "unless-stopped", "always"), name
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image!r}"
    worker = compose["services"]["worker"]
    # An unhealthy worker is ended by its health check and restarted: needs an init as PID 1.
    assert worker["init"] is True
    assert "deploy/docker/healthcheck.py" in " ".join(worker["healthcheck"]["test"])
    assert worker["read_only"] is True and worker["cap_drop"] == ["ALL"]


def test_compose_grafana_has_no_default_password(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    source = compose["secrets"]["grafana_admin_password"]["file"]

    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert grafana["secrets"] == ["grafana_admin_password"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD_FILE:\?[^}]+\}", source)  # required
