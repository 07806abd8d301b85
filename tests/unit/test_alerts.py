"""ecg-alerts' formatting: one readable line per alert, a clear line for anything else."""

from __future__ import annotations

import io
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.alerts import (
    AlertFormatError,
    RepeatFilter,
    Tally,
    build_parser,
    follow,
    format_alert,
    render_record,
)
from worker.core.codec import decode_score

ALERT = {
    "id": "test-0012",
    "error": 0.0521,
    "anomaly": True,
    "threshold": 0.0321,
    "model_version": "3f1c2a9b0d4e5f67",
    "source": {"topic": "ecg.windows", "partition": 0, "offset": 42, "timestamp_ms": 1},
    "scored_at_ms": 1764252000051,
    "fields": {"label": 0},
    "segments": [
        {"start": 88, "end": 104, "mean_error": 0.1123},
        {"start": 10, "end": 20, "mean_error": 0.08},
    ],
}


def test_alert_line_has_time_device_id_error_threshold_ratio_and_segments():
    line = format_alert(ALERT, b"device-03")
    assert line == (
        "2025-11-27 14:00:00.051Z  device-03  test-0012  "
        "error 0.0521 >= threshold 0.0321 (1.62x)  "
        "abnormal: samples 88-104 err 0.112, samples 10-20 err 0.080"
    )
    assert "\n" not in line


def test_alert_without_key_segments_or_time_still_prints():
    record = {"id": 17, "error": 0.5, "anomaly": True, "threshold": 0.25}
    assert format_alert(record, None) == (
        "(no time)  (no device)  17  error 0.5000 >= threshold 0.2500 (2.00x)"
    )


def test_key_given_as_text_and_undecodable_key_bytes():
    assert "  dev-a  " in format_alert(ALERT, "dev-a")
    assert "\\xff" in format_alert(ALERT, b"\xffdev")


def test_error_below_threshold_is_shown_as_such():
    line = format_alert({**ALERT, "error": 0.01}, b"d")
    assert "error 0.0100 < threshold 0.0321 (0.31x)" in line


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"error": None}, "field 'error' must be a finite number"),
        ({"threshold": "high"}, "field 'threshold' must be a finite number"),
        ({"id": None}, "field 'id' must be a string or integer"),
        ({"segments": "88-104"}, "field 'segments' must be a list"),
        ({"segments": [{"start": 1}]}, r"segments\[0\] needs integer 'start' and 'end'"),
        ({"segments": [3]}, r"segments\[0\] must be an object"),
    ],
)
def test_malformed_alert_names_the_field(change, message):
    with pytest.raises(AlertFormatError, match=message):
        format_alert({**ALERT, **change}, b"d")


def test_missing_field_is_named():
    record = dict(ALERT)
    del record["threshold"]
    with pytest.raises(AlertFormatError, match="missing field 'threshold'"):
        format_alert(record, b"d")


def test_render_record_turns_every_bad_record_into_a_line():
    where = "ecg.anomalies[0]@5"
    assert render_record(orjson.dumps(ALERT), b"device-03", where).startswith("2025-11-27")
    assert render_record(b"{not json", None, where).startswith("!! ecg.anomalies[0]@5: not JSON (")
    assert render_record(None, None, where) == "!! ecg.anomalies[0]@5: empty record, not an alert"
    assert render_record(b"[1, 2]", None, where) == (
        "!! ecg.anomalies[0]@5: not a readable alert: expected a JSON object, got array"
    )
    assert render_record(b'{"id": "a"}', None, where) == (
        "!! ecg.anomalies[0]@5: not a readable alert: missing field 'error'"
    )


def _message(offset: int, value: bytes | None, key: bytes | None = b"device-01"):
    return SimpleNamespace(topic="ecg.anomalies", partition=1, offset=offset, value=value, key=key)


