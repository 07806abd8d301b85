"""Every poison record of issue 10 on the real broker, interleaved with valid windows.

Produced by kcat (lone surrogates, deep nesting, a null-key null-value tombstone) and by
kafka-python (a record just under the broker's 1 MiB limit, values near float32's maximum,
many small objects, an oversized key). Before the fix the worker crash-looped on the first
of them and the windows behind it were never scored. Now every valid id is scored exactly
once, every poison record is one dead letter with the expected reason, and the worker
never exits.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from tests.builders import synthetic_windows
from tests.integration.services import KafkaBroker, TopicNames
from tests.integration.test_worker_stream import Env, score_docs
from tests.integration.worker_helpers import read_topic as read

pytestmark = pytest.mark.integration

VALID_PER_GAP = 20
ROW = [round(float(v), 5) for v in synthetic_windows(1, seed=5)[0]]
ROW_JSON = orjson.dumps(ROW).decode()
NEAR_MIB = 1_040_000  # under the broker's 1 MiB message limit, far over max_record_bytes


def near_mib_record() -> bytes:
    head = b'{"id": "near-mib", "values": ' + ROW_JSON.encode() + b', "pad": "'
    return head + b"p" * (NEAR_MIB - len(head) - 2) + b'"}'


# (how it is sent, key, value as kcat reads it or as bytes, expected reason)
KCAT_POISON = [
    ("kcat", "poison-surrogate-id", '{"id": "beat-\\ud800", "values": ' + ROW_JSON + "}",
     "bad_unicode"),
    ("kcat", "poison-surrogate-field",
     '{"id": "beat-s2", "values": ' + ROW_JSON + ', "note": "\\udfff"}', "bad_unicode"),
    ("kcat", "poison-deep", '{"id": "deep", "values": ' + ROW_JSON + ', "x": '
     + "[" * 300 + "]" * 300 + "}", "fields_limit"),
]  # fmt: skip
PYTHON_POISON = [
    ("python", b"poison-near-mib", near_mib_record(), "oversized"),
    ("python", b"poison-huge-values", orjson.dumps({"id": "huge", "values": [3e37] * 140}),
     "unscorable"),
    ("python", b"poison-many-objects",
     b'{"id": "many", "values": ' + ROW_JSON.encode() + b', "m": [' + b"{}," * 20000 + b"{}]}",
     "fields_limit"),
    ("python", b"k" * 70_000, orjson.dumps({"id": "big-key", "values": ROW}), "oversized"),
]  # fmt: skip


@pytest.fixture
def env(
    kafka_broker: KafkaBroker, topic_names: TopicNames, tmp_path: Path, kafka_library: str
) -> Iterator[Env]:
    environment = Env(kafka_broker, topic_names, tmp_path, kafka_library)
    try:
        yield environment
    finally:
        environment.close()


def label(key: bytes | None) -> bytes | None:
    """A key short enough to read in an assertion message."""
    return key if key is None or len(key) <= 40 else b"<%d-byte key>" % len(key)


def original_key(record: Any) -> bytes | None:
    """The dead letter's key as ``label`` shows the original (a cut key by its size)."""
    headers = dict(record.headers)
    if b"key" in headers.get("dlq.truncated", b"").split(b","):
        return b"<%d-byte key>" % int(headers["dlq.original.key.size"])
    return label(record.key)


def kcat_send(kcat: str, env: Env, line: str, null_empty: bool = False) -> None:
    command = [kcat, "-P", "-b", env.broker.bootstrap_servers, "-t", env.topics.input, "-K", "\t"]
    subprocess.run(
        command + (["-Z"] if null_empty else []),
        input=line + "\n",
        text=True,
        check=True,
        timeout=30,
    )


def test_every_poison_record_is_a_dead_letter_and_every_valid_window_is_scored(
    env: Env, kcat: str
) -> None:
    worker = env.worker(batching={"max_batch_size": 32, "max_wait_ms": 20})
    worker.wait_ready()
    big = KafkaProducer(
        bootstrap_servers=env.broker.bootstrap_servers, acks="all", max_request_size=1_100_000
    )
    poison = [*KCAT_POISON, ("kcat-tombstone", None, "", "empty"), *PYTHON_POISON]
    windows = synthetic_windows(VALID_PER_GAP * (len(poison) + 1), seed=6)
    valid_ids: list[str] = []
    expected: Counter[tuple[bytes | None, str]] = Counter()
    for gap in range(len(poison) + 1):
        ids = [f"v-{gap:02d}-{i:02d}" for i in range(VALID_PER_GAP)]
        rows = windows[gap * VALID_PER_GAP : (gap + 1) * VALID_PER_GAP]
        env.send_windows(ids, rows)
        valid_ids += ids
        if gap == len(poison):
            break
        how, key, value, reason = poison[gap]
        if how == "kcat":
            kcat_send(kcat, env, f"{key}\t{value}")
        elif how == "kcat-tombstone":
            kcat_send(kcat, env, "\t", null_empty=True)  # null key, null value
        else:
            big.send(env.topics.input, key=key, value=value)
            big.flush(timeout=30)
        expected[(label(key.encode() if isinstance(key, str) else key), reason)] += 1
    big.close(timeout=5)

    bootstrap = env.broker.bootstrap_servers
    scores = score_docs(read(bootstrap, env.topics.scores, len(valid_ids), exact_wait_s=2.0))
    dead = read(bootstrap, env.topics.dead_letter, len(poison), exact_wait_s=2.0)

    assert sorted(str(s.id) for s in scores) == sorted(valid_ids)  # each exactly once
    got = Counter((original_key(r), dict(r.headers)["dlq.reason"].decode()) for r in dead)
    assert got == expected
    for record in dead:
        headers = dict(record.headers)
        if record.key == b"poison-near-mib":
            original = near_mib_record()
            assert record.value == original[:65536]
            assert int(headers["dlq.original.value.size"]) == len(original)
            assert headers["dlq.original.value.sha256"].decode() == (
                hashlib.sha256(original).hexdigest()
            )
        if record.key is None:
            assert record.value == b"" and headers["dlq.value.null"] == b"true"
        if record.key is not None and record.key.startswith(b"kkk"):
            assert headers["dlq.truncated"] == b"key"
            assert int(headers["dlq.original.key.size"]) == 70_000
    assert all(s.error >= 0 for s in scores)  # decode_score refuses "error": null

    # Still the same process, healthy, and the operators' counters agree.
    assert worker.process is not None and worker.process.poll() is None
    assert worker.get("/healthz")[0] == 200
    total = len(valid_ids) + len(poison)
    deadline = time.monotonic() + 10
    while worker.metric("ecg_windows_consumed_total") < total and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker.metric("ecg_windows_consumed_total") == total
    assert worker.metric("ecg_windows_scored_total") == len(valid_ids)
    assert worker.metric("ecg_reconstruction_error_sum") < float("inf")
    assert worker.terminate() == 0
