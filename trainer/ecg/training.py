"""Training the ECG autoencoder: the profiles (recipes), the fit with early stopping and
restarts, and scoring every split with the worker's ``Scorer``.

Errors, the threshold and the metrics all come from ``worker.core.scorer.Scorer`` over the exact
float32 weights that get saved. The test split never influences a choice: epochs, early
stopping, restarts and ``max_f1`` use a validation split carved from training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.ecg import threshold as thresholds
from trainer.ecg.data import EcgData, tutorial_split
from worker.core.artifact import DenseLayer, EcgArtifact, Normalisation
from worker.core.errors import DataError
from worker.core.evaluation import detection_metrics
from worker.core.scorer import Scorer, Scores
from worker.core.wire import WINDOW_LENGTH

log = logging.getLogger(__name__)

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
    # Epochs before early stopping watches the monitor: an untrained network briefly scores
    # a high validation AUC (epoch ~5) that must not be mistaken for the best model.
    warmup_epochs: int
    # Early stopping and restart selection: "val_auc" (validation ROC AUC, higher is better)
    # or "val_loss" (reconstruction loss of normal validation windows).
    monitor: str
    # Models trained from different initialisations; the best on the monitor is kept.
    restarts: int
    # True: carve a stratified validation split from training (tuned). False: the tutorial,
    # which passes the test split as Keras validation data, used only for the loss curve.
    carve_validation: bool


PROFILES = {
    "tutorial": Profile("tutorial", 20, 512, 1e-3, "mean_std", None, 0, "val_loss", 1, False),
    "tuned": Profile("tuned", 500, 512, 1e-3, "max_f1", 50, 50, "val_auc", 3, True),
}


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
        from trainer.ecg.report import ReportInputs

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
    if val_windows is not None and val_labels is not None:
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

    from trainer.ecg.model import ValidationAuc, build_autoencoder, seed_everything

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
                        start_from_epoch=profile.warmup_epochs,
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
        watched = curve[profile.warmup_epochs :]
        if profile.patience is None or watched.size == 0:
            best_index = len(curve) - 1  # nothing restored: the last epoch's weights are kept
        else:
            best_index = profile.warmup_epochs + int(
                np.argmax(watched) if higher_is_better else np.argmin(watched)
            )
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
    from worker.core.artifact import dense_stack

    return EcgArtifact.unsaved(
        [DenseLayer(k, b, a) for k, b, a in dense_stack(model)], norm, threshold
    )
