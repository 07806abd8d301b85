"""``ecg-score``: row-aligned JSON lines, bad rows reported without stopping the others,
metrics for labelled input, clear errors and exit codes. No TensorFlow: the artifact is
written from a fake dense model (the Scorer only reads weights.npz)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from worker.cli.ecg_score import main
from worker.core.artifact import (
    DenseLayer,
    EcgArtifact,
    Normalisation,
    error_quantiles,
    load_ecg_artifact,
    save_ecg_artifact,
)
from worker.core.csv_scoring import score_file
from worker.core.scorer import Scorer
from worker.core.windows_csv import CsvRejected, CsvWindow, read_windows

N = 140


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    # identity-ish autoencoder: sigmoid(4x - 2) reconstructs mid-range inputs poorly,
    # so windows far from 0.5 (normalised) get large errors
    rng = np.random.default_rng(0)
    layers = [
        DenseLayer(
            (np.eye(N, 8) + rng.normal(0, 0.01, (N, 8))).astype(np.float32),
            np.zeros(8, np.float32),
            "relu",
        ),
        DenseLayer(np.zeros((8, N), np.float32), np.zeros(N, np.float32), "sigmoid"),
    ]
    unsaved = EcgArtifact.unsaved(
        layers,
        Normalisation(0.0, 1.0),
        0.25,  # reconstruction is 0.5 everywhere: error = mean |x - 0.5|
        threshold_rule="mean_std",
        profile="tutorial",
        training_error_quantiles=error_quantiles([0.1, 0.2]),
        metadata={"metrics": {"test": {"accuracy": 1.0}}},
    )
    out = tmp_path / "ecg"
    save_ecg_artifact(unsaved, out)
    return out


def _row(value: float, label: int | None = None) -> str:
    fields = [repr(value)] * N + ([] if label is None else [str(label)])
    return ",".join(fields)


def test_read_windows_labelled_and_rejects() -> None:
    text = "\n".join(
        [
            _row(0.5, 1),
            "",  # blank lines are skipped, numbering follows file lines
            _row(0.5),  # 140 values in a labelled file: wrong length
            _row(0.5, 7),
            ",".join(["0.5"] * 20 + ["x"] + ["0.5"] * 119 + ["1"]),
            ",".join(["0.5"] * 20 + ["nan"] + ["0.5"] * 119 + ["0"]),
            _row(0.9, 0),
        ]
    )
    items = list(read_windows(io.StringIO(text), N))
    assert [type(i) for i in items] == [
        CsvWindow,
        CsvRejected,
        CsvRejected,
        CsvRejected,
        CsvRejected,
        CsvWindow,
    ]
    assert [i.row for i in items] == [1, 3, 4, 5, 6, 7]
    assert [i.reason for i in items if isinstance(i, CsvRejected)] == [
        "wrong_length",
        "bad_label",
        "non_numeric",
        "non_finite",
    ]
    assert "column 21: 'x' is not a number" in items[3].detail
    assert items[5].label == 0


def test_score_file_rows_stay_aligned(artifact: Path) -> None:
    scorer = Scorer(load_ecg_artifact(artifact))
    text = "\n".join([_row(0.5), _row(0.0), ",".join(["1"] * 10), _row(1.0)])
    run = score_file(scorer, io.StringIO(text))
    assert [r["row"] for r in run.records] == [1, 2, 3, 4]
    assert run.records[0]["anomaly"] is False and run.records[0]["error"] == pytest.approx(
        0.0, abs=1e-6
    )
    assert run.records[1]["anomaly"] is True and run.records[1]["error"] == pytest.approx(
        0.5, abs=1e-6
    )
    assert run.records[2] == {
        "row": 3,
        "rejected": "wrong_length",
        "detail": "10 columns, expected 140 (140 values and no label, like the first row)",
    }
    assert "error" not in run.records[2]
    assert run.records[3]["anomaly"] is True
    assert run.rejected == 1
    assert run.metrics is None


def test_a_row_beyond_float32_is_rejected_and_the_others_scored(artifact: Path) -> None:
    scorer = Scorer(load_ecg_artifact(artifact))
    text = "\n".join([_row(0.5), _row(1e300), _row(0.0)])
    run = score_file(scorer, io.StringIO(text))
    assert [r.get("rejected") for r in run.records] == [None, "non_finite", None]
    assert run.records[2]["error"] == pytest.approx(0.5, abs=1e-6)
    assert run.rejected == 1


def test_cli_labelled_input_prints_and_writes_metrics(
    artifact: Path, tmp_path: Path, capsys
) -> None:
    rows = [_row(0.5, 1), _row(0.45, 1), _row(0.0, 0), _row(0.95, 0), _row(0.9, 1)]
    src = tmp_path / "in.csv"
    src.write_text("\n".join(rows) + "\n")
    out, metrics = tmp_path / "out.jsonl", tmp_path / "metrics.json"
    code = main(
        [
            "--artifact",
            str(artifact),
            "--input",
            str(src),
            "--output",
            str(out),
            "--metrics",
            str(metrics),
        ]
    )
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["anomaly"] for r in records] == [False, False, True, True, True]
    assert [r["label"] for r in records] == [1, 1, 0, 0, 1]
    m = json.loads(metrics.read_text())
    # positive = normal: 2 of 3 normal predicted normal, both predictions right
    assert m["accuracy"] == pytest.approx(4 / 5)
    assert m["precision"] == 1.0
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["anomaly_recall"] == 1.0
    printed = capsys.readouterr().out
    assert "5 rows scored, 0 rejected" in printed
    assert "artifact (test split)" in printed


def test_cli_bad_row_exit_3_and_stdout_stays_json(artifact: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "in.csv"
    src.write_text("\n".join([_row(0.5), _row(0.5) + ",0.5,0.5", _row(0.1)]) + "\n")
    code = main(["--artifact", str(artifact), "--input", str(src)])
    assert code == 3  # ExitCode.INCOMPLETE
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["row"] for r in lines] == [1, 2, 3]
    assert lines[1]["rejected"] == "wrong_length"
    assert "in.csv: row 2 rejected (wrong_length): 142 columns" in captured.err


def test_cli_shows_the_first_rejections_and_counts_the_rest(
    artifact: Path, tmp_path: Path, capsys
) -> None:
    src = tmp_path / "in.csv"
    src.write_text("\n".join(["1;2;3"] * 25 + [_row(0.5)]) + "\n")  # wrong delimiter
    out = tmp_path / "out.jsonl"
    assert main(["--artifact", str(artifact), "--input", str(src), "--output", str(out)]) == 3
    err = capsys.readouterr().err
    assert err.count("rejected (wrong_length)") == 20
    assert "... and 5 more rejected rows" in err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("rejected") for r in records] == ["wrong_length"] * 25 + [None]


def test_cli_missing_input_is_exit_2(artifact: Path, tmp_path: Path, capsys) -> None:
    assert main(["--artifact", str(artifact), "--input", str(tmp_path / "none.csv")]) == 2
    assert "none.csv: file does not exist" in capsys.readouterr().err


def test_cli_missing_artifact_is_exit_2(tmp_path: Path, capsys) -> None:
    src = tmp_path / "in.csv"
    src.write_text(_row(0.5) + "\n")
    assert main(["--artifact", str(tmp_path / "nope"), "--input", str(src)]) == 2
    assert "ecg-score: error:" in capsys.readouterr().err


def test_offline_does_not_import_tensorflow() -> None:
    import subprocess
    import sys

    code = (
        "import sys, worker.cli.ecg_score, worker.core.evaluation;"
        "print('tensorflow' in sys.modules, 'trainer' in sys.modules, 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False False"


def test_cli_empty_input_is_exit_2(artifact: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "empty.csv"
    src.write_text("\n\n")
    assert main(["--artifact", str(artifact), "--input", str(src)]) == 2
    assert "empty.csv: no rows to score" in capsys.readouterr().err
