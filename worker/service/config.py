"""The worker's configuration: YAML into frozen, cross-checked dataclasses.

``WorkerConfig.from_yaml(path)`` reads ``deploy/worker.yaml``-shaped files. Unknown keys are
rejected with the key named (and a "did you mean"), types are checked, related values are
cross-checked, and a fixed list of ``ECG_*`` environment variables overrides single values
(the list is ``ENV_OVERRIDES``; ``ecg-worker --help`` prints it).
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from kafka import KafkaConsumer, KafkaProducer

# No numpy here (nor through worker.core.codec): ecg-worker reads its config before it
# sets the BLAS thread variables, which must precede the first numpy import.
from worker.core import wire
from worker.core.errors import ConfigError
from worker.service import confluent_settings, secrets

# kafka-python settings the worker owns: passing them through would break the delivery
# protocol (auto-commit, acks) or the wire format (serialisers), or would do nothing
# (max_poll_records: each poll asks for what fits in the batch, batching.max_batch_size).
RESERVED_CLIENT_KEYS = frozenset(
    {
        "bootstrap_servers",
        "group_id",
        "client_id",
        "enable_auto_commit",
        "auto_offset_reset",
        "acks",
        "key_serializer",
        "value_serializer",
        "key_deserializer",
        "value_deserializer",
        "kafka_client",
        "selector",
        "ssl_context",
        "sasl_oauth_token_provider",
        "metric_reporters",
        "default_offset_commit_callback",
        "partitioner",
        "consumer_timeout_ms",
        "bootstrap_timeout_ms",
        "transactional_id",
        "isolation_level",
        "group_instance_id",
        "max_poll_records",
    }
)
CONSUMER_KEYS = frozenset(KafkaConsumer.DEFAULT_CONFIG)
PRODUCER_KEYS = frozenset(KafkaProducer.DEFAULT_CONFIG)
CLIENT_KEYS = (CONSUMER_KEYS | PRODUCER_KEYS) - RESERVED_CLIENT_KEYS
OFFSET_RESETS = ("earliest", "latest")
# Extra time granted to a flush beyond the producer's own delivery timeout.
FLUSH_MARGIN_MS = 5000
DELIVERY_MODES = ("at_least_once", "exactly_once")
# The Kafka client library behind the worker (docs/worker.md, "Kafka client library").
KAFKA_PYTHON = "kafka-python"
LIBRARIES = (KAFKA_PYTHON, confluent_settings.LIBRARY)


@dataclass(frozen=True)
class KafkaConfig:
    """How to reach Kafka and as whom."""

    bootstrap_servers: tuple[str, ...] = ("127.0.0.1:9092",)
    group_id: str = "ecg-worker"
    client_id: str = "ecg-worker"
    # Where a new consumer group starts; "earliest" so windows sent before the first worker
    # started are scored too.
    auto_offset_reset: str = "earliest"
    # Static group membership (KIP-345): a worker restarted with the same id gets its
    # partitions back at once instead of after a rebalance. Unique per live worker.
    group_instance_id: str | None = None
    # kafka-python (the default) or confluent-kafka (librdkafka; faster). Before ``client``:
    # it decides which settings ``client`` takes.
    library: str = KAFKA_PYTHON
    # Passed through to the library: kafka-python's names (security_protocol, sasl_*,
    # ssl_*, timeouts, ...) or, with confluent-kafka, librdkafka's (security.protocol...).
    client: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def confluent(self) -> bool:
        """True when the worker runs on confluent-kafka (librdkafka)."""
        return self.library == confluent_settings.LIBRARY

    def _librdkafka(self, key: str) -> int:
        return int(confluent_settings.setting(self.client, key))

    @property
    def request_timeout_ms(self) -> int:
        """The consumer's request timeout (the library's default unless overridden)."""
        if self.confluent:
            return self._librdkafka("request.timeout.ms")
        return int(
            self.client.get(
                "request_timeout_ms", KafkaConsumer.DEFAULT_CONFIG["request_timeout_ms"]
            )
        )

    @property
    def delivery_timeout_ms(self) -> int:
        """The producer's delivery timeout (the library's default unless overridden)."""
        if self.confluent:
            return self._librdkafka("delivery.timeout.ms")
        return int(
            self.client.get(
                "delivery_timeout_ms", KafkaProducer.DEFAULT_CONFIG["delivery_timeout_ms"]
            )
        )

    @property
    def flush_bound_ms(self) -> int:
        """The longest a batch's flush may wait for acknowledgements (delivery timeout plus
        a margin): stall detection and shutdown grace periods must be longer."""
        return self.delivery_timeout_ms + FLUSH_MARGIN_MS

    @property
    def max_request_size(self) -> int:
        """The producer's largest request in bytes (the library's default unless overridden)."""
        if self.confluent:
            return self._librdkafka("message.max.bytes")
        return int(
            self.client.get("max_request_size", KafkaProducer.DEFAULT_CONFIG["max_request_size"])
        )

    def consumer_settings(self) -> dict[str, Any]:
        """The passthrough settings the library's consumer accepts."""
        keys = confluent_settings.CONSUMER_KEYS if self.confluent else CONSUMER_KEYS
        return {k: v for k, v in self.client.items() if k in keys}

    def producer_settings(self) -> dict[str, Any]:
        """The passthrough settings the library's producer accepts."""
        keys = confluent_settings.PRODUCER_KEYS if self.confluent else PRODUCER_KEYS
        return {k: v for k, v in self.client.items() if k in keys}