def test_follow_prints_every_record_and_carries_on_after_a_bad_one():
    messages = [
        _message(0, orjson.dumps(ALERT)),
        _message(1, b"garbage"),
        _message(2, orjson.dumps({**ALERT, "id": "test-0013"})),
    ]
    out = io.StringIO()
    tally = follow(iter(messages), out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "test-0012" in lines[0]
    assert lines[1].startswith("!! ecg.anomalies[1]@1: not JSON")
    assert "test-0013" in lines[2]
    assert (tally.alerts, tally.unreadable) == (2, 1)


def test_follow_stops_after_max_messages():
    messages = [_message(i, orjson.dumps(ALERT)) for i in range(10)]
    out = io.StringIO()
    tally = follow(iter(messages), out, max_messages=4)
    assert tally.alerts == 4
    assert len(out.getvalue().splitlines()) == 4


def test_parser_defaults_and_rejections():
    args = build_parser().parse_args([])
    assert (args.topic, args.from_beginning, args.max_messages, args.timeout_s) == (
        "ecg.anomalies",
        False,
        None,
        None,
    )
    for argv in (["--max-messages", "0"], ["--timeout-s", "-1"], ["--max-messages", "x"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)


def _from(offset: int, **changes: object) -> bytes:
    """ALERT for the input window at ``offset``."""
    source = {**ALERT["source"], "offset": offset}  # type: ignore[dict-item]
    return orjson.dumps({**ALERT, "source": source, **changes})


def test_a_replayed_alert_is_counted_not_printed_again():
    """A worker that restarts replays its last commit interval: the same windows' alerts
    come again (scored again, a moment later); the on-call reader sees each once."""
    messages = [
        _message(0, _from(1, id="first")),
        _message(1, _from(2, id="second")),
        _message(2, _from(1, id="first", scored_at_ms=1764252009999)),  # the replay
        _message(3, b"garbage"),
        _message(4, _from(3, id="third")),
    ]
    out = io.StringIO()
    tally = follow(iter(messages), out, repeats=RepeatFilter())
    lines = out.getvalue().splitlines()
    assert [line.split()[3] for line in lines if not line.startswith("!!")] == [
        "first",
        "second",
        "third",
    ]
    assert (tally.alerts, tally.unreadable, tally.repeats) == (3, 1, 1)
    assert tally.summary() == (
        "3 alerts, 1 unreadable records, 1 repeats of alerts already shown (a worker's replay)"
    )
    assert Tally(2, 0).summary() == "2 alerts, 0 unreadable records"


def test_without_a_filter_or_a_source_every_alert_prints():
    replayed = [_message(i, _from(7)) for i in range(2)]
    out = io.StringIO()
    assert follow(iter(replayed), out).alerts == 2  # --show-repeats
    no_source = {k: v for k, v in ALERT.items() if k != "source"}
    older = [_message(i, orjson.dumps(no_source)) for i in range(2)]
    assert follow(iter(older), io.StringIO(), repeats=RepeatFilter()).alerts == 2


def test_max_messages_counts_repeats_too():
    messages = [_message(i, _from(i % 2)) for i in range(10)]
    tally = follow(iter(messages), io.StringIO(), max_messages=4, repeats=RepeatFilter())
    assert (tally.alerts, tally.repeats) == (2, 2)


def test_the_filter_remembers_only_the_most_recent_sources():
    seen = RepeatFilter(capacity=2)
    a, b, c = (decode_score(_from(offset)) for offset in (1, 2, 3))
    assert [seen.first_time(x) for x in (a, b, a, c)] == [True, True, False, True]
    assert seen.first_time(b)  # forgotten: a and c are the two most recent
    assert not seen.first_time(c)


def test_show_repeats_is_off_by_default():
    assert build_parser().parse_args([]).show_repeats is False
    assert build_parser().parse_args(["--show-repeats"]).show_repeats is True


_INT64 = st.integers(-(2**63), 2**63 - 1)  # what JSON encoders write
_JSON = st.recursive(
    st.none() | st.booleans() | _INT64 | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
_SOURCES = (
    st.fixed_dictionaries(
        {"topic": st.sampled_from(["ecg.windows", "other"]), "partition": st.integers(0, 1)},
        optional={"offset": st.integers(0, 3) | _JSON, "timestamp_ms": _INT64 | _JSON},
    )
    | _JSON
)
_RECORDS = st.one_of(
    st.builds(lambda src: orjson.dumps({**ALERT, "source": src}), _SOURCES),  # often repeated
    st.builds(lambda doc: orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS), _JSON),
    st.binary(max_size=40),
    st.none(),
)


@settings(max_examples=1000, deadline=None)
@given(values=st.lists(_RECORDS, max_size=12))
def test_follow_with_the_repeat_filter_never_raises_and_accounts_for_every_record(values):
    out = io.StringIO()
    tally = follow(iter(_message(i, v) for i, v in enumerate(values)), out, repeats=RepeatFilter(2))
    assert tally.alerts + tally.unreadable + tally.repeats == len(values)
    assert len(out.getvalue().splitlines()) == tally.alerts + tally.unreadable
