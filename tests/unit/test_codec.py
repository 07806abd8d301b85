"""The wire formats: every reason code, pass-through fields, ids, and the encoders."""

from __future__ import annotations

import hashlib
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


def nested(depth: int) -> bytes:
    """A window whose extra field ``deep`` is nested ``depth`` levels (about 4 bytes each)."""
    return b'{"values":' + orjson.dumps(values()) + b',"deep":' + b"[" * depth + b"]" * depth + b"}"


VALUES_JSON = orjson.dumps(values()).decode()


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
    # Accepted by the json fallback, but no UTF-8 encoder can write them back.
    (
        "lone surrogate in id",
        ('{"id": "beat-\\ud800", "values": ' + VALUES_JSON + "}").encode(),
        codec.BAD_UNICODE,
    ),
    (
        "lone surrogate in a field",
        ('{"values": ' + VALUES_JSON + ', "note": "\\udc00x"}').encode(),
        codec.BAD_UNICODE,
    ),
    (
        "lone surrogate in a field name",
        ('{"values": ' + VALUES_JSON + ', "\\ud83d": 1}').encode(),
        codec.BAD_UNICODE,
    ),
    (
        "integer id beyond 64 bits",
        ('{"id": ' + str(2**70) + ', "values": ' + VALUES_JSON + ', "x": "\\ud800"}').encode(),
        codec.BAD_ID,
    ),
    ("field nested 300 deep", nested(300), codec.FIELDS_LIMIT),
    ("field nested 17 deep", nested(16), codec.FIELDS_LIMIT),
    (
        "fields with too many keys",
        orjson.dumps({"values": values(), "many": [{}] * 300}),
        codec.FIELDS_LIMIT,
    ),
    (
        "fields too large",
        orjson.dumps({"values": values(), "note": "x" * 9000}),
        codec.FIELDS_LIMIT,
    ),
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
    # The others come from the optional input-schema check or after decoding.
    assert {m[2] for m in MALFORMED} == set(codec.DECODE_REASONS)


def test_fields_within_limits_pass_through_and_are_encoded_once() -> None:
    w = run(nested(15))  # the fields object is level 1, so 15 brackets make 16 levels
    assert isinstance(w, Window)
    doc = orjson.loads(encode_score(w, 0.1, False, 0.2, "v", 1))
    assert doc["fields"] == {"deep": orjson.loads(nested(15))["deep"]} == w.fields
    limits = codec.FieldLimits(max_bytes=10_000, max_depth=2, max_keys=3)
    raw = orjson.dumps({"values": values(), "a": 1, "b": {"c": 2}})
    assert isinstance(decode(raw, None, "t", 0, 0, 0, L, LIMIT, limits), Window)
    raw = orjson.dumps({"values": values(), "a": 1, "b": {"c": 2, "d": 3}})
    result = decode(raw, None, "t", 0, 0, 0, L, LIMIT, limits)
    assert isinstance(result, Rejected) and "more than 3 keys" in result.detail


def test_oversized_key_is_rejected() -> None:
    result = decode(orjson.dumps(values()), b"k" * (LIMIT + 1), "t", 0, 0, 0, L, LIMIT)
    assert isinstance(result, Rejected) and result.reason == codec.OVERSIZED
    assert "key" in result.detail


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


def test_score_and_alert_in_one_call_are_the_bytes_of_two_encode_score_calls() -> None:
    w = run(orjson.dumps({"id": "a", "values": values(), "label": 1}))
    assert isinstance(w, Window)
    segments = [Segment(88, 104, 0.112)]
    score, alert = codec.encode_score_and_alert(w, 0.5, True, 0.1, "v", 1, segments)
    assert score == encode_score(w, 0.5, True, 0.1, "v", 1)
    assert alert == encode_score(w, 0.5, True, 0.1, "v", 1, segments)
    normal = codec.encode_score_and_alert(w, 0.01, False, 0.1, "v", 1, None)
    assert normal == (encode_score(w, 0.01, False, 0.1, "v", 1), None)


def test_windows_array_keeps_every_value_in_row_order() -> None:
    rows = [[float(i * L + j) for j in range(L)] for i in range(3)]
    windows = [run(orjson.dumps(r)) for r in rows]
    assert all(isinstance(w, Window) for w in windows)
    array = codec.windows_array(windows, L)  # type: ignore[arg-type]
    assert array.shape == (3, L) and array.tolist() == rows


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


def test_dead_letter_of_a_tombstone_is_sendable() -> None:
    rejected = decode(None, None, "ecg.windows", 0, 5, -1, L, LIMIT)
    assert isinstance(rejected, Rejected)
    dead = codec.encode_dead_letter(rejected, LIMIT)
    assert dead.key is None and dead.value == b""  # producers refuse null key + null value
    assert dict(dead.headers)["dlq.value.null"] == b"true"


def test_oversized_dead_letter_is_cut_with_size_and_digest() -> None:
    value, key = b"[" + b"1," * 600_000 + b"1]", b"k" * 100
    rejected = decode(value, key, "ecg.windows", 0, 5, -1, L, LIMIT)
    assert isinstance(rejected, Rejected) and rejected.reason == codec.OVERSIZED
    dead = codec.encode_dead_letter(rejected, LIMIT)
    headers = dict(dead.headers)
    assert dead.value == value[:LIMIT] and dead.key == key
    assert headers["dlq.truncated"] == b"value"
    assert int(headers["dlq.original.value.size"]) == len(value)
    assert headers["dlq.original.value.sha256"] == hashlib.sha256(value).hexdigest().encode()
    small = codec.encode_dead_letter(rejected, 0)
    assert small.value == b"" and small.key == b""
    assert dict(small.headers)["dlq.truncated"] == b"value,key"


