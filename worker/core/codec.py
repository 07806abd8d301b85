"""Wire formats: decode input records, encode scores, anomalies and dead letters.

``decode`` is the hot path and never raises for a bad record: it returns a ``Window`` or a
``Rejected`` value that keeps the original bytes, the key, the source coordinates and a
reason code from docs/design.md. Valid JSON parsed by orjson cannot hold NaN or infinity,
so the common path checks only types and length; the values stay a Python list and the
whole batch becomes one numpy array later (``windows_array``).

Whatever ``decode`` accepts can be encoded again: the id and the extra fields are checked
for what orjson cannot write (lone surrogates, integers beyond 64 bits) and the extra
fields are bounded in bytes, nesting depth and keys (``FieldLimits``), so a score is never
larger or deeper than the limits allow.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from worker.core.scorer import Segment

# Reason codes (docs/design.md, "Dead letters").
EMPTY = "empty"
OVERSIZED = "oversized"
NOT_UTF8 = "not_utf8"
NOT_JSON = "not_json"
WRONG_TYPE = "wrong_type"
MISSING_VALUES = "missing_values"
BAD_ID = "bad_id"
WRONG_LENGTH = "wrong_length"
NON_NUMERIC = "non_numeric"
NON_FINITE = "non_finite"
# Only when the optional input-schema check is on (worker.service.input_schema).
SCHEMA = "schema"
BAD_UNICODE = "bad_unicode"
FIELDS_LIMIT = "fields_limit"
# Reasons given after decoding: by the scorer, the score encoder, or the producer.
UNSCORABLE = "unscorable"
UNENCODABLE = "unencodable"
OUTPUT_TOO_LARGE = "output_too_large"
SEND_FAILED = "send_failed"
DECODE_REASONS = (
    EMPTY,
    OVERSIZED,
    NOT_UTF8,
    NOT_JSON,
    WRONG_TYPE,
    MISSING_VALUES,
    BAD_ID,
    WRONG_LENGTH,
    NON_NUMERIC,
    NON_FINITE,
    BAD_UNICODE,
    FIELDS_LIMIT,
)
REASONS = (*DECODE_REASONS, SCHEMA, UNSCORABLE, UNENCODABLE, OUTPUT_TOO_LARGE, SEND_FAILED)
# Version of the output contract (worker/core/schemas/): the score's "schema_version" field
# and the dead letter's "dlq.schema_version" header. Raise it on any change a reader could
# trip over.
SCHEMA_VERSION = 1
_NUMBER_TYPES = frozenset({int, float})


@dataclass(frozen=True, slots=True)
class FieldLimits:
    """Bounds on the extra fields passed through to the outputs (``limits`` in worker.yaml).

    ``max_bytes`` bounds their JSON encoding, ``max_depth`` their nesting (the fields object
    itself is depth 1) and ``max_keys`` the object keys plus array items at every level,
    which bounds the memory a decoded record holds.
    """

    max_bytes: int = 8192
    max_depth: int = 16
    max_keys: int = 256


DEFAULT_FIELD_LIMITS = FieldLimits()


@dataclass(frozen=True, slots=True)
class Window:
    """A valid input window and where it came from."""

    id: str | int
    values: list[float]  # exactly window_length finite numbers
    fields: dict[str, Any] | None  # other input fields, passed through to the outputs
    raw: bytes  # the original value, for a dead letter if the batch step rejects it
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    fields_json: bytes | None = None  # ``fields`` encoded once by ``decode``


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input record that cannot be scored, headed for the dead-letter topic."""

    reason: str
    detail: str
    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int


