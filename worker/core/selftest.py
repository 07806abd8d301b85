"""The artifact's self-test: reference windows stored with the model and the errors the
writer measured on them.

``save_ecg_artifact`` stores a ``self_test`` section in ``artifact.json``:
``{"windows": [[...], ...], "errors": [...]}``. Before a worker serves a model (at start-up
and on every hot reload) it scores those windows and compares with the recorded errors, so
an artifact whose weights and metadata do not belong together (a half-copied directory, a
weights file from another run) is refused before it scores a single live record.

Artifacts written before the section existed load as before: ``check_self_test`` reports
that there was nothing to check (0 windows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from worker.core.agreement import score_tolerance
from worker.core.artifact import EcgArtifact, Normalisation
from worker.core.errors import ArtifactError
from worker.core.scorer import Scorer

SECTION = "self_test"
REFERENCE_COUNT = 8


def default_reference_windows(normalisation: Normalisation, length: int) -> np.ndarray:
    """Deterministic windows spanning the model's input range, for artifacts whose writer
    gave none: smooth beats at different phases plus a flat line at each end of the range."""
    lo, hi = normalisation.min, normalisation.max
    t = np.linspace(0.0, 1.0, length)
    rows = [np.full(length, lo), np.full(length, hi)]
    for phase in np.linspace(0.2, 0.8, REFERENCE_COUNT - 2):
        beat = np.exp(-(((t - phase) / 0.05) ** 2)) + 0.2 * np.sin(2 * np.pi * 2 * t)
        rows.append(lo + (hi - lo) * (beat - beat.min()) / (beat.max() - beat.min()))
    return np.round(np.asarray(rows, dtype=np.float64), 6)


def reference_section(artifact: EcgArtifact, windows: np.ndarray | None = None) -> dict[str, Any]:
    """The ``self_test`` section for ``artifact``: ``windows`` (default: the deterministic
    ones above, or those already in its metadata) and the errors this model gives them."""
    if windows is None:
        stored = artifact.metadata.get(SECTION)
        if isinstance(stored, Mapping) and stored.get("windows"):
            windows = np.asarray(stored["windows"], dtype=np.float64)
        else:
            windows = default_reference_windows(artifact.normalisation, artifact.window_length)
    rows = np.asarray(windows, dtype=np.float64)[:REFERENCE_COUNT]
    scores = Scorer(artifact).score(rows)
    if not scores.all_scored:
        raise ArtifactError("self-test reference windows must be finite in the model's range")
    return {"windows": rows.tolist(), "errors": [float(e) for e in scores.errors]}


def check_self_test(artifact: EcgArtifact) -> int:
    """Score the stored reference windows and compare with the recorded errors.

    Returns how many windows were checked (0 for an artifact without the section). Raises
    ``ArtifactError`` naming the artifact when the section is malformed or an error differs.
    """
    where = artifact.path / "artifact.json"
    section = artifact.metadata.get(SECTION)
    if section is None:
        return 0
    if not isinstance(section, Mapping):
        raise ArtifactError(f"{where}: field 'self_test' must be an object")
    try:
        windows = np.asarray(section["windows"], dtype=np.float64)
        recorded = np.asarray(section["errors"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{where}: self_test needs 'windows' and 'errors' ({exc})") from exc
    if windows.ndim != 2 or windows.shape[1] != artifact.window_length:
        raise ArtifactError(
            f"{where}: self_test.windows must be rows of {artifact.window_length} numbers"
        )
    if recorded.shape != (windows.shape[0],):
        raise ArtifactError(
            f"{where}: self_test has {windows.shape[0]} windows but {recorded.size} errors"
        )
    scores = Scorer(artifact).score(windows)
    if not scores.all_scored:
        raise ArtifactError(f"{where}: self_test windows are not scorable by this model")
    actual = scores.errors.astype(np.float64)
    # The same forward pass on the same batch, but maybe on another CPU (other BLAS kernels):
    # equal within the score-agreement tolerance (worker.core.agreement), never bit-exact.
    allowed = score_tolerance(artifact.window_length).bound(actual, recorded)
    bad = ~(np.abs(actual - recorded) <= allowed)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ArtifactError(
            f"{artifact.path}: self-test failed: reference window {i} scores {actual[i]:.6g}, "
            f"the artifact recorded {recorded[i]:.6g} ({int(bad.sum())} of {bad.size} differ); "
            "weights and metadata do not belong together"
        )
    return int(windows.shape[0])
