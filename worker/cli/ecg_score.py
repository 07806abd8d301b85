"""``ecg-score``: score a CSV of ECG windows offline with an artifact, through the same
``Scorer`` the streaming worker uses.

Input: one window per line, ``window_length`` comma-separated numbers, optionally followed
by a 0/1 label (1 = normal, the tutorial's ``ecg.csv`` layout); no header. The first
non-blank line decides whether the file is labelled. Output: one JSON line per input line
(blank lines skipped), in order::

    {"row": 3, "error": 0.0213, "anomaly": false, "label": 1}
    {"row": 4, "rejected": "wrong_length", "detail": "139 values, expected 140 (+ optional label)"}

A bad row is reported (stderr and its JSON line) and the other rows are still scored. With
labels, the metrics are printed next to the artifact's recorded test metrics.

Exit codes (``worker.cli_support.runner``): 0 every row scored; 3 some rows rejected (the
rest are in the output); 2 a known error (missing artifact or input file, ...); 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from worker.cli_support.runner import ExitCode, run_cli
from worker.core.artifact import load_ecg_artifact
from worker.core.errors import DataError
from worker.core.scorer import Scorer

# A systematically broken file (say, the wrong delimiter) must not bury the terminal: the
# first rejections are shown, the rest are counted; the output has every one.
MAX_REJECTIONS_SHOWN = 20


@dataclass(frozen=True)
class CsvWindow:
    """A parsed row: ``row`` is its 1-based line number in the file."""

    row: int
    values: list[float]
    label: int | None


@dataclass(frozen=True)
class CsvRejected:
    """A row that cannot be scored, with a reason code (as in the worker's dead letters)."""

    row: int
    reason: str  # wrong_length | non_numeric | non_finite | bad_label
    detail: str


def read_windows(lines: IO[str], window_length: int) -> Iterator[CsvWindow | CsvRejected]:
    """Parse a CSV of windows; every non-blank line yields a window or a rejection."""
    labelled: bool | None = None
    for row, fields in enumerate(csv.reader(lines), start=1):
        if not fields or not any(f.strip() for f in fields):
            continue
        if labelled is None and len(fields) in (window_length, window_length + 1):
            labelled = len(fields) == window_length + 1
        expected = window_length + 1 if labelled else window_length
        if len(fields) != expected:
            if labelled is None:
                layout = f"{window_length} values, optionally followed by a 0/1 label"
            elif labelled:
                layout = f"{window_length} values and a 0/1 label, like the first row"
            else:
                layout = f"{window_length} values and no label, like the first row"
            yield CsvRejected(
                row, "wrong_length", f"{len(fields)} columns, expected {expected} ({layout})"
            )
            continue
        yield _parse_row(row, fields, window_length, bool(labelled))


def _parse_row(
    row: int, fields: list[str], window_length: int, labelled: bool
) -> CsvWindow | CsvRejected:
    values = []
    for column, text in enumerate(fields, start=1):
        try:
            value = float(text)
        except ValueError:
            return CsvRejected(
                row, "non_numeric", f"column {column}: {text.strip()!r} is not a number"
            )
        if not math.isfinite(value):
            return CsvRejected(row, "non_finite", f"column {column}: {text.strip()} is not finite")
        values.append(value)
    label = None
    if labelled:
        raw = values.pop()
        if raw not in (0.0, 1.0):
            return CsvRejected(row, "bad_label", f"label {fields[-1].strip()!r} is not 0 or 1")
        label = int(raw)
    return CsvWindow(row, values, label)


@dataclass(frozen=True)
class ScoreRun:
    """The outcome of scoring one file: output records in input order, plus metrics."""

    records: list[dict[str, Any]]
    rejected: int
    metrics: dict[str, Any] | None


def score_file(scorer: Scorer, lines: IO[str]) -> ScoreRun:
    """Score every valid window of ``lines`` in one batch; rejected rows keep their place."""
    parsed = list(read_windows(lines, scorer.window_length))
    windows = [p for p in parsed if isinstance(p, CsvWindow)]
    records: dict[int, dict[str, Any]] = {}
    metrics = None
    if windows:
        scores = scorer.score(np.asarray([w.values for w in windows], dtype=np.float64))
        if not scores.all_scored:
            # Finite in the file but beyond the model's float32 input range (e.g. 1e300).
            for w, ok in zip(windows, scores.scorable.tolist(), strict=True):
                if not ok:
                    parsed[parsed.index(w)] = CsvRejected(
                        w.row, "non_finite", "values overflow the model's float32 range"
                    )
            windows = [w for w, ok in zip(windows, scores.scorable.tolist(), strict=True) if ok]
        for w, error, anomaly in zip(windows, scores.errors, scores.anomalies, strict=True):
            record: dict[str, Any] = {"row": w.row, "error": float(error), "anomaly": bool(anomaly)}
            if w.label is not None:
                record["label"] = w.label
            records[w.row] = record
        if windows and windows[0].label is not None:
            from worker.core.evaluation import detection_metrics

            labels = np.asarray([w.label for w in windows])
            metrics = detection_metrics(labels, scores.errors, scores.anomalies)
    rejected = 0
    for p in parsed:
        if isinstance(p, CsvRejected):
            records[p.row] = {"row": p.row, "rejected": p.reason, "detail": p.detail}
            rejected += 1
    return ScoreRun([records[p.row] for p in parsed], rejected, metrics)


def build_parser() -> argparse.ArgumentParser:
    """The ``ecg-score`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="ecg-score",
        description="Score a CSV of ECG windows with a model artifact (one JSON line per row). "
        "Exit 0: all rows scored; 3: some rows rejected; 2: error; 130: interrupted.",
    )
    parser.add_argument(
        "--artifact",
        required=True,
        type=Path,
        metavar="DIR",
        help="artifact directory written by ecg-train ecg",
    )
    parser.add_argument(
        "--input",
        required=True,
        metavar="FILE",
        help="CSV: one window per line (window_length values, optional trailing 0/1 label), "
        "no header; '-' reads stdin",
    )
    parser.add_argument(
        "--output", type=Path, metavar="FILE", help="JSON lines output (default stdout)"
    )
    parser.add_argument(
        "--metrics",
        type=Path,
        metavar="FILE",
        help="also write the metrics as JSON (labelled input only)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 all scored, 3 rows rejected, 2 error)."""
    args = build_parser().parse_args(argv)
    return run_cli("ecg-score", lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    scorer = Scorer(load_ecg_artifact(args.artifact))
    run = _score_input(scorer, args.input)
    if not run.records:
        raise DataError(f"{args.input}: no rows to score")
    _write_records(run.records, args.output)
    # Keep stdout pure JSON lines when the records go there.
    report = sys.stderr if args.output is None else sys.stdout
    rejected = [record for record in run.records if "rejected" in record]
    for record in rejected[:MAX_REJECTIONS_SHOWN]:
        print(
            f"ecg-score: {args.input}: row {record['row']} rejected ({record['rejected']}): "
            f"{record['detail']}",
            file=sys.stderr,
        )
    if len(rejected) > MAX_REJECTIONS_SHOWN:
        print(
            f"ecg-score: ... and {len(rejected) - MAX_REJECTIONS_SHOWN} more rejected rows "
            "(every one is in the output with its reason)",
            file=sys.stderr,
        )
    scored = len(run.records) - run.rejected
    print(f"ecg-score: {scored} rows scored, {run.rejected} rejected", file=report)
    if run.metrics is not None:
        from worker.core.evaluation import metrics_table

        recorded = (scorer.artifact.metadata.get("metrics") or {}).get("test") or {}
        columns = {"this input": run.metrics}
        if recorded:
            columns["artifact (test split)"] = recorded
        print(metrics_table(columns), file=report)
        if args.metrics is not None:
            try:
                args.metrics.write_text(json.dumps(run.metrics, indent=2) + "\n", encoding="utf-8")
            except OSError as exc:
                raise DataError(f"{args.metrics}: cannot write ({exc})") from exc
    elif args.metrics is not None:
        print("ecg-score: no labels in the input, so no metrics written", file=sys.stderr)
    return ExitCode.INCOMPLETE if run.rejected else ExitCode.OK


def _score_input(scorer: Scorer, source: str) -> ScoreRun:
    if source == "-":
        return score_file(scorer, sys.stdin)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: input file does not exist")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return score_file(scorer, f)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc
    except (OSError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc


def _write_records(records: list[dict[str, Any]], output: Path | None) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{output}: cannot write ({exc})") from exc


if __name__ == "__main__":
    sys.exit(main())