@dataclass(frozen=True)
class TopicsConfig:
    """Topic names and, for development, whether and how to create missing ones."""

    input: str = wire.INPUT_TOPIC
    scores: str = wire.SCORES_TOPIC
    anomalies: str = wire.ANOMALIES_TOPIC
    dead_letter: str = wire.DEAD_LETTER_TOPIC
    # Where the shadow model's scores go (only with ``shadow_artifact``).
    shadow_scores: str = wire.SHADOW_SCORES_TOPIC
    create_topics: bool = False
    partitions: int = 1
    replication_factor: int = 1

    def names(self) -> tuple[str, str, str, str]:
        """All four topic names: input, scores, anomalies, dead letter."""
        return (self.input, self.scores, self.anomalies, self.dead_letter)


@dataclass(frozen=True)
class BatchingConfig:
    """A micro-batch closes at ``max_batch_size`` records or ``max_wait_ms`` after its first."""

    max_batch_size: int = 2048
    max_wait_ms: int = 50


@dataclass(frozen=True)
class LimitsConfig:
    """Per-record and per-batch limits that bound the worker's memory.

    Larger records go to the dead-letter topic as ``oversized`` (and a dead letter carries
    at most ``max_record_bytes`` of the original key and of the value); extra fields beyond
    their limits as ``fields_limit``. A batch closes early once its records hold
    ``max_batch_bytes``. The defaults fit the 512 MiB memory limit of deploy/k8s/worker.yaml
    (docs/worker.md, "Limits").
    """

    max_record_bytes: int = 65536
    max_field_bytes: int = 8192
    max_field_depth: int = 16
    max_field_keys: int = 256
    max_batch_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class MetricsConfig:
    """The HTTP endpoint for ``/metrics``, ``/healthz`` and ``/readyz``."""

    host: str = "127.0.0.1"
    port: int = 9108
    # How often consumer lag per partition is refreshed (one broker round trip).
    lag_interval_ms: int = 5000
    # /healthz turns 503 when the loop has not come round for this long; longer than the
    # flush bound (delivery_timeout_ms + 5 s), during which the loop legitimately waits.
    stall_timeout_ms: int = 180000


@dataclass(frozen=True)
class StartupConfig:
    """How long start-up may wait for the broker and the topics before failing."""

    timeout_ms: int = 15000


@dataclass(frozen=True)
class DriftConfig:
    """Rolling window of live errors compared with the training error distribution."""

    window_size: int = 1000
    min_samples: int = 200


