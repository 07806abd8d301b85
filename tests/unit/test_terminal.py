"""Terminal output of the client tools: what a topic writer sends cannot drive the terminal."""

from __future__ import annotations

import io

import orjson

from clients.alerts import follow, render_record
from clients.terminal import printable

ESC = "\x1b"


def alert(window_id: str) -> bytes:
    return orjson.dumps(
        {
            "id": window_id,
            "error": 0.05,
            "anomaly": True,
            "threshold": 0.03,
            "model_version": "3f1c2a9b0d4e5f67",
            "source": {"topic": "ecg.windows", "partition": 0, "offset": 42, "timestamp_ms": 1},
            "scored_at_ms": 0,
            "segments": [],
        }
    )


def test_control_and_bidi_characters_are_shown_escaped() -> None:
    text = f"a{ESC}[2Jb\rc\nd\u202ee\x7f\x9b\u200b"
    assert printable(text) == "a\\x1b[2Jb\\x0dc\\x0ad\\u202ee\\x7f\\x9b\\u200b"
    assert printable("device-7 naïve ü 心") == "device-7 naïve ü 心"


def test_an_alert_with_escape_sequences_in_id_and_key_prints_them_escaped() -> None:
    line = render_record(alert(f"beat{ESC}]0;owned\a-1"), f"dev{ESC}[31m".encode(), "t[0]@1")

    assert ESC not in line and "\a" not in line
    assert "dev\\x1b[31m" in line
    assert "beat\\x1b]0;owned\\x07-1" in line


def test_unreadable_records_print_escaped_too() -> None:
    line = render_record(b"\x1b[2J not json", None, "t[0]@2")
    assert line.startswith("!! t[0]@2: not JSON")
    assert ESC not in line


class Message:
    def __init__(self, value: bytes, key: bytes) -> None:
        self.topic, self.partition, self.offset = "ecg.anomalies", 0, 5
        self.value, self.key = value, key


def test_follow_writes_no_raw_control_character_to_the_terminal() -> None:
    out = io.StringIO()
    follow([Message(alert("x\r\x1b[1Ay"), b"k\x1b[0m")], out)
    printed = out.getvalue()
    assert printed.count("\n") == 1  # one line per record, ours
    assert not any(ord(c) < 0x20 and c != "\n" for c in printed)
