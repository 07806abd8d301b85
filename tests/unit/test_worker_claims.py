"""What README.md and docs/worker.md promise about the worker process, each checked so that
the test fails when the promise breaks:

- a second SIGTERM/SIGINT stops at once with exit code 130 (docs/worker.md, "Exit codes");
- the worker's import path (cli, service, core) never imports TensorFlow, Keras, scikit-learn
  or the trainer (README, "Layout");
- numpy runs with one BLAS thread unless the operator set a thread count (docs/worker.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

import worker.service.app
from worker.cli.ecg_worker import main

ROOT = Path(__file__).resolve().parents[2]


class _Loop:
    """What the signal handler sees of the loop."""

    def __init__(self) -> None:
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True


def _signal_self(sig: int) -> None:
    os.kill(os.getpid(), sig)
    for _ in range(100):  # the handler runs at the next bytecode boundary
        time.sleep(0.001)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_stops_the_worker_with_exit_130(
    sig: int, tmp_path: Path, artifact_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "worker.yaml"
    config.write_text(yaml.safe_dump({"artifact": str(artifact_dir)}))
    seen: list[str] = []

    def run(_config: object) -> int:
        # The real signal handlers, with a loop that is still draining its batch.
        loop = _Loop()
        previous = worker.service.app._install_signals(loop)  # type: ignore[arg-type]
        try:
            _signal_self(sig)
            seen.append(f"first: stopping={loop.stopping}")
            _signal_self(sig)  # raises KeyboardInterrupt out of the drain
            seen.append("second signal ignored")
            return 0
        finally:
            worker.service.app._restore_signals(previous)

    monkeypatch.setattr(worker.service.app, "run", run)
    assert main(["--config", str(config)]) == 130
    assert seen == ["first: stopping=True"]


def _python(code: str, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter on this checkout; returns its stdout."""
    base = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_no_worker_module_imports_tensorflow_or_the_trainer() -> None:
    # Every module of the worker package, imported with the training stack made
    # unimportable: one stray import fails here, not in a slim worker image.
    out = _python(
        """
        import importlib, pkgutil, sys
        for name in ("tensorflow", "keras", "sklearn", "matplotlib", "trainer"):
            sys.modules[name] = None
        import worker
        names = [m.name for m in pkgutil.walk_packages(worker.__path__, "worker.")]
        for name in names:
            importlib.import_module(name)
        print(len(names), "worker.cli.ecg_worker" in names, "worker.service.app" in names)
        """
    )
    count, cli, service = out.split()
    assert int(count) > 20 and cli == service == "True"


def _blas_threads(env: dict[str, str] | None = None) -> int:
    """The BLAS thread count numpy gets when ``ecg-worker`` starts (its ``run`` replaced by
    a probe, loaded only where the real one is)."""
    out = _python(
        """
        import sys, types
        probe = types.ModuleType("worker.service.app")
        def run(config):
            import numpy, threadpoolctl  # numpy loads its BLAS here, as in the worker
            blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
            print(blas[0]["num_threads"])
            return 0
        probe.run = run
        sys.modules["worker.service.app"] = probe
        from worker.cli.ecg_worker import main
        assert "numpy" not in sys.modules, "numpy imported before the BLAS settings"
        sys.exit(main(["--config", "deploy/worker.yaml"]))
        """,
        env,
    )
    return int(out.splitlines()[-1])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS uses one thread anyway")
def test_the_worker_runs_one_blas_thread_unless_told_otherwise() -> None:
    assert _blas_threads() == 1
    assert _blas_threads({"OPENBLAS_NUM_THREADS": "2"}) == 2