@dataclass(frozen=True)
class ValidationConfig:
    """Optional input check (``worker.service.input_schema``): ``none``, ``builtin`` (the
    published input-window schema) or the path of a stricter JSON Schema file."""

    input_schema: str = "none"


@dataclass(frozen=True)
class ReloadConfig:
    """Hot reload of the model between batches (``worker.service.model_reload``)."""

    # Poll the artifact location (and the shadow's) for a replaced model.
    watch: bool = True
    poll_interval_ms: int = 2000
    # POST /reload and /promote on the metrics address; off by default (anyone who can reach
    # that address could swap the model).
    http: bool = False


@dataclass(frozen=True)
class DeliveryConfig:
    """How a batch's outputs and its offset commit are tied together (docs/reliability.md)."""

    # at_least_once: publish, wait for acks, then commit (a crash may duplicate outputs).
    # exactly_once: outputs and offsets in one Kafka transaction (read_committed readers
    # see each output once).
    mode: str = "at_least_once"
    # at_least_once: commit the acknowledged batches' offsets at most this often (0: after
    # every batch), and at once when the input goes quiet or the worker stops. A commit is
    # a broker round trip (about 7 ms here) that every batch used to wait for; a crash or a
    # rebalance replays at most this long of acknowledged windows (duplicates, never losses).
    # exactly_once commits every batch in its transaction and does not use it.
    commit_interval_ms: int = 1000


@dataclass(frozen=True)
class WorkerConfig:
    """Everything ``ecg-worker`` needs, validated."""

    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    artifact: Path = Path("artifacts/ecg")
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    startup: StartupConfig = field(default_factory=StartupConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    reload: ReloadConfig = field(default_factory=ReloadConfig)
    # A candidate model scoring the same batches; its scores go to topics.shadow_scores.
    shadow_artifact: Path | None = None

    def required_topics(self) -> tuple[str, ...]:
        """The topics that must exist: the four, plus the shadow topic with a shadow."""
        return (self.topics.input, *self.output_topics())

    def output_topics(self) -> tuple[str, ...]:
        """The topics the worker writes: scores, anomalies, dead letters (and shadow scores
        with a shadow)."""
        shadow = (self.topics.shadow_scores,) if self.shadow_artifact is not None else ()
        return (self.topics.scores, self.topics.anomalies, self.topics.dead_letter, *shadow)

    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)

    @classmethod
    def from_yaml(
        cls, path: str | os.PathLike[str], env: Mapping[str, str] | None = None
    ) -> WorkerConfig:
        """Load ``path``, apply ``ECG_*`` overrides from ``env`` (default: the process
        environment), validate, and return the config. Raises ``ConfigError``."""
        source = Path(path)
        try:
            raw = yaml.safe_load(source.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read config ({exc.strerror or exc})") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML ({exc})") from exc
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: top level must be a mapping of sections")
        return cls.from_mapping(raw, where=str(source), env=env)

    @classmethod
    def from_mapping(
        cls, raw: Mapping[str, Any], where: str = "config", env: Mapping[str, str] | None = None
    ) -> WorkerConfig:
        """Build from an already-parsed mapping (same rules as ``from_yaml``)."""
        # A deep copy: env overrides write into nested sections such as kafka.client.
        data = copy.deepcopy({k: v for k, v in raw.items()})
        _apply_env(data, os.environ if env is None else env, where)
        config = _build(cls, data, where)
        _cross_check(config, where)
        return config


# --------------------------------------------------------------------------- env overrides


