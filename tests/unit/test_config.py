"""WorkerConfig: the documented default file, strict keys, types, cross-checks, env overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.core.errors import ConfigError
from worker.service.config import ENV_OVERRIDES, WorkerConfig, env_help

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FILE = ROOT / "deploy" / "worker.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "worker.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_documented_default_file_loads_with_the_documented_values() -> None:
    config = WorkerConfig.from_yaml(DEFAULT_FILE, env={})
    assert config.kafka.bootstrap_servers == ("127.0.0.1:9092",)
    assert config.kafka.auto_offset_reset == "earliest"
    assert config.topics.names() == (
        "ecg.windows",
        "ecg.scores",
        "ecg.anomalies",
        "ecg.windows.dlq",
    )
    assert config.artifact == Path("artifacts/ecg")
    assert config.metrics.port == 9108
    assert config.topics.create_topics is False


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = WorkerConfig.from_yaml(write(tmp_path, ""), env={})
    assert config == WorkerConfig()


def test_config_is_frozen(tmp_path: Path) -> None:
    config = WorkerConfig.from_yaml(write(tmp_path, ""), env={})
    with pytest.raises(AttributeError):
        config.batching.max_batch_size = 3  # type: ignore[misc]


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "batching:\n  max_batch: 10\n")
    with pytest.raises(
        ConfigError, match=r"unknown key 'batching.max_batch'.*did you mean 'max_batch_size'"
    ):
        WorkerConfig.from_yaml(path, env={})


def test_unknown_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'topic'.*did you mean 'topics'"):
        WorkerConfig.from_yaml(write(tmp_path, "topic:\n  input: x\n"), env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("batching:\n  max_batch_size: ten\n", "batching.max_batch_size must be an integer"),
        ("batching:\n  max_batch_size: true\n", "batching.max_batch_size must be an integer"),
        ("topics:\n  create_topics: 'yes'\n", "topics.create_topics must be true or false"),
        ("topics:\n  input: 5\n", "topics.input must be a non-empty string"),
        ("kafka:\n  bootstrap_servers: []\n", "kafka.bootstrap_servers must be"),
        ("metrics: 3\n", "metrics must be a mapping"),
        ("- a\n- b\n", "top level must be a mapping"),
    ],
)
def test_wrong_types_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WorkerConfig.from_yaml(write(tmp_path, text), env={})


def test_invalid_yaml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        WorkerConfig.from_yaml(write(tmp_path, "kafka: [\n"), env={})
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read config"):
        WorkerConfig.from_yaml(tmp_path / "nope.yaml", env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "topics:\n  scores: ecg.windows\n",
            "four distinct names",
        ),
        (
            "batching:\n  max_wait_ms: 40000\n",
            r"max_wait_ms \(40000\) must be less than the Kafka request_timeout_ms \(30000\)",
        ),
        (
            "batching:\n  max_wait_ms: 600\nkafka:\n  client:\n    request_timeout_ms: 500\n",
            r"must be less than the Kafka request_timeout_ms \(500\)",
        ),
        (
            "limits:\n  max_record_bytes: 2000000\n",
            r"must fit in the producer's max_request_size \(1048576\)",
        ),
        ("batching:\n  max_batch_size: 0\n", "max_batch_size must be >= 1"),
        (
            "metrics:\n  stall_timeout_ms: 120000\n",
            r"stall_timeout_ms \(120000\) must exceed the flush bound \(125000 ms",
        ),
        (
            "metrics:\n  stall_timeout_ms: 200000\nkafka:\n  client:\n"
            "    delivery_timeout_ms: 300000\n",
            r"must exceed the flush bound \(305000 ms",
        ),
        ("limits:\n  max_batch_bytes: 1000\n", "max_batch_bytes .* must be at least"),
        ("limits:\n  max_field_depth: 0\n", "max_field_depth must be >= 1"),
        ("limits:\n  max_field_bytes: 100000\n", "max_field_bytes .* must not exceed"),
        ("drift:\n  min_samples: 5000\n", "drift.min_samples must be between"),
        ("kafka:\n  auto_offset_reset: newest\n", "auto_offset_reset must be one of"),
        ("metrics:\n  port: 70000\n", "metrics.port must be 0..65535"),
        (
            "delivery:\n  commit_interval_ms: -1\n",
            r"delivery\.commit_interval_ms must be >= 0 \(0: commit after every batch\), got -1",
        ),
    ],
)
def test_related_values_are_cross_checked(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WorkerConfig.from_yaml(write(tmp_path, text), env={})


def test_client_passthrough_accepts_kafka_python_security_settings(tmp_path: Path) -> None:
    text = (
        "kafka:\n  client:\n    security_protocol: SASL_SSL\n    sasl_mechanism: PLAIN\n"
        "    sasl_plain_username: u\n    sasl_plain_password: p\n    ssl_cafile: /ca.pem\n"
        "    max_poll_interval_ms: 60000\n    linger_ms: 10\n"
    )
    config = WorkerConfig.from_yaml(write(tmp_path, text), env={})
    consumer = config.kafka.consumer_settings()
    producer = config.kafka.producer_settings()
    assert consumer["security_protocol"] == producer["security_protocol"] == "SASL_SSL"
    assert consumer["max_poll_interval_ms"] == 60000 and "max_poll_interval_ms" not in producer
    assert producer["linger_ms"] == 10 and "linger_ms" not in consumer


def test_client_passthrough_rejects_unknown_and_reserved_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  client:\n    security_protocl: SSL\n")
    with pytest.raises(
        ConfigError, match=r"'kafka\.client\.security_protocl'.*did you mean 'security_protocol'"
    ):
        WorkerConfig.from_yaml(path, env={})
    path = write(tmp_path, "kafka:\n  client:\n    enable_auto_commit: true\n")
    with pytest.raises(ConfigError, match="enable_auto_commit is set by the worker itself"):
        WorkerConfig.from_yaml(path, env={})
    path = write(tmp_path, "kafka:\n  client:\n    acks: 1\n")
    with pytest.raises(ConfigError, match="acks is set by the worker itself"):
        WorkerConfig.from_yaml(path, env={})
    # Each poll asks for what fits in the batch: the setting would do nothing.
    path = write(tmp_path, "kafka:\n  client:\n    max_poll_records: 100\n")
    with pytest.raises(ConfigError, match="max_poll_records is set by the worker itself"):
        WorkerConfig.from_yaml(path, env={})


def test_env_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  group_id: from-file\nmetrics:\n  port: 9108\n")
    env = {
        "ECG_BOOTSTRAP_SERVERS": "b1:9092, b2:9093",
        "ECG_GROUP_ID": "from-env",
        "ECG_METRICS_PORT": "0",
        "ECG_ARTIFACT": "/models/ecg",
        "ECG_INPUT_TOPIC": "in",
        "ECG_CREATE_TOPICS": "true",
    }
    config = WorkerConfig.from_yaml(path, env=env)
    assert config.kafka.bootstrap_servers == ("b1:9092", "b2:9093")
    assert config.kafka.group_id == "from-env"
    assert config.metrics.port == 0
    assert config.artifact == Path("/models/ecg")
    assert config.topics.input == "in"
    assert config.topics.create_topics is True


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ECG_METRICS_PORT='abc'"):
        WorkerConfig.from_yaml(write(tmp_path, ""), env={"ECG_METRICS_PORT": "abc"})
    with pytest.raises(ConfigError, match="ECG_CREATE_TOPICS"):
        WorkerConfig.from_yaml(write(tmp_path, ""), env={"ECG_CREATE_TOPICS": "maybe"})


def test_env_help_lists_every_override() -> None:
    text = env_help()
    for item in ENV_OVERRIDES:
        assert item.name in text


def test_limits_have_env_overrides(tmp_path: Path) -> None:
    env = {"ECG_MAX_FIELD_DEPTH": "4", "ECG_MAX_BATCH_BYTES": "1048576"}
    config = WorkerConfig.from_yaml(write(tmp_path, ""), env=env)
    assert config.limits.max_field_depth == 4
    assert config.limits.max_batch_bytes == 1048576
    assert "ECG_MAX_FIELD_KEYS" in env_help()


def test_static_membership_and_delivery_mode_from_file_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  group_instance_id: pod-1\ndelivery:\n  mode: exactly_once\n")
    config = WorkerConfig.from_yaml(path, env={})
    assert config.kafka.group_instance_id == "pod-1"
    assert config.delivery.mode == "exactly_once"
    assert WorkerConfig().kafka.group_instance_id is None
    assert WorkerConfig().delivery.mode == "at_least_once"

    env = {"ECG_GROUP_INSTANCE_ID": "pod-2", "ECG_DELIVERY_MODE": "at_least_once"}
    overridden = WorkerConfig.from_yaml(path, env=env)
    assert overridden.kafka.group_instance_id == "pod-2"
    assert overridden.delivery.mode == "at_least_once"
    assert "ECG_GROUP_INSTANCE_ID" in env_help() and "ECG_DELIVERY_MODE" in env_help()


def test_commit_interval_from_file_and_environment(tmp_path: Path) -> None:
    assert WorkerConfig().delivery.commit_interval_ms == 1000
    path = write(tmp_path, "delivery:\n  commit_interval_ms: 0\n")
    assert WorkerConfig.from_yaml(path, env={}).delivery.commit_interval_ms == 0
    env = {"ECG_COMMIT_INTERVAL_MS": "250"}
    assert WorkerConfig.from_yaml(path, env=env).delivery.commit_interval_ms == 250
    assert "ECG_COMMIT_INTERVAL_MS" in env_help()
    with pytest.raises(ConfigError, match="ECG_COMMIT_INTERVAL_MS"):
        WorkerConfig.from_yaml(path, env={"ECG_COMMIT_INTERVAL_MS": "soon"})


def test_bad_delivery_mode_and_instance_id_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"delivery\.mode must be one of"):
        WorkerConfig.from_yaml(write(tmp_path, "delivery:\n  mode: exactly-once\n"), env={})
    with pytest.raises(ConfigError, match=r"kafka\.group_instance_id"):
        WorkerConfig.from_yaml(write(tmp_path, "kafka:\n  group_instance_id: ''\n"), env={})
    with pytest.raises(ConfigError, match="cannot be passed"):
        WorkerConfig.from_yaml(
            write(tmp_path, "kafka:\n  client:\n    group_instance_id: x\n"), env={}
        )
    with pytest.raises(ConfigError, match="idempotent"):
        WorkerConfig.from_yaml(
            write(
                tmp_path,
                "delivery:\n  mode: exactly_once\n"
                "kafka:\n  client:\n    enable_idempotence: false\n",
            ),
            env={},
        )
