"""The one scoring code path, shared by the streaming worker and the offline ``ecg-score``.

normalise (artifact's min/max) -> reconstruct (numpy forward pass of the dense stack)
-> per-window mean absolute error -> anomaly when error >= threshold (the tutorial's
rule: a window is normal only when its loss is *less than* the threshold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.core.artifact import EcgArtifact
from worker.core.errors import DataError


@dataclass(frozen=True)
class Scores:
    """Scores of a batch of windows.

    ``scorable`` says which input rows were scored; the other arrays hold one row per
    *scored* window, in input order (``windows[scorable]``). A row is unscorable when its
    values are not finite once normalised to float32 (NaN, infinity, or beyond float32
    range such as 1e300). When every row is scorable the arrays align with the input.
    """

    errors: np.ndarray  # (m,) float32 reconstruction MAE per scored window
    anomalies: np.ndarray  # (m,) bool
    sample_errors: np.ndarray  # (m, window_length) float32 |reconstruction - input|
    scorable: np.ndarray  # (n,) bool, m of them True

    @property
    def all_scored(self) -> bool:
        """True when no row of the input was left out."""
        return bool(self.scorable.all())


@dataclass(frozen=True)
class Segment:
    """A contiguous run of samples ``[start, end)`` and its mean reconstruction error."""

    start: int
    end: int
    mean_error: float


_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, np.float32(0.0), out=x),
    "sigmoid": lambda x: np.reciprocal(np.float32(1.0) + np.exp(-x, out=x), out=x),
    "linear": lambda x: x,
}


class Scorer:
    """Scores raw (un-normalised) ECG windows with an artifact's model and threshold."""

    def __init__(self, artifact: EcgArtifact) -> None:
        self.artifact = artifact
        self.window_length = artifact.window_length
        self.threshold = float(artifact.threshold)
        self.model_version = artifact.model_version
        self._layers = [
            (lay.kernel, lay.bias, _ACTIVATIONS[lay.activation]) for lay in artifact.layers
        ]

    def reconstruct(self, normalised: np.ndarray) -> np.ndarray:
        """Forward pass of the autoencoder on already-normalised float32 windows."""
        x = normalised
        for kernel, bias, activation in self._layers:
            x = activation(x @ kernel + bias)
        return x

    def score(self, windows: np.ndarray) -> Scores:
        """Score a ``(n, window_length)`` array of raw windows in one forward pass.

        Rows that cannot be scored (non-finite after normalisation) are left out and marked
        in ``Scores.scorable``, so one bad row never fails a batch; the caller reports them
        (the worker as ``non_finite`` dead letters, ``ecg-score`` as rejected rows).
        Raises ``DataError`` for a wrong shape.
        """
        if windows.ndim != 2 or windows.shape[1] != self.window_length:
            raise DataError(
                f"expected windows of shape (n, {self.window_length}), got {windows.shape}"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            x = self.artifact.normalisation.apply(windows)
        scorable = np.isfinite(x).all(axis=1)
        if not scorable.all():
            x = x[scorable]
        sample_errors = np.abs(self.reconstruct(x) - x)
        errors = sample_errors.mean(axis=1, dtype=np.float32)
        return Scores(
            errors=errors,
            anomalies=errors >= self.threshold,
            sample_errors=sample_errors,
            scorable=scorable,
        )
