"""The confluent-kafka backend's settings: librdkafka's names, validated like kafka-python's.

``kafka.library: confluent-kafka`` makes ``kafka.client`` take librdkafka's dotted names
(``linger.ms``, ``security.protocol``...). This module is pure (it never imports
confluent_kafka, so reading a config loads no native library): the list of librdkafka
properties, the ones the worker owns (the same concepts as ``config.RESERVED_CLIENT_KEYS``),
the worker's defaults, and how the worker's own settings map onto librdkafka names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LIBRARY = "confluent-kafka"

# librdkafka 2.16's properties (rd_kafka_conf_properties_show of the bundled library), by
# the clients that read them; "*" properties are read by both.
_BOTH = """
allow.auto.create.topics api.version.fallback.ms api.version.request
api.version.request.timeout.ms broker.address.family broker.address.ttl
broker.version.fallback builtin.features client.dns.lookup client.rack
connections.max.idle.ms debug enable.metrics.push enable.random.seed
enable.sasl.oauthbearer.unsecure.jwt enable.ssl.certificate.verification enabled_events
https.ca.location https.ca.pem log.connection.close log.queue log.thread.name log_level
max.in.flight max.in.flight.requests.per.connection message.copy.max.bytes
message.max.bytes metadata.max.age.ms metadata.recovery.rebootstrap.trigger.ms
metadata.recovery.strategy plugin.library.paths receive.message.max.bytes
reconnect.backoff.jitter.ms reconnect.backoff.max.ms reconnect.backoff.ms
retry.backoff.max.ms retry.backoff.ms sasl.kerberos.keytab sasl.kerberos.kinit.cmd
sasl.kerberos.min.time.before.relogin sasl.kerberos.principal sasl.kerberos.service.name
sasl.mechanism sasl.mechanisms sasl.oauthbearer.assertion.algorithm
sasl.oauthbearer.assertion.claim.aud sasl.oauthbearer.assertion.claim.exp.seconds
sasl.oauthbearer.assertion.claim.iss sasl.oauthbearer.assertion.claim.jti.include
sasl.oauthbearer.assertion.claim.nbf.seconds sasl.oauthbearer.assertion.claim.sub
sasl.oauthbearer.assertion.file sasl.oauthbearer.assertion.jwt.template.file
sasl.oauthbearer.assertion.private.key.file
sasl.oauthbearer.assertion.private.key.passphrase
sasl.oauthbearer.assertion.private.key.pem
sasl.oauthbearer.client.credentials.client.id
sasl.oauthbearer.client.credentials.client.secret sasl.oauthbearer.client.id
sasl.oauthbearer.client.secret sasl.oauthbearer.config sasl.oauthbearer.extensions
sasl.oauthbearer.grant.type sasl.oauthbearer.metadata.authentication.type
sasl.oauthbearer.method sasl.oauthbearer.scope sasl.oauthbearer.sub.claim.name
sasl.oauthbearer.token.endpoint.url sasl.password sasl.username security.protocol
socket.blocking.max.ms socket.connection.setup.timeout.ms socket.keepalive.enable
socket.max.fails socket.nagle.disable socket.receive.buffer.bytes socket.send.buffer.bytes
socket.timeout.ms ssl.ca.certificate.stores ssl.ca.location ssl.ca.pem
ssl.certificate.location ssl.certificate.pem ssl.cipher.suites ssl.crl.location
ssl.curves.list ssl.endpoint.identification.algorithm ssl.engine.id ssl.engine.location
ssl.key.location ssl.key.password ssl.key.pem ssl.keystore.location ssl.keystore.password
ssl.providers ssl.sigalgs.list statistics.interval.ms topic.blacklist
topic.metadata.propagation.max.ms topic.metadata.refresh.fast.cnt
topic.metadata.refresh.fast.interval.ms topic.metadata.refresh.interval.ms
topic.metadata.refresh.sparse
"""
_CONSUMER = """
auto.commit.interval.ms check.crcs consume.callback.max.messages
coordinator.query.interval.ms fetch.error.backoff.ms fetch.max.bytes
fetch.message.max.bytes fetch.min.bytes fetch.queue.backoff.ms fetch.wait.max.ms
group.protocol group.protocol.type group.remote.assignor heartbeat.interval.ms
max.partition.fetch.bytes max.poll.interval.ms
partition.assignment.strategy queued.max.messages.kbytes queued.min.messages
session.timeout.ms
"""
_PRODUCER = """
batch.num.messages batch.size compression.codec compression.level compression.type
delivery.report.only.error delivery.timeout.ms enable.gapless.guarantee enable.idempotence
linger.ms message.send.max.retries message.timeout.ms produce.offset.report
queue.buffering.backpressure.threshold queue.buffering.max.kbytes
queue.buffering.max.messages queue.buffering.max.ms queuing.strategy request.timeout.ms
retries sticky.partitioning.linger.ms transaction.timeout.ms
"""
CONSUMER_KEYS = frozenset((_BOTH + _CONSUMER).split())
PRODUCER_KEYS = frozenset((_BOTH + _PRODUCER).split())

# Settings the worker owns, the concepts of ``config.RESERVED_CLIENT_KEYS``: where to connect
# and as whom, the group, offsets and acknowledgements (the delivery protocol), transactions,
# callbacks or native pointers (which a YAML file cannot hold anyway), and the records per
# poll (each poll asks for what fits in the batch).
_RESERVED = """
bootstrap.servers metadata.broker.list client.id group.id group.instance.id
enable.auto.commit auto.commit.enable enable.auto.offset.store auto.offset.reset
offset.store.method offset.store.path offset.store.sync.interval.ms enable.partition.eof
acks request.required.acks transactional.id isolation.level
error_cb throttle_cb stats_cb log_cb logger oauth_cb on_delivery on_commit
background_event_cb socket_cb connect_cb closesocket_cb open_cb resolve_cb opaque
default_topic_conf consume_cb rebalance_cb offset_commit_cb dr_cb dr_msg_cb partitioner
partitioner_cb msg_order_cmp oauthbearer_token_refresh_cb ssl.certificate.verify_cb
ssl_engine_callback_data interceptors internal.termination.signal ssl_key ssl_certificate
ssl_ca share.acknowledgement.mode max.poll.records
"""
RESERVED_KEYS = frozenset(_RESERVED.split())
CLIENT_KEYS = (CONSUMER_KEYS | PRODUCER_KEYS) - RESERVED_KEYS

# The worker's defaults (``kafka.client`` may override them): kafka-python's values where
# librdkafka's differ, so that both backends bound a flush, a request and a record alike.
DEFAULTS: Mapping[str, Any] = {
    "allow.auto.create.topics": False,
    "request.timeout.ms": 30000,
    "delivery.timeout.ms": 120000,
    "message.max.bytes": 1048576,
    "linger.ms": 5,
    "transaction.timeout.ms": 60000,
}
# Aliases librdkafka accepts for the same property: set both and one silently wins.
ALIASES = {
    "delivery.timeout.ms": "message.timeout.ms",
    "linger.ms": "queue.buffering.max.ms",
    "retries": "message.send.max.retries",
    "max.in.flight": "max.in.flight.requests.per.connection",
    "sasl.mechanism": "sasl.mechanisms",
    "compression.type": "compression.codec",
}
# The ``ECG_*`` security variables and ``*_file`` secrets name kafka-python settings; on
# this backend they land on these librdkafka properties.
FROM_KAFKA_PYTHON = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "sasl_plain_password_file": "sasl.password_file",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "ssl_password": "ssl.key.password",
    "ssl_password_file": "ssl.key.password_file",
}


def setting(client: Mapping[str, Any], key: str) -> Any:
    """``key`` from ``client`` (or its alias), else the worker's default (None without)."""
    alias = ALIASES.get(key)
    if key in client:
        return client[key]
    if alias is not None and alias in client:
        return client[alias]
    return DEFAULTS.get(key)


def problem(key: str, value: Any) -> str | None:
    """Why ``key: value`` cannot be passed through to librdkafka, or None when it can."""
    if key in RESERVED_KEYS:
        return "is set by the worker itself and cannot be passed through (see docs/worker.md)"
    if key not in CLIENT_KEYS:
        return "is not a librdkafka setting"
    if not isinstance(value, str | int | float):  # bool is an int
        return f"must be a string, number or true/false, got {type(value).__name__}"
    numeric = key.endswith((".ms", ".bytes", ".kbytes", ".messages", ".retries"))
    if (numeric or key in ("retries", "batch.size")) and (
        isinstance(value, bool) or not isinstance(value, int | float) or value < 0
    ):
        return f"must be a non-negative number, got {value!r}"
    return None


def aliased_pairs(client: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Pairs of keys in ``client`` that are two names of one librdkafka property."""
    return [(k, a) for k, a in ALIASES.items() if k != a and k in client and a in client]
