"""WorkerConfig's validation through its public loader, as tables: YAML text (plus ECG_*
environment overrides) in, a frozen config or a ConfigError out.

Every bound is tested on both sides (the last accepted value and the first refused one), and
every error must start with the file it came from and name the offending key, which is what
an operator reads when the worker refuses to start.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from worker.core.errors import ConfigError
from worker.service.config import ENV_OVERRIDES, WorkerConfig, env_help

# A batch wait of 10 s next to a 60 s request timeout and a zero delivery timeout (flush
# bound 5 s): lets metrics.stall_timeout_ms be tested against max_wait_ms alone.
SHORT_FLUSH = (
    "kafka:\n  client:\n    request_timeout_ms: 60000\n    delivery_timeout_ms: 0\n"
    "batching:\n  max_wait_ms: 10000\n"
)


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> WorkerConfig:
    path = tmp_path / "worker.yaml"
    path.write_text(text, encoding="utf-8")
    return WorkerConfig.from_yaml(path, env=env or {})


def refused(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    """The error after '<file>: ' (every config error starts with the file it is about)."""
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text, env)
    message = str(raised.value)
    prefix = f"{tmp_path / 'worker.yaml'}: "
    assert message.startswith(prefix), message
    return message[len(prefix) :]


def get(config: WorkerConfig, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


# --------------------------------------------------------------------------- bounds

# (YAML, the key, the last accepted value of the key): each bound on its edge.
ACCEPTED_EDGES = [
    ("reload:\n  poll_interval_ms: 100\n", "reload.poll_interval_ms", 100),
    ("topics:\n  partitions: 1\n  replication_factor: 1\n", "topics.partitions", 1),
    ("batching:\n  max_batch_size: 1\n", "batching.max_batch_size", 1),
    ("batching:\n  max_wait_ms: 0\n", "batching.max_wait_ms", 0),
    ("batching:\n  max_wait_ms: 29999\n", "batching.max_wait_ms", 29999),
    (
        "limits:\n  max_record_bytes: 1\n  max_field_bytes: 1\n",
        "limits.max_record_bytes",
        1,
    ),
    # 2 * 522240 + 4096 == 1048576, the producer's default max_request_size.
    ("limits:\n  max_record_bytes: 522240\n", "limits.max_record_bytes", 522240),
    ("limits:\n  max_field_bytes: 1\n", "limits.max_field_bytes", 1),
    ("limits:\n  max_field_depth: 1\n", "limits.max_field_depth", 1),
    ("limits:\n  max_field_keys: 1\n", "limits.max_field_keys", 1),
    ("limits:\n  max_field_bytes: 65536\n", "limits.max_field_bytes", 65536),
    ("limits:\n  max_batch_bytes: 65536\n", "limits.max_batch_bytes", 65536),
    ("metrics:\n  port: 0\n", "metrics.port", 0),
    ("metrics:\n  port: 65535\n", "metrics.port", 65535),
    ("metrics:\n  lag_interval_ms: 100\n", "metrics.lag_interval_ms", 100),
    (SHORT_FLUSH + "metrics:\n  stall_timeout_ms: 10001\n", "metrics.stall_timeout_ms", 10001),
    ("metrics:\n  stall_timeout_ms: 125001\n", "metrics.stall_timeout_ms", 125001),
    ("startup:\n  timeout_ms: 100\n", "startup.timeout_ms", 100),
    ("drift:\n  window_size: 10\n  min_samples: 1\n", "drift.window_size", 10),
    ("drift:\n  min_samples: 1\n", "drift.min_samples", 1),
    ("drift:\n  min_samples: 1000\n", "drift.min_samples", 1000),
    ("topics:\n  input: " + "i" * 249 + "\n", "topics.input", "i" * 249),
    ("kafka:\n  group_instance_id: " + "p" * 249 + "\n", "kafka.group_instance_id", "p" * 249),
    ("kafka:\n  group_instance_id: ...\n", "kafka.group_instance_id", "..."),
    ("kafka:\n  group_instance_id: null\n", "kafka.group_instance_id", None),
    ("shadow_artifact: null\n", "shadow_artifact", None),
    ("shadow_artifact: models/next\n", "shadow_artifact", Path("models/next")),
    ("artifact: models/ecg\n", "artifact", Path("models/ecg")),
    ("kafka:\n  bootstrap_servers: 'a:1, b:2'\n", "kafka.bootstrap_servers", ("a:1", "b:2")),
    ("kafka:\n  bootstrap_servers: [a:1]\n", "kafka.bootstrap_servers", ("a:1",)),
    ("kafka:\n  client: null\n", "kafka.client", {}),
    ("kafka:\n  client:\n    linger_ms: 0\n", "kafka.client", {"linger_ms": 0}),
    ("kafka:\n  client:\n    retries: 0\n", "kafka.client", {"retries": 0}),
    ("kafka:\n  client:\n    linger_ms: 2.5\n", "kafka.client", {"linger_ms": 2.5}),
    ("kafka: null\n", "kafka.group_id", "ecg-worker"),
]


@pytest.mark.parametrize(("text", "key", "value"), ACCEPTED_EDGES)
def test_values_on_the_edge_of_their_bounds_are_accepted(
    tmp_path: Path, text: str, key: str, value: Any
) -> None:
    assert get(load(tmp_path, text), key) == value


# (YAML, the error after "<file>: ", a regex anchored at its start): the first refused value.
REFUSED_EDGES = [
    ("reload:\n  poll_interval_ms: 99\n", r"reload\.poll_interval_ms must be >= 100, got 99$"),
    ("topics:\n  partitions: 0\n", r"topics\.partitions and topics\.replication_factor"),
    ("topics:\n  replication_factor: 0\n", r"topics\.partitions and topics\.replication_f"),
    ("batching:\n  max_batch_size: 0\n", r"batching\.max_batch_size must be >= 1, got 0$"),
    ("batching:\n  max_wait_ms: -1\n", r"batching\.max_wait_ms must be >= 0, got -1$"),
    ("batching:\n  max_wait_ms: 30000\n", r"batching\.max_wait_ms \(30000\) must be less"),
    (
        "limits:\n  max_record_bytes: 0\n  max_field_bytes: 0\n",
        r"limits\.max_record_bytes must be >= 1, got 0$",
    ),
    (
        "limits:\n  max_record_bytes: 522241\n",
        r"limits\.max_record_bytes \(522241\) twice .* 4096 bytes .*max_request_size \(1048576\)",
    ),
    ("limits:\n  max_field_bytes: 0\n", r"limits\.max_field_bytes must be >= 1, got 0$"),
    ("limits:\n  max_field_depth: 0\n", r"limits\.max_field_depth must be >= 1, got 0$"),
    ("limits:\n  max_field_keys: 0\n", r"limits\.max_field_keys must be >= 1, got 0$"),
    (
        "limits:\n  max_field_bytes: 65537\n",
        r"limits\.max_field_bytes \(65537\) must not exceed limits\.max_record_bytes \(65536\)",
    ),
    (
        "limits:\n  max_batch_bytes: 65535\n",
        r"limits\.max_batch_bytes \(65535\) must be at least limits\.max_record_bytes \(65536\)",
    ),
    ("metrics:\n  port: -1\n", r"metrics\.port must be 0\.\.65535, got -1$"),
    ("metrics:\n  port: 65536\n", r"metrics\.port must be 0\.\.65535, got 65536$"),
    ("metrics:\n  lag_interval_ms: 99\n", r"metrics\.lag_interval_ms must be >= 100"),
    (
        SHORT_FLUSH + "metrics:\n  stall_timeout_ms: 10000\n",
        r"metrics\.stall_timeout_ms must exceed batching\.max_wait_ms",
    ),
    (
        "metrics:\n  stall_timeout_ms: 125000\n",
        r"metrics\.stall_timeout_ms \(125000\) must exceed the flush bound \(125000 ms",
    ),
    ("startup:\n  timeout_ms: 99\n", r"startup\.timeout_ms must be >= 100, got 99$"),
    (
        "drift:\n  window_size: 9\n  min_samples: 1\n",
        r"drift\.window_size must be >= 10, got 9$",
    ),
    ("drift:\n  min_samples: 0\n", r"drift\.min_samples must be between 1 and drift\.window_s"),
    ("drift:\n  min_samples: 1001\n", r"drift\.min_samples must be between 1 and drift\.window"),
    ("topics:\n  input: " + "i" * 250 + "\n", r"topics\.input 'i{250}' is not a valid topic"),
    ("topics:\n  scores: ' '\n", r"topics\.scores ' ' is not a valid topic name$"),
    ("topics:\n  anomalies: ' '\n", r"topics\.anomalies ' ' is not a valid topic name$"),
    ("topics:\n  dead_letter: ' '\n", r"topics\.dead_letter ' ' is not a valid topic name$"),
    ("topics:\n  shadow_scores: ' '\n", r"topics\.shadow_scores ' ' must be a topic of its own"),
    (
        "topics:\n  shadow_scores: ecg.anomalies\n",
        r"topics\.shadow_scores 'ecg\.anomalies' must be a topic of its own",
    ),
    (
        "kafka:\n  group_instance_id: " + "p" * 250 + "\n",
        r"kafka\.group_instance_id must be null or a non-empty string of at most 249",
    ),
    ("kafka:\n  group_instance_id: '.'\n", r"kafka\.group_instance_id must be null or a"),
    ("kafka:\n  group_instance_id: '..'\n", r"kafka\.group_instance_id must be null or a"),
    ("kafka:\n  group_instance_id: 7\n", r"kafka\.group_instance_id .*got 7$"),
    ("shadow_artifact: ''\n", r"shadow_artifact must be a path string, got ''$"),
    ("shadow_artifact: 3\n", r"shadow_artifact must be a path string, got 3$"),
    ("artifact: ''\n", r"artifact must be a path string, got ''$"),
    ("artifact: [a]\n", r"artifact must be a path string, got \['a'\]$"),
    ("kafka:\n  bootstrap_servers: ['']\n", r"kafka\.bootstrap_servers must be 'host:port' or"),
    ("kafka:\n  bootstrap_servers: [a:1, 5]\n", r"kafka\.bootstrap_servers must be .*got \['a:1"),
    ("kafka:\n  bootstrap_servers: ' , '\n", r"kafka\.bootstrap_servers must be .*got ' , '$"),
    ("kafka:\n  client: 3\n", r"kafka\.client must be a mapping of kafka-python settings$"),
    ("kafka:\n  client:\n    1: x\n", r"kafka\.client has a non-string key 1$"),
    ("kafka:\n  client:\n    linger_ms: -1\n", r"kafka\.client\.linger_ms must be a non-neg"),
    ("kafka:\n  client:\n    linger_ms: fast\n", r"kafka\.client\.linger_ms .* got 'fast'$"),
    ("kafka:\n  client:\n    linger_ms: true\n", r"kafka\.client\.linger_ms .* got True$"),
    ("kafka:\n  client:\n    max_request_size: -1\n", r"kafka\.client\.max_request_size must"),
    ("kafka:\n  client:\n    retries: -1\n", r"kafka\.client\.retries must be a non-negat"),
    ("kafka:\n  client:\n    batch_size: -1\n", r"kafka\.client\.batch_size must be a non-ne"),
    ("kafka:\n  client:\n    batch_size: many\n", r"kafka\.client\.batch_size .* got 'many'$"),
    ("kafka:\n  client:\n    acks: all\n", r"kafka\.client\.acks is set by the worker itself"),
    (
        "kafka:\n  client:\n    sasl_plain_password_file: /nonexistent/pw\n",
        r"kafka\.client\.sasl_plain_password_file: cannot read /nonexistent/pw",
    ),
    ("metrics: 3\n", r"metrics must be a mapping, got int$"),
    ("kafka: [a]\n", r"kafka must be a mapping, got list$"),
    ("zzzz: 1\n", r"unknown key 'zzzz'$"),
    (
        "kafka:\n  client:\n    qqqqqq: 1\n",
        r"unknown kafka-python setting 'kafka\.client\.qqqqqq'$",
    ),
    (
        "batching:\n  max_wait: 1\n",
        r"unknown key 'batching\.max_wait' \(did you mean 'max_wait_ms'",
    ),
    ("reload:\n  watch: 1\n", r"reload\.watch must be true or false, got 1$"),
    ("topics:\n  input: ''\n", r"topics\.input must be a non-empty string, got ''$"),
    ("delivery:\n  mode: twice\n", r"delivery\.mode must be one of .*got 'twice'$"),
    ("kafka:\n  auto_offset_reset: none\n", r"kafka\.auto_offset_reset must be one of"),
    (
        "delivery:\n  mode: exactly_once\nkafka:\n  client:\n    enable_idempotence: false\n",
        r"delivery\.mode exactly_once needs an idempotent producer",
    ),
]


@pytest.mark.parametrize(("text", "error"), REFUSED_EDGES)
def test_values_past_their_bounds_are_refused_naming_the_key(
    tmp_path: Path, text: str, error: str
) -> None:
    message = refused(tmp_path, text)
    assert re.match(error, message), message


def test_errors_of_an_already_parsed_mapping_say_config() -> None:
    with pytest.raises(ConfigError, match=r"^config: batching\.max_batch_size must be >= 1"):
        WorkerConfig.from_mapping({"batching": {"max_batch_size": 0}}, env={})


def test_a_missing_file_error_gives_the_reason_not_the_exception(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as raised:
        WorkerConfig.from_yaml(missing, env={})
    assert str(raised.value) == f"{missing}: cannot read config (No such file or directory)"


def test_the_callers_mapping_is_not_changed_by_environment_overrides() -> None:
    raw: dict[str, Any] = {"kafka": {"group_id": "from-file", "client": {"linger_ms": 5}}}
    config = WorkerConfig.from_mapping(
        raw, env={"ECG_GROUP_ID": "from-env", "ECG_SASL_USERNAME": "svc"}
    )
    assert config.kafka.group_id == "from-env"
    assert raw == {"kafka": {"group_id": "from-file", "client": {"linger_ms": 5}}}


# --------------------------------------------------------------------------- environment

TRUE_WORDS = ["1", "true", "yes", "on", " TRUE ", "Yes", "ON"]
FALSE_WORDS = ["0", "false", "no", "off", "FALSE", " No ", "Off"]


@pytest.mark.parametrize("word", TRUE_WORDS)
def test_true_words_turn_a_switch_on(tmp_path: Path, word: str) -> None:
    config = load(tmp_path, "reload:\n  http: false\n", {"ECG_RELOAD_HTTP": word})
    assert config.reload.http is True


@pytest.mark.parametrize("word", FALSE_WORDS)
def test_false_words_turn_a_switch_off(tmp_path: Path, word: str) -> None:
    config = load(tmp_path, "reload:\n  watch: true\n", {"ECG_RELOAD_WATCH": word})
    assert config.reload.watch is False


def test_a_word_that_is_neither_names_the_variable_and_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, "", {"ECG_RELOAD_WATCH": "sometimes"})
    assert str(raised.value) == (
        "environment ECG_RELOAD_WATCH='sometimes': expected true/false, got 'sometimes'"
    )


def test_an_empty_variable_is_ignored(tmp_path: Path) -> None:
    config = load(tmp_path, "metrics:\n  port: 9200\n", {"ECG_METRICS_PORT": ""})
    assert config.metrics.port == 9200


def test_an_override_into_a_section_that_is_not_a_mapping_names_the_section(
    tmp_path: Path,
) -> None:
    message = refused(tmp_path, "kafka: 3\n", {"ECG_GROUP_ID": "g"})
    assert message == "section 'kafka' must be a mapping"


@pytest.mark.parametrize("item", ENV_OVERRIDES, ids=lambda item: item.name)
def test_help_lists_each_variable_with_its_dotted_key(item: Any) -> None:
    lines = env_help().split("\n")
    assert lines[0] == "environment overrides (applied on top of the config file):"
    assert len(lines) == len(ENV_OVERRIDES) + 1
    (line,) = [line for line in lines[1:] if line.split()[0] == item.name]
    assert line.startswith(f"  {item.name} ")
    assert line.split()[1] == ".".join(item.path)
    assert line.endswith(item.help)


# --------------------------------------------------------------------------- confluent-kafka
# Which settings reach which client, how an ``ECG_*`` variable lands on librdkafka's name, and
# what an operator reads when a librdkafka setting is refused.

CONFLUENT = "kafka:\n  library: confluent-kafka\n"


def test_consumer_and_producer_get_only_their_own_librdkafka_settings(tmp_path: Path) -> None:
    config = load(tmp_path, CONFLUENT + "  client:\n    fetch.wait.max.ms: 20\n    linger.ms: 7\n")
    assert config.kafka.consumer_settings() == {"fetch.wait.max.ms": 20}
    assert config.kafka.producer_settings() == {"linger.ms": 7}


def test_a_kafka_section_without_library_is_kafka_python(tmp_path: Path) -> None:
    config = load(tmp_path, "kafka:\n  client:\n    linger_ms: 7\n")
    assert config.kafka.library == "kafka-python"
    assert config.kafka.producer_settings() == {"linger_ms": 7}


def test_ecg_kafka_library_alone_moves_ecg_settings_onto_librdkafka_names(
    tmp_path: Path,
) -> None:
    # No library in the file: the variable decides, and the SASL user lands on
    # librdkafka's name, not kafka-python's.
    env = {"ECG_KAFKA_LIBRARY": "confluent-kafka", "ECG_SASL_USERNAME": "ecg-worker"}
    config = load(tmp_path, "batching:\n  max_wait_ms: 50\n", env)
    assert config.kafka.library == "confluent-kafka"
    assert config.kafka.client["sasl.username"] == "ecg-worker"
    assert "sasl_plain_username" not in config.kafka.client


def test_an_empty_client_section_is_accepted_on_confluent(tmp_path: Path) -> None:
    config = load(tmp_path, CONFLUENT + "  client:\n")
    assert dict(config.kafka.client) == {}


@pytest.mark.parametrize(
    ("client_yaml", "expected"),
    [
        ("  client: [linger.ms]\n", "kafka.client must be a mapping of librdkafka settings"),
        ("  client:\n    1: 2\n", "kafka.client has a non-string key 1"),
        (
            "  client:\n    lingr.ms: 5\n",
            "kafka.client.lingr.ms is not a librdkafka setting (did you mean 'linger.ms'?)",
        ),
        (
            "  client:\n    max_block_ms: 5\n",
            "kafka.client.max_block_ms is not a librdkafka setting (a kafka-python name; "
            "kafka.library is confluent-kafka)",
        ),
        (
            "  client:\n    client.id: x\n",
            "kafka.client.client.id is set by the worker itself and cannot be passed through "
            "(see docs/worker.md)",
        ),
        (
            "  client:\n    linger.ms: 5\n    queue.buffering.max.ms: 5\n",
            "kafka.client.linger.ms and kafka.client.queue.buffering.max.ms name the same "
            "librdkafka setting; keep one",
        ),
    ],
)
def test_refused_librdkafka_settings_say_why(
    tmp_path: Path, client_yaml: str, expected: str
) -> None:
    assert refused(tmp_path, CONFLUENT + client_yaml) == expected


def test_an_unknown_name_that_is_nobodys_gets_no_hint(tmp_path: Path) -> None:
    message = refused(tmp_path, CONFLUENT + "  client:\n    no.such.setting.at.all: 1\n")
    assert message == "kafka.client.no.such.setting.at.all is not a librdkafka setting"


@pytest.mark.parametrize("key", ["delivery.timeout.ms", "message.timeout.ms"])
def test_exactly_once_on_confluent_bounds_the_delivery_timeout_by_the_transaction(
    tmp_path: Path, key: str
) -> None:
    text = CONFLUENT + f"  client:\n    {key}: 60001\ndelivery:\n  mode: exactly_once\n"
    assert refused(tmp_path, text) == (
        "kafka.client.delivery.timeout.ms (60001) must not exceed transaction.timeout.ms "
        "(60000) with delivery.mode exactly_once on confluent-kafka"
    )
    accepted = load(tmp_path, text.replace("60001", "60000"))
    assert accepted.kafka.delivery_timeout_ms == 60000


def test_at_least_once_on_confluent_has_no_transaction_bound(tmp_path: Path) -> None:
    config = load(tmp_path, CONFLUENT + "  client:\n    delivery.timeout.ms: 100000\n")
    assert config.kafka.delivery_timeout_ms == 100000
