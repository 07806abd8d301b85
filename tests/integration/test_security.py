"""The product against a broker that requires SASL_SSL (SCRAM-SHA-512 over TLS) and ACLs.

One broker per module (``local-kafka.sh --sasl-ssl-port``), users ``ecg-worker``,
``ecg-tools``, ``ecg-reader`` and ``outsider`` with random passwords, ACLs granting each only
what its role needs. The worker gets its password from a file (as from a Kubernetes Secret),
logs at DEBUG, and nothing it prints, serves or publishes contains a password.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, TopicAuthorizationFailedError

from tests.builders import synthetic_windows, write_artifact_dir
from tests.integration.processes import CLEANUP_GRACE_S, run_bounded
from tests.integration.services import (
    KafkaBroker,
    ServiceError,
    TopicNames,
    free_port,
    kcat_path,
    kcat_scram_env,
    start_kafka,
    unavailable,
)
from tests.integration.worker_helpers import client_settings, http_get

pytestmark = pytest.mark.integration

USERS = ("ecg-worker", "ecg-tools", "ecg-reader", "outsider")
WINDOWS = 24
# kafka-python gives up bootstrapping after the tools' 10 s; the worker after its start-up
# timeout (5 s here). "Fast" means within these plus process start-up.
FAIL_FAST_S = 25.0
BIN = Path(sys.executable).parent
DEMO_TIMEOUT_S = 280


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    try:
        started = start_kafka(tmp_path_factory.mktemp("kafka-sasl"), sasl_ssl=True, users=USERS)
    except ServiceError as exc:
        unavailable(f"local Kafka broker with SASL_SSL did not start: {exc}")
    try:
        yield started
    finally:
        started.stop()


@dataclass
class Setup:
    """The secured broker, this module's topics and ACLs, and files the tools read."""

    broker: KafkaBroker
    topics: TopicNames
    group: str
    work: Path

    def kafka_config(self, user: str, password: str | None = None, **changes: Any) -> Path:
        """A ``--kafka-config`` file for ``user``; the password sits in a separate file."""
        settings = self.broker.client_settings(user, password)
        secret = self.work / f"{user}-{len(list(self.work.iterdir()))}.password"
        secret.write_text(settings.pop("sasl_plain_password") + "\n", encoding="utf-8")
        secret.chmod(0o600)
        client = {**settings, "sasl_plain_password_file": str(secret), **changes}
        client = {k: v for k, v in client.items() if v is not None}
        path = self.work / f"{user}-{len(list(self.work.iterdir()))}.yaml"
        bootstrap = changes.pop("bootstrap", None) or self.broker.sasl_bootstrap_servers
        path.write_text(
            yaml.safe_dump({"kafka": {"bootstrap_servers": bootstrap, "client": client}}),
            encoding="utf-8",
        )
        return path

    def passwords(self) -> list[str]:
        return list(self.broker.users.values())


