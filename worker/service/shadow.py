"""Shadow scoring: a candidate model scores the same batches as the primary.

Its scores go to their own topic (``topics.shadow_scores``), never to the anomaly topic, and
are published and committed with the primary's outputs of the same batch. Agreement is
counted per window: both flag it, only the primary, only the shadow, or neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from worker.core.codec import Window, encode_score, windows_array
from worker.core.scorer import Scorer
from worker.service.delivery import Outgoing


@dataclass(frozen=True)
class FlagAgreement:
    """Per-window agreement counts of one batch."""

    both: int
    only_primary: int
    only_shadow: int
    neither: int

    @classmethod
    def of(cls, primary: np.ndarray, shadow: np.ndarray) -> FlagAgreement:
        """Count from two aligned boolean arrays of anomaly flags."""
        p, s = np.asarray(primary, bool), np.asarray(shadow, bool)
        return cls(
            both=int(np.sum(p & s)),
            only_primary=int(np.sum(p & ~s)),
            only_shadow=int(np.sum(~p & s)),
            neither=int(np.sum(~p & ~s)),
        )

    def as_dict(self) -> dict[str, int]:
        """Outcome name -> count (the ``outcome`` label values)."""
        return {
            "both": self.both,
            "only_primary": self.only_primary,
            "only_shadow": self.only_shadow,
            "neither": self.neither,
        }


# ``Outgoing.origin`` of a shadow record: no input of its own, so a refusal is not rerouted.
SHADOW_ORIGIN = -1


@dataclass(frozen=True)
class ShadowBatch:
    """The shadow's results for one batch (one row per window it scored)."""

    messages: list[Outgoing]
    errors: np.ndarray
    flags: np.ndarray
    agreement: FlagAgreement


def score_shadow(
    shadow: Scorer,
    windows: Sequence[Window],
    primary_flags: np.ndarray,
    topic: str,
    now_ms: int,
) -> ShadowBatch:
    """Score ``windows`` (those the primary scored, aligned with ``primary_flags``) with
    the shadow and encode its score records for ``topic``. A window the shadow cannot score
    (non-finite in its normalisation or its error) gets no shadow record and no agreement
    count; the primary's outputs never depend on the shadow."""
    with np.errstate(over="ignore", invalid="ignore"):
        scores = shadow.score(windows_array(list(windows), shadow.window_length))
    rows = np.flatnonzero(scores.scorable)
    finite = np.isfinite(scores.errors)
    rows, errors, flags = rows[finite], scores.errors[finite], scores.anomalies[finite]
    threshold, version = shadow.threshold, shadow.model_version
    messages = []
    for r, error, flag in zip(rows.tolist(), errors.tolist(), flags.tolist(), strict=True):
        w = windows[r]
        try:
            value = encode_score(w, error, flag, threshold, version, now_ms)
        except (TypeError, ValueError):  # the primary's record of it went out; skip this one
            continue
        messages.append(Outgoing(topic, w.key, value, None, SHADOW_ORIGIN))
    agreement = FlagAgreement.of(np.asarray(primary_flags, bool)[rows], flags)
    return ShadowBatch(messages, errors, flags, agreement)
