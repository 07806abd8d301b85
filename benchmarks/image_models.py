"""Acceptance benchmark for the two Fashion-MNIST models (issue 5).

Trains each model on the full real data with seed 0, for 1 and for 10 epochs, through the
real ``ecg-train`` command (one fresh process per run), and checks the validation MSE
against the acceptance limits. Prints a table, writes the results as JSON, and exits 1
if a limit is missed.

    .venv/bin/python benchmarks/image_models.py                 # all four runs
    .venv/bin/python benchmarks/image_models.py --only fashion-ae --epochs 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from worker.core.artifact import read_metadata

# (job, epochs) -> the largest acceptable validation MSE.
LIMITS = {
    ("fashion-ae", 1): 0.016,
    ("fashion-ae", 10): 0.0095,
    ("denoiser", 1): 0.012,
    ("denoiser", 10): 0.0076,
}
SEED = 0


def run_one(job: str, epochs: int, out_root: Path, data: str | None) -> dict:
    """Train one model in a fresh process; return its measured values."""
    out = out_root / f"{job}-{epochs}ep"
    cmd = [sys.executable, "-m", "trainer.cli", job, "--epochs", str(epochs), "--seed", str(SEED)]
    cmd += ["--out", str(out)] + (["--data", data] if data else [])
    print(f"$ {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    proc = subprocess.run(cmd, check=False)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        return {"job": job, "epochs": epochs, "error": f"exit code {proc.returncode}"}
    meta = read_metadata(out)
    limit = LIMITS[(job, epochs)]
    val = meta["metrics"]["val_mse"]
    return {
        "job": job,
        "epochs": epochs,
        "seed": SEED,
        "val_mse": val,
        "train_mse": meta["metrics"]["train_mse"],
        "val_mse_per_epoch": meta["training"]["history"]["val_loss"],
        "limit": limit,
        "passed": val <= limit,
        "training_time_s": meta["training"]["wall_time_s"],
        "process_wall_time_s": round(wall, 1),
        "model_version": meta["model_version"],
        "library_versions": meta["library_versions"],
        "artifact": str(out),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the selected acceptance runs; 0 if every limit is met, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["fashion-ae", "denoiser"], help="one model only")
    parser.add_argument("--epochs", type=int, choices=[1, 10], help="one epoch count only")
    parser.add_argument("--data", metavar="DIR", help="passed to ecg-train --data")
    parser.add_argument("--out-root", default="artifacts/bench-images", type=Path)
    parser.add_argument("--json", default="artifacts/bench-images/results.json", type=Path)
    args = parser.parse_args(argv)

    results = []
    for job, epochs in LIMITS:
        if (args.only and job != args.only) or (args.epochs and epochs != args.epochs):
            continue
        results.append(run_one(job, epochs, args.out_root, args.data))

    print(
        f"\n{'job':<11} {'epochs':>6} {'val MSE':>9} {'limit':>7} {'train s':>8} {'wall s':>7}  ok"
    )
    for r in results:
        if "error" in r:
            print(f"{r['job']:<11} {r['epochs']:>6}  FAILED: {r['error']}")
            continue
        print(
            f"{r['job']:<11} {r['epochs']:>6} {r['val_mse']:>9.5f} {r['limit']:>7} "
            f"{r['training_time_s']:>8.1f} {r['process_wall_time_s']:>7.1f}  "
            f"{'yes' if r['passed'] else 'NO'}"
        )
    # Same seed, same first epoch: a 10-epoch run's epoch-1 val MSE should equal the 1-epoch run.
    for job in ("fashion-ae", "denoiser"):
        one = [r for r in results if r["job"] == job and r["epochs"] == 1 and "val_mse" in r]
        ten = [r for r in results if r["job"] == job and r["epochs"] == 10 and "val_mse" in r]
        if one and ten:
            a, b = one[0]["val_mse_per_epoch"][0], ten[0]["val_mse_per_epoch"][0]
            print(f"{job}: epoch-1 val MSE, 1-epoch run {a:.6f} vs 10-epoch run {b:.6f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results: {args.json}")
    return 0 if results and all(r.get("passed") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
