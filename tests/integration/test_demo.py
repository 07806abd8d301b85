"""``ecg-demo`` end to end: its own broker, a short training run, the real worker."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.processes import CLEANUP_GRACE_S, run_bounded
from tests.integration.services import LOCAL_KAFKA, unavailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
# The tutorial recipe with a few epochs: a real artifact in seconds, not minutes.
TRAIN_ARGS = "--profile tutorial --epochs 3 --no-report"
# Each test's own pytest timeout: the demo's bound, its cleanup after SIGTERM, the broker
# stop (60 s) and status (30 s) calls, and slack; above the 300 s default on purpose, so
# pytest-timeout never cuts the cleanup short.
DEMO_TIMEOUT_S = 280
FAILING_DEMO_TIMEOUT_S = 150
CLEANUP_S = CLEANUP_GRACE_S + 10 + 60 + 30 + 20


def _port_pair() -> int:
    """A free client port whose neighbour (the broker's controller port) is free too."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no pair of free ports found")


def _broker_status(port: int, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(LOCAL_KAFKA), "--port", str(port), "--data-dir", str(data_dir), "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _run_demo(tmp_path: Path, port: int, artifact: Path, timeout_s: float = DEMO_TIMEOUT_S):
    if shutil.which("java") is None:
        unavailable("java not found; run 'make system' (the demo starts a local Kafka broker)")
    data_dir = tmp_path / "kafka"
    try:
        return run_bounded(
            [
                str(BIN / "ecg-demo"),
                "--kafka-port",
                str(port),
                "--kafka-data-dir",
                str(data_dir),
                "--artifact",
                str(artifact),
                "--train-args",
                TRAIN_ARGS,
                "--run-dir",
                str(tmp_path / "runs"),
            ],
            timeout_s,
        )
    finally:
        # Whatever happened, leave no broker behind (a no-op when the demo stopped it).
        subprocess.run(
            ["bash", str(LOCAL_KAFKA), "--port", str(port), "--data-dir", str(data_dir), "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )


def _number(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    return match.group(1)


@pytest.mark.timeout(DEMO_TIMEOUT_S + CLEANUP_S)
def test_demo_trains_scores_the_whole_split_and_stops_what_it_started(tmp_path: Path) -> None:
    port = _port_pair()
    artifact = tmp_path / "artifact"
    result = _run_demo(tmp_path, port, artifact)
    out, err = result.stdout, result.stderr
    assert result.returncode == 0, f"stdout:\n{out}\nstderr:\n{err[-6000:]}"

    # It trained the missing artifact and served exactly that model.
    meta = json.loads((artifact / "artifact.json").read_text())
    assert f"no artifact in {artifact}; training one" in err
    assert f"model          {meta['model_version']} (profile tutorial" in out

    assert _number(r"sent +(\d+) windows", out) == "1000"
    assert re.search(r"scored +1000 of 1000 ids on \S+ \(0 missing, 0 duplicates\)", out), out
    assert re.search(r"dead letters +0 \(none\)", out), out
    flagged = int(_number(r"anomalies +(\d+) flagged", out))
    assert _number(r"flagged; (\d+) alerts", out) == str(flagged)
    assert 0 < flagged < 1000

    # Same windows, other batch sizes: equal under the score-agreement contract, whatever
    # BLAS kernel this CPU runs (worker.core.agreement); borderline windows are listed.
    assert re.search(
        r"offline check  all 1000 streamed scores agree with ecg-score \(max error difference "
        r"\S+, tolerance \S+ at the threshold; \d+ borderline",
        out,
    ), out
    # The stream's metrics equal the artifact's recorded test metrics up to what flipped
    # borderline windows explain (stream_summary.metric_differences); with none, exactly.
    assert "stream metrics match the artifact's recorded test metrics" in out
    if "(0 borderline windows)" in out:
        recorded = meta["metrics"]["test"]
        assert float(_number(r"quality +precision (\d\.\d+)", out)) == pytest.approx(
            recorded["precision"], abs=5e-5
        )
        assert float(_number(r"recall (\d\.\d+) \(positive = normal", out)) == pytest.approx(
            recorded["recall"], abs=5e-5
        )
        assert f"anomaly precision {recorded['anomaly_precision']:.4f}" in out
    # The worker's own counters, scraped before it stopped, equal what was sent and read back.
    assert (
        f"metrics        consumed 1000, scored 1000, rejected 0, anomalous {flagged} "
        "(match the stream)" in out
    ), out

    assert float(_number(r"throughput +(\d+\.\d) windows/s", out)) > 0
    p50 = float(_number(r"latency +p50 (\d+) ms", out))
    p99 = float(_number(r"p99 (\d+) ms", out))
    assert 0 <= p50 <= p99

    # The worker stopped cleanly on SIGTERM, and the broker this run started is gone.
    assert "ecg-worker stopped with exit code 0" in err
    assert f"stopping the local broker this run started on 127.0.0.1:{port}" in err
    assert "FAILED" not in err
    status = _broker_status(port, tmp_path / "kafka")
    assert status.returncode == 1, status.stdout


@pytest.mark.timeout(FAILING_DEMO_TIMEOUT_S + CLEANUP_S)
def test_demo_failure_is_one_clear_line_and_stops_the_broker_it_started(tmp_path: Path) -> None:
    port = _port_pair()
    artifact = tmp_path / "broken"
    artifact.mkdir()
    (artifact / "artifact.json").write_text('{"schema_version": 1, "kind": "ecg-autoencoder"}')
    result = _run_demo(tmp_path, port, artifact, timeout_s=FAILING_DEMO_TIMEOUT_S)
    assert result.returncode == 2, result.stderr
    assert (
        f"ecg-demo: error: {artifact / 'artifact.json'}: missing field 'model_version'"
        in result.stderr
    )
    assert f"stopping the local broker this run started on 127.0.0.1:{port}" in result.stderr
    assert _broker_status(port, tmp_path / "kafka").returncode == 1
    assert result.stdout == ""