# The dead letter's detail names the JSON type that was found: it is what an operator reads.
TYPE_DETAILS: list[tuple[bytes, str]] = [
    (b'"a window"', "value is a JSON string, expected"),
    (b"42", "value is a JSON number, expected"),
    (b"null", "value is a JSON null, expected"),
    (b"true", "value is a JSON boolean, expected"),
    (orjson.dumps({"values": {"a": 1}}), "'values' is a JSON object, expected an array"),
    (orjson.dumps({"values": "1,2"}), "'values' is a JSON string, expected an array"),
    (orjson.dumps([*values(139), "1.0"]), "'values' holds a JSON string: '1.0'"),
    (orjson.dumps([None, *values(139)]), "'values' holds a JSON null: None"),
    (orjson.dumps([*values(139), False]), "'values' holds a JSON boolean: False"),
    (orjson.dumps([*values(139), [1.5]]), "'values' holds a JSON array: [1.5]"),
    (orjson.dumps([*values(139), {"v": 1}]), "'values' holds a JSON object: {'v': 1}"),
]


@pytest.mark.parametrize(("value", "detail"), TYPE_DETAILS, ids=[d for _, d in TYPE_DETAILS])
def test_wrong_type_detail_names_the_json_type_found(value: bytes, detail: str) -> None:
    result = run(value)
    assert isinstance(result, Rejected)
    assert result.detail.startswith(detail)


def test_detail_of_the_other_reasons_says_what_is_wrong() -> None:
    details = {
        codec.EMPTY: run(b"").detail,  # type: ignore[union-attr]
        codec.MISSING_VALUES: run(orjson.dumps({"id": "x"})).detail,  # type: ignore[union-attr]
        codec.NON_FINITE: run(json.dumps([float("nan"), *values(139)]).encode()).detail,  # type: ignore[union-attr]
    }
    assert "null or empty" in details[codec.EMPTY]
    assert "no 'values'" in details[codec.MISSING_VALUES]
    assert "NaN" in details[codec.NON_FINITE]


def test_an_integer_sample_beyond_float_range_is_non_finite() -> None:
    result = run(b"[" + b"9" * 400 + b",1" * 139 + b"]")
    assert isinstance(result, Rejected) and result.reason == codec.NON_FINITE


def test_an_integer_beyond_64_bits_in_an_extra_field_is_a_fields_limit() -> None:
    raw = ('{"values": ' + VALUES_JSON + ', "big": ' + "9" * 400 + "}").encode()
    result = run(raw)
    assert isinstance(result, Rejected) and result.reason == codec.FIELDS_LIMIT
    assert "an extra field holds an integer beyond 64 bits" in result.detail


def test_a_lone_surrogate_in_an_extra_field_is_named() -> None:
    result = run(('{"values": ' + VALUES_JSON + ', "note": "\\udc00x"}').encode())
    assert isinstance(result, Rejected)
    assert result.detail.startswith("an extra field holds a lone UTF-16 surrogate")


def test_field_and_key_limits_are_inclusive() -> None:
    fields = {"note": "x" * 100}
    limits = codec.FieldLimits(max_bytes=len(orjson.dumps(fields)))
    raw = orjson.dumps({"values": values(), **fields})
    assert isinstance(decode(raw, None, "t", 0, 0, 0, L, LIMIT, limits), Window)
    smaller = codec.FieldLimits(max_bytes=limits.max_bytes - 1)
    assert decode(raw, None, "t", 0, 0, 0, L, LIMIT, smaller).reason == codec.FIELDS_LIMIT  # type: ignore[union-attr]
    assert isinstance(decode(raw, b"k" * LIMIT, "t", 0, 0, 0, L, LIMIT), Window)


def test_an_empty_batch_is_an_empty_array_of_the_window_length() -> None:
    empty = windows_array([], L)
    assert (empty.shape, empty.dtype) == ((0, L), np.float64)


def test_a_window_rejected_after_decoding_keeps_its_source() -> None:
    w = run(orjson.dumps({"id": "beat-1", "values": values()}))
    assert isinstance(w, Window)
    rejected = codec.reject_window(w, codec.UNSCORABLE, "values overflow float32")
    assert rejected == Rejected(
        codec.UNSCORABLE,
        "values overflow float32",
        w.raw,
        b"dev-1",
        "ecg.windows",
        3,
        42,
        1_700_000_000_000,
    )


def test_dead_letter_headers_survive_text_that_utf8_cannot_carry() -> None:
    rejected = Rejected(codec.NOT_JSON, "bad \ud800 text", b"x", None, "t\udc00", 0, 1, 2)
    headers = dict(codec.dead_letter_headers(rejected))
    assert headers["dlq.detail"] == b"bad ? text"
    assert headers["dlq.source.topic"] == b"t?"


def test_a_dead_letter_of_exactly_max_bytes_is_not_cut() -> None:
    rejected = Rejected(codec.NOT_JSON, "d", b"v" * 10, b"k" * 10, "t", 0, 1, 2)
    dead = codec.encode_dead_letter(rejected, 10)
    assert (dead.key, dead.value) == (b"k" * 10, b"v" * 10)
    assert "dlq.truncated" not in dict(dead.headers)
