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
import json
import sys
from pathlib import Path
from typing import Any

from worker.cli_support.runner import ExitCode, run_cli
from worker.core.artifact import load_ecg_artifact
from worker.core.csv_scoring import ScoreRun, score_file, score_rows
from worker.core.errors import DataError
from worker.core.scorer import Scorer
from worker.core.windows_csv import read_windows_file

# A systematically broken file (say, the wrong delimiter) must not bury the terminal: the
# first rejections are shown, the rest are counted; the output has every one.
MAX_REJECTIONS_SHOWN = 20


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
    return score_rows(scorer, read_windows_file(source, scorer.window_length))


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
