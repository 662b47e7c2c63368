"""The training loss when some faces come from a set that was labelled with a few classes only.

faces-train's photos are all neutral or happy because the set was *chosen* that way, not
because real photos are. Full softmax cross-entropy on them says "this face is not angry,
sad or surprised" as loudly as "it is neutral rather than happy", and a network hears "a real
photo is never angry, sad or surprised" (issue 19: fvlite-s1 read 62 of faces-dev's 151
surprised photos as neutral). What such a set really tells is the label *given* that the face
is one of the set's classes: the cross-entropy of a softmax over those classes only. A share
``partial`` of a photo's loss asks only that; the rest stays the full cross-entropy, which is
still what teaches that a neutral photo is not angry (the FER2013-only networks' error).

Targets carry their set's classes: ``(n, 2 * N_CLASSES)``, the soft targets then a 0/1 mask
of the classes that face's set labels (all ones for a FER2013 face, whose loss is then the
full cross-entropy). Plain ``(n, N_CLASSES)`` targets (the validation slice) get the full
cross-entropy.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from train.archs import N_CLASSES


def with_classes(targets: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``targets`` (n, 7) with each face's labelled classes (n, 7; 0/1) appended."""
    return np.concatenate([targets, classes.astype(targets.dtype)], axis=1)


@keras.saving.register_keras_serializable(package="facevalue")
class PartialCrossentropy(keras.losses.Loss):
    """Cross-entropy on logits where a face's set labelled only some classes (module doc)."""

    def __init__(self, partial: float = 0.0, label_smoothing: float = 0.0,
                 name: str = "partial_crossentropy", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.partial, self.label_smoothing = partial, label_smoothing

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        if y_true.shape[-1] == N_CLASSES:
            return self._crossentropy(ops.cast(y_true, "float32"), logits,
                                      ops.ones_like(logits))
        y_true = ops.cast(y_true, "float32")
        targets, classes = y_true[:, :N_CLASSES], y_true[:, N_CLASSES:]
        full = self._crossentropy(targets, logits, ops.ones_like(logits))
        # the softmax over the face's set's classes; a FER2013 face's set has all of them
        kept = ops.where(classes > 0, logits, ops.full_like(logits, -1e9))
        within = ops.sum(targets * classes, axis=-1, keepdims=True)
        restricted = self._crossentropy(targets * classes / ops.maximum(within, 1e-9), kept,
                                        classes)
        return (1.0 - self.partial) * full + self.partial * restricted

    def _crossentropy(self, targets, logits, classes):
        if self.label_smoothing:  # spread over the classes the face could have
            targets = (targets * (1.0 - self.label_smoothing) + self.label_smoothing * classes
                       / ops.sum(classes, axis=-1, keepdims=True))
        return -ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "partial": self.partial,
                "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="facevalue")
def label_accuracy(y_true, y_pred):
    """Top-1 accuracy against the targets' first N_CLASSES columns (the mask is not a label)."""
    return ops.cast(ops.equal(ops.argmax(y_true[:, :N_CLASSES], axis=-1),
                              ops.argmax(y_pred, axis=-1)), "float32")
