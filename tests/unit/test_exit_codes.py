"""Every entry point maps the same failure to the same exit code (worker.cli_support.runner).

Each tool is driven through its ``main(argv)``; the step that would talk to Kafka, read the
data or train is replaced by one that raises the failure under test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

import clients.alerts
import clients.demo
import clients.replay
import trainer.cli
import trainer.ecg.job
import worker.cli.ecg_score
import worker.cli.ecg_worker
import worker.service.app
from worker.cli_support.runner import ExitCode, run_cli
from worker.core.errors import ArtifactError, BrokerError, ConfigError, DataError


def raising(exc: BaseException) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fail


# (tool, where its work starts) -> the failure injected there.
FAILURES = [
    (BrokerError("cannot reach Kafka at 127.0.0.1:1"), ExitCode.INFRASTRUCTURE),
    (ConfigError("worker.yaml: unknown key 'x'"), ExitCode.USAGE),
    (ArtifactError("artifacts/ecg: missing"), ExitCode.USAGE),
    (DataError("in.csv: line 2: 3 columns"), ExitCode.USAGE),
    (KeyboardInterrupt(), ExitCode.INTERRUPTED),
]


@pytest.fixture
def tools(
    tmp_path: Path, artifact_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Callable[[BaseException], int]]:
    """tool name -> run it with its main work failing with the given exception."""
    config = tmp_path / "worker.yaml"
    config.write_text(yaml.safe_dump({"artifact": str(artifact_dir)}))
    csv_path = tmp_path / "in.csv"
    csv_path.write_text(",".join(["0.5"] * 140) + "\n")

    def run_worker(exc: BaseException) -> int:
        monkeypatch.setattr(worker.service.app, "run", raising(exc))
        return worker.cli.ecg_worker.main(["--config", str(config)])

    def run_score(exc: BaseException) -> int:
        monkeypatch.setattr(worker.cli.ecg_score, "_score_input", raising(exc))
        return worker.cli.ecg_score.main(["--artifact", str(artifact_dir), "--input", "-"])

    def run_train(exc: BaseException) -> int:
        monkeypatch.setattr(trainer.ecg.job, "run", raising(exc))
        return trainer.cli.main(["ecg", "--out", str(tmp_path / "out")])

    def run_replay(exc: BaseException) -> int:
        monkeypatch.setattr(clients.replay, "read_csv", raising(exc))
        return clients.replay.main(["--input", str(csv_path)])

    def run_alerts(exc: BaseException) -> int:
        monkeypatch.setattr(clients.alerts, "open_follower", raising(exc))
        return clients.alerts.main([])

    def run_demo(exc: BaseException) -> int:
        monkeypatch.setattr(clients.demo.Demo, "run", raising(exc))
        monkeypatch.setattr(clients.demo.Demo, "cleanup", lambda self: None)
        return clients.demo.main(["--worker-config", str(config)])

    return {
        "ecg-worker": run_worker,
        "ecg-score": run_score,
        "ecg-train": run_train,
        "ecg-replay": run_replay,
        "ecg-alerts": run_alerts,
        "ecg-demo": run_demo,
    }


TOOLS = ["ecg-worker", "ecg-score", "ecg-train", "ecg-replay", "ecg-alerts", "ecg-demo"]


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize(("failure", "code"), FAILURES, ids=lambda v: type(v).__name__)
def test_each_tool_maps_a_failure_to_the_same_code_and_one_line(
    tools: dict[str, Callable[[BaseException], int]],
    tool: str,
    failure: BaseException,
    code: ExitCode,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert tools[tool](failure) == code
    err = capsys.readouterr().err
    if code == ExitCode.INTERRUPTED:
        assert f"{tool}: interrupted" in err
    else:
        assert f"{tool}: error: {failure}" in err


@pytest.mark.parametrize("tool", TOOLS)
def test_usage_errors_exit_2_in_every_tool(tool: str) -> None:
    mains = {
        "ecg-worker": worker.cli.ecg_worker.main,
        "ecg-score": worker.cli.ecg_score.main,
        "ecg-train": trainer.cli.main,
        "ecg-replay": clients.replay.main,
        "ecg-alerts": clients.alerts.main,
        "ecg-demo": clients.demo.main,
    }
    with pytest.raises(SystemExit) as info:
        mains[tool](["--no-such-option"])
    assert info.value.code == ExitCode.USAGE


def test_ctrl_c_while_following_alerts_is_a_normal_stop(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    closed: list[bool] = []
    consumer = SimpleNamespace(close=lambda: closed.append(True))
    monkeypatch.setattr(clients.alerts, "open_follower", lambda *args: consumer)
    monkeypatch.setattr(clients.alerts, "follow", raising(KeyboardInterrupt()))
    assert clients.alerts.main([]) == ExitCode.OK
    assert closed == [True]
    assert "ecg-alerts: 0 alerts, 0 unreadable records" in capsys.readouterr().err


def test_demo_cleans_up_after_an_interrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "worker.yaml"
    config.write_text("{}\n")
    cleaned: list[bool] = []
    monkeypatch.setattr(clients.demo.Demo, "run", raising(KeyboardInterrupt()))
    monkeypatch.setattr(clients.demo.Demo, "cleanup", lambda self: cleaned.append(True))
    assert clients.demo.main(["--worker-config", str(config)]) == ExitCode.INTERRUPTED
    assert cleaned == [True]


def test_demo_whose_checks_failed_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "worker.yaml"
    config.write_text("{}\n")
    monkeypatch.setattr(clients.demo.Demo, "run", lambda self: ExitCode.INCOMPLETE)
    monkeypatch.setattr(clients.demo.Demo, "cleanup", lambda self: None)
    assert clients.demo.main(["--worker-config", str(config)]) == ExitCode.INCOMPLETE


def test_a_missing_training_extra_is_a_setup_error_not_a_crash(
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")
    assert run_cli("ecg-train", raising(missing)) == ExitCode.USAGE
    assert "tensorflow is not installed; install the training extra" in capsys.readouterr().err


def test_a_missing_module_of_this_project_is_a_bug_and_propagates() -> None:
    broken = ModuleNotFoundError("No module named 'worker.nope'", name="worker.nope")
    with pytest.raises(ModuleNotFoundError):
        run_cli("ecg-score", raising(broken))
