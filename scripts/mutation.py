"""Mutation testing of the scoring core and the delivery path, with a kill rate per module.

    .venv/bin/python scripts/mutation.py [--modules codec,batcher] [--max-children 2]
    .venv/bin/python scripts/mutation.py --report-only      # the table of the last run

Runs mutmut 3.8 (its configuration is ``[tool.mutmut]`` in pyproject.toml: which modules are
mutated, which tests run against them) in a fresh copy of the tree under ``mutants/``, then
prints one row per module: mutants, killed, survived, no tests, timeout, other and the kill
rate. ``make mutation`` (``MODULES=codec,batcher`` for a subset) calls this. docs/mutation.md
has the measured figures and the reviewed survivors.

Kill rate = (killed + timeout + caught by type check) / (mutants - skipped): a mutant that
hangs the tests is detected; one that no test runs ("no tests") or that a run never reached
("not checked") counts against the rate.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS_DIR = "mutants"
RUN_LOG = "mutmut-run.log"

DETECTED = frozenset({"killed", "timeout", "caught by type check"})
NOT_COUNTED = frozenset({"skipped"})


@dataclass(frozen=True)
class ModuleTally:
    """The mutmut verdicts of one mutated module (or the total)."""

    module: str
    statuses: Mapping[str, int]

    @property
    def mutants(self) -> int:
        return sum(self.statuses.values())

    def count(self, status: str) -> int:
        return self.statuses.get(status, 0)

    @property
    def other(self) -> int:
        """Suspicious, segfault, not checked, interrupted: none of the named columns."""
        named = {"killed", "survived", "no tests", "timeout"}
        return self.mutants - sum(self.count(s) for s in named)

    @property
    def kill_rate(self) -> float | None:
        """Detected / counted mutants, or None when no mutant of the module was checked."""
        counted = self.mutants - sum(self.count(s) for s in NOT_COUNTED)
        if counted - self.count("not checked") <= 0:
            return None
        return sum(self.count(s) for s in DETECTED) / counted


def mutated_modules(pyproject: Path) -> dict[str, str]:
    """Short name (file stem) -> dotted module, from ``[tool.mutmut] only_mutate``."""
    config = tomllib.loads(pyproject.read_text("utf-8"))["tool"]["mutmut"]
    modules = {}
    for path in config["only_mutate"]:
        dotted = path.removesuffix(".py").replace("/", ".")
        modules[dotted.rsplit(".", 1)[-1]] = dotted
    return modules


def parse_results(text: str) -> dict[str, str]:
    """Mutant name -> status, from the lines ``    <mutant>: <status>`` of ``mutmut results``."""
    results = {}
    for line in text.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            results[name] = status
    return results


def module_of(mutant: str, modules: Iterable[str]) -> str | None:
    """The dotted module a mutant name belongs to (names are ``<module>.<function>__mutmut_N``)."""
    for module in modules:
        if mutant.startswith(module + "."):
            return module
    return None


def tally(results: Mapping[str, str], modules: Sequence[str]) -> list[ModuleTally]:
    """One tally per module in ``modules`` (in that order), then the total over them."""
    per_module: dict[str, Counter[str]] = {m: Counter() for m in modules}
    for mutant, status in results.items():
        module = module_of(mutant, modules)
        if module is not None:
            per_module[module][status] += 1
    rows = [ModuleTally(m, per_module[m]) for m in modules]
    total: Counter[str] = Counter()
    for counts in per_module.values():
        total.update(counts)
    return [*rows, ModuleTally("total", total)]


def format_table(rows: Sequence[ModuleTally]) -> str:
    """A plain-text (and Markdown) table of the tallies."""
    header = ["module", "mutants", "killed", "survived", "no tests", "timeout", "other"]
    header.append("kill rate")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        rate = "not run" if row.kill_rate is None else f"{100 * row.kill_rate:.1f} %"
        cells = [
            row.module,
            row.mutants,
            row.count("killed"),
            row.count("survived"),
            row.count("no tests"),
            row.count("timeout"),
            row.other,
            rate,
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def mutmut_env() -> dict[str, str]:
    """The environment without PYTHONPATH: it would shadow the mutated copy in mutants/."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def run_mutmut(modules: Sequence[str], max_children: int) -> int:
    """A fresh ``mutmut run`` over ``modules``; its (spinner-heavy) output goes to a log."""
    # Fresh each time: mutmut keeps old verdicts and its test map when only tests changed.
    shutil.rmtree(ROOT / MUTANTS_DIR, ignore_errors=True)
    (ROOT / MUTANTS_DIR).mkdir()
    log_path = ROOT / MUTANTS_DIR / RUN_LOG
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    command += [f"{m}.*" for m in modules]
    print(f"mutmut run on {', '.join(modules)} (log: {log_path.relative_to(ROOT)})", flush=True)
    with log_path.open("w") as log:
        return subprocess.run(
            command, cwd=ROOT, env=mutmut_env(), stdout=log, stderr=subprocess.STDOUT
        ).returncode


def read_results() -> dict[str, str]:
    """Every mutant's status, from ``mutmut results --all true``."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=ROOT,
        env=mutmut_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_results(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run mutmut (unless --report-only) and print the per-module table."""
    known = mutated_modules(ROOT / "pyproject.toml")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--modules",
        default=",".join(known),
        help=f"comma-separated subset of: {', '.join(known)} (default: all)",
    )
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutant runs")
    parser.add_argument("--report-only", action="store_true", help="table of the last run")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.modules.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        parser.error(f"unknown module(s) {unknown}; choose from {', '.join(known)}")
    modules = [known[n] for n in names]

    if not args.report_only:
        started = time.monotonic()
        code = run_mutmut(modules, args.max_children)
        elapsed_s = time.monotonic() - started
        if code != 0:
            print(f"mutmut run failed (exit {code}); see {MUTANTS_DIR}/{RUN_LOG}", file=sys.stderr)
            return code
        print(f"run time: {elapsed_s / 60:.1f} min (--max-children {args.max_children})")
    print(format_table(tally(read_results(), modules)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
