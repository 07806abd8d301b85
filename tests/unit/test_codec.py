"""The wire formats: every reason code, pass-through fields, ids, and the encoders."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest

from worker.core import codec
from worker.core.codec import Rejected, Window, decode, encode_score, windows_array
from worker.core.scorer import Segment

L = 140
LIMIT = 65536


def run(value: bytes | None, key: bytes | None = b"dev-1", length: int = L) -> Window | Rejected:
    return decode(value, key, "ecg.windows", 3, 42, 1_700_000_000_000, length, LIMIT)


def values(n: int = L) -> list[float]:
    return [float(i) / 10 for i in range(n)]


def test_object_window_keeps_id_key_source_and_passes_other_fields_through() -> None:
    raw = orjson.dumps({"id": "beat-17", "values": values(), "label": 1, "meta": {"lead": "II"}})
    w = run(raw)
    assert isinstance(w, Window)
    assert w.id == "beat-17"
    assert w.values == values()
    assert w.fields == {"label": 1, "meta": {"lead": "II"}}
    assert (w.key, w.topic, w.partition, w.offset) == (b"dev-1", "ecg.windows", 3, 42)
    assert w.timestamp_ms == 1_700_000_000_000
    assert w.raw == raw


def test_bare_array_gets_a_coordinate_id_and_integers_are_numbers() -> None:
    w = run(orjson.dumps(list(range(L))))
    assert isinstance(w, Window)
    assert w.id == "ecg.windows:3:42"
    assert w.fields is None
    assert windows_array([w], L).dtype == np.float64


def test_integer_id_and_null_id() -> None:
    w = run(orjson.dumps({"id": 17, "values": values()}))
    assert isinstance(w, Window) and w.id == 17
    w = run(orjson.dumps({"id": None, "values": values()}))
    assert isinstance(w, Window) and w.id == "ecg.windows:3:42"


MALFORMED: list[tuple[str, Any, str]] = [
    ("null value", None, codec.EMPTY),
    ("empty value", b"", codec.EMPTY),
    ("oversized", b"[" + b"1," * 40000 + b"1]", codec.OVERSIZED),
    ("latin-1 bytes", b"\xff\xfe[1,2]", codec.NOT_UTF8),
    ("truncated JSON", b'{"values": [1, 2', codec.NOT_JSON),
    ("plain text", b"hello", codec.NOT_JSON),
    ("JSON string", b'"a window"', codec.WRONG_TYPE),
    ("JSON number", b"42", codec.WRONG_TYPE),
    ("values not an array", orjson.dumps({"values": "1,2,3"}), codec.WRONG_TYPE),
    ("no values", orjson.dumps({"id": "x", "samples": values()}), codec.MISSING_VALUES),
    ("bool id", orjson.dumps({"id": True, "values": values()}), codec.BAD_ID),
    ("float id", orjson.dumps({"id": 1.5, "values": values()}), codec.BAD_ID),
    ("empty id", orjson.dumps({"id": "", "values": values()}), codec.BAD_ID),
    ("short", orjson.dumps(values(139)), codec.WRONG_LENGTH),
    ("long", orjson.dumps({"values": values(141)}), codec.WRONG_LENGTH),
    ("empty values", orjson.dumps({"values": []}), codec.WRONG_LENGTH),
    ("string sample", orjson.dumps([*values(139), "1.0"]), codec.NON_NUMERIC),
    ("null sample", orjson.dumps([None, *values(139)]), codec.NON_NUMERIC),
    ("bool sample", orjson.dumps([True, *values(139)]), codec.NON_NUMERIC),
    ("nested sample", orjson.dumps([[1.0], *values(139)]), codec.NON_NUMERIC),
    ("NaN literal", json.dumps([float("nan"), *values(139)]).encode(), codec.NON_FINITE),
    ("Infinity literal", json.dumps([*values(139), float("inf")]).encode(), codec.NON_FINITE),
    ("overflowing number", b"[1e999" + b",1" * 139 + b"]", codec.NON_FINITE),
]


@pytest.mark.parametrize(("name", "value", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_record_is_rejected_with_its_reason_and_original_bytes(
    name: str, value: bytes | None, reason: str
) -> None:
    result = run(value)
    assert isinstance(result, Rejected), name
    assert result.reason == reason
    assert result.detail  # a human-readable explanation
    assert result.value == value
    assert result.key == b"dev-1"
    assert (result.topic, result.partition, result.offset) == ("ecg.windows", 3, 42)


def test_every_reason_code_is_exercised() -> None:
    # "schema" comes from the optional input-schema check, not from decode.
    assert {m[2] for m in MALFORMED} == set(codec.REASONS) - {codec.SCHEMA}


def test_wrong_length_detail_names_both_lengths() -> None:
    result = run(orjson.dumps(values(139)))
    assert isinstance(result, Rejected)
    assert "139" in result.detail and "140" in result.detail


def test_limit_is_inclusive() -> None:
    raw = orjson.dumps(values())
    assert isinstance(decode(raw, None, "t", 0, 0, 0, L, len(raw)), Window)
    assert decode(raw, None, "t", 0, 0, 0, L, len(raw) - 1).reason == codec.OVERSIZED  # type: ignore[union-attr]


def test_encode_score_matches_the_documented_format() -> None:
    w = run(orjson.dumps({"id": "beat-17", "values": values(), "label": 1}))
    assert isinstance(w, Window)
    doc = orjson.loads(
        encode_score(w, 0.0213, False, 0.0321, "3f1c2a9b0d4e5f67", 1_700_000_000_051)
    )
    assert doc == {
        "schema_version": 1,
        "id": "beat-17",
        "error": 0.0213,
        "anomaly": False,
        "threshold": 0.0321,
        "model_version": "3f1c2a9b0d4e5f67",
        "source": {
            "topic": "ecg.windows",
            "partition": 3,
            "offset": 42,
            "timestamp_ms": 1_700_000_000_000,
        },
        "scored_at_ms": 1_700_000_000_051,
        "fields": {"label": 1},
    }


def test_encode_anomaly_adds_segments() -> None:
    w = run(orjson.dumps(values()))
    assert isinstance(w, Window)
    segments = [Segment(88, 104, 0.112), Segment(10, 15, 0.05)]
    doc = orjson.loads(encode_score(w, 0.5, True, 0.1, "v", 1, segments))
    assert doc["anomaly"] is True
    assert doc["segments"] == [
        {"start": 88, "end": 104, "mean_error": 0.112},
        {"start": 10, "end": 15, "mean_error": 0.05},
    ]


def test_dead_letter_headers_name_reason_and_source() -> None:
    rejected = run(b"hello")
    assert isinstance(rejected, Rejected)
    headers = dict(codec.dead_letter_headers(rejected))
    assert headers["dlq.reason"] == b"not_json"
    assert headers["dlq.source.topic"] == b"ecg.windows"
    assert headers["dlq.source.partition"] == b"3"
    assert headers["dlq.source.offset"] == b"42"
    assert headers["dlq.source.timestamp_ms"] == b"1700000000000"
    assert headers["dlq.detail"].decode()
