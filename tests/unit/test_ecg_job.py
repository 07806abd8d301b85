"""``ecg-train ecg`` options: profiles and their overrides, checked before any training."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from trainer.ecg.job import PROFILES, add_arguments, resolve_profile
from worker.core.errors import ConfigError


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_are_tuned_seed_0() -> None:
    args = _args()
    assert (args.profile, args.seed, args.out) == ("tuned", 0, "artifacts/ecg")
    profile, rule = resolve_profile(args)
    assert profile == PROFILES["tuned"]
    assert str(rule) == "max_f1"


def test_tutorial_profile_is_the_tutorial() -> None:
    profile, rule = resolve_profile(_args("--profile", "tutorial"))
    assert (profile.epochs, profile.batch_size, profile.learning_rate) == (20, 512, 1e-3)
    assert profile.patience is None and profile.restarts == 1
    assert not profile.carve_validation
    assert str(rule) == "mean_std"


def test_overrides() -> None:
    profile, rule = resolve_profile(_args("--epochs", "7", "--threshold", "percentile:95"))
    assert profile.epochs == 7
    assert profile.threshold_rule == "percentile:95"
    assert rule.percentile == 95


def test_max_f1_needs_a_validation_split() -> None:
    with pytest.raises(
        ConfigError, match="needs a validation split; the tutorial profile has none"
    ):
        resolve_profile(_args("--profile", "tutorial", "--threshold", "max_f1"))


def test_epochs_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="--epochs must be at least 1"):
        resolve_profile(_args("--epochs", "0"))


def test_bad_rule() -> None:
    with pytest.raises(ConfigError, match="unknown threshold rule 'best'"):
        resolve_profile(_args("--threshold", "best"))


def test_options_do_not_import_tensorflow() -> None:
    code = (
        "import sys, argparse, trainer.ecg.job as j; j.add_arguments(argparse.ArgumentParser());"
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_the_training_extra_ecg_train_says_what_to_install(tmp_path) -> None:
    # A worker-only install has no TensorFlow: one line naming the extra, exit 2.
    code = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['keras'] = None; sys.modules['tensorflow'] = None; "
            "from trainer.cli import main; "
            f"sys.exit(main(['ecg', '--profile', 'tutorial', '--out', {str(tmp_path)!r}]))",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert code.returncode == 2, code.stderr
    last = code.stderr.strip().splitlines()[-1]
    assert "is not installed; install the training extra: pip install" in last
    assert "Traceback" not in code.stderr
