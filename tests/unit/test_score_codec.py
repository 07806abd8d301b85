"""decode_score reads back exactly what encode_score writes, and names what is wrong."""

from __future__ import annotations

import orjson
import pytest

from worker.core.codec import (
    Score,
    ScoreFormatError,
    ScoreSource,
    Window,
    decode,
    decode_score,
    encode_score,
    score_from_doc,
)
from worker.core.scorer import Segment

L = 140


def window(doc: object) -> Window:
    w = decode(orjson.dumps(doc), b"dev-1", "ecg.windows", 3, 42, 1_700_000_000_000, L, 65536)
    assert isinstance(w, Window)
    return w


def test_score_round_trip() -> None:
    w = window({"id": "beat-17", "values": [0.5] * L, "label": 1, "meta": {"lead": "II"}})
    value = encode_score(w, 0.0213, False, 0.0321, "3f1c2a9b0d4e5f67", 1_700_000_000_051)
    assert decode_score(value) == Score(
        id="beat-17",
        error=0.0213,
        anomaly=False,
        threshold=0.0321,
        model_version="3f1c2a9b0d4e5f67",
        source=ScoreSource("ecg.windows", 3, 42, 1_700_000_000_000),
        scored_at_ms=1_700_000_000_051,
        fields={"label": 1, "meta": {"lead": "II"}},
        segments=None,
    )


def test_anomaly_round_trip_keeps_segments_and_integer_ids() -> None:
    w = window({"id": 17, "values": [1] * L})
    segments = [Segment(88, 104, 0.112), Segment(10, 15, 0.05)]
    back = decode_score(encode_score(w, 0.5, True, 0.1, "v", 1, segments))
    assert (back.id, back.anomaly, back.segments, back.fields) == (17, True, segments, {})


def test_score_of_a_bare_array_round_trips_with_its_coordinate_id() -> None:
    back = decode_score(encode_score(window([0.0] * L), 0.25, True, 0.25, "v", 5))
    assert back.id == "ecg.windows:3:42"
    assert back.error == 0.25


def test_optional_fields_may_be_absent() -> None:
    score = decode_score(b'{"id": "a", "error": 1, "anomaly": true, "threshold": 0.5}')
    assert score == Score("a", 1.0, True, 0.5)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "empty record"),
        (b"", "empty record"),
        (b"nope", "not JSON"),
        (b"[1]", "expected a JSON object, got array"),
        (b'{"error": 1, "anomaly": true, "threshold": 1}', "field 'id' must be a string"),
        (b'{"id": true, "error": 1, "anomaly": true, "threshold": 1}', "field 'id'"),
        (b'{"id": "a", "anomaly": true, "threshold": 1}', "missing field 'error'"),
        (b'{"id": "a", "error": "x", "anomaly": true, "threshold": 1}', "field 'error' must be"),
        (b'{"id": "a", "error": 1, "anomaly": 1, "threshold": 1}', "field 'anomaly' must be"),
        (b'{"id": "a", "error": 1, "anomaly": true}', "missing field 'threshold'"),
        (
            b'{"id": "a", "error": 1, "anomaly": true, "threshold": 1, "source": 3}',
            "field 'source' must be an object",
        ),
        (
            b'{"id": "a", "error": 1, "anomaly": true, "threshold": 1, "source": {"topic": "t"}}',
            "field 'source.partition' must be an integer",
        ),
        (
            b'{"id": "a", "error": 1, "anomaly": true, "threshold": 1, "segments": [{"start": 1}]}',
            r"segments[0] needs integer 'start' and 'end'",
        ),
        (
            b'{"id": "a", "error": 1, "anomaly": true, "threshold": 1, "scored_at_ms": "now"}',
            "field 'scored_at_ms' must be an integer",
        ),
    ],
)
def test_a_value_that_is_not_a_score_says_why(value: bytes | None, problem: str) -> None:
    with pytest.raises(ScoreFormatError) as info:
        decode_score(value)
    assert str(info.value).startswith(problem)


SCORE = b'"id": "a", "error": 1, "anomaly": true, "threshold": 1'
SOURCE = b'"topic": "t", "partition": 0, "offset": 5, "timestamp_ms": 9'


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (b'"source": [1]', "field 'source' must be an object, got array"),
        (b'"source": {"partition": 0}', "field 'source.topic' must be a string, got None"),
        (
            b'"source": {"topic": "t", "partition": 0, "offset": "5", "timestamp_ms": 9}',
            "field 'source.offset' must be an integer, got '5'",
        ),
        (
            b'"source": {"topic": "t", "partition": 0, "offset": 5, "timestamp_ms": 9.5}',
            "field 'source.timestamp_ms' must be an integer, got 9.5",
        ),
        (b'"fields": [1]', "field 'fields' must be an object, got array"),
        (b'"segments": {"a": 1}', "field 'segments' must be a list, got object"),
        (
            b'"segments": [{"start": 1, "end": 2, "mean_error": "x"}]',
            "field 'segments[0].mean_error' must be a finite number",
        ),
        (b'"model_version": 7', "field 'model_version' must be a string, got 7"),
    ],
)
def test_a_wrong_optional_field_is_named_with_its_path(extra: bytes, problem: str) -> None:
    with pytest.raises(ScoreFormatError) as info:
        decode_score(b"{" + SCORE + b", " + extra + b"}")
    assert str(info.value).startswith(problem)


def test_a_score_with_every_optional_field_reads_back() -> None:
    score = decode_score(b"{" + SCORE + b', "source": {' + SOURCE + b'}, "fields": {"k": 1}}')
    assert score.source == ScoreSource("t", 0, 5, 9)
    assert score.fields == {"k": 1}


def test_an_error_beyond_float_range_is_not_a_finite_number() -> None:
    with pytest.raises(ScoreFormatError, match="field 'error' must be a finite number"):
        score_from_doc({"id": "a", "error": 10**400, "anomaly": True, "threshold": 1})
