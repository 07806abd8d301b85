"""ecg-worker's command line: help, and one clear line with exit 2 for known errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from worker.cli.ecg_worker import build_parser, main
from worker.service.config import ENV_OVERRIDES


def test_help_lists_the_environment_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for item in ENV_OVERRIDES:
        assert item.name in out


def test_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text("batching:\n  max_batch: 3\n")
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "unknown key 'batching.max_batch'" in err[0]


def test_missing_artifact_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump({"artifact": str(tmp_path / "nowhere")}))
    assert main(["--config", str(path)]) == 2
    assert "nowhere: artifact directory does not exist" in capsys.readouterr().err


def test_metrics_port_in_use_is_exit_2(
    tmp_path: Path, artifact_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = tmp_path / "worker.yaml"
        path.write_text(yaml.safe_dump({"artifact": str(artifact_dir), "metrics": {"port": port}}))
        assert main(["--config", str(path)]) == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in capsys.readouterr().err
