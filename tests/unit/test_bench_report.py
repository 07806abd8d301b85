"""``make bench``'s report: best-of-rounds, ratios and the PASS/FAIL target lines, on made-up
runner results (the benchmark itself needs a broker and minutes, so it is not a test)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from benchmarks import bench
from benchmarks.bench import (
    Latency,
    RunResult,
    Stream,
    Target,
    failed_latency,
    median_round,
    ratio,
    render,
    targets,
)

MACHINE = {"cpu": "test CPU, 2 cores"}
SETUP = {"windows": 1000, "partitions": 2, "rounds": 2}


def test_ratio_is_missing_without_both_numbers() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(3.0, None) is None
    assert ratio(3.0, 0.0) is None


def test_best_of_rounds_keeps_the_fastest_and_every_round() -> None:
    stalled = RunResult("bare-kafka-python", None, "stall", "no assignment within 60 s", [None])
    fast = RunResult("bare-kafka-python", 6000.0, "ok", "", [6000.0])
    slow = RunResult("bare-kafka-python", 5000.0, "ok", "", [5000.0])

    best = stalled.best_of(fast).best_of(slow)

    assert best.rate == 6000.0
    assert best.status == "ok"
    assert best.rounds == [None, 6000.0, 5000.0]


def test_a_runner_that_always_stalls_stays_a_stall() -> None:
    stalled = RunResult("bare-kafka-python", None, "stall", "no assignment within 60 s", [None])

    best = stalled.best_of(stalled)

    assert best.rate is None
    assert best.status == "stall"


def test_targets_pass_and_fail_on_the_measured_ratios() -> None:
    results = {
        "bare-kafka-python": RunResult("bare-kafka-python", 1000.0, rounds=[1000.0]),
        "worker-kafka-python": RunResult("worker-kafka-python", 950.0, rounds=[950.0]),
        "bare-confluent": RunResult("bare-confluent", 10000.0, rounds=[10000.0]),
        "worker-confluent": RunResult("worker-confluent", 4000.0, rounds=[4000.0]),
    }
    latency = {
        "worker": Latency(475.0, 5000, 40.0, 90.0, 120.0, 130.0),
        "worker-confluent": Latency(475.0, 5000, 40.0, 60.0, 70.0, 75.0),
    }

    kp, ck, lat, lat_ck = targets(results, latency)

    assert kp.passed is True and kp.measured == 0.95
    assert ck.passed is False and ck.measured == 0.4
    assert lat.passed is False and lat.measured == 90.0 and "on kafka-python" in lat.name
    assert lat_ck.passed is True and lat_ck.measured == 60.0 and "confluent" in lat_ck.name
    assert kp.line().startswith("PASS") and ck.line().startswith("FAIL")
    assert "0.40 >= 0.50" in ck.line()


def test_a_missing_measurement_is_neither_pass_nor_fail() -> None:
    target = Target("worker on confluent-kafka / bare confluent-kafka loop", None, 0.5)

    assert target.passed is None
    assert target.line().startswith("N/A")


def test_report_shows_ratios_stalls_and_unavailable_backends() -> None:
    results = {
        "bare-kafka-python": RunResult("bare-kafka-python", 2000.0, "ok", "", [None, 2000.0]),
        "worker-kafka-python": RunResult("worker-kafka-python", 1900.0, rounds=[1900.0]),
        "bare-confluent": RunResult("bare-confluent", 20000.0, rounds=[20000.0]),
        "worker-confluent": RunResult(
            "worker-confluent", None, "unavailable", "backend not available (config rejected)"
        ),
    }
    latency = {
        "worker": Latency(950.0, 9500, 40.0, 65.0, 80.0, 90.0),
        "worker-confluent-own": Latency(2000.0, 20000, 50.0, 95.0, 99.0, 101.0),
    }

    text = render(MACHINE, results, {}, latency, None, SETUP)

    assert "| ecg-worker on kafka-python | 1,900 | 0.95 | 0.95 | 1,900 |" in text
    assert "| bare confluent-kafka loop (same steps) | 20,000 | 10.00 | 1.00 |" in text
    assert "stall, 2,000" in text  # the stalled round is shown, not hidden
    assert "unavailable: backend not available (config rejected)" in text
    assert "PASS  worker on kafka-python / bare kafka-python loop: 0.95 >= 0.90" in text
    assert "N/A   worker on confluent-kafka" in text
    assert "PASS  p99 end-to-end latency of the worker on kafka-python" in text
    assert "N/A   p99 end-to-end latency of the worker on confluent-kafka at that load" in text
    assert "FAIL  p99 end-to-end latency of the worker on confluent-kafka at half its own" in text
    assert "| ecg-worker on confluent-kafka, at half of its own best rate | 2,000 | 20,000 " in text


def test_latency_keeps_the_median_round_by_p99_and_lists_every_round() -> None:
    rounds = [
        Latency(950.0, 9500, 33.0, 131.0, 180.0, 200.0),
        Latency(950.0, 9500, 31.0, 52.0, 70.0, 75.0),
        Latency(950.0, 9500, 32.0, 64.0, 90.0, 99.0),
    ]
    median = median_round(rounds)
    assert (median.p50_ms, median.p99_ms, median.max_ms) == (32.0, 64.0, 99.0)  # one real run
    assert median.p99_rounds_ms == [131.0, 52.0, 64.0]
    assert median_round(rounds[:2]).p99_ms == 131.0  # of two, the worse: a tail not hidden

    text = render(MACHINE, {}, {}, {"worker": median}, None, SETUP)
    assert "Each ran 3 times, the rounds interleaved" in text
    assert "| 32.0 ms | 64.0 ms | 90.0 ms | 99.0 ms | 131, 52, 64 |" in text
    assert "PASS  p99 end-to-end latency of the worker on kafka-python" in text


def test_profile_without_py_spy_stops_before_any_broker_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks import bench

    (tmp_path / "artifact.json").write_text("{}")
    monkeypatch.setattr(bench.shutil, "which", lambda *_a, **_k: None)

    def run_started(**_kwargs: object) -> str:  # the run directory comes before the broker
        raise AssertionError("the run began without py-spy")

    monkeypatch.setattr(bench.tempfile, "mkdtemp", run_started)

    assert bench.main(["--artifact", str(tmp_path), "--profile", "out.json"]) == 2
    assert "--profile out.json: py-spy is not installed" in capsys.readouterr().err


def test_a_failed_latency_round_is_shown_and_counts_as_the_worst() -> None:
    stalled = failed_latency(950.0, "round 2: RuntimeError: no output on scores")
    rounds = [Latency(950.0, 9500, 31.0, 52.0, 70.0, 75.0), stalled]
    median = median_round(rounds)  # of two, the worse: here the failed one
    assert median.count == 0
    assert median.note == "round 2: RuntimeError: no output on scores"

    text = render(MACHINE, {}, {}, {"worker": median}, None, SETUP)
    assert "| 950 | 0 | failed | failed | failed | failed | 52, failed |" in text
    assert "worker: round 2: RuntimeError: no output on scores" in text
    assert "FAIL  p99 end-to-end latency of the worker on kafka-python" in text
    assert ": failed <= 70.00" in text

    of_three = median_round([*rounds, Latency(950.0, 9500, 32.0, 64.0, 90.0, 99.0)])
    assert of_three.p99_ms == 64.0  # one failure among three does not hide the others
    assert "round 2: RuntimeError" in of_three.note  # but it is still reported


class _FakeProducer:
    """kafka-python's producer, as far as the bare loop uses it."""

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> None: ...

    def flush(self) -> None: ...

    def close(self, timeout: float = 0) -> None: ...


