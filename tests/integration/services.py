"""Real services for integration tests: a Kafka broker and a Prometheus server on loopback.

Each test session starts its own broker (free ports, its own data directory) through
``deploy/kafka/local-kafka.sh``, so it never touches a developer's broker or another
session's. Prometheus runs from the Debian ``prometheus`` binary with a config the test
writes. ``unavailable(reason)`` decides what a missing service means: under ``CI=true`` the
test fails with the reason (and the log tail), elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_KAFKA = REPO_ROOT / "deploy" / "kafka" / "local-kafka.sh"
PROMETHEUS_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
WORKER_JOB = "ecg-worker"
KAFKA_START_TIMEOUT_S = 90
PROMETHEUS_START_TIMEOUT_S = 30


class ServiceError(RuntimeError):
    """A real service could not be started or answered wrongly; the message has the log tail."""


def in_ci() -> bool:
    """True when running under CI (``CI=true``), where a missing service is a failure."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> NoReturn:
    """Fail the test under CI, skip it elsewhere; ``reason`` should say what to install/fix."""
    if in_ci():
        pytest.fail(f"CI=true and a required service is unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


# ----------------------------------------------------------------------------- Kafka


@dataclass(frozen=True)
class TopicNames:
    """One test's uuid-named topics, named after the worker's ``topics.*`` config keys."""

    input: str
    scores: str
    anomalies: str
    dead_letter: str

    def all(self) -> list[str]:
        """The four names, input first."""
        return [self.input, self.scores, self.anomalies, self.dead_letter]

    def as_config(self) -> dict[str, str]:
        """The ``topics:`` section of a worker config using these names."""
        return {
            "input": self.input,
            "scores": self.scores,
            "anomalies": self.anomalies,
            "dead_letter": self.dead_letter,
        }


@dataclass
class KafkaBroker:
    """A broker started by ``local-kafka.sh`` on ``127.0.0.1:port``, data in ``data_dir``."""

    port: int
    controller_port: int
    data_dir: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)
    # Set when started with ``sasl_ssl=True``: the SASL_SSL (SCRAM-SHA-512) port and users.
    sasl_ssl_port: int | None = None
    users: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def sasl_bootstrap_servers(self) -> str:
        """``"127.0.0.1:SASL_SSL_PORT"`` of a secured broker."""
        assert self.sasl_ssl_port is not None, "broker started without sasl_ssl=True"
        return f"127.0.0.1:{self.sasl_ssl_port}"

    @property
    def ca_file(self) -> Path:
        """The throwaway CA that signed the broker certificate (PEM)."""
        return self.data_dir / "security" / "ca.pem"

    def client_settings(self, user: str, password: str | None = None) -> dict[str, Any]:
        """kafka-python settings to reach the SASL_SSL listener as ``user`` (with its own
        password unless ``password`` is given)."""
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": user,
            "sasl_plain_password": self.users[user] if password is None else password,
            "ssl_cafile": str(self.ca_file),
        }

    def admin_settings(self) -> dict[str, Any]:
        """How the tests administer this broker: plaintext, or SASL_SSL as the super user."""
        if self.sasl_ssl_port is None:
            return {"bootstrap_servers": self.bootstrap_servers}
        return {"bootstrap_servers": self.sasl_bootstrap_servers, **self.client_settings("admin")}

    def grant(self, user: str, operation: str, resource_type: str, name: str) -> None:
        """An ALLOW ACL for ``User:user`` (e.g. ``"READ", "TOPIC", "ecg.anomalies"``; a
        GROUP name may be ``"*"``), created as the super user."""
        from kafka.admin import (
            ACL,
            ACLOperation,
            ACLPermissionType,
            KafkaAdminClient,
            ResourcePattern,
            ResourceType,
        )

        admin = KafkaAdminClient(client_id="ecg-tests-admin", **self.admin_settings())
        try:
            acl = ACL(
                principal=f"User:{user}",
                host="*",
                operation=ACLOperation[operation],
                permission_type=ACLPermissionType.ALLOW,
                resource_pattern=ResourcePattern(ResourceType[resource_type], name),
            )
            result = admin.create_acls([acl])
            if result["failed"]:
                raise ServiceError(f"cannot create ACL {acl}: {result['failed']}")
        finally:
            admin.close()

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"``, for kafka-python, kcat and the worker config."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        """The broker's log4j log."""
        return self.data_dir / "kafka.log"

    def script(self, command: str, timeout_s: float = KAFKA_START_TIMEOUT_S):
        """Run ``local-kafka.sh <command>`` for this broker; returns the CompletedProcess."""
        return subprocess.run(
            ["bash", str(LOCAL_KAFKA), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the broker log (for failure messages)."""
        return _tail(self.log_file, lines)

    def create_topics(
        self, names: Iterable[str], partitions: int = 1, timeout_ms: int = 30_000
    ) -> None:
        """Create ``names`` with ``partitions`` each (replication 1) and wait until every
        partition has a leader, so producers and consumers can use them at once."""
        from kafka.admin import KafkaAdminClient

        wanted = list(names)
        admin = KafkaAdminClient(client_id="ecg-tests-admin", **self.admin_settings())
        try:
            admin.create_topics(
                {name: {"num_partitions": partitions, "replication_factor": 1} for name in wanted},
                timeout_ms=timeout_ms,
                wait_for_metadata=True,
            )
        finally:
            admin.close()

    def topic_set(self, partitions: int = 1) -> TopicNames:
        """Create a fresh, uuid-named input/scores/anomalies/dead-letter set; the input topic
        gets ``partitions`` partitions, the outputs one each."""
        tag = uuid.uuid4().hex[:12]
        topics = TopicNames(
            input=f"test-{tag}.windows",
            scores=f"test-{tag}.scores",
            anomalies=f"test-{tag}.anomalies",
            dead_letter=f"test-{tag}.windows.dlq",
        )
        self.create_topics([topics.input], partitions=partitions)
        self.create_topics([topics.scores, topics.anomalies, topics.dead_letter])
        return topics

    def stop(self) -> None:
        """Stop the broker (graceful, bounded by the script's stop timeout)."""
        self.script("stop", timeout_s=60)


def start_kafka(
    data_dir: Path, attempts: int = 2, sasl_ssl: bool = False, users: Iterable[str] = ()
) -> KafkaBroker:
    """Start a broker on free loopback ports with its data in ``data_dir``.

    With ``sasl_ssl`` it also listens with SASL_SSL (``local-kafka.sh --sasl-ssl-port``) and
    enforces ACLs; ``users`` (besides ``admin``, the super user) get random passwords.
    Retries on fresh ports when another process grabbed a port in between. Raises
    ``ServiceError`` (with the script output and log tail) when it does not come up."""
    if shutil.which("java") is None:
        raise ServiceError("java not found; run 'make system' (installs a JRE and maven)")
    last = ""
    for attempt in range(attempts):
        port = free_port()
        controller_port = free_port()
        directory = data_dir / f"attempt-{attempt}"
        env = {
            **os.environ,
            "KAFKA_PORT": str(port),
            "KAFKA_CONTROLLER_PORT": str(controller_port),
            "KAFKA_DATA_DIR": str(directory),
            "KAFKA_START_TIMEOUT_S": "60",
        }
        broker = KafkaBroker(port, controller_port, directory, env)
        if sasl_ssl:
            broker.sasl_ssl_port = free_port()
            broker.users = {name: uuid.uuid4().hex for name in ("admin", *users)}
            directory.mkdir(parents=True, exist_ok=True)
            users_file = directory / "scram-users"
            users_file.write_text(
                "".join(f"{name} {password}\n" for name, password in broker.users.items()),
                encoding="utf-8",
            )
            users_file.chmod(0o600)
            env["KAFKA_SASL_SSL_PORT"] = str(broker.sasl_ssl_port)
            env["KAFKA_SCRAM_USERS_FILE"] = str(users_file)
        try:
            result = broker.script("start")
        except subprocess.TimeoutExpired:
            broker.stop()
            raise ServiceError(f"local-kafka.sh start hung\n{broker.log_tail()}") from None
        if result.returncode == 0:
            return broker
        broker.stop()
        last = f"local-kafka.sh start exited {result.returncode}:\n{result.stderr[-4000:]}"
        if "already in use" not in result.stderr and "is taken" not in result.stderr:
            break
    raise ServiceError(last)


# ----------------------------------------------------------------------------- kcat


def kcat_path() -> str | None:
    """Path of the ``kcat`` binary (Debian package ``kcat``), or None."""
    return shutil.which("kcat") or shutil.which("kafkacat")


def kcat_scram_env(work_dir: Path) -> dict[str, str]:
    """Environment that lets Debian's kcat authenticate with SCRAM to Kafka 4.

    Debian 12's librdkafka 2.0.2 computes the SCRAM client proof over a doubled nonce, which
    Kafka 4 rejects ("invalid credentials"; fixed in librdkafka 2.6.1, edenhill/kcat#462).
    kcat keeps its ABI-stable librdkafka.so.1 interface, so it runs unchanged on the newer
    librdkafka that the ``confluent-kafka`` wheel (a dev dependency) bundles."""
    try:
        import confluent_kafka
    except ImportError as exc:
        raise ServiceError(f"confluent-kafka (dev extra) is needed for kcat: {exc}") from exc
    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka-*.so.1")) if libs.is_dir() else []
    if not found:
        raise ServiceError(f"no bundled librdkafka in {libs}")
    work_dir.mkdir(parents=True, exist_ok=True)
    link = work_dir / "librdkafka.so.1"
    if not link.exists():
        link.symlink_to(found[0])
    return {**os.environ, "LD_LIBRARY_PATH": str(work_dir)}


# ----------------------------------------------------------------------------- Prometheus


def prometheus_binary() -> str | None:
    """Path of the ``prometheus`` binary (Debian package ``prometheus``), or None."""
    return shutil.which("prometheus")


def project_prometheus_config(
    targets: Iterable[str], scrape_interval_s: float = 1.0, with_rules: bool = True
) -> dict[str, Any]:
    """``deploy/prometheus/prometheus.yml`` with the ``ecg-worker`` job pointed at
    ``targets`` (``"127.0.0.1:PORT"``), a short scrape/evaluation interval and absolute
    rule-file paths, ready for ``PrometheusServer.start``."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    interval = f"{int(scrape_interval_s * 1000)}ms"
    config.setdefault("global", {}).update(
        {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval}
    )
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == WORKER_JOB]
    if len(jobs) != 1:
        raise ServiceError(f"{PROMETHEUS_CONFIG}: expected one scrape job {WORKER_JOB!r}")
    jobs[0]["static_configs"] = [{"targets": list(targets)}]
    for job in config["scrape_configs"]:
        job.pop("scrape_interval", None)
        job.pop("scrape_timeout", None)
    if with_rules:
        config["rule_files"] = [
            str(PROMETHEUS_CONFIG.parent / name) for name in config.get("rule_files", [])
        ]
    else:
        config.pop("rule_files", None)
    return config


@dataclass
class PrometheusServer:
    """A real Prometheus on ``127.0.0.1:port`` with its config and TSDB in ``work_dir``."""

    port: int
    work_dir: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        """Prometheus's own log (stderr)."""
        return self.work_dir / "prometheus.log"

    @classmethod
    def start(
        cls, config: Mapping[str, Any], work_dir: Path, binary: str | None = None
    ) -> PrometheusServer:
        """Write ``config`` to ``work_dir/prometheus.yml``, start Prometheus on a free port
        and wait until ``/-/ready`` answers. Raises ``ServiceError`` with the log tail."""
        binary = binary or prometheus_binary()
        if binary is None:
            raise ServiceError("prometheus not found; run 'make system' (Debian 'prometheus')")
        work_dir.mkdir(parents=True, exist_ok=True)
        config_file = work_dir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
        port = free_port()
        log = (work_dir / "prometheus.log").open("wb")
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={work_dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=work_dir,
        )
        log.close()
        server = cls(port, work_dir, process)
        deadline = time.monotonic() + PROMETHEUS_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise ServiceError(
                    f"prometheus exited with {process.returncode}:\n{server.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return server
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise ServiceError(
                    f"prometheus not ready within {PROMETHEUS_START_TIMEOUT_S}s:\n"
                    f"{server.log_tail()}"
                )
            time.sleep(0.2)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the Prometheus log."""
        return _tail(self.log_file, lines)

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return ``data``; raises ``ServiceError`` on an API
        error (for a query: the PromQL error message, e.g. a parse error)."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise ServiceError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns the result list (``[{"metric": {...}, "value": [t, "v"]}]``
        for a vector). Raises ``ServiceError`` when the expression is invalid."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it returns nothing."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise ServiceError(f"{expr!r} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def wait_for(self, expr: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Poll ``expr`` until it returns a non-empty result; raises ``ServiceError`` with the
        target health on timeout. Use e.g. ``up{job="ecg-worker"} == 1``."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                targets = self.api("targets")["activeTargets"]
                health = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
                raise ServiceError(f"{expr!r} still empty after {timeout_s}s; targets: {health}")
            time.sleep(0.25)

    def stop(self) -> None:
        """Terminate Prometheus and wait for it (kill after 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


# ----------------------------------------------------------------------------- Grafana


GRAFANA_DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "ecg-worker.json"


def dashboard_queries(path: Path = GRAFANA_DASHBOARD) -> list[tuple[str, str]]:
    """Every ``(panel title, targets[].expr)`` in the Grafana dashboard, rows included."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    found = []
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((panel.get("title", ""), target["expr"]))
    return found


def expand_grafana_expr(
    expr: str, job: str = WORKER_JOB, instance: str = ".*", rate_interval: str = "1m"
) -> str:
    """Substitute the dashboard's variables so Prometheus itself can run ``expr``."""
    values = {
        "job": job,
        "instance": instance,
        "__rate_interval": rate_interval,
        "__interval": rate_interval,
        "__range": rate_interval,
    }

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise ValueError(f"unknown dashboard variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, expr)


# ----------------------------------------------------------------------------- contracts


DESIGN_DOC = REPO_ROOT / "docs" / "design.md"


def design_metrics(path: Path = DESIGN_DOC) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The metrics table of docs/design.md: ``{name: (type, labels)}``; the type is the first
    word of the type column (``counter``, ``gauge``, ``histogram``)."""
    metrics = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`(ecg_\w+)`\s*\|([^|]*)\|([^|]*)\|", line)
        if match:
            kind = match.group(2).split()[0]
            labels = tuple(re.findall(r"`(\w+)`", match.group(3)))
            metrics[match.group(1)] = (kind, labels)
    return metrics
