"""Model architectures: the 2017 original, and a stronger one that still trains on 2 CPU cores.

Every architecture maps ``(batch, 48, 48, 1)`` floats in [0, 1] to seven **logits**. The
softmax lives in the exported graph, so temperature scaling and flip averaging can be folded in
at export without retraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
from keras import layers

N_CLASSES = 7


@dataclass(frozen=True)
class Recipe:
    """How an architecture is trained: the defaults `python -m train fit` uses."""

    epochs: int
    batch_size: int
    learning_rate: float
    label_smoothing: float
    augment: bool
    schedule: str  # "constant" or "cosine"
    weight_decay: float
    arch_kwargs: dict = field(default_factory=dict)


def fvc2017() -> keras.Model:
    """The FVCConvNet of 2017, layer for layer (its softmax moved to export)."""
    inputs = keras.Input((48, 48, 1), name="image")
    x = layers.MaxPooling2D(2)(inputs)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(128, 3, activation="relu")(x)
    x = layers.Conv2D(128, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(1024, activation="relu")(x)
    x = layers.Dense(1024, activation="relu")(x)
    outputs = layers.Dense(N_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="fvc2017")


def _block(x, filters: int, dropout: float):
    for _ in range(2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    x = layers.MaxPooling2D(2)(x)
    return layers.Dropout(dropout)(x)


def fvnet(width: int = 32, dropout_scale: float = 1.0) -> keras.Model:
    """A VGG-style network with batch norm and dropout, sized for a 2-core CPU budget.

    Four double-conv stages (width, 2w, 4w, 8w filters) on 48 -> 24 -> 12 -> 6 -> 3, then
    global average pooling: the shape of the best single FER2013 networks, narrowed so an
    epoch of 28k faces takes minutes, not hours, without a GPU. ``dropout_scale`` multiplies
    every dropout rate; the fine-tuning recipe halves them (the network underfits at 1.0).
    """
    inputs = keras.Input((48, 48, 1), name="image")
    x = inputs
    for i, drop in enumerate((0.1, 0.2, 0.3, 0.4)):
        x = _block(x, width * 2**i, drop * dropout_scale)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(256, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Dropout(0.5 * dropout_scale)(x)
    outputs = layers.Dense(N_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="fvnet")


ARCHS = {"fvc2017": fvc2017, "fvnet": fvnet}

RECIPES = {
    # The 2017 code: adam at Keras's default rate, batch 125, 10 epochs, no augmentation.
    "fvc2017": Recipe(epochs=10, batch_size=125, learning_rate=1e-3, label_smoothing=0.0,
                      augment=False, schedule="constant", weight_decay=0.0),
    "fvnet": Recipe(epochs=45, batch_size=64, learning_rate=2e-3, label_smoothing=0.1,
                    augment=True, schedule="cosine", weight_decay=1e-4),
}

FINETUNE_RECIPES = {
    # A second, shorter cosine cycle from a finished run's best weights with half the
    # dropout: the first cycle ends underfitted (training accuracy ~ PublicTest accuracy).
    "fvnet": Recipe(epochs=24, batch_size=64, learning_rate=5e-4, label_smoothing=0.1,
                    augment=True, schedule="cosine", weight_decay=1e-4,
                    arch_kwargs={"dropout_scale": 0.5}),
}