def _fake_producer(stream: Stream) -> _FakeProducer:
    return _FakeProducer()


class _FakeConsumer:
    """Owns a partition from the first poll unless ``joins`` is False; the poll after
    ``fail_after`` raises, or ends the process at once with ``exit_after``."""

    def __init__(
        self, fail_after: int | None = None, joins: bool = True, exit_after: int | None = None
    ) -> None:
        self.polls = 0
        self.fail_after, self.exit_after = fail_after, exit_after
        self.joins = joins

    def poll(self, timeout_ms: int) -> dict[str, list[object]]:
        self.polls += 1
        if self.fail_after is not None and self.polls > self.fail_after:
            raise OSError("connection reset by the broker")
        if self.exit_after is not None and self.polls > self.exit_after:
            os._exit(3)  # as a crash of the interpreter would: no message, no clean-up
        time.sleep(timeout_ms / 1000)
        return {}

    def assignment(self) -> set[str]:
        return {"windows-0"} if self.joins else set()

    def commit(self) -> None: ...

    def close(self, autocommit: bool = True) -> None: ...


# The bare loop runs in a spawned process: its clients are made there, from these.
def _fake_consumer(stream: Stream, group: str, **kwargs: object) -> _FakeConsumer:
    return _FakeConsumer(**kwargs)  # type: ignore[arg-type]


def _refuse(stream: Stream, group: str) -> object:
    raise ValueError("bad bootstrap")


def _stream(join_timeout_s: float = 1.0) -> Stream:
    return Stream("127.0.0.1:1", "windows", "out", 0, join_timeout_s, run_timeout_s=1.0)


def _bare_loop(consumer_of: object, join_timeout_s: float = 1.0) -> object:
    return bench.bare_loop_running(
        _stream(join_timeout_s), "out", consumer_of=consumer_of, producer_of=_fake_producer
    )


def _loops_alive() -> list[object]:
    return [p for p in multiprocessing.active_children() if p.name == bench.BARE_LOOP_PROCESS]


