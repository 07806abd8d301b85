"""The tutorial's two Fashion-MNIST models, as Sequential models so ``.keras`` saving works.

The tutorial subclasses ``Model``; the layers, activations and shapes here are the same,
only wrapped as nested ``Sequential`` encoder/decoder so the saved file reloads without
custom classes. Callers import TensorFlow (this module imports Keras on first use).
"""

from __future__ import annotations

from typing import Any

from trainer.images.fashion_data import IMAGE_SIDE

LEARNING_SETTINGS = {"optimizer": "adam", "loss": "mse"}


def build_dense_autoencoder(latent_dim: int = 64) -> Any:
    """Flatten -> Dense(latent, relu) -> Dense(784, sigmoid) -> Reshape(28, 28), compiled."""
    import keras

    encoder = keras.Sequential(
        [
            keras.Input((IMAGE_SIDE, IMAGE_SIDE)),
            keras.layers.Flatten(),
            keras.layers.Dense(latent_dim, activation="relu"),
        ],
        name="encoder",
    )
    decoder = keras.Sequential(
        [
            keras.Input((latent_dim,)),
            keras.layers.Dense(IMAGE_SIDE * IMAGE_SIDE, activation="sigmoid"),
            keras.layers.Reshape((IMAGE_SIDE, IMAGE_SIDE)),
        ],
        name="decoder",
    )
    model = keras.Sequential(
        [keras.Input((IMAGE_SIDE, IMAGE_SIDE)), encoder, decoder], name="fashion_dense_ae"
    )
    model.compile(**LEARNING_SETTINGS)
    return model


def build_denoiser() -> Any:
    """The tutorial's convolutional denoiser on (28, 28, 1) images, compiled."""
    import keras

    layers = keras.layers
    encoder = keras.Sequential(
        [
            keras.Input((IMAGE_SIDE, IMAGE_SIDE, 1)),
            layers.Conv2D(16, (3, 3), activation="relu", padding="same", strides=2),
            layers.Conv2D(8, (3, 3), activation="relu", padding="same", strides=2),
        ],
        name="encoder",
    )
    decoder = keras.Sequential(
        [
            keras.Input((IMAGE_SIDE // 4, IMAGE_SIDE // 4, 8)),
            layers.Conv2DTranspose(8, kernel_size=3, strides=2, activation="relu", padding="same"),
            layers.Conv2DTranspose(16, kernel_size=3, strides=2, activation="relu", padding="same"),
            layers.Conv2D(1, kernel_size=(3, 3), activation="sigmoid", padding="same"),
        ],
        name="decoder",
    )
    model = keras.Sequential(
        [keras.Input((IMAGE_SIDE, IMAGE_SIDE, 1)), encoder, decoder], name="fashion_denoiser"
    )
    model.compile(**LEARNING_SETTINGS)
    return model


def layer_summary(model: Any) -> list[str]:
    """One line per leaf layer, e.g. ``Conv2D(16, 3x3, strides 2, relu, same)``."""
    lines: list[str] = []

    def walk(layer: Any) -> None:
        inner = getattr(layer, "layers", None)
        if inner is not None:
            for sub in inner:
                walk(sub)
            return
        cfg = layer.get_config()
        kind = type(layer).__name__
        parts = []
        if "units" in cfg:
            parts.append(str(cfg["units"]))
        if "filters" in cfg:
            parts.append(str(cfg["filters"]))
            parts.append("x".join(str(k) for k in cfg["kernel_size"]))
            parts.append("strides " + "x".join(str(s) for s in cfg["strides"]))
        if "target_shape" in cfg:
            parts.append(str(tuple(cfg["target_shape"])))
        if "activation" in cfg:
            parts.append(cfg["activation"])
        if "padding" in cfg:
            parts.append(cfg["padding"])
        lines.append(f"{kind}({', '.join(parts)})")

    walk(model)
    return lines
