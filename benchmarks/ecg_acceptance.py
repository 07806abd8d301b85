"""ECG acceptance: train the tutorial and tuned profiles for seeds 0-2 on the default data,
check the issue's thresholds, and check that ``ecg-score`` on the test split reproduces each
artifact's recorded metrics: ``exact``, or ``agrees`` when they differ only as far as
borderline windows explain (``worker.core.agreement.compare_metrics``), else ``DIFFERS``.
Prints a table; exit 1 if any check fails.

    .venv/bin/python benchmarks/ecg_acceptance.py [--seeds 0 1 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trainer.ecg.data import load_ecg, tutorial_split
from worker.core.agreement import compare_metrics

# profile -> metric -> minimum on the test split (the acceptance)
ACCEPTANCE = {
    "tutorial": {"accuracy": 0.94, "precision": 0.98, "recall": 0.90},
    "tuned": {"roc_auc": 0.98, "anomaly_f1": 0.96},
}
COLUMNS = ("accuracy", "precision", "recall", "anomaly_f1", "roc_auc")


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def write_test_split(path: Path) -> Path:
    """The tutorial's test split as a labelled CSV for ecg-score."""
    split = tutorial_split(load_ecg())
    lines = [
        ",".join([*(repr(float(v)) for v in w), str(int(y))])
        for w, y in zip(split.test_windows, split.test_labels, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_one(profile: str, seed: int, out: Path, test_csv: Path) -> dict:
    """Train one artifact, score the test split with ecg-score, return the row of the table."""
    started = time.monotonic()
    train = subprocess.run(
        [_bin("ecg-train"), "ecg", "--profile", profile, "--seed", str(seed), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    if train.returncode != 0:
        raise SystemExit(f"ecg-train failed ({profile}, seed {seed}):\n{train.stderr[-2000:]}")
    meta = json.loads((out / "artifact.json").read_text())
    metrics_file = out.parent / f"{out.name}.score-metrics.json"
    score = subprocess.run(
        [
            _bin("ecg-score"),
            "--artifact",
            str(out),
            "--input",
            str(test_csv),
            "--output",
            str(out.parent / f"{out.name}.scores.jsonl"),
            "--metrics",
            str(metrics_file),
        ],
        capture_output=True,
        text=True,
    )
    test = meta["metrics"]["test"]
    reproduced = "DIFFERS"
    if score.returncode == 0:
        lines = (out.parent / f"{out.name}.scores.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        compared = compare_metrics(
            test,
            np.array([r["label"] for r in records]),
            np.array([r["error"] for r in records]),
            np.array([r["anomaly"] for r in records]),
            threshold=meta["threshold"],
            window_length=meta["window_length"],
        )
        if all(c.equal for c in compared):
            reproduced = "exact"
        elif all(c.agrees for c in compared):
            reproduced = "agrees"
    passed = reproduced != "DIFFERS" and all(test[m] >= lo for m, lo in ACCEPTANCE[profile].items())
    return {
        "profile": profile,
        "seed": seed,
        "epochs": meta["training"]["epochs_run"],
        "threshold": meta["threshold"],
        "seconds": seconds,
        "reproduced": reproduced,
        "passed": passed,
        **{m: test[m] for m in COLUMNS},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profiles", nargs="+", default=list(ACCEPTANCE), choices=list(ACCEPTANCE))
    parser.add_argument("--out", type=Path, help="keep the artifacts here (default: a temp dir)")
    args = parser.parse_args(argv)
    root = args.out or Path(tempfile.mkdtemp(prefix="ecg-acceptance-"))
    root.mkdir(parents=True, exist_ok=True)
    test_csv = write_test_split(root / "test_split.csv")
    header = f"{'profile':9} {'seed':>4} {'epochs':>6} " + " ".join(f"{c:>10}" for c in COLUMNS)
    header += f" {'threshold':>9} {'wall s':>7} {'ecg-score':>9} {'accept':>6}"
    print(header, flush=True)
    rows = []
    started = time.monotonic()
    for profile in args.profiles:
        for seed in args.seeds:
            r = run_one(profile, seed, root / f"{profile}-seed{seed}", test_csv)
            rows.append(r)
            print(
                f"{r['profile']:9} {r['seed']:>4} {r['epochs']:>6} "
                + " ".join(f"{r[c]:>10.4f}" for c in COLUMNS)
                + f" {r['threshold']:>9.5f} {r['seconds']:>7.1f}"
                + f" {r['reproduced']:>9}"
                + f" {'pass' if r['passed'] else 'FAIL':>6}",
                flush=True,
            )
    print(f"total wall time {time.monotonic() - started:.0f} s; artifacts in {root}")
    for profile, limits in ACCEPTANCE.items():
        print(f"acceptance {profile}: " + ", ".join(f"{m} >= {v}" for m, v in limits.items()))
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
