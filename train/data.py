"""tf.data pipelines over FER2013 arrays, with the augmentation the stronger recipe uses."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import layers

from facevalue.fer2013 import FaceSet

N_CLASSES = 7


def to_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 (n, 48, 48) -> float32 (n, 48, 48, 1) in [0, 1]: the contract's pixels / 255."""
    return (images.astype(np.float32) / 255.0)[..., None]


def random_erasing(batch: tf.Tensor, seed: int, p: float = 0.5) -> tf.Tensor:
    """Blank one random rectangle (2-20% of the face, any aspect 0.3-3.3) in half the images.

    Vectorised over the batch with masks, so it costs a few element-wise ops per step.
    Op-level seeds plus the global seed make the sequence reproducible.
    """
    def uniform(shape, low=0.0, high=1.0, k=0):
        return tf.random.uniform(shape, low, high, dtype=batch.dtype, seed=seed + k)

    n = tf.shape(batch)[0]
    h, w = batch.shape[1], batch.shape[2]
    area = uniform([n], 0.02, 0.2, 1) * h * w
    aspect = tf.exp(uniform([n], np.log(0.3), np.log(3.3), 2))
    eh = tf.clip_by_value(tf.sqrt(area * aspect), 1.0, h - 1.0)
    ew = tf.clip_by_value(tf.sqrt(area / aspect), 1.0, w - 1.0)
    y0 = uniform([n], k=3) * (h - eh)
    x0 = uniform([n], k=4) * (w - ew)
    rows = tf.range(h, dtype=tf.float32)[None, :, None]
    cols = tf.range(w, dtype=tf.float32)[None, None, :]
    inside = ((rows >= y0[:, None, None]) & (rows < (y0 + eh)[:, None, None])
              & (cols >= x0[:, None, None]) & (cols < (x0 + ew)[:, None, None]))
    apply = (uniform([n], k=5) < p)[:, None, None]
    mask = tf.cast(inside & apply, batch.dtype)[..., None]
    noise = uniform(tf.shape(batch), k=6)
    return batch * (1 - mask) + noise * mask


def training_dataset(faces: FaceSet, batch_size: int, augment: bool, seed: int,
                     label_smoothing: float) -> tf.data.Dataset:
    """Shuffled, batched, optionally augmented (flip, shift, rotate, zoom, erase) batches."""
    x = to_inputs(faces.images)
    y = tf.one_hot(faces.labels, N_CLASSES).numpy()
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if augment:
        geometry = tf.keras.Sequential([
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 1),
            layers.RandomRotation(10 / 360, fill_mode="nearest", seed=seed + 2),
            layers.RandomZoom(0.1, fill_mode="nearest", seed=seed + 3),
        ])
        ds = ds.map(lambda a, b: (random_erasing(geometry(a, training=True), seed + 4), b),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(faces: FaceSet, batch_size: int) -> tf.data.Dataset:
    """Unshuffled, unaugmented batches for validation."""
    y = tf.one_hot(faces.labels, N_CLASSES).numpy()
    return tf.data.Dataset.from_tensor_slices((to_inputs(faces.images), y)).batch(batch_size)