def test_the_bare_loop_says_why_its_consumer_could_not_start() -> None:
    with pytest.raises(RuntimeError, match="could not start: bad bootstrap"), _bare_loop(_refuse):
        pass
    assert not _loops_alive()


def test_a_bare_loop_that_crashes_at_start_is_reported_without_waiting_for_the_join() -> None:
    started = time.monotonic()
    with (
        pytest.raises(RuntimeError, match=r"exited at start \(exit code 3\)"),
        _bare_loop(partial(_fake_consumer, exit_after=0), join_timeout_s=60.0),
    ):
        pass
    assert time.monotonic() - started < 30.0  # not the join timeout


def test_a_bare_loop_that_dies_mid_run_fails_its_round() -> None:
    with (
        pytest.raises(RuntimeError, match="failed during the run: OSError"),
        _bare_loop(partial(_fake_consumer, fail_after=2)) as process,
    ):
        process.join(10)  # the loop has died
    assert not _loops_alive()


def test_a_bare_loop_whose_process_ends_mid_run_fails_its_round() -> None:
    with (
        pytest.raises(RuntimeError, match=r"exited during the run \(exit code 3\)"),
        _bare_loop(partial(_fake_consumer, exit_after=2)) as process,
    ):
        process.join(10)


def test_a_healthy_bare_loop_returns_once_it_owns_partitions_and_stops_when_asked() -> None:
    with _bare_loop(_fake_consumer) as process:
        assert process.is_alive()
    assert process.exitcode == 0  # it stopped when asked, it was not killed
    assert not _loops_alive()


def test_a_bare_loop_that_never_owns_partitions_is_a_stalled_join() -> None:
    with (
        pytest.raises(RuntimeError, match="no partitions of windows within 1 s"),
        _bare_loop(partial(_fake_consumer, joins=False)),
    ):
        pass
    assert not _loops_alive()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_longest_collection_while_watching_is_kept() -> None:
    clock = _Clock()
    pauses = bench.CollectionPauses(clock)
    for started, ended in ((1.0, 1.004), (2.0, 2.232), (3.0, 3.010)):
        clock.now = started
        pauses("start", {"generation": 2})
        clock.now = ended
        pauses("stop", {"generation": 2})
    assert pauses.longest_ms == pytest.approx(232.0)


def test_watching_hooks_into_the_real_collector_only_for_the_block() -> None:
    import gc

    with bench.CollectionPauses().watching() as pauses:
        gc.collect()
    seen = pauses.longest_ms
    assert seen > 0.0
    gc.collect()
    assert pauses.longest_ms == seen
    assert pauses not in gc.callbacks


def test_the_report_names_a_harness_pause_that_is_counted_in_the_latencies() -> None:
    rounds = [
        Latency(950.0, 9500, 33.0, 131.0, 180.0, 200.0, harness_pause_ms=232.0),
        Latency(950.0, 9500, 31.0, 52.0, 70.0, 75.0, harness_pause_ms=1.5),
    ]
    median = median_round(rounds)
    assert median.harness_pause_ms == 232.0  # the worst round's pause, whichever is shown

    text = render(MACHINE, {}, {}, {"worker": median}, None, SETUP)
    assert "paused at most 232.0 ms for garbage collection" in text
    assert "pauses over 10 ms are counted in the latencies above" in text

    quiet = render(MACHINE, {}, {}, {"worker": rounds[1]}, None, SETUP)
    assert "paused at most 1.5 ms for garbage collection during a timed run." in quiet
    assert "counted in the latencies" not in quiet


def _imports_wave() -> tuple[int, bool]:
    import wave  # noqa: F401 - a module nothing else here loads

    return os.getpid(), "wave" in sys.modules


def _refuses() -> None:
    raise ValueError("no broker in the child")


def test_a_child_process_returns_its_result_and_leaves_its_imports_behind() -> None:
    assert "wave" not in sys.modules  # the premise: this process never loaded it

    pid, loaded_there = bench.in_child_process(_imports_wave)

    assert pid != os.getpid()
    assert loaded_there
    assert "wave" not in sys.modules
    with pytest.raises(ValueError, match="no broker in the child"):
        bench.in_child_process(_refuses)


def _hold(pid: int | None, seconds: float) -> None:
    """Keep a process off the CPU, as a busy host would."""
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    time.sleep(seconds)
    os.kill(pid, signal.SIGCONT)


def test_the_host_stall_probe_counts_a_stall_inside_the_timed_span_only() -> None:
    with bench.HostStalls() as stalls:
        _hold(stalls.pid, 0.4)  # before the span: not counted
        time.sleep(0.05)
        with stalls.timing():
            _hold(stalls.pid, 0.15)
            time.sleep(0.05)
        _hold(stalls.pid, 0.4)  # after it: not counted either

    assert 140 <= stalls.longest_ms < 390
    assert stalls.total_ms >= stalls.longest_ms
