"""Model architectures: the 2017 original, and a stronger one that still trains on 2 CPU cores.

Every architecture maps ``(batch, 48, 48, 1)`` floats in [0, 1] to seven **logits**. The
softmax lives in the exported graph, so temperature scaling and flip averaging can be folded in
at export without retraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import keras
import tensorflow as tf
from keras import layers

from train.data import SOFTEN

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
    # Photo augmentation on top (train.data.photo_augment): the blur, lighting, JPEG and pose
    # of faces cut from real photos, which FER2013's own crops rarely show.
    photo_augment: bool = False
    # > 0: mixup/cutmix with lam ~ Beta(mix_alpha, mix_alpha) per face (train.data.mix)
    mix_alpha: float = 0.0
    val_fraction: float = 0.1  # the Training slice epochs and temperature are selected on
    # With a teacher (fit --teacher): the training targets are this share of the teacher's
    # probabilities plus the rest of the one-hot label (distillation with fixed soft targets).
    distill_weight: float = 0.7
    # > 0: keep an exponential moving average of the weights with this momentum per step and
    # evaluate, select and save it (keras use_ema + SwapEMAWeights): the epoch-to-epoch swings
    # of faces-dev accuracy (up to 4 points for fvlite-s1) stop deciding which epoch ships.
    ema: float = 0.0
    # A labelled photo's (fit --photos) weight in the loss against a FER2013 face's. The
    # photos are all neutral or happy, so at full weight a network learns "a real photo is
    # neutral or happy" (fvlite-s1 read 62 of faces-dev's 151 surprised photos as neutral).
    photo_weight: float = 1.0
    # The share of faces ``photo_augment`` softens (``train.data.blur``). Faces cut from real
    # photos are much softer than FER2013's (median Laplacian variance about 800 against 2,100
    # for the 48 px faces), so when most FER2013 faces stay sharp, "soft" tells a network
    # "real photo" (and, with faces-train, "neutral or happy"); a higher share removes the cue.
    blur: float = SOFTEN
    # The share of a --photos face's loss that asks only which of its set's classes it shows
    # (``train.losses``): faces-train was chosen to hold neutral and happy faces only, so it
    # says nothing about how often real photos show the other emotions.
    photo_partial: float = 0.0
    # > 0 (with a teacher): the teacher scores this many augmented views of each face once,
    # and the student learns each view's own targets (``train.views``: consistent teaching).
    teacher_views: int = 0


# Recipe settings that ``train fit`` options override: part of a run's identity (a resume
# with other values is refused) and of its card's rebuild command.
OVERRIDES = {"mix_alpha": "--mix", "ema": "--ema", "photo_weight": "--photo-weight",
             "blur": "--blur", "photo_partial": "--photo-partial",
             "teacher_views": "--teacher-views"}


def recorded(config: dict, key: str) -> float:
    """A run's ``OVERRIDES`` setting from its config.json; a run recorded before the key
    existed had the field's default."""
    default = next(f.default for f in fields(Recipe) if f.name == key)
    return config.get("recipe", {}).get(key, default)


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


@keras.saving.register_keras_serializable(package="facevalue")
class FusedBatchNorm(layers.Layer):
    """Batch normalisation on TensorFlow's fused kernel: Keras's layer, 3x faster in bf16.

    Keras 3's ``BatchNormalization`` casts bf16 activations to float32 and normalises with a
    dozen separate element-wise ops (moments, then scale and shift), each a pass over the
    activations and another in the gradient; on a CPU those passes cost more than the
    convolutions (``bench/train_speed.py``). ``FusedBatchNormV3`` reads bf16 activations,
    keeps its statistics in float32 and does the whole step, and its gradient, in one kernel
    each. Same weights in the same order (gamma, beta, moving mean, moving variance), same
    momentum and epsilon as Keras's layer, and tf2onnx converts it to ONNX BatchNormalization.
    """

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]

        def weight(name: str, init: str, trainable: bool = True):
            # autocast=False: the kernel takes float32 scale and statistics with bf16 inputs
            return self.add_weight(shape=(channels,), initializer=init, name=name,
                                   trainable=trainable, dtype="float32", autocast=False)

        self.gamma = weight("gamma", "ones")
        self.beta = weight("beta", "zeros")
        self.moving_mean = weight("moving_mean", "zeros", trainable=False)
        self.moving_variance = weight("moving_variance", "ones", trainable=False)

    def call(self, x, training=False):
        flat = len(x.shape) == 2  # after a Dense layer: the kernel wants NHWC
        if flat:
            x = x[:, None, None, :]
        if training:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)[:3]
            # Keras's moving-average update; the kernel's batch variance is Bessel-corrected
            # (n / (n - 1), n >= 64 values per channel here: a difference of under 2%)
            for stat, value in ((self.moving_mean, mean), (self.moving_variance, variance)):
                stat.assign(stat * self.momentum + value * (1 - self.momentum))
        else:
            y = tf.compat.v1.nn.fused_batch_norm(
                x, self.gamma, self.beta, self.moving_mean, self.moving_variance,
                epsilon=self.epsilon, is_training=False)[0]
        return y[:, 0, 0, :] if flat else y

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


NORMS = ("fused", "keras", "none")


