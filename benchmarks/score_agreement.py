"""Score agreement across BLAS kernels and batch sizes, and what batch-independent scoring
would cost.

    .venv/bin/python benchmarks/score_agreement.py [--artifact artifacts/ecg] [--n 20000]
        [--kernels default,Haswell,Sandybridge] [--pad-to 256] [--repeat 7] [--skip-kernels]

Part 1 (agreement): for each OpenBLAS kernel (``OPENBLAS_CORETYPE``, in a child process, as
the variable must be set before numpy loads) the test split is scored in batches of 1, 7,
64, 256 and all at once. Every result is compared with the default kernel's all-at-once
scores (what the trainer records): windows whose error differs, the largest difference in
errors and in reconstructed samples (in units of 2**-24, see ``worker.core.agreement``), and
the largest difference as a fraction of the contract's tolerance. Each kernel also runs
with 2 BLAS threads, to show whether the thread count changes the bits of one batch shape.

Part 2 (throughput, this process, one BLAS thread as in ``ecg-worker``): windows/s for
micro-batches of 7, 64 and 256 windows, of
- ``batched``: ``Scorer.score`` per micro-batch (what the worker does);
- ``row by row``: one ``Scorer.score`` call per window, so a window's bits never depend on
  its batch (on one machine);
- ``padded``: every batch padded with zeros to ``--pad-to`` rows, so BLAS always sees one
  shape;
- ``no BLAS``: the dense layers as numpy broadcast-multiply and sum, which adds in a fixed
  order whatever the batch; also checked for bit-equality across batch sizes.

Prints figures; it is not a pass/fail test (docs/benchmarks.md).
"""

# ruff: noqa: E402 - the BLAS setting must precede the numpy import, as in ecg-worker.
from __future__ import annotations

import os

from worker.cli.ecg_worker import BLAS_THREAD_VARIABLES

for _name in BLAS_THREAD_VARIABLES:
    os.environ.setdefault(_name, "1")

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from worker.core.agreement import UNIT_ROUNDOFF, compare_scores, score_tolerance
from worker.core.artifact import EcgArtifact, load_ecg_artifact
from worker.core.scorer import Scorer

BATCH_SIZES = (1, 7, 64, 256)
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, np.float32(0.0)),
    "sigmoid": lambda x: np.float32(1.0) / (np.float32(1.0) + np.exp(-x)),
    "linear": lambda x: x,
}


def load(artifact_dir: str) -> tuple[EcgArtifact, np.ndarray, str]:
    """The artifact, and the windows to score: the ECG5000 test split, else synthetic."""
    artifact = load_ecg_artifact(Path(artifact_dir))
    try:
        from trainer.ecg.data import load_ecg, tutorial_split

        return artifact, tutorial_split(load_ecg()).test_windows, "ECG5000 test split"
    except ImportError:
        from tests.builders import synthetic_windows

        return artifact, synthetic_windows(1000, seed=0), "1000 synthetic windows"