@pytest.fixture(scope="module")
def setup(broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return secured_setup(broker, tmp_path_factory.mktemp("security"))


@pytest.fixture
def own_setup(broker: KafkaBroker, tmp_path: Path) -> Setup:
    """Topics, group and ACLs of one test alone (for a test run once per Kafka backend)."""
    work = tmp_path / "security"
    work.mkdir()
    return secured_setup(broker, work)


def secured_setup(broker: KafkaBroker, work: Path) -> Setup:
    """Fresh topics with this module's ACLs: the worker reads the input with its group and
    writes the outputs, the tools write the input, the reader reads the outputs."""
    try:
        topics = broker.topic_set()
        group = f"{topics.input}.group"
        for topic in (topics.scores, topics.anomalies, topics.dead_letter):
            broker.grant("ecg-worker", "WRITE", "TOPIC", topic)
        broker.grant("ecg-worker", "READ", "TOPIC", topics.input)
        broker.grant("ecg-worker", "READ", "GROUP", group)
        broker.grant("ecg-tools", "WRITE", "TOPIC", topics.input)
        for topic in (topics.scores, topics.anomalies, topics.dead_letter):
            broker.grant("ecg-reader", "READ", "TOPIC", topic)
    except (KafkaError, ServiceError) as exc:
        unavailable(f"cannot create topics or ACLs on the SASL_SSL broker: {exc}")
    return Setup(broker, topics, group, work)


def run_tool(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60):
    """Run a console script of this installation; returns (CompletedProcess, seconds)."""
    started = time.monotonic()
    # In a session of its own: an ecg-demo cut short must not leave its worker running.
    result = run_bounded([str(BIN / name), *args], timeout, env={**os.environ, **(env or {})})
    return result, time.monotonic() - started


def worker_config(
    setup: Setup,
    artifact: Path,
    metrics_port: int,
    library: str = "kafka-python",
    startup_timeout_ms: int = 20000,
) -> Path:
    """The worker's config as a ConfigMap would hold it: no password, only user and CA."""
    path = setup.work / "worker.yaml"
    settings = setup.broker.client_settings("ecg-worker")
    del settings["sasl_plain_password"]
    config = {
        "kafka": {
            "bootstrap_servers": setup.broker.sasl_bootstrap_servers,
            "group_id": setup.group,
            "library": library,
            "client": client_settings(library, settings),
        },
        "topics": setup.topics.as_config(),
        "batching": {"max_batch_size": 8, "max_wait_ms": 20},
        "artifact": str(artifact),
        "metrics": {"host": "127.0.0.1", "port": metrics_port},
        "startup": {"timeout_ms": startup_timeout_ms},
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def wait_ready(port: int, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"worker exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if http_get(port, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"worker not ready in {timeout_s}s:\n{log.read_text()[-3000:]}")


def read_all(broker: KafkaBroker, user: str, topic: str, expected: int) -> list[Any]:
    consumer = KafkaConsumer(
        bootstrap_servers=broker.sasl_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        **broker.client_settings(user),
    )
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        records: list[Any] = []
        deadline = time.monotonic() + 30
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def test_worker_and_tools_work_over_sasl_ssl_and_no_password_leaks(
    own_setup: Setup, tmp_path: Path, kafka_library: str
) -> None:
    setup = own_setup
    broker, topics = setup.broker, setup.topics
    artifact = tmp_path / "artifact"
    write_artifact_dir(artifact)
    port = free_port()
    config = worker_config(setup, artifact, port, kafka_library)
    password_file = setup.work / "worker-secret"
    password_file.write_text(broker.users["ecg-worker"] + "\n", encoding="utf-8")
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [str(BIN / "ecg-worker"), "--config", str(config), "--log-level", "DEBUG"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ECG_SASL_PASSWORD_FILE": str(password_file)},
        )
    try:
        wait_ready(port, worker, log, timeout_s=60)

        # ecg-replay as ecg-tools, from a CSV; then one record that is not JSON.
        csv = tmp_path / "windows.csv"
        np.savetxt(csv, synthetic_windows(WINDOWS, seed=3), delimiter=",", fmt="%.5f")
        tools = setup.kafka_config("ecg-tools")
        replayed, _ = run_tool(
            "ecg-replay", "--kafka-config", str(tools), "--topic", topics.input, "--input", str(csv)
        )
        assert replayed.returncode == 0, replayed.stderr
        producer = KafkaProducer(
            bootstrap_servers=broker.sasl_bootstrap_servers,
            **broker.client_settings("ecg-tools"),
        )
        producer.send(topics.input, key=b"device-x", value=b"not json at all").get(timeout=30)
        producer.close()

        scores = read_all(broker, "ecg-reader", topics.scores, WINDOWS)
        dead = read_all(broker, "ecg-reader", topics.dead_letter, 1)
        assert len(scores) == WINDOWS
        assert len(dead) == 1
        flagged = sum(b'"anomaly":true' in r.value for r in scores)
        assert flagged > 0

        # ecg-alerts as ecg-reader, with the settings from the environment only.
        reader_env = {
            "ECG_BOOTSTRAP_SERVERS": broker.sasl_bootstrap_servers,
            "ECG_SECURITY_PROTOCOL": "SASL_SSL",
            "ECG_SASL_MECHANISM": "SCRAM-SHA-512",
            "ECG_SASL_USERNAME": "ecg-reader",
            "ECG_SASL_PASSWORD": broker.users["ecg-reader"],
            "ECG_SSL_CAFILE": str(broker.ca_file),
        }
        alerts, _ = run_tool(
            "ecg-alerts",
            "--topic",
            topics.anomalies,
            "--from-beginning",
            "--max-messages",
            str(flagged),
            "--timeout-s",
            "15",
            env=reader_env,
        )
        assert alerts.returncode == 0, alerts.stderr
        assert len(alerts.stdout.splitlines()) == flagged
        assert f"{flagged} alerts, 0 unreadable" in alerts.stderr

        status, metrics = http_get(port, "/metrics")
        assert status == 200
        assert f"ecg_windows_scored_total {float(WINDOWS)}" in metrics
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
    assert code == 0, log.read_text()[-3000:]

    # Not one password anywhere: the DEBUG log (kafka-python dumps its config there), the
    # tools' output, /metrics, the dead letter with its headers, every --help.
    text = log.read_text(encoding="utf-8", errors="replace")
    if kafka_library == "kafka-python":  # librdkafka never dumps its configuration
        assert "'sasl_plain_password': '***'" in text  # the config dump happened, masked
    helps = [run_tool(tool, "--help")[0].stdout for tool in ("ecg-worker", "ecg-alerts")]
    dead_letter = dead[0].value + b"".join(v for _, v in dead[0].headers)
    outputs = [text, replayed.stdout + replayed.stderr, alerts.stdout + alerts.stderr, metrics]
    for password in setup.passwords():
        for output in [*outputs, *helps]:
            assert password not in output
        assert password.encode() not in dead_letter


def test_kcat_with_the_same_settings_reads_what_the_worker_wrote(
    setup: Setup, tmp_path: Path
) -> None:
    kcat = kcat_path()
    if kcat is None:
        unavailable("kcat not found; run 'make system' (Debian package 'kcat')")
    broker = setup.broker
    producer = KafkaProducer(
        bootstrap_servers=broker.sasl_bootstrap_servers, **broker.client_settings("admin")
    )
    producer.send(setup.topics.scores, key=b"device-k", value=b'{"id":"kcat-1"}').get(timeout=30)
    producer.close()
    settings = [
        "-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=SCRAM-SHA-512",
        "-X", "sasl.username=ecg-reader", "-X", f"sasl.password={broker.users['ecg-reader']}",
        "-X", f"ssl.ca.location={broker.ca_file}",
    ]  # fmt: skip
    result = subprocess.run(
        [kcat, "-C", "-b", broker.sasl_bootstrap_servers, "-t", setup.topics.scores,
         "-o", "beginning", "-e", "-f", "%k %s\n", *settings],
        capture_output=True, text=True, timeout=60, check=False,
        env=kcat_scram_env(tmp_path / "librdkafka"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert 'device-k {"id":"kcat-1"}' in result.stdout.splitlines()


def other_ca(tmp_path: Path) -> Path:
    """A CA that did not sign the broker's certificate."""
    key, cert = tmp_path / "other.key", tmp_path / "other.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=someone-else", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", "authentication failed"),
        ("unknown user", "authentication failed"),
        ("plaintext client on the TLS port", "expects TLS"),
        ("untrusted certificate", "certificate is not trusted"),
    ],
)
def test_bad_credentials_fail_fast_with_a_clear_message(
    setup: Setup, tmp_path: Path, case: str, expected: str
) -> None:
    if case == "wrong password":
        config = setup.kafka_config("ecg-reader", password="not-the-password")
    elif case == "unknown user":
        setup.broker.users.setdefault("nobody", "whatever-password")
        config = setup.kafka_config("nobody")
    elif case == "plaintext client on the TLS port":
        config = setup.work / "plaintext.yaml"
        config.write_text(
            yaml.safe_dump({"kafka": {"bootstrap_servers": setup.broker.sasl_bootstrap_servers}}),
            encoding="utf-8",
        )
    else:
        config = setup.kafka_config("ecg-reader", ssl_cafile=str(other_ca(tmp_path)))

    result, seconds = run_tool(
        "ecg-alerts", "--kafka-config", str(config), "--topic", setup.topics.anomalies
    )

    assert result.returncode == 1  # infrastructure (worker.cli_support.runner.ExitCode)
    assert seconds < FAIL_FAST_S
    assert expected in result.stderr, result.stderr
    assert "ecg-alerts: error: cannot reach Kafka at" in result.stderr
    for password in setup.passwords():
        assert password not in result.stderr + result.stdout


def test_the_worker_with_a_wrong_password_exits_1_naming_the_cause(
    setup: Setup, tmp_path: Path, kafka_library: str
) -> None:
    artifact = tmp_path / "artifact"
    write_artifact_dir(artifact)
    # Both clients retry a failed login until the start-up budget is spent: a short one
    # keeps this test short; the exit and the message are the same with the default 20 s.
    budget_s = 5
    config = worker_config(setup, artifact, 0, kafka_library, startup_timeout_ms=budget_s * 1000)
    result, seconds = run_tool(
        "ecg-worker",
        "--config",
        str(config),
        env={"ECG_SASL_PASSWORD": "wrong-password-123", "ECG_METRICS_PORT": "0"},
    )
    assert result.returncode == 1
    # The budget is kept: it gives up after it, not after the default 20 s (10 s for the
    # interpreter's start and the exit on a busy machine).
    assert seconds < budget_s + 10
    assert "authentication failed" in result.stderr
    assert "wrong-password-123" not in result.stdout + result.stderr


def test_without_credentials_or_acls_the_anomalies_cannot_be_read(setup: Setup) -> None:
    # No credentials: the plaintext listener's principal is User:ANONYMOUS, with no ACLs.
    anonymous = KafkaConsumer(
        bootstrap_servers=setup.broker.bootstrap_servers, group_id=None, enable_auto_commit=False
    )
    tp = TopicPartition(setup.topics.anomalies, 0)
    try:
        assert setup.topics.anomalies not in anonymous.topics()
        anonymous.assign([tp])
        with pytest.raises(TopicAuthorizationFailedError):
            anonymous.end_offsets([tp])
        anonymous.seek_to_beginning(tp)
        assert anonymous.poll(timeout_ms=2000) == {}
    finally:
        anonymous.close()

    # Authenticated, but no ACL on the topic: ecg-alerts refuses with a clear line.
    outsider = setup.kafka_config("outsider")
    result, seconds = run_tool(
        "ecg-alerts", "--kafka-config", str(outsider), "--topic", setup.topics.anomalies
    )
    assert result.returncode == 1  # infrastructure (worker.cli_support.runner.ExitCode)
    assert seconds < FAIL_FAST_S
    assert "not allowed to see it (ACLs)" in result.stderr


@pytest.mark.timeout(DEMO_TIMEOUT_S + CLEANUP_GRACE_S + 30)
def test_demo_runs_end_to_end_on_the_secured_broker(setup: Setup, tmp_path: Path) -> None:
    # The demo creates and deletes its own topics: it runs as the super user here.
    artifact = tmp_path / "artifact"
    write_artifact_dir(artifact)
    password = tmp_path / "admin-password"
    password.write_text(setup.broker.users["admin"], encoding="utf-8")
    config = tmp_path / "demo-worker.yaml"
    client = setup.broker.client_settings("admin")
    del client["sasl_plain_password"]
    client["sasl_plain_password_file"] = str(password)
    config.write_text(yaml.safe_dump({"kafka": {"client": client}}), encoding="utf-8")

    result, _ = run_tool(
        "ecg-demo",
        "--bootstrap-servers",
        setup.broker.sasl_bootstrap_servers,
        "--worker-config",
        str(config),
        "--artifact",
        str(artifact),
        "--run-dir",
        str(tmp_path / "runs"),
        timeout=DEMO_TIMEOUT_S,
    )

    assert re.search(r"scored\s+1000 of 1000 ids", result.stdout), result.stdout + result.stderr
    assert "metrics        consumed 1000, scored 1000" in result.stdout
    # 0, or 3 when the demo's own end-to-end checks find a difference (a synthetic artifact
    # here); never 1 (Kafka failure) or 2 (configuration).
    assert result.returncode in (0, 3), result.stderr
    assert "error:" not in result.stderr
    for secret in setup.passwords():
        assert secret not in result.stdout + result.stderr