def decode(
    value: bytes | None,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    window_length: int,
    max_record_bytes: int,
    field_limits: FieldLimits = DEFAULT_FIELD_LIMITS,
) -> Window | Rejected:
    """Decode one input record into a ``Window``, or say why it cannot be scored.

    ``max_record_bytes`` bounds the value and, separately, the key (a key is copied onto
    every output). Never raises for a bad record.
    """

    def reject(reason: str, detail: str) -> Rejected:
        return Rejected(reason, detail, value, key, topic, partition, offset, timestamp_ms)

    if not value:
        return reject(EMPTY, "record value is null or empty")
    if len(value) > max_record_bytes:
        return reject(OVERSIZED, f"record is {len(value)} bytes, limit is {max_record_bytes}")
    if key is not None and len(key) > max_record_bytes:
        return reject(OVERSIZED, f"record key is {len(key)} bytes, limit is {max_record_bytes}")
    strict = True
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        strict = False
        # Rare path: tell bad encodings from bad JSON, and accept the NaN/Infinity literals
        # that Python's json.dumps writes so that they are reported as non_finite.
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return reject(NOT_UTF8, f"value is not UTF-8 ({uexc.reason} at byte {uexc.start})")
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            return reject(NOT_JSON, f"value is not JSON ({exc})")
    fields: dict[str, Any] | None = None
    if type(doc) is dict:
        values = doc.pop("values", None)
        if values is None:
            return reject(MISSING_VALUES, "object has no 'values' array")
        record_id: Any = doc.pop("id", None)
        if record_id is None:
            record_id = f"{topic}:{partition}:{offset}"
        elif not ((type(record_id) is str and record_id) or type(record_id) is int):
            return reject(
                BAD_ID, f"'id' must be a non-empty string or an integer, got {record_id!r:.60}"
            )
        elif not strict:
            # Only the json fallback yields lone surrogates and integers beyond 64 bits.
            problem = _unencodable(record_id)
            if problem is not None:
                return reject(*problem)
        fields = doc or None
    elif type(doc) is list:
        values = doc
        record_id = f"{topic}:{partition}:{offset}"
    else:
        return reject(WRONG_TYPE, f"value is a JSON {_json_type(doc)}, expected an object or array")
    if type(values) is not list:
        return reject(WRONG_TYPE, f"'values' is a JSON {_json_type(values)}, expected an array")
    if len(values) != window_length:
        return reject(
            WRONG_LENGTH, f"'values' has {len(values)} numbers, the model needs {window_length}"
        )
    kinds = set(map(type, values))
    if not kinds <= _NUMBER_TYPES:
        bad = next(v for v in values if type(v) not in _NUMBER_TYPES)
        return reject(NON_NUMERIC, f"'values' holds a JSON {_json_type(bad)}: {bad!r:.40}")
    if not strict and not _all_finite(values):
        # Only the json fallback yields NaN, infinity or integers beyond float range.
        return reject(NON_FINITE, "'values' holds NaN, an infinite or an out-of-range number")
    fields_json: bytes | None = None
    if fields is not None:
        too_big = _check_fields(fields, field_limits)
        if too_big is not None:
            return reject(FIELDS_LIMIT, too_big)
        try:
            fields_json = orjson.dumps(fields)
        except TypeError as exc:  # orjson.JSONEncodeError: a lone surrogate, a huge integer
            return reject(*_encode_problem("an extra field", exc))
        if len(fields_json) > field_limits.max_bytes:
            return reject(
                FIELDS_LIMIT,
                f"extra fields take {len(fields_json)} bytes, limit is {field_limits.max_bytes}",
            )
    return Window(
        record_id, values, fields, value, key, topic, partition, offset, timestamp_ms, fields_json
    )


