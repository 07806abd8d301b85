"""scripts/mutation.py (make mutation): reading mutmut's results into the per-module table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mutation() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_script", ROOT / "scripts/mutation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# The shape of `mutmut results --all true` (3.8.1): class methods use the "xǁClassǁ" prefix.
RESULTS = """\
    worker.core.codec.x_decode__mutmut_1: killed
    worker.core.codec.x_decode__mutmut_2: survived
    worker.core.codec.xǁWindowǁ__init____mutmut_1: timeout
    worker.core.codec.x_encode__mutmut_3: no tests
    worker.core.codec_extra.x_f__mutmut_1: survived
    worker.service.batcher.xǁBatcherǁadd__mutmut_1: killed
    worker.service.batcher.xǁBatcherǁadd__mutmut_2: skipped
    worker.service.batcher.xǁBatcherǁadd__mutmut_3: suspicious
    worker.service.loop.x_run__mutmut_1: not checked
some warning line: not a mutant
"""


def test_results_are_tallied_per_module_with_the_total(mutation: ModuleType) -> None:
    modules = ["worker.core.codec", "worker.service.batcher", "worker.service.loop"]
    codec, batcher, loop, total = mutation.tally(mutation.parse_results(RESULTS), modules)

    # codec_extra is another module, not a codec mutant.
    assert (codec.mutants, codec.count("killed"), codec.count("survived")) == (4, 1, 1)
    assert (codec.count("timeout"), codec.count("no tests")) == (1, 1)
    # A timeout is a detection; "no tests" counts against the rate.
    assert codec.kill_rate == pytest.approx(2 / 4)
    # skipped mutants are left out of the rate; suspicious counts against it.
    assert (batcher.mutants, batcher.other) == (3, 2)
    assert batcher.kill_rate == pytest.approx(1 / 2)
    # A module whose mutants were never checked has no rate rather than 0 %.
    assert loop.kill_rate is None
    assert (total.module, total.mutants, total.count("killed")) == ("total", 8, 2)
    assert total.kill_rate == pytest.approx(3 / 7)


def test_the_table_has_one_row_per_module_and_the_rate_in_percent(mutation: ModuleType) -> None:
    rows = mutation.tally(mutation.parse_results(RESULTS), ["worker.core.codec"])
    lines = mutation.format_table(rows).splitlines()

    assert lines[0].split("|")[1:-1] == [
        " module ",
        " mutants ",
        " killed ",
        " survived ",
        " no tests ",
        " timeout ",
        " other ",
        " kill rate ",
    ]
    assert lines[2] == "| worker.core.codec | 4 | 1 | 1 | 1 | 1 | 0 | 50.0 % |"
    assert lines[3].startswith("| total | 4 |")


def test_the_mutated_modules_are_the_seven_of_pyproject(mutation: ModuleType) -> None:
    modules = mutation.mutated_modules(ROOT / "pyproject.toml")

    assert modules == {
        "codec": "worker.core.codec",
        "scorer": "worker.core.scorer",
        "batcher": "worker.service.batcher",
        "rebalance": "worker.service.rebalance",
        "delivery": "worker.service.delivery",
        "loop": "worker.service.loop",
        "config": "worker.service.config",
    }
    for dotted in modules.values():
        assert (ROOT / (dotted.replace(".", "/") + ".py")).is_file()
