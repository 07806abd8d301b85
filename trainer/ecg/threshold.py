"""Threshold rules: how the anomaly threshold is chosen from reconstruction errors.

A window is anomalous iff ``error >= threshold`` (the tutorial's rule). Rules:

``mean_std``      mean + 1 std of the errors of the normal training windows (the tutorial's)
``percentile:P``  the P-th percentile (0 < P < 100) of those same errors
``max_f1``        the threshold with the best anomaly F1 on a labelled validation split

Every threshold is returned as a float32-representable value, because the scorer compares
float32 errors with it: the stored number is then exactly the one that decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.core.errors import ConfigError, DataError

RULES = ("mean_std", "percentile:P", "max_f1")


@dataclass(frozen=True)
class ThresholdRule:
    """A parsed rule: ``name`` is ``mean_std``, ``percentile`` or ``max_f1``."""

    name: str
    percentile: float | None = None

    def __str__(self) -> str:
        if self.name == "percentile":
            return f"percentile:{self.percentile:g}"
        return self.name

    @property
    def needs_validation(self) -> bool:
        """True when the rule needs labelled validation errors."""
        return self.name == "max_f1"


def parse_rule(text: str) -> ThresholdRule:
    """Parse ``mean_std``, ``percentile:P`` or ``max_f1``; ``ConfigError`` otherwise."""
    value = text.strip()
    if value in ("mean_std", "max_f1"):
        return ThresholdRule(value)
    if value.startswith("percentile:"):
        raw = value.split(":", 1)[1]
        try:
            p = float(raw)
        except ValueError:
            raise ConfigError(
                f"threshold rule {text!r}: percentile {raw!r} is not a number"
            ) from None
        if not 0.0 < p < 100.0:
            raise ConfigError(f"threshold rule {text!r}: percentile must be in (0, 100)")
        return ThresholdRule("percentile", p)
    raise ConfigError(f"unknown threshold rule {text!r} (expected one of {', '.join(RULES)})")


def mean_std(normal_errors: np.ndarray) -> float:
    """The tutorial's threshold: mean + 1 std of the normal training windows' errors."""
    errors = _errors(normal_errors, "normal training errors")
    return _as_float32(float(np.mean(errors, dtype=np.float64) + np.std(errors, dtype=np.float64)))


def percentile(normal_errors: np.ndarray, p: float) -> float:
    """The ``p``-th percentile of the normal training windows' errors."""
    errors = _errors(normal_errors, "normal training errors")
    return _as_float32(float(np.percentile(errors.astype(np.float64), p)))


def max_f1(errors: np.ndarray, labels: np.ndarray) -> float:
    """The threshold maximising anomaly F1 (positive = anomaly = label 0) on ``errors``.

    Candidates are the observed errors; the chosen one is moved halfway down to the next
    lower observed error, which leaves the validation F1 unchanged but keeps a margin to the
    nearest window that is treated as normal. Among equal F1s the lowest threshold wins.
    """
    errors = _errors(errors, "validation errors").astype(np.float64)
    labels = np.asarray(labels)
    if labels.shape != errors.shape:
        raise DataError(f"validation labels {labels.shape} do not match errors {errors.shape}")
    anomalous = labels == 0
    if not anomalous.any() or anomalous.all():
        raise DataError("max_f1 needs both normal and anomalous validation windows")
    from sklearn.metrics import precision_recall_curve

    precision, recall, candidates = precision_recall_curve(anomalous, errors)
    precision, recall = precision[:-1], recall[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    best = float(candidates[int(np.argmax(f1))])
    below = errors[errors < best]
    if below.size == 0:
        return _as_float32(best)
    chosen = np.float32((best + float(below.max())) / 2.0)
    # Rounding to float32 must not pass the lower error (that would flip its window).
    if float(chosen) <= float(below.max()):
        chosen = np.float32(best)
    return float(chosen)


def choose(
    rule: ThresholdRule,
    normal_train_errors: np.ndarray,
    validation_errors: np.ndarray | None = None,
    validation_labels: np.ndarray | None = None,
) -> float:
    """Apply ``rule``: training errors for mean_std/percentile, validation for max_f1."""
    if rule.name == "mean_std":
        return mean_std(normal_train_errors)
    if rule.name == "percentile":
        assert rule.percentile is not None
        return percentile(normal_train_errors, rule.percentile)
    if validation_errors is None or validation_labels is None:
        raise ConfigError(f"threshold rule {rule} needs a validation split")
    return max_f1(validation_errors, validation_labels)


def _errors(values: np.ndarray, what: str) -> np.ndarray:
    errors = np.asarray(values).reshape(-1)
    if errors.size == 0:
        raise DataError(f"no {what} to choose a threshold from")
    if not np.isfinite(errors).all():
        raise DataError(f"{what} contain non-finite values")
    return errors


def _as_float32(value: float) -> float:
    return float(np.float32(value))
