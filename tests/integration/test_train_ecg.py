"""``ecg-train ecg`` end to end on the default data (ECG5000, offline): trains briefly, writes
an artifact the worker can load, a report with real PNGs, and ``ecg-score`` on the test
split reproduces the recorded metrics (under the score-agreement contract)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.integration.training_helpers import cli_path, ecg_train
from trainer.ecg.data import load_ecg, tutorial_split
from worker.core.agreement import compare_metrics
from worker.core.artifact import load_ecg_artifact

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("loss.png", "error_histogram.png", "reconstructions.png", "roc.png")


@pytest.fixture(scope="module")
def test_split_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tutorial's 1000-window test split in the ecg.csv layout (values, then label)."""
    split = tutorial_split(load_ecg())
    path = tmp_path_factory.mktemp("data") / "test_split.csv"
    lines = [
        ",".join([*(repr(float(v)) for v in w), str(int(y))])
        for w, y in zip(split.test_windows, split.test_labels, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("profile_args", "rule"),
    [(("--profile", "tutorial", "--epochs", "3"), "mean_std"), (("--epochs", "4"), "max_f1")],
    ids=["tutorial", "tuned"],
)
def test_train_then_score_reproduces_metrics(
    tmp_path: Path, test_split_csv: Path, profile_args: tuple[str, ...], rule: str
) -> None:
    out = tmp_path / "ecg"
    done = ecg_train(out, *profile_args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy" in done.stdout and "tutorial (published)" in done.stdout
    assert "Epoch 1/" in done.stdout  # progress is shown

    artifact = load_ecg_artifact(out, window_length=140)
    meta = artifact.metadata
    assert artifact.threshold_rule == rule
    assert meta["data"]["sha256"] == load_ecg().sha256
    assert meta["data"]["rows"] == 5000
    assert set(meta["library_versions"]) >= {"numpy", "tensorflow", "keras", "scikit-learn"}
    assert 1 <= meta["training"]["epochs_run"] <= 4
    assert len(meta["training"]["history"]["loss"]) == meta["training"]["epochs_run"]
    recorded = meta["metrics"]["test"]
    assert recorded["windows"] == 1000
    if rule == "max_f1":
        assert meta["metrics"]["validation"]["windows"] == 800

    scores, metrics = tmp_path / "scores.jsonl", tmp_path / "metrics.json"
    scored = subprocess.run(
        [
            cli_path("ecg-score"),
            "--artifact",
            str(out),
            "--input",
            str(test_split_csv),
            "--output",
            str(scores),
            "--metrics",
            str(metrics),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert scored.returncode == 0, scored.stderr
    records = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(records) == 1000
    flags = np.array([r["anomaly"] for r in records])
    errors = np.array([r["error"] for r in records])
    labels = np.array([r["label"] for r in records])
    np.testing.assert_array_equal(flags, errors >= np.float32(artifact.threshold))
    # ecg-score's metrics are the recorded ones, up to what borderline windows explain
    # (worker.core.agreement); on this machine, in one batch, they are the same numbers.
    written = json.loads(metrics.read_text())
    assert {k: written[k] for k in ("windows", "normal", "anomalous")} == {
        k: recorded[k] for k in ("windows", "normal", "anomalous")
    }
    compared = compare_metrics(
        recorded, labels, errors, flags, threshold=artifact.threshold, window_length=140
    )
    assert len(compared) == 7
    assert [c.describe() for c in compared if not c.agrees] == []

    report = out / "report"
    for name in FIGURES:
        data = (report / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert 15_000 < len(data) < 2_000_000, (name, len(data))
    md = (report / "report.md").read_text()
    assert "0.9440" in md and f"{recorded['accuracy']:.4f}" in md


def test_same_seed_same_model(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        done = ecg_train(out, "--profile", "tutorial", "--epochs", "2", "--no-report")
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_ecg_artifact(first), load_ecg_artifact(second)
    assert a.model_version == b.model_version
    assert a.metadata["metrics"] == b.metadata["metrics"]


def test_bad_data_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "ecg.csv"
    bad.write_text(",".join(["0.1"] * 140 + ["1"]) + "\n" + ",".join(["0.1"] * 139 + ["1"]) + "\n")
    done = ecg_train(tmp_path / "out", "--data", str(bad))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"ecg-train: error: {bad}: line 2: 140 columns, expected 141 "
        "(140 values, then the 0/1 label)"
    )
    assert not (tmp_path / "out").exists()


def test_tuned_profile_needs_anomalous_rows(tmp_path: Path) -> None:
    only_normal = tmp_path / "normal.csv"
    rows = [
        ",".join([f"{0.01 * i + 0.001 * j:.4f}" for j in range(140)] + ["1"]) for i in range(40)
    ]
    only_normal.write_text("\n".join(rows) + "\n")
    done = ecg_train(tmp_path / "out", "--data", str(only_normal), "--threshold", "mean_std")
    assert done.returncode == 2
    assert "needs normal and anomalous training rows" in done.stderr.strip().splitlines()[-1]