@dataclass(frozen=True)
class EnvOverride:
    """One ``ECG_*`` variable that overrides one config value."""

    name: str
    path: tuple[str, ...]
    parse: Callable[[str], Any]
    help: str


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _parse_servers(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


ENV_OVERRIDES: tuple[EnvOverride, ...] = (
    EnvOverride("ECG_BOOTSTRAP_SERVERS", ("kafka", "bootstrap_servers"), _parse_servers,
                "comma-separated host:port list"),
    EnvOverride("ECG_GROUP_ID", ("kafka", "group_id"), str, "consumer group id"),
    EnvOverride("ECG_CLIENT_ID", ("kafka", "client_id"), str, "Kafka client id"),
    EnvOverride("ECG_GROUP_INSTANCE_ID", ("kafka", "group_instance_id"), str,
                "static group member id (e.g. the pod name)"),
    EnvOverride("ECG_DELIVERY_MODE", ("delivery", "mode"), str,
                "at_least_once | exactly_once"),
    EnvOverride("ECG_COMMIT_INTERVAL_MS", ("delivery", "commit_interval_ms"), int,
                "at_least_once: commit at most every N ms (0: every batch)"),
    EnvOverride("ECG_KAFKA_LIBRARY", ("kafka", "library"), str,
                "kafka-python | confluent-kafka"),
    EnvOverride("ECG_INPUT_TOPIC", ("topics", "input"), str, "input topic"),
    EnvOverride("ECG_SCORES_TOPIC", ("topics", "scores"), str, "scores topic"),
    EnvOverride("ECG_ANOMALIES_TOPIC", ("topics", "anomalies"), str, "anomalies topic"),
    EnvOverride("ECG_DLQ_TOPIC", ("topics", "dead_letter"), str, "dead-letter topic"),
    EnvOverride("ECG_CREATE_TOPICS", ("topics", "create_topics"), _parse_bool,
                "create missing topics (true/false)"),
    EnvOverride("ECG_MAX_BATCH_SIZE", ("batching", "max_batch_size"), int, "records per batch"),
    EnvOverride("ECG_MAX_WAIT_MS", ("batching", "max_wait_ms"), int, "batch wait in ms"),
    EnvOverride("ECG_MAX_RECORD_BYTES", ("limits", "max_record_bytes"), int,
                "largest record value (and key) scored"),
    EnvOverride("ECG_MAX_FIELD_BYTES", ("limits", "max_field_bytes"), int,
                "extra fields: largest JSON size"),
    EnvOverride("ECG_MAX_FIELD_DEPTH", ("limits", "max_field_depth"), int,
                "extra fields: deepest nesting"),
    EnvOverride("ECG_MAX_FIELD_KEYS", ("limits", "max_field_keys"), int,
                "extra fields: most keys + array items"),
    EnvOverride("ECG_MAX_BATCH_BYTES", ("limits", "max_batch_bytes"), int,
                "record bytes that close a batch early"),
    EnvOverride("ECG_ARTIFACT", ("artifact",), str, "model artifact directory"),
    EnvOverride("ECG_METRICS_HOST", ("metrics", "host"), str, "metrics/health bind address"),
    EnvOverride("ECG_METRICS_PORT", ("metrics", "port"), int, "metrics/health port (0 = any)"),
    EnvOverride("ECG_SHADOW_ARTIFACT", ("shadow_artifact",), str,
                "shadow (candidate) model artifact directory"),
    EnvOverride("ECG_SHADOW_SCORES_TOPIC", ("topics", "shadow_scores"), str,
                "shadow model's scores topic"),
    EnvOverride("ECG_RELOAD_WATCH", ("reload", "watch"), _parse_bool,
                "hot-reload a replaced artifact (true/false)"),
    EnvOverride("ECG_RELOAD_HTTP", ("reload", "http"), _parse_bool,
                "POST /reload, /promote on the metrics address"),
    EnvOverride("ECG_INPUT_SCHEMA", ("validation", "input_schema"), str,
                "none | builtin | schema file path"),
    # Kafka security settings and credentials (a Kubernetes Secret, the Helm chart): the
    # list is in worker.service.secrets; secrets are never logged. With confluent-kafka they
    # set the librdkafka equivalents (confluent_settings.FROM_KAFKA_PYTHON).
    *(EnvOverride(name, ("kafka", "client", key), str, text)
      for name, key, text in secrets.SECURITY_ENV),
)  # fmt: skip


def env_help() -> str:
    """The environment overrides as lines for ``--help``."""
    lines = ["environment overrides (applied on top of the config file):"]
    for item in ENV_OVERRIDES:
        lines.append(f"  {item.name:<24} {'.'.join(item.path):<38} {item.help}")
    return "\n".join(lines)


def _apply_env(data: dict[str, Any], env: Mapping[str, str], where: str) -> None:
    kafka = data.get("kafka")
    library = env.get("ECG_KAFKA_LIBRARY") or (
        kafka.get("library") if isinstance(kafka, dict) else None
    )
    for item in ENV_OVERRIDES:
        text = env.get(item.name)
        if text is None or text == "":
            continue
        try:
            value = item.parse(text)
        except ValueError as exc:
            raise ConfigError(f"environment {item.name}={text!r}: {exc}") from exc
        path = item.path
        if library == confluent_settings.LIBRARY and path[:2] == ("kafka", "client"):
            path = (*path[:2], confluent_settings.FROM_KAFKA_PYTHON.get(path[2], path[2]))
        target = data
        for part in path[:-1]:
            section = target.get(part)
            if section is None:
                section = target[part] = {}
            elif not isinstance(section, dict):
                raise ConfigError(f"{where}: section {part!r} must be a mapping")
            target = section
        target[path[-1]] = value
        # A secret from the environment replaces the file in the config, and vice versa.
        other = secrets.sibling(path[-1])
        if other is not None:
            target.pop(other, None)


# --------------------------------------------------------------------------- building


def _build(cls: type, data: Any, where: str, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and types."""
    label = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {label} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{prefix}{key}'{_did_you_mean(key, known)}")
    values: dict[str, Any] = {}
    for name in known:
        if name not in data:
            continue
        dotted = f"{prefix}{name}"
        default = getattr(cls(), name) if name not in _NESTED else None
        if name in _NESTED and cls is WorkerConfig:
            values[name] = _build(_NESTED[name], data[name] or {}, where, f"{dotted}.")
        else:
            # ``library`` precedes ``client`` in KafkaConfig, so it is known here.
            library = values.get("library", KAFKA_PYTHON)
            values[name] = _coerce(data[name], default, dotted, where, library)
    return cls(**values)


_NESTED: dict[str, type] = {
    "kafka": KafkaConfig,
    "topics": TopicsConfig,
    "batching": BatchingConfig,
    "limits": LimitsConfig,
    "metrics": MetricsConfig,
    "startup": StartupConfig,
    "drift": DriftConfig,
    "validation": ValidationConfig,
    "reload": ReloadConfig,
    "delivery": DeliveryConfig,
}


def _coerce(value: Any, default: Any, dotted: str, where: str, library: str = KAFKA_PYTHON) -> Any:
    """Check ``value`` against the type of its default and convert it (``kafka.client``
    against the settings of ``library``)."""
    if dotted == "kafka.bootstrap_servers":
        servers = _parse_servers(value) if isinstance(value, str) else value
        if (
            not isinstance(servers, list)
            or not servers
            or not all(isinstance(s, str) and s for s in servers)
        ):
            raise ConfigError(
                f"{where}: {dotted} must be 'host:port' or a list of them, got {value!r}"
            )
        return tuple(servers)
    if dotted == "kafka.client":
        resolved = secrets.resolve_secret_files(value, where)
        if library == confluent_settings.LIBRARY:
            return _librdkafka_settings(resolved, where)
        return _client_settings(resolved, where)
    if dotted == "kafka.library" and value not in LIBRARIES:
        raise ConfigError(f"{where}: kafka.library must be one of {LIBRARIES}, got {value!r}")
    if dotted == "shadow_artifact":
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {dotted} must be a path string, got {value!r}")
        return Path(value)
    if dotted == "kafka.group_instance_id":
        return _group_instance_id(value, where)
    if isinstance(default, Path):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {dotted} must be a path string, got {value!r}")
        return Path(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {dotted} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {dotted} must be an integer, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {dotted} must be a non-empty string, got {value!r}")
        return value
    raise AssertionError(f"no coercion for {dotted}")  # pragma: no cover - programming error


def _client_settings(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: kafka.client must be a mapping of kafka-python settings")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: kafka.client has a non-string key {key!r}")
        if key in RESERVED_CLIENT_KEYS:
            raise ConfigError(
                f"{where}: kafka.client.{key} is set by the worker itself and cannot be passed "
                "through (see docs/worker.md)"
            )
        if key not in CLIENT_KEYS:
            raise ConfigError(
                f"{where}: unknown kafka-python setting 'kafka.client.{key}'"
                f"{_did_you_mean(key, CLIENT_KEYS)}"
            )
        if key.endswith("_ms") or key in ("max_request_size", "retries", "batch_size"):
            number = value[key]
            if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
                raise ConfigError(
                    f"{where}: kafka.client.{key} must be a non-negative number, got {number!r}"
                )
    return MappingProxyType(dict(value))


def _librdkafka_settings(value: Any, where: str) -> Mapping[str, Any]:
    """``kafka.client`` for confluent-kafka: librdkafka's names, the same rules as above."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: kafka.client must be a mapping of librdkafka settings")
    for key, setting in value.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}: kafka.client has a non-string key {key!r}")
        why = confluent_settings.problem(key, setting)
        if why is not None:
            hint = ""
            known = confluent_settings.CLIENT_KEYS | confluent_settings.RESERVED_KEYS
            if key not in known:
                hint = _did_you_mean(key, confluent_settings.CLIENT_KEYS)
                if key in CLIENT_KEYS and not hint:
                    hint = " (a kafka-python name; kafka.library is confluent-kafka)"
            raise ConfigError(f"{where}: kafka.client.{key} {why}{hint}")
    pairs = confluent_settings.aliased_pairs(value)
    if pairs:
        raise ConfigError(
            f"{where}: kafka.client.{pairs[0][0]} and kafka.client.{pairs[0][1]} name the "
            "same librdkafka setting; keep one"
        )
    return MappingProxyType(dict(value))


def _group_instance_id(value: Any, where: str) -> str | None:
    if value is None:
        return None
    # Kafka's own rules for the id (it becomes part of a transactional id, too).
    if not isinstance(value, str) or not value or value in (".", "..") or len(value) > 249:
        raise ConfigError(
            f"{where}: kafka.group_instance_id must be null or a non-empty string of at most "
            f"249 characters, got {value!r}"
        )
    return value


def _did_you_mean(key: str, known: Any) -> str:
    match = difflib.get_close_matches(str(key), sorted(known), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


# --------------------------------------------------------------------------- cross-checks

# A dead letter carries the original bytes plus headers; keep room for them in one request.
DLQ_HEADROOM_BYTES = 4096


def _cross_check(config: WorkerConfig, where: str) -> None:
    def fail(message: str) -> None:
        raise ConfigError(f"{where}: {message}")

    topics = config.topics
    names = topics.names()
    for name, value in zip(("input", "scores", "anomalies", "dead_letter"), names, strict=True):
        if not value.strip() or len(value) > 249:
            fail(f"topics.{name} {value!r} is not a valid topic name")
    if len(set(names)) != len(names):
        fail(f"topics.input/scores/anomalies/dead_letter must be four distinct names, got {names}")
    if topics.shadow_scores in names or not topics.shadow_scores.strip():
        fail(
            f"topics.shadow_scores {topics.shadow_scores!r} must be a topic of its own "
            "(shadow scores never go to the scores or anomaly topics)"
        )
    if config.reload.poll_interval_ms < 100:
        fail(f"reload.poll_interval_ms must be >= 100, got {config.reload.poll_interval_ms}")
    if topics.partitions < 1 or topics.replication_factor < 1:
        fail("topics.partitions and topics.replication_factor must be >= 1")
    if config.kafka.auto_offset_reset not in OFFSET_RESETS:
        fail(f"kafka.auto_offset_reset must be one of {OFFSET_RESETS}")
    if config.delivery.mode not in DELIVERY_MODES:
        fail(f"delivery.mode must be one of {DELIVERY_MODES}, got {config.delivery.mode!r}")
    if config.delivery.commit_interval_ms < 0:
        fail(
            "delivery.commit_interval_ms must be >= 0 (0: commit after every batch), got "
            f"{config.delivery.commit_interval_ms}"
        )
    idempotence = "enable.idempotence" if config.kafka.confluent else "enable_idempotence"
    if (
        config.delivery.mode == "exactly_once"
        and config.kafka.client.get(idempotence, True) is not True
    ):
        fail(
            "delivery.mode exactly_once needs an idempotent producer; drop "
            f"kafka.client.{idempotence}"
        )
    if config.delivery.mode == "exactly_once" and config.kafka.confluent:
        transaction_ms = confluent_settings.setting(config.kafka.client, "transaction.timeout.ms")
        delivery_key = "delivery.timeout.ms"
        if any(k in config.kafka.client for k in (delivery_key, "message.timeout.ms")) and (
            config.kafka.delivery_timeout_ms > transaction_ms
        ):
            # librdkafka refuses a producer whose messages may outlive their transaction.
            fail(
                f"kafka.client.{delivery_key} ({config.kafka.delivery_timeout_ms}) must not "
                f"exceed transaction.timeout.ms ({transaction_ms}) with delivery.mode "
                "exactly_once on confluent-kafka"
            )
    batching = config.batching
    if batching.max_batch_size < 1:
        fail(f"batching.max_batch_size must be >= 1, got {batching.max_batch_size}")
    if batching.max_wait_ms < 0:
        fail(f"batching.max_wait_ms must be >= 0, got {batching.max_wait_ms}")
    if batching.max_wait_ms >= config.kafka.request_timeout_ms:
        fail(
            f"batching.max_wait_ms ({batching.max_wait_ms}) must be less than the Kafka "
            f"request_timeout_ms ({config.kafka.request_timeout_ms})"
        )
    limits = config.limits
    limit = limits.max_record_bytes
    if limit < 1:
        fail(f"limits.max_record_bytes must be >= 1, got {limit}")
    if 2 * limit + DLQ_HEADROOM_BYTES > config.kafka.max_request_size:
        fail(
            f"limits.max_record_bytes ({limit}) twice (a dead letter's key and value) + "
            f"{DLQ_HEADROOM_BYTES} bytes of dead-letter headers must fit in the producer's "
            f"max_request_size ({config.kafka.max_request_size})"
        )
    for name in ("max_field_bytes", "max_field_depth", "max_field_keys"):
        if getattr(limits, name) < 1:
            fail(f"limits.{name} must be >= 1, got {getattr(limits, name)}")
    if limits.max_field_bytes > limit:
        fail(
            f"limits.max_field_bytes ({limits.max_field_bytes}) must not exceed "
            f"limits.max_record_bytes ({limit})"
        )
    if limits.max_batch_bytes < limit:
        fail(
            f"limits.max_batch_bytes ({limits.max_batch_bytes}) must be at least "
            f"limits.max_record_bytes ({limit}), so that every record fits in a batch"
        )
    if not 0 <= config.metrics.port <= 65535:
        fail(f"metrics.port must be 0..65535, got {config.metrics.port}")
    if config.metrics.lag_interval_ms < 100:
        fail("metrics.lag_interval_ms must be >= 100")
    if config.metrics.stall_timeout_ms <= batching.max_wait_ms:
        fail("metrics.stall_timeout_ms must exceed batching.max_wait_ms")
    if config.metrics.stall_timeout_ms <= config.kafka.flush_bound_ms:
        fail(
            f"metrics.stall_timeout_ms ({config.metrics.stall_timeout_ms}) must exceed the "
            f"flush bound ({config.kafka.flush_bound_ms} ms = kafka.client.delivery_timeout_ms "
            f"+ {FLUSH_MARGIN_MS}), or /healthz fails while a batch waits for acknowledgements"
        )
    if config.startup.timeout_ms < 100:
        fail(f"startup.timeout_ms must be >= 100, got {config.startup.timeout_ms}")
    drift = config.drift
    if drift.window_size < 10:
        fail(f"drift.window_size must be >= 10, got {drift.window_size}")
    if not 1 <= drift.min_samples <= drift.window_size:
        fail(f"drift.min_samples must be between 1 and drift.window_size ({drift.window_size})")