def in_batches(scorer: Scorer, windows: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Errors and reconstructions of ``windows`` scored ``size`` at a time."""
    x = scorer.artifact.normalisation.apply(windows)
    errors = [scorer.score(windows[i : i + size]).errors for i in range(0, len(windows), size)]
    recon = [scorer.reconstruct(x[i : i + size]) for i in range(0, len(windows), size)]
    return np.concatenate(errors), np.concatenate(recon)


def dump(artifact_dir: str, out: str) -> None:
    """Child process: scores in every batch size under this process's BLAS kernel."""
    artifact, windows, _ = load(artifact_dir)
    scorer = Scorer(artifact)
    arrays = {}
    for size in (*BATCH_SIZES, len(windows)):
        arrays[f"errors_{size}"], arrays[f"recon_{size}"] = in_batches(scorer, windows, size)
    np.savez(out, **arrays)  # type: ignore[arg-type]


def agreement_table(artifact_dir: str, kernels: list[str]) -> None:
    """Part 1: every kernel and batch size against the default kernel, all at once."""
    artifact, windows, source = load(artifact_dir)
    n = len(windows)
    results: dict[str, dict[str, np.ndarray]] = {}
    two_threads: dict[str, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kernel in kernels:
            for threads in (1, 2):
                env = dict(os.environ)
                env.pop("OPENBLAS_CORETYPE", None)
                if kernel != "default":
                    env["OPENBLAS_CORETYPE"] = kernel
                env.update(dict.fromkeys(BLAS_THREAD_VARIABLES, str(threads)))
                out = str(Path(tmp) / f"{kernel}-{threads}.npz")
                subprocess.run(
                    [sys.executable, __file__, "--artifact", artifact_dir, "--dump", out],
                    env=env,
                    check=True,
                )
                (results if threads == 1 else two_threads)[kernel] = dict(np.load(out))
    ref_e, ref_r = results[kernels[0]][f"errors_{n}"], results[kernels[0]][f"recon_{n}"]
    tolerance = score_tolerance(artifact.window_length)
    print(f"{source}, model {artifact.model_version}, threshold {artifact.threshold:.6f}")
    print(f"reference: kernel {kernels[0]}, all {n} windows in one batch")
    print(f"tolerance at the threshold: {float(tolerance.bound(artifact.threshold, 0.0)):.3g}")
    print(
        f"{'kernel':<12} {'batch':>5} {'differ':>7} {'max |de|':>9} {'units':>6} "
        f"{'max |dr| units':>14} {'of tolerance':>12} {'flags':>6} {'contract':>8}"
    )
    for kernel in kernels:
        for size in (*BATCH_SIZES, n):
            e, r = results[kernel][f"errors_{size}"], results[kernel][f"recon_{size}"]
            de = np.abs(e.astype(np.float64) - ref_e)
            dr = np.abs(r.astype(np.float64) - ref_r)
            allowed = tolerance.bound(e, ref_e)
            agreement = compare_scores(
                ref_e,
                ref_e >= np.float32(artifact.threshold),
                e,
                e >= np.float32(artifact.threshold),
                threshold=artifact.threshold,
                window_length=artifact.window_length,
            )
            flips = int(
                ((e >= np.float32(artifact.threshold)) != (ref_e >= artifact.threshold)).sum()
            )
            print(
                f"{kernel:<12} {size:>5} {int((de > 0).sum()):>7} {de.max():>9.2g} "
                f"{de.max() / UNIT_ROUNDOFF:>6.2f} {dr.max() / UNIT_ROUNDOFF:>14.1f} "
                f"{(de / allowed).max():>12.3f} {flips:>6} {'ok' if agreement.ok else 'BROKEN':>8}"
            )
    thread_lines(results, two_threads, 256)


def thread_lines(results: dict, two_threads: dict, size: int) -> None:
    """Same kernel, same batch shape, 1 vs 2 BLAS threads: do the bits change?"""
    for kernel in results:
        a, b = results[kernel][f"recon_{size}"], two_threads[kernel][f"recon_{size}"]
        print(
            f"{kernel}: 1 vs 2 BLAS threads, batches of {size}: "
            f"{int((a != b).any(axis=1).sum())} of {len(a)} reconstructions differ"
        )


def reconstruct_without_blas(artifact: EcgArtifact, x: np.ndarray) -> np.ndarray:
    """The forward pass with each dot product as multiply-then-sum over one axis of a
    broadcast product: numpy adds along that axis in a fixed order for every row."""
    for layer in artifact.layers:
        x = ACTIVATIONS[layer.activation](
            (x[:, :, None] * layer.kernel[None, :, :]).sum(axis=1) + layer.bias
        )
    return x


def best_rates(fns: dict[str, Callable[[], object]], windows: int, repeat: int) -> dict[str, float]:
    """Windows per second of each function: the best of ``repeat`` rounds, the functions
    taking turns within a round so that a busy spell on a shared machine hits them alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: windows / seconds for name, seconds in best.items()}


def throughput_table(artifact_dir: str, n: int, pad_to: int, repeat: int) -> None:
    """Part 2: the cost of scores that do not depend on the batch, for micro-batches of a
    slow stream (7), a busy one (64) and a full one (``pad_to``, the worker's maximum)."""
    artifact, test, _ = load(artifact_dir)
    scorer = Scorer(artifact)
    windows = test[np.arange(n) % len(test)]

    def batched(size: int) -> None:
        for i in range(0, n, size):
            scorer.score(windows[i : i + size])

    def row_by_row(size: int) -> None:
        for i in range(n):
            scorer.score(windows[i : i + 1])

    def padded(size: int) -> None:
        for i in range(0, n, size):
            b = windows[i : i + size]
            scorer.score(np.concatenate([b, np.zeros((pad_to - len(b), b.shape[1]))]))

    def no_blas(size: int) -> None:
        for i in range(0, n, size):
            x = artifact.normalisation.apply(windows[i : i + size])
            np.abs(reconstruct_without_blas(artifact, x) - x).mean(axis=1, dtype=np.float32)

    kernel = os.environ.get("OPENBLAS_CORETYPE", "default")
    print(
        f"\n{n} windows, 1 BLAS thread, kernel {kernel}: windows/s (ratio to batched; "
        "microseconds added per window)"
    )
    sizes = (7, 64, pad_to)
    print(f"{'scoring':<20}" + "".join(f"{'batch ' + str(s):>30}" for s in sizes))
    variants = {
        "batched (current)": batched,
        f"padded to {pad_to}": padded,
        "row by row": row_by_row,
        "no BLAS": no_blas,
    }
    rates = {
        s: best_rates({name: partial(fn, s) for name, fn in variants.items()}, n, repeat)
        for s in sizes
    }
    for name in variants:
        cells = []
        for s in sizes:
            r, base = rates[s][name], rates[s]["batched (current)"]
            added_us = 1e6 * (1 / r - 1 / base)
            cells.append(f"{r:>10,.0f} ({r / base:.3f}; {added_us:+.1f} us)")
        print(f"{name:<20}" + "".join(f"{c:>30}" for c in cells))

    # Does each alternative give the same bits for a window whatever its batch?
    x = artifact.normalisation.apply(test)
    one = np.concatenate([reconstruct_without_blas(artifact, x[i : i + 1]) for i in range(64)])
    same = np.array_equal(one, reconstruct_without_blas(artifact, x[:64]))
    print(f"no BLAS, batch 1 vs 64: {'bit-identical' if same else 'DIFFERENT bits'}")
    shifted = np.concatenate([np.zeros((5, x.shape[1]), np.float32), x[: pad_to - 5]])
    a = scorer.reconstruct(x[:pad_to])[: pad_to - 5]
    b = scorer.reconstruct(shifted)[5:]
    print(
        f"padded, same windows 5 rows further down a {pad_to}-row batch: "
        f"{int((a != b).any(axis=1).sum())} of {pad_to - 5} reconstructions differ"
    )


def main(argv: list[str] | None = None) -> int:
    """Run both parts (or, with ``--dump``, the child's part)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", default="artifacts/ecg")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--pad-to", type=int, default=256, help="the worker's max_batch_size")
    parser.add_argument("--repeat", type=int, default=7, help="rounds; the best one counts")
    parser.add_argument("--skip-kernels", action="store_true", help="only the throughput part")
    parser.add_argument("--kernels", default="default,Haswell,Sandybridge")
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dump:
        dump(args.artifact, args.dump)
        return 0
    if not args.skip_kernels:
        agreement_table(args.artifact, args.kernels.split(","))
    throughput_table(args.artifact, args.n, args.pad_to, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
