"""ecg-replay's pure parts: pacing with a fake clock, CSV reading, messages, keys, sending."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from clients.replay import (
    Pacer,
    ReplayWindow,
    build_message,
    build_parser,
    device_key,
    pace_delay_s,
    read_csv,
    replay,
    take,
)
from worker.core.errors import BrokerError, ConfigError, DataError

N = 140


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps (or we advance it)."""

    def __init__(self, start_s: float = 100.0) -> None:
        self.now_s = start_s
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds


# --------------------------------------------------------------------------- pacing


def test_pace_delay_follows_an_absolute_schedule():
    assert pace_delay_s(10.0, 10.0, 0, 4.0) == 0.0
    assert pace_delay_s(10.0, 10.0, 1, 4.0) == pytest.approx(0.25)
    assert pace_delay_s(10.0, 10.1, 2, 4.0) == pytest.approx(0.4)
    # A late sender does not wait at all.
    assert pace_delay_s(10.0, 12.0, 3, 4.0) == 0.0


def test_pacer_sends_n_windows_in_n_minus_one_intervals():
    clock = FakeClock()
    pacer = Pacer(5.0, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        pacer.wait_turn()
    # 10 windows at 5/s: the first at once, the last 9 intervals of 0.2 s later.
    assert clock.now_s - 100.0 == pytest.approx(1.8)
    assert clock.sleeps[0] == pytest.approx(0.2)


def test_pacer_does_not_drift_when_sending_takes_time():
    clock = FakeClock()
    pacer = Pacer(10.0, clock=clock, sleep=clock.sleep)
    for _ in range(20):
        pacer.wait_turn()
        clock.now_s += 0.03  # each send costs 30 ms of the 100 ms budget
    # Window 19 was due at 1.9 s; only its own send cost follows.
    assert clock.now_s - 100.0 == pytest.approx(1.93)
    assert all(s == pytest.approx(0.07) for s in clock.sleeps)


def test_pacer_catches_up_after_a_stall_without_sleeping():
    clock = FakeClock()
    pacer = Pacer(10.0, clock=clock, sleep=clock.sleep)
    pacer.wait_turn()
    clock.now_s += 0.5  # stalled for 5 intervals
    for _ in range(5):
        pacer.wait_turn()
    assert clock.sleeps == []
    pacer.wait_turn()  # window 6 is due at 0.6 s
    assert clock.sleeps == [pytest.approx(0.1)]


def test_unlimited_pacer_never_sleeps():
    clock = FakeClock()
    pacer = Pacer(None, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        pacer.wait_turn()
    assert clock.sleeps == []


@pytest.mark.parametrize("rate", [0.0, -1.0, float("inf"), float("nan")])
def test_pacer_rejects_a_rate_that_is_not_positive(rate):
    with pytest.raises(ConfigError, match="positive"):
        Pacer(rate)


# --------------------------------------------------------------------------- CSV


def _row(values, label=None) -> str:
    fields = [repr(float(v)) for v in values]
    if label is not None:
        fields.append(str(label))
    return ",".join(fields)


@pytest.mark.parametrize("labels", [(1, 0), (None, None)])
def test_read_csv_with_and_without_labels(tmp_path, labels):
    path = tmp_path / "beats.csv"
    a, b = np.linspace(-1, 1, N), np.linspace(2, 3, N)
    path.write_text(_row(a, labels[0]) + "\n\n" + _row(b, labels[1]) + "\n")
    windows = read_csv(path)
    assert [w.id for w in windows] == ["beats-0001", "beats-0003"]
    assert [w.label for w in windows] == list(labels)
    np.testing.assert_array_equal(windows[0].values, a)
    np.testing.assert_array_equal(windows[1].values, b)


def test_read_csv_refuses_a_file_that_mixes_labelled_and_unlabelled_rows(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text(_row(np.zeros(N), 1) + "\n" + _row(np.ones(N)) + "\n")
    with pytest.raises(DataError, match=r"mixed.csv: line 2: 140 columns, expected 141"):
        read_csv(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (",".join(["1.0"] * 12), r"line 2: 12 columns, expected 141 \(140 values and a 0/1 label"),
        (
            ",".join(["1.0"] * 3 + ["abc"] + ["1.0"] * 136 + ["0"]),
            r"line 2, column 4: 'abc' is not a number",
        ),
        (",".join(["1.0"] * 139 + ["nan", "0"]), r"line 2, column 140: nan is not finite"),
        (",".join(["1.0"] * 140 + ["2"]), r"line 2, column 141: label '2' is not 0 or 1"),
        (",".join(["1.0"] * 140 + ["normal"]), r"line 2, column 141: 'normal' is not a number"),
    ],
)
def test_read_csv_names_file_line_and_problem(tmp_path, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(_row(np.zeros(N), 0) + "\n" + line + "\n")
    with pytest.raises(DataError, match=message) as info:
        read_csv(path)
    assert str(path) in str(info.value)


def test_read_csv_missing_empty_and_binary_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_csv(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="no windows"):
        read_csv(empty)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="not a UTF-8 text file"):
        read_csv(binary)


def test_read_csv_honours_another_window_length(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("1,2,3,1\n4,5,6,0\n")
    windows = read_csv(path, window_length=3)
    assert [w.values.tolist() for w in windows] == [[1, 2, 3], [4, 5, 6]]
    assert [w.label for w in windows] == [1, 0]


# --------------------------------------------------------------------------- messages


def _window(i: int = 7, label: int | None = 1) -> ReplayWindow:
    return ReplayWindow(id=f"test-{i:04d}", values=np.arange(N) / 7.0, label=label, row=4211)


def test_object_message_round_trips_the_exact_values():
    window = _window()
    body = orjson.loads(build_message(window, sent_at_ms=1_764_252_000_000))
    assert body["id"] == "test-0007"
    assert body["label"] == 1
    assert body["row"] == 4211
    assert body["sent_at_ms"] == 1_764_252_000_000
    # The worker must see exactly the values the offline scorer sees.
    assert np.array_equal(np.asarray(body["values"], np.float64), window.values)


def test_unlabelled_window_has_no_label_field():
    body = orjson.loads(build_message(ReplayWindow("x", np.zeros(N)), sent_at_ms=1))
    assert set(body) == {"id", "values", "sent_at_ms"}


def test_array_message_is_a_bare_list_of_the_values():
    window = _window()
    body = orjson.loads(build_message(window, sent_at_ms=1, fmt="array"))
    assert isinstance(body, list)
    assert np.array_equal(np.asarray(body), window.values)


def test_unknown_format_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown format 'xml'"):
        build_message(_window(), 1, fmt="xml")


def test_device_keys_take_turns():
    assert [device_key(i, 3) for i in range(5)] == [
        b"device-00",
        b"device-01",
        b"device-02",
        b"device-00",
        b"device-01",
    ]


def test_take_repeats_the_source_with_unique_ids():
    windows = [_window(0), _window(1)]
    ids = [w.id for w in take(windows, 5)]
    assert ids == ["test-0000", "test-0001", "test-0000.1", "test-0001.1", "test-0000.2"]
    assert [w.id for w in take(windows, None)] == ["test-0000", "test-0001"]
    assert [w.id for w in take(windows, 1)] == ["test-0000"]


# --------------------------------------------------------------------------- sending


class FakeFuture:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def add_errback(self, callback):
        if self.error is not None:
            callback(self.error)
        return self


class FakeProducer:
    def __init__(self, fail_at: set[int] | None = None, flush_error: Exception | None = None):
        self.sent: list[tuple[str, bytes, bytes, int]] = []
        self.fail_at = fail_at or set()
        self.flush_error = flush_error
        self.flushed = False

    def send(self, topic, key, value, timestamp_ms):
        index = len(self.sent)
        self.sent.append((topic, key, value, timestamp_ms))
        return FakeFuture(RuntimeError("NotLeaderForPartition") if index in self.fail_at else None)

    def flush(self, timeout):
        if self.flush_error:
            raise self.flush_error
        self.flushed = True


def test_replay_sends_keyed_windows_and_waits_for_acks():
    producer = FakeProducer()
    windows = [_window(i) for i in range(5)]
    report = replay(producer, "ecg.windows", windows, devices=2)
    assert producer.flushed
    assert report.sent == 5
    assert [k for _, k, _, _ in producer.sent] == [b"device-00", b"device-01"] * 2 + [b"device-00"]
    bodies = [orjson.loads(v) for _, _, v, _ in producer.sent]
    assert [b["id"] for b in bodies] == [w.id for w in windows]
    # The record timestamp is the send time the body carries (end-to-end latency uses it).
    assert all(
        b["sent_at_ms"] == ts for b, (_, _, _, ts) in zip(bodies, producer.sent, strict=True)
    )
    assert report.first_send_ms == producer.sent[0][3]


def test_replay_fails_when_any_send_is_not_acknowledged():
    producer = FakeProducer(fail_at={3})
    with pytest.raises(BrokerError, match=r"1 of 5 windows were not acknowledged.*NotLeader"):
        replay(producer, "ecg.windows", [_window(i) for i in range(5)])


def test_replay_fails_when_flush_times_out():
    producer = FakeProducer(flush_error=TimeoutError("flush timed out"))
    with pytest.raises(BrokerError, match="not every window was acknowledged"):
        replay(producer, "ecg.windows", [_window()], flush_timeout_s=1)


def test_parser_rejects_bad_numbers(capsys):
    parser = build_parser()
    for argv in (["--count", "0"], ["--rate", "-5"], ["--rate", "fast"], ["--devices", "x"]):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        assert info.value.code == 2
    args = parser.parse_args(["--rate", "50", "--count", "10", "--format", "array"])
    assert (args.rate, args.count, args.format, args.topic) == (50.0, 10, "array", "ecg.windows")


def test_default_source_is_the_tutorial_test_split():
    from clients.replay import ecg5000_test_windows
    from trainer.ecg.data import load_ecg, tutorial_split

    windows = ecg5000_test_windows()
    split = tutorial_split(load_ecg())
    assert len(windows) == 1000
    assert windows[0].id == "test-0000" and windows[-1].id == "test-0999"
    assert [w.row for w in windows] == split.test_rows.tolist()
    assert [w.label for w in windows] == split.test_labels.tolist()
    np.testing.assert_array_equal(np.stack([w.values for w in windows]), split.test_windows)