def _norm(norm: str):
    """The normalisation layer: fused (the default), Keras's own, or none (bench only)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
    return {"fused": FusedBatchNorm, "keras": layers.BatchNormalization,
            "none": layers.Identity}[norm]()


def _block(x, filters: int, dropout: float, norm: str):
    for _ in range(2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=norm == "none")(x)
        x = _norm(norm)(x)
        x = layers.Activation("relu")(x)
    x = layers.MaxPooling2D(2)(x)
    return layers.Dropout(dropout)(x)


def fvnet(width: int = 32, dropout_scale: float = 1.0, norm: str = "fused",
          widths: tuple[int, ...] | list[int] | None = None) -> keras.Model:
    """A VGG-style network with batch norm and dropout, sized for a 2-core CPU budget.

    Four double-conv stages (width, 2w, 4w, 8w filters) on 48 -> 24 -> 12 -> 6 -> 3, then
    global average pooling: the shape of the best single FER2013 networks, narrowed so an
    epoch of 28k faces takes minutes, not hours, without a GPU. ``widths`` sets the four
    stages' filters one by one instead (fvlite: narrow where the maps are large).
    ``dropout_scale`` multiplies every dropout rate; the fine-tuning recipe halves them (the
    network underfits at 1.0). ``norm`` exists for ``bench/train_speed.py``, which times the
    layer choices.
    """
    stages = tuple(widths) if widths else tuple(width * 2**i for i in range(4))
    if len(stages) != 4:
        raise ValueError(f"widths needs four stages, not {len(stages)}")
    inputs = keras.Input((48, 48, 1), name="image")
    x = inputs
    for filters, drop in zip(stages, (0.1, 0.2, 0.3, 0.4), strict=True):
        x = _block(x, filters, drop * dropout_scale, norm)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(256, use_bias=norm == "none")(x)
    x = _norm(norm)(x)
    x = layers.Activation("relu")(x)
    x = layers.Dropout(0.5 * dropout_scale)(x)
    outputs = layers.Dense(N_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="fvnet")


# fvnet64: fvnet at twice the width (4.8M parameters, the size of the VGG-style networks
# that reach 72-73% on FER2013), affordable on a CPU once batch norm is fused.
# fvlite: the stages' filters 16-40-96-224 instead of 32-64-128-256. A 3x3 convolution's cost
# is (map area) x (filters in) x (filters out), so the two full-resolution stages, where
# fvnet spends half its multiply-adds, shrink most: 0.49x fvnet's multiply-adds per pass,
# and with no flip averaging a quarter of fvnet's per face, for most of its depth and
# width where the maps are small. It is the fast float default's architecture (issue 19).
ARCHS = {"fvc2017": fvc2017, "fvnet": fvnet, "fvnet64": fvnet, "fvlite": fvnet}
FVLITE_WIDTHS = [16, 40, 96, 224]

RECIPES = {
    # The 2017 code: adam at Keras's default rate, batch 125, 10 epochs, no augmentation.
    "fvc2017": Recipe(epochs=10, batch_size=125, learning_rate=1e-3, label_smoothing=0.0,
                      augment=False, schedule="constant", weight_decay=0.0),
    "fvnet": Recipe(epochs=45, batch_size=64, learning_rate=2e-3, label_smoothing=0.1,
                    augment=True, schedule="cosine", weight_decay=1e-4),
    # One cosine cycle per developer session (~2 h on 2 cores); the next starts from this
    # one's best weights (--init), so each cycle's end is also a snapshot for an ensemble.
    "fvnet64": Recipe(epochs=30, batch_size=64, learning_rate=2e-3, label_smoothing=0.1,
                      augment=True, schedule="cosine", weight_decay=1e-4,
                      arch_kwargs={"width": 64, "dropout_scale": 0.5}, photo_augment=True),
    # fvlite learns from FER2013 and real photos together (fit --photos): photo augmentation
    # makes FER2013's crops look more like faces cut from photos.
    "fvlite": Recipe(epochs=40, batch_size=64, learning_rate=2e-3, label_smoothing=0.1,
                     augment=True, schedule="cosine", weight_decay=1e-4,
                     arch_kwargs={"widths": FVLITE_WIDTHS, "dropout_scale": 0.5},
                     photo_augment=True),
}

FINETUNE_RECIPES = {
    # A second, shorter cosine cycle from a finished run's best weights with half the
    # dropout: the first cycle ends underfitted (training accuracy ~ PublicTest accuracy).
    "fvnet": Recipe(epochs=24, batch_size=64, learning_rate=5e-4, label_smoothing=0.1,
                    augment=True, schedule="cosine", weight_decay=1e-4,
                    arch_kwargs={"dropout_scale": 0.5}),
    "fvnet64": Recipe(epochs=30, batch_size=64, learning_rate=1e-3, label_smoothing=0.1,
                      augment=True, schedule="cosine", weight_decay=1e-4,
                      arch_kwargs={"width": 64, "dropout_scale": 0.5}, photo_augment=True),
    # A second cycle for fvlite (with --teacher: a distilled one, no label smoothing), weights
    # averaged over about two epochs (478 steps each).
    "fvlite": Recipe(epochs=16, batch_size=64, learning_rate=1e-3, label_smoothing=0.1,
                     augment=True, schedule="cosine", weight_decay=1e-4,
                     arch_kwargs={"widths": FVLITE_WIDTHS, "dropout_scale": 0.5},
                     photo_augment=True, ema=0.999, photo_weight=0.5),
}

DISTILL_RECIPES = {
    # A student learning a teacher's soft targets from scratch: the dropout the fine-tuning
    # cycle found (the targets regularise too), one 40-epoch cosine cycle (~35 min on 2 cores).
    "fvnet": Recipe(epochs=40, batch_size=64, learning_rate=2e-3, label_smoothing=0.0,
                    augment=True, schedule="cosine", weight_decay=1e-4,
                    arch_kwargs={"dropout_scale": 0.5}),
    "fvlite": Recipe(epochs=40, batch_size=64, learning_rate=2e-3, label_smoothing=0.0,
                     augment=True, schedule="cosine", weight_decay=1e-4,
                     arch_kwargs={"widths": FVLITE_WIDTHS, "dropout_scale": 0.5},
                     photo_augment=True),
}