def _check_fields(fields: dict[str, Any], limits: FieldLimits) -> str | None:
    """Why the extra fields break a depth or key-count limit, or None (iterative walk)."""
    keys = 0
    stack: list[tuple[Any, int]] = [(fields, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limits.max_depth:
            return f"extra fields are nested deeper than {limits.max_depth} levels"
        children = node.values() if type(node) is dict else node
        keys += len(node)
        if keys > limits.max_keys:
            return f"extra fields hold more than {limits.max_keys} keys and array items"
        for child in children:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return None


def _unencodable(record_id: str | int) -> tuple[str, str] | None:
    try:
        orjson.dumps(record_id)
    except TypeError as exc:
        return _encode_problem("'id'", exc)
    return None


def _encode_problem(what: str, exc: Exception) -> tuple[str, str]:
    if "surrogate" in str(exc):
        return BAD_UNICODE, f"{what} holds a lone UTF-16 surrogate, which UTF-8 cannot carry"
    if "64-bit" in str(exc):
        reason = BAD_ID if what == "'id'" else FIELDS_LIMIT
        return reason, f"{what} holds an integer beyond 64 bits"
    return FIELDS_LIMIT, f"{what} cannot be encoded as JSON ({exc})"


def _all_finite(values: list[Any]) -> bool:
    try:
        return all(map(math.isfinite, map(float, values)))
    except OverflowError:
        return False


def windows_array(windows: list[Window], window_length: int) -> np.ndarray:
    """The batch's values as one ``(n, window_length)`` float64 array."""
    if not windows:
        return np.empty((0, window_length), dtype=np.float64)
    return np.array([w.values for w in windows], dtype=np.float64)


def reject_window(window: Window, reason: str, detail: str) -> Rejected:
    """Turn a decoded window into a dead letter (e.g. values that overflow float32)."""
    return Rejected(
        reason,
        detail,
        window.raw,
        window.key,
        window.topic,
        window.partition,
        window.offset,
        window.timestamp_ms,
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# --------------------------------------------------------------------------- encoding


def encode_score(
    window: Window,
    error: float,
    anomaly: bool,
    threshold: float,
    model_version: str,
    scored_at_ms: int,
    segments: list[Segment] | None = None,
) -> bytes:
    """The JSON value of a score record (docs/design.md, "Score value")."""
    doc = _score_doc(window, error, anomaly, threshold, model_version, scored_at_ms)
    if segments is not None:
        doc["segments"] = _segments_doc(segments)
    return orjson.dumps(doc)


def encode_score_and_alert(
    window: Window,
    error: float,
    anomaly: bool,
    threshold: float,
    model_version: str,
    scored_at_ms: int,
    segments: list[Segment] | None,
) -> tuple[bytes, bytes | None]:
    """The score record and, for an anomaly, the alert (the score plus ``segments``): the
    same bytes as two ``encode_score`` calls, from one document."""
    doc = _score_doc(window, error, anomaly, threshold, model_version, scored_at_ms)
    score = orjson.dumps(doc)
    if not anomaly:
        return score, None
    doc["segments"] = _segments_doc(segments or [])
    return score, orjson.dumps(doc)


def _segments_doc(segments: list[Segment]) -> list[dict[str, Any]]:
    return [{"start": s.start, "end": s.end, "mean_error": s.mean_error} for s in segments]


def _score_doc(
    window: Window,
    error: float,
    anomaly: bool,
    threshold: float,
    model_version: str,
    scored_at_ms: int,
) -> dict[str, Any]:
    # The fields were encoded once by ``decode``; a Fragment embeds those bytes as they are.
    fields: Any = orjson.Fragment(window.fields_json) if window.fields_json else window.fields
    return {
        "schema_version": SCHEMA_VERSION,
        "id": window.id,
        "error": error,
        "anomaly": anomaly,
        "threshold": threshold,
        "model_version": model_version,
        "source": {
            "topic": window.topic,
            "partition": window.partition,
            "offset": window.offset,
            "timestamp_ms": window.timestamp_ms,
        },
        "scored_at_ms": scored_at_ms,
        "fields": fields or {},
    }


def dead_letter_headers(rejected: Rejected) -> list[tuple[str, bytes]]:
    """Kafka headers naming why and where a dead letter came from (UTF-8 strings)."""
    return [
        ("dlq.schema_version", str(SCHEMA_VERSION).encode()),
        ("dlq.reason", rejected.reason.encode()),
        ("dlq.detail", rejected.detail.encode("utf-8", "replace")),
        ("dlq.source.topic", rejected.topic.encode("utf-8", "replace")),
        ("dlq.source.partition", str(rejected.partition).encode()),
        ("dlq.source.offset", str(rejected.offset).encode()),
        ("dlq.source.timestamp_ms", str(rejected.timestamp_ms).encode()),
    ]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead letter ready to send: key and value (never both null) and headers."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def encode_dead_letter(rejected: Rejected, max_bytes: int) -> DeadLetter:
    """The dead-letter record of ``rejected``: the original key and value, each cut to at
    most ``max_bytes`` (the cut part's original size and sha256 go in headers), and the
    ``dead_letter_headers``. A null value is sent as empty bytes with ``dlq.value.null``,
    since Kafka producers refuse a record whose key and value are both null.
    """
    headers = dead_letter_headers(rejected)
    value = rejected.value
    if value is None:
        headers.append(("dlq.value.null", b"true"))
        value = b""
    truncated = []
    if len(value) > max_bytes:
        truncated.append("value")
        headers += _digest_headers("dlq.original.value", value)
        value = value[:max_bytes]
    key = rejected.key
    if key is not None and len(key) > max_bytes:
        truncated.append("key")
        headers += _digest_headers("dlq.original.key", key)
        key = key[:max_bytes]
    if truncated:
        headers.append(("dlq.truncated", ",".join(truncated).encode()))
    return DeadLetter(key, value, headers)


def _digest_headers(prefix: str, data: bytes) -> list[tuple[str, bytes]]:
    return [
        (f"{prefix}.size", str(len(data)).encode()),
        (f"{prefix}.sha256", hashlib.sha256(data).hexdigest().encode()),
    ]


# --------------------------------------------------------------------------- reading outputs


class ScoreFormatError(ValueError):
    """A value on the scores or anomalies topic is not a score record (names the field)."""


@dataclass(frozen=True, slots=True)
class ScoreSource:
    """Where the scored window came from (``source`` of a score record)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Score:
    """A score record as ``encode_score`` writes it (docs/design.md, "Score value").

    ``id``, ``error``, ``anomaly`` and ``threshold`` are required; the other fields are
    ``None`` when absent (readers tolerate older or partial producers) and checked when
    present. ``segments`` is set only on records from the anomalies topic.
    """

    id: str | int
    error: float
    anomaly: bool
    threshold: float
    model_version: str | None = None
    source: ScoreSource | None = None
    scored_at_ms: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    segments: list[Segment] | None = None


def decode_score(value: bytes | None) -> Score:
    """Read one score (or anomaly) record written by ``encode_score``.

    Raises ``ScoreFormatError`` saying what is wrong: empty, not JSON, or which field is
    missing or of the wrong type.
    """
    if not value:
        raise ScoreFormatError("empty record")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ScoreFormatError(f"not JSON ({exc})") from exc
    return score_from_doc(doc)


def score_from_doc(doc: Any) -> Score:
    """``decode_score`` for an already-parsed JSON document."""
    if not isinstance(doc, dict):
        raise ScoreFormatError(f"expected a JSON object, got {_json_type(doc)}")
    record_id = doc.get("id")
    if isinstance(record_id, bool) or not isinstance(record_id, str | int):
        raise ScoreFormatError(f"field 'id' must be a string or integer, got {record_id!r:.60}")
    error = _finite(doc, "error", "error")
    anomaly = doc.get("anomaly")
    if not isinstance(anomaly, bool):
        raise ScoreFormatError(f"field 'anomaly' must be true or false, got {anomaly!r:.60}")
    source = doc.get("source")
    if source is not None:
        if not isinstance(source, dict):
            raise ScoreFormatError(f"field 'source' must be an object, got {_json_type(source)}")
        source = ScoreSource(
            topic=_typed(source, "topic", str, "source.topic"),
            partition=_typed(source, "partition", int, "source.partition"),
            offset=_typed(source, "offset", int, "source.offset"),
            timestamp_ms=_typed(source, "timestamp_ms", int, "source.timestamp_ms"),
        )
    fields = doc.get("fields")
    if fields is not None and not isinstance(fields, dict):
        raise ScoreFormatError(f"field 'fields' must be an object, got {_json_type(fields)}")
    segments = doc.get("segments")
    if segments is not None:
        if not isinstance(segments, list):
            raise ScoreFormatError(f"field 'segments' must be a list, got {_json_type(segments)}")
        segments = [_segment(s, i) for i, s in enumerate(segments)]
    return Score(
        id=record_id,
        error=error,
        anomaly=anomaly,
        threshold=_finite(doc, "threshold", "threshold"),
        model_version=_optional(doc, "model_version", str),
        source=source,
        scored_at_ms=_optional(doc, "scored_at_ms", int),
        fields=fields or {},
        segments=segments,
    )


def _segment(doc: Any, index: int) -> Segment:
    if not isinstance(doc, dict):
        raise ScoreFormatError(f"segments[{index}] must be an object")
    start, end = doc.get("start"), doc.get("end")
    if type(start) is not int or type(end) is not int:
        raise ScoreFormatError(f"segments[{index}] needs integer 'start' and 'end'")
    return Segment(start, end, _finite(doc, "mean_error", f"segments[{index}].mean_error"))


def _finite(doc: dict[str, Any], name: str, dotted: str) -> float:
    if name not in doc:
        raise ScoreFormatError(f"missing field {dotted!r}")
    value = doc[name]
    if type(value) not in _NUMBER_TYPES or not _all_finite([value]):
        raise ScoreFormatError(f"field {dotted!r} must be a finite number, got {value!r:.60}")
    return float(value)


def _typed(doc: dict[str, Any], name: str, kind: type, dotted: str) -> Any:
    value = doc.get(name)
    if type(value) is not kind:
        noun = "an integer" if kind is int else "a string"
        raise ScoreFormatError(f"field {dotted!r} must be {noun}, got {value!r:.60}")
    return value


def _optional(doc: dict[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    if value is None:
        return None
    return _typed(doc, name, kind, name)
