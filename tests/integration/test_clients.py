"""ecg-replay and ecg-alerts against the session's real Kafka broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from clients import alerts
from clients.alerts import follow, open_follower
from tests.integration.services import KafkaBroker, TopicNames

pytestmark = pytest.mark.integration

N = 140
BIN = Path(sys.executable).parent


def _read(bootstrap: str, topic: str, partitions: int, expected: int) -> list:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    try:
        records = []
        for record in consumer:
            records.append(record)
            if len(records) >= expected:
                break
        return records
    finally:
        consumer.close()


def _write_csv(path: Path, rows: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    values = rng.normal(size=(rows, N))
    lines = []
    for i, row in enumerate(values):
        fields = [repr(float(v)) for v in row]
        fields.append(str(i % 4 // 2))  # labels 0, 0, 1, 1, 0, 0, ...
        lines.append(",".join(fields))
    path.write_text("\n".join(lines) + "\n")
    return values


def test_replay_sends_csv_windows_keyed_by_device(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    topic = f"test-replay-{tmp_path.name[-20:]}".replace("_", "-")
    kafka_broker.create_topics([topic], partitions=2)
    csv_path = tmp_path / "beats.csv"
    values = _write_csv(csv_path, 12)

    result = subprocess.run(
        [
            str(BIN / "ecg-replay"),
            "--bootstrap-servers",
            kafka_broker.bootstrap_servers,
            "--topic",
            topic,
            "--input",
            str(csv_path),
            "--devices",
            "3",
            "--rate",
            "200",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"sent 12 windows to '{topic}' at {kafka_broker.bootstrap_servers}"
    )
    assert "all acknowledged" in result.stdout
    assert "keyed by 3 devices (device-00..device-02)" in result.stdout

    records = _read(kafka_broker.bootstrap_servers, topic, partitions=2, expected=12)
    assert len(records) == 12
    bodies = {orjson.loads(r.value)["id"]: (r, orjson.loads(r.value)) for r in records}
    assert sorted(bodies) == [f"beats-{line:04d}" for line in range(1, 13)]
    for line in range(1, 13):
        record, body = bodies[f"beats-{line:04d}"]
        np.testing.assert_array_equal(np.asarray(body["values"]), values[line - 1])
        assert record.key == f"device-{(line - 1) % 3:02d}".encode()
        assert record.timestamp == body["sent_at_ms"]
        assert body["label"] == (line - 1) % 4 // 2
    # Paced at 200/s: 12 windows span at least 11 intervals of 5 ms.
    stamps = sorted(r.timestamp for r in records)
    assert stamps[-1] - stamps[0] >= 50


def test_replay_count_beyond_the_file_repeats_with_unique_ids_as_arrays(
    kafka_broker: KafkaBroker, topic_names: TopicNames, tmp_path: Path
) -> None:
    csv_path = tmp_path / "two.csv"
    values = _write_csv(csv_path, 2)
    code = _replay_main(
        kafka_broker,
        [
            "--topic",
            topic_names.input,
            "--input",
            str(csv_path),
            "--count",
            "5",
            "--format",
            "array",
        ],
    )
    assert code == 0
    records = _read(kafka_broker.bootstrap_servers, topic_names.input, 1, expected=5)
    assert len(records) == 5
    for i, record in enumerate(records):
        np.testing.assert_array_equal(np.asarray(orjson.loads(record.value)), values[i % 2])


def _replay_main(kafka_broker: KafkaBroker, argv: list[str]) -> int:
    from clients import replay

    return replay.main(["--bootstrap-servers", kafka_broker.bootstrap_servers, *argv])


def test_replay_with_a_bad_csv_names_the_line_and_sends_nothing(
    kafka_broker: KafkaBroker, topic_names: TopicNames, tmp_path: Path, capsys
) -> None:
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text(",".join(["0.5"] * N) + "\n" + ",".join(["0.5"] * 70) + "\n")
    code = _replay_main(kafka_broker, ["--topic", topic_names.input, "--input", str(csv_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"ecg-replay: error: {csv_path}: line 2: 70 columns, expected 140" in err
    assert _read(kafka_broker.bootstrap_servers, topic_names.input, 1, expected=1) == []


def _alert(i: int) -> bytes:
    return orjson.dumps(
        {
            "id": f"test-{i:04d}",
            "error": 0.05 + i / 100,
            "anomaly": True,
            "threshold": 0.04,
            "model_version": "0123456789abcdef",
            "source": {"topic": "in", "partition": 0, "offset": i, "timestamp_ms": 1},
            "scored_at_ms": 1764252000051 + i,
            "fields": {},
            "segments": [{"start": 88, "end": 104, "mean_error": 0.112}],
        }
    )


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value).get(timeout=10)
    finally:
        producer.close()


def test_alerts_prints_a_line_per_alert_and_survives_garbage(
    kafka_broker: KafkaBroker, topic_names: TopicNames, capsys
) -> None:
    topic = topic_names.anomalies
    _produce(
        kafka_broker.bootstrap_servers,
        topic,
        [(b"device-01", _alert(1)), (b"device-02", b"\x00garbage"), (None, _alert(2))],
    )
    code = alerts.main(
        [
            "--bootstrap-servers",
            kafka_broker.bootstrap_servers,
            "--topic",
            topic,
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout-s",
            "15",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0] == (
        "2025-11-27 14:00:00.052Z  device-01  test-0001  error 0.0600 >= threshold 0.0400 "
        "(1.50x)  abnormal: samples 88-104 err 0.112"
    )
    assert lines[1].startswith(f"!! {topic}[0]@1: not JSON")
    assert lines[2].startswith("2025-11-27 14:00:00.053Z  (no device)  test-0002  error 0.0700")
    assert "ecg-alerts: 2 alerts, 1 unreadable records" in captured.err


def test_alerts_shows_a_replayed_alert_once_unless_asked(
    kafka_broker: KafkaBroker, topic_names: TopicNames, capsys
) -> None:
    topic = topic_names.anomalies
    # Window 1's alert comes twice, as after a worker's restart (scored again later).
    replay = orjson.loads(_alert(1))
    replay["scored_at_ms"] += 5000
    records = [(b"d1", _alert(1)), (b"d2", _alert(2)), (b"d1", orjson.dumps(replay))]
    _produce(kafka_broker.bootstrap_servers, topic, records)
    argv = ["--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic", topic]
    argv += ["--from-beginning", "--max-messages", "3", "--timeout-s", "15"]

    assert alerts.main(argv) == 0
    captured = capsys.readouterr()
    assert [line.split()[3] for line in captured.out.splitlines()] == ["test-0001", "test-0002"]
    assert "2 alerts, 0 unreadable records, 1 repeats of alerts already shown" in captured.err

    assert alerts.main([*argv, "--show-repeats"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3
    assert "ecg-alerts: 3 alerts, 0 unreadable records\n" in captured.err


def test_alerts_follows_only_new_alerts_by_default(
    kafka_broker: KafkaBroker, topic_names: TopicNames
) -> None:
    import io

    topic = topic_names.anomalies
    _produce(kafka_broker.bootstrap_servers, topic, [(b"old", _alert(1))])
    consumer = open_follower(kafka_broker.bootstrap_servers, topic, False, idle_timeout_s=5)
    try:
        _produce(kafka_broker.bootstrap_servers, topic, [(b"new", _alert(2))])
        out = io.StringIO()
        tally = follow(consumer, out)  # stops after 5 s without records
    finally:
        consumer.close()
    assert tally.alerts == 1
    assert "  new  test-0002  " in out.getvalue()
    assert "test-0001" not in out.getvalue()


def test_alerts_on_a_missing_topic_is_a_clear_error(kafka_broker: KafkaBroker, capsys) -> None:
    code = alerts.main(
        ["--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic", "no-such-topic-x"]
    )
    assert code == 1  # a missing topic is a Kafka failure, as in ecg-worker
    err = capsys.readouterr().err
    bootstrap = kafka_broker.bootstrap_servers
    assert f"ecg-alerts: error: topic 'no-such-topic-x' does not exist on {bootstrap}" in err
