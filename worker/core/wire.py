"""What every producer and consumer of the product's topics agrees on, defined once.

The default topic names (the worker's config, ``ecg-replay``, ``ecg-alerts`` and ``ecg-demo``
start from these) and the window length of the ECG5000 model. The dead-letter reason codes
live with the decoder that assigns them (``worker.core.codec.REASONS``).
"""

from __future__ import annotations

from types import MappingProxyType

# Samples per ECG5000 heartbeat: the model's input width and every CSV's column count.
WINDOW_LENGTH = 140

INPUT_TOPIC = "ecg.windows"
SCORES_TOPIC = "ecg.scores"
ANOMALIES_TOPIC = "ecg.anomalies"
DEAD_LETTER_TOPIC = "ecg.windows.dlq"
# Scores of the shadow (candidate) model: never the anomaly topic, so nobody acts on them.
SHADOW_SCORES_TOPIC = "ecg.scores.shadow"
# Topic role (the key under ``topics:`` in worker.yaml) -> default name.
DEFAULT_TOPICS = MappingProxyType(
    {
        "input": INPUT_TOPIC,
        "scores": SCORES_TOPIC,
        "anomalies": ANOMALIES_TOPIC,
        "dead_letter": DEAD_LETTER_TOPIC,
    }
)
