"""deploy/kafka/local-kafka.sh against the real broker it starts."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from tests.integration.services import KafkaBroker, ServiceError, free_port, start_kafka

pytestmark = pytest.mark.integration


def _read_all(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes | None, bytes]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    try:
        records = []
        for record in consumer:
            records.append((record.key, record.value))
            if len(records) >= expected:
                break
        consumer.commit()
        return records
    finally:
        consumer.close()


def test_start_again_is_ok_and_status_reports_running(kafka_broker: KafkaBroker) -> None:
    pid_before = (kafka_broker.data_dir / "kafka.pid").read_text()

    again = kafka_broker.script("start")
    status = kafka_broker.script("status")

    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == kafka_broker.bootstrap_servers
    assert "already running" in again.stderr
    assert (kafka_broker.data_dir / "kafka.pid").read_text() == pid_before
    assert status.returncode == 0, status.stdout
    assert kafka_broker.bootstrap_servers in status.stdout


def test_broker_listens_on_loopback_only(kafka_broker: KafkaBroker) -> None:
    properties = (kafka_broker.data_dir / "server.properties").read_text()

    assert f"PLAINTEXT://127.0.0.1:{kafka_broker.port}" in properties
    assert "auto.create.topics.enable=false" in properties
    with socket.create_connection(("127.0.0.1", kafka_broker.port), timeout=2):
        pass


def test_kafka_python_round_trip_with_keys(kafka_broker: KafkaBroker) -> None:
    topic = f"test-{uuid.uuid4().hex[:12]}"
    kafka_broker.create_topics([topic], partitions=2)
    sent = [(f"device-{i % 3}".encode(), f'{{"id": {i}}}'.encode()) for i in range(20)]

    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    for key, value in sent:
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=10)
    producer.close()
    received = _read_all(kafka_broker.bootstrap_servers, topic, len(sent))

    assert sorted(received) == sorted(sent)


def test_kcat_reads_what_kafka_python_wrote_and_back(kafka_broker: KafkaBroker, kcat: str) -> None:
    topic = f"test-{uuid.uuid4().hex[:12]}"
    kafka_broker.create_topics([topic])
    bootstrap = kafka_broker.bootstrap_servers

    produced = subprocess.run(
        [kcat, "-b", bootstrap, "-P", "-t", topic, "-K", "\t"],
        input="ecg-7\t[0.5, 1.5]\necg-8\t[2.5]\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    producer.send(topic, key=b"ecg-9", value=b"from-python").get(timeout=10)
    producer.close()
    consumed = subprocess.run(
        [kcat, "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k=%s\n"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert produced.returncode == 0, produced.stderr
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == ["ecg-7=[0.5, 1.5]", "ecg-8=[2.5]", "ecg-9=from-python"]
    assert _read_all(bootstrap, topic, 3)[:2] == [(b"ecg-7", b"[0.5, 1.5]"), (b"ecg-8", b"[2.5]")]


def test_a_misspelt_topic_is_not_created(kafka_broker: KafkaBroker, kcat: str) -> None:
    topic = f"typo-{uuid.uuid4().hex[:12]}"

    result = subprocess.run(
        [
            kcat,
            "-b",
            kafka_broker.bootstrap_servers,
            "-P",
            "-t",
            topic,
            "-X",
            "message.timeout.ms=3000",
        ],
        input="x\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    # The broker never creates it, so the delivery times out and kcat says so.
    assert result.returncode == 1 and "Delivery failed" in result.stderr, result
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        assert topic not in consumer.topics()
    finally:
        consumer.close()


def test_start_refuses_a_port_that_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = KafkaBroker(port, free_port(), tmp_path, {})
        broker.env.update(
            {
                **os.environ,
                "KAFKA_PORT": str(port),
                "KAFKA_CONTROLLER_PORT": str(broker.controller_port),
                "KAFKA_DATA_DIR": str(tmp_path),
            }
        )
        result = broker.script("start")

    assert result.returncode == 1
    assert f"port {port} is taken" in result.stderr


@pytest.mark.slow
def test_stop_status_logs_and_restart_keeps_topics(tmp_path: Path) -> None:
    try:
        broker = start_kafka(tmp_path)
    except ServiceError as exc:
        pytest.fail(f"second broker did not start: {exc}")
    try:
        topic = f"test-{uuid.uuid4().hex[:12]}"
        broker.create_topics([topic])
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        producer.send(topic, value=b"kept").get(timeout=10)
        producer.close()

        logs = broker.script("logs")
        stopped = broker.script("stop")
        pid_file_left = (broker.data_dir / "kafka.pid").exists()
        status_after_stop = broker.script("status")
        stop_again = broker.script("stop")
        restarted = broker.script("start")
        received = _read_all(broker.bootstrap_servers, topic, 1)
        cleaned = broker.script("clean")  # while running: stops it first
        data_left = broker.data_dir.exists()
        status_after_clean = broker.script("status")
    finally:
        broker.stop()

    assert logs.returncode == 0 and "Kafka Server started" in logs.stdout
    assert stopped.returncode == 0, stopped.stderr
    assert not pid_file_left
    assert status_after_stop.returncode == 1
    assert "not running" in status_after_stop.stdout
    assert stop_again.returncode == 0
    assert restarted.returncode == 0, restarted.stderr + broker.log_tail()
    assert received == [(None, b"kept")]
    assert cleaned.returncode == 0, cleaned.stderr
    assert not data_left
    assert status_after_clean.returncode == 1


def test_clean_deletes_only_a_directory_the_script_made(tmp_path: Path) -> None:
    mine = tmp_path / "not-a-broker"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep me")
    broker = KafkaBroker(free_port(), free_port(), mine, {})
    broker.env.update(
        {
            **os.environ,
            "KAFKA_PORT": str(broker.port),
            "KAFKA_CONTROLLER_PORT": str(broker.controller_port),
            "KAFKA_DATA_DIR": str(mine),
        }
    )
    refused = broker.script("clean")
    assert refused.returncode == 1
    assert f"{mine} holds no local-kafka broker" in refused.stderr
    assert (mine / "precious.txt").read_text() == "keep me"
    broker.env["KAFKA_DATA_DIR"] = str(tmp_path / "never-made")
    assert broker.script("clean").returncode == 0  # nothing to clean is fine
