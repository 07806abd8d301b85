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
from worker.core.scorer import Scorer, Scores
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


@dataclass(frozen=True)
class ShadowBatch:
    """The shadow's results for one batch."""

    messages: list[Outgoing]
    scores: Scores
    agreement: FlagAgreement


def score_shadow(
    shadow: Scorer,
    windows: Sequence[Window],
    primary: Scores,
    topic: str,
    now_ms: int,
) -> ShadowBatch:
    """Score ``windows`` (those the primary scored, aligned with ``primary``) with the
    shadow and encode its score records for ``topic``. A window the shadow cannot score
    (non-finite in its normalisation) gets no shadow record and no agreement count."""
    scores = shadow.score(windows_array(list(windows), shadow.window_length))
    ok = scores.scorable.tolist()
    kept = [w for w, good in zip(windows, ok, strict=True) if good]
    errors, flags = scores.errors.tolist(), scores.anomalies.tolist()
    messages = [
        Outgoing(
            topic,
            w.key,
            encode_score(w, errors[i], flags[i], shadow.threshold, shadow.model_version, now_ms),
        )
        for i, w in enumerate(kept)
    ]
    agreement = FlagAgreement.of(primary.anomalies[scores.scorable], scores.anomalies)
    return ShadowBatch(messages, scores, agreement)
