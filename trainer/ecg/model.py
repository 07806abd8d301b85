"""The tutorial's ECG autoencoder, as a plain ``Sequential`` of two named ``Sequential``s.

Not a subclassed ``Model``: this way ``model.save("model.keras")`` round-trips and
``worker.core.artifact.dense_stack`` can read the Dense layers for the numpy scorer.
Importing this module imports TensorFlow; only training jobs do (inside ``run()``).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from worker.core.wire import WINDOW_LENGTH

ENCODER_UNITS = (32, 16, 8)
DECODER_UNITS = (16, 32)


def seed_everything(seed: int) -> None:
    """Make a CPU run repeatable: Python, numpy and TF seeds plus deterministic TF ops."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_autoencoder(
    window_length: int = WINDOW_LENGTH, learning_rate: float = 1e-3
) -> keras.Model:
    """Dense 32-16-8 (relu) encoder, Dense 16-32 (relu) + ``window_length`` (sigmoid)
    decoder; Adam, mean absolute error loss (the tutorial's ``AnomalyDetector``)."""
    encoder = keras.Sequential(
        [keras.Input((window_length,))]
        + [keras.layers.Dense(units, activation="relu") for units in ENCODER_UNITS],
        name="encoder",
    )
    decoder = keras.Sequential(
        [keras.Input((ENCODER_UNITS[-1],))]
        + [keras.layers.Dense(units, activation="relu") for units in DECODER_UNITS]
        + [keras.layers.Dense(window_length, activation="sigmoid")],
        name="decoder",
    )
    model = keras.Sequential([keras.Input((window_length,)), encoder, decoder], name="autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mae")
    return model


class ValidationAuc(keras.callbacks.Callback):
    """Adds ``val_auc`` to each epoch's logs: the ROC AUC of the per-window reconstruction
    error on labelled validation windows (carved from training, never the test split).

    This is what the detector is for, so the tuned profile stops early and picks restarts
    on it rather than on the reconstruction loss of normal windows alone.
    """

    def __init__(self, windows: np.ndarray, is_anomaly: np.ndarray) -> None:
        super().__init__()
        self.windows = windows
        self.is_anomaly = np.asarray(is_anomaly, dtype=bool)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from sklearn.metrics import roc_auc_score

        reconstruction = np.asarray(self.model(self.windows, training=False))
        errors = np.mean(np.abs(reconstruction - self.windows), axis=1)
        if logs is not None:
            logs["val_auc"] = float(roc_auc_score(self.is_anomaly, errors))
