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


def box(h: int, w: int, y0: tf.Tensor, y1: tf.Tensor, x0: tf.Tensor, x1: tf.Tensor,
        centre: float = 0.0) -> tf.Tensor:
    """(n, h, w) booleans: which pixels of each face lie in its box [y0, y1) x [x0, x1).

    A pixel sits at its index plus ``centre`` (0: its corner, 0.5: its middle).
    """
    rows = tf.range(h, dtype=tf.float32)[None, :, None] + centre
    cols = tf.range(w, dtype=tf.float32)[None, None, :] + centre
    return ((rows >= y0[:, None, None]) & (rows < y1[:, None, None])
            & (cols >= x0[:, None, None]) & (cols < x1[:, None, None]))


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
    inside = box(h, w, y0, y0 + eh, x0, x0 + ew)
    apply = (uniform([n], k=5) < p)[:, None, None]
    mask = tf.cast(inside & apply, batch.dtype)[..., None]
    noise = uniform(tf.shape(batch), k=6)
    return batch * (1 - mask) + noise * mask


def affine(batch: tf.Tensor, seed: int, rotate: float = 15.0, scale: float = 0.15,
           shift: float = 0.1) -> tf.Tensor:
    """Flip, rotate (degrees), zoom and shift each face at random, in one resampling pass.

    Faces found in photos come tilted and framed a little differently each time (the crop
    follows a detector box); one composed transform per face costs one pass over the batch
    where four Keras layers cost four, and blurs the face once instead of four times.
    """
    n = tf.shape(batch)[0]
    h, w = batch.shape[1], batch.shape[2]

    def uniform(low, high, k):
        return tf.random.uniform([n], low, high, seed=seed + k)

    angle = uniform(-rotate, rotate, 11) * (np.pi / 180)
    zoom = uniform(1 - scale, 1 + scale, 12)
    flip = tf.where(uniform(0.0, 1.0, 13) < 0.5, -1.0, 1.0)
    tx, ty = uniform(-shift, shift, 14) * w, uniform(-shift, shift, 15) * h
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # output (x, y) -> input: centre + A (out - centre) + shift, A = rotation / zoom x flip
    a0, a1, b0, b1 = cos * flip, -sin, sin * flip, cos
    cx, cy = (w - 1) / 2, (h - 1) / 2
    a2 = cx + tx - a0 * cx - a1 * cy
    b2 = cy + ty - b0 * cx - b1 * cy
    zeros = tf.zeros([n])
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=batch, transforms=transforms, output_shape=[h, w], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")


def lighting(batch: tf.Tensor, seed: int) -> tf.Tensor:
    """Random gamma, contrast and brightness per face: studio, flash and window light."""
    n = tf.shape(batch)[0]

    def uniform(low, high, k):
        return tf.random.uniform([n, 1, 1, 1], low, high, seed=seed + k)

    x = tf.pow(tf.clip_by_value(batch, 1e-4, 1.0), tf.exp(uniform(-0.4, 0.4, 21)))
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * uniform(0.6, 1.4, 22) + mean + uniform(-0.12, 0.12, 23)
    return tf.clip_by_value(x, 0.0, 1.0)


# The share of faces photo augmentation softens unless a recipe says otherwise (archs.Recipe).
SOFTEN = 0.3


def blur(batch: tf.Tensor, seed: int, p: float) -> tf.Tensor:
    """Soften a share ``p`` of the faces: a Gaussian of random strength, or a low-resolution
    copy (a face of 16-40 px in the photo, scaled up), as small or out-of-focus faces are."""
    n = tf.shape(batch)[0]
    h, w = batch.shape[1], batch.shape[2]
    taps = np.exp(-0.5 * np.arange(-2, 3) ** 2 / 1.2**2)
    kernel = np.outer(taps, taps) / np.outer(taps, taps).sum()
    gauss = tf.nn.depthwise_conv2d(tf.pad(batch, [[0, 0], [2, 2], [2, 2], [0, 0]], "REFLECT"),
                                   tf.constant(kernel[..., None, None], batch.dtype),
                                   [1, 1, 1, 1], "VALID")
    side = tf.random.uniform([], 16, 41, tf.int32, seed=seed + 31)
    small = tf.image.resize(tf.image.resize(batch, [side, side], "area"), [h, w], "bilinear")
    strength = tf.random.uniform([n, 1, 1, 1], 0.0, 1.0, seed=seed + 32)
    which = tf.random.uniform([n, 1, 1, 1], seed=seed + 33)
    softened = tf.where(which < p / 2, small, batch + strength * (gauss - batch))
    return tf.where(which < p, softened, batch)


def jpeg(image: tf.Tensor, seed: int, p: float = 0.3) -> tf.Tensor:
    """Re-encode a share ``p`` of the faces as JPEG at quality 20-90 (one face at a time:
    TensorFlow's codec takes no batches)."""
    quality = tf.random.uniform([], 20, 91, tf.int32, seed=seed + 41)
    coded = tf.cond(tf.random.uniform([], seed=seed + 42) < p,
                    lambda: tf.image.adjust_jpeg_quality(image, quality), lambda: image)
    return tf.reshape(coded, image.shape)  # the codec forgets the static shape


def photo_augment(batch: tf.Tensor, seed: int, soften: float) -> tf.Tensor:
    """What faces cut from real photos vary by: pose and framing, light, blur (a share
    ``soften`` of the faces), sensor noise."""
    x = blur(lighting(affine(batch, seed), seed), seed, soften)
    noise = tf.random.normal(tf.shape(x), seed=seed + 51)
    sigma = tf.random.uniform([tf.shape(x)[0], 1, 1, 1], 0.0, 0.03, seed=seed + 52)
    return random_erasing(tf.clip_by_value(x + sigma * noise, 0.0, 1.0), seed + 53)


def mix(batch: tf.Tensor, labels: tf.Tensor, seed: int, alpha: float
        ) -> tuple[tf.Tensor, tf.Tensor]:
    """Mix each face with its partner in the reversed batch: half the pairs by mixup (a
    blend), half by cutmix (a pasted rectangle); the labels mix in the same proportions.

    A share ``lam ~ Beta(alpha, alpha)`` per face stays its own. Mixed targets keep a
    network that already fits FER2013's training faces from growing over-confident on them,
    the overfitting that stalls the later fvnet64 cycles. Cutmix's share is the pasted
    box's actual (clipped) area, so labels match pixels exactly.
    """
    n = tf.shape(batch)[0]
    h, w = batch.shape[1], batch.shape[2]
    g1 = tf.random.gamma([n], alpha, seed=seed + 61)
    g2 = tf.random.gamma([n], alpha, seed=seed + 62)
    lam = g1 / (g1 + g2)
    # cutmix: a box of (1 - lam) of the face centred anywhere, clipped at the edges
    side = tf.sqrt(1.0 - lam)
    cy = tf.random.uniform([n], seed=seed + 63) * h
    cx = tf.random.uniform([n], seed=seed + 64) * w
    y0, y1 = tf.maximum(cy - side * h / 2, 0.0), tf.minimum(cy + side * h / 2, float(h))
    x0, x1 = tf.maximum(cx - side * w / 2, 0.0), tf.minimum(cx + side * w / 2, float(w))
    pasted = tf.cast(box(h, w, y0, y1, x0, x1, centre=0.5), batch.dtype)[..., None]
    cut_lam = 1.0 - tf.reduce_mean(pasted, axis=[1, 2, 3])
    use_cut = tf.random.uniform([n], seed=seed + 65) < 0.5
    lam = tf.where(use_cut, cut_lam, lam)
    keep = tf.where(use_cut[:, None, None, None], 1.0 - pasted, lam[:, None, None, None])
    other, other_labels = tf.reverse(batch, [0]), tf.reverse(labels, [0])
    mixed = batch * keep + other * (1.0 - keep)
    lam = tf.cast(lam, labels.dtype)[:, None]
    return mixed, labels * lam + other_labels * (1.0 - lam)


def training_dataset(faces: FaceSet, batch_size: int, augment: bool, seed: int,
                     photo: bool = False, targets: np.ndarray | None = None,
                     mix_alpha: float = 0.0, weights: np.ndarray | None = None,
                     soften: float = SOFTEN) -> tf.data.Dataset:
    """Shuffled, batched, optionally augmented batches.

    ``augment``: flip, shift, rotate, zoom and erase (the recipe the 2026-11 models were
    trained with); with ``photo`` as well, ``photo_augment`` and JPEG re-encoding replace it.
    ``targets`` (n, 7) replace the one-hot labels (a teacher's soft targets). ``mix_alpha``
    > 0 mixes the augmented batches (``mix``). ``weights`` (n,) are per-face loss weights
    (a mixed face keeps its own). ``soften``: the share of faces ``photo_augment`` blurs.
    """
    x = to_inputs(faces.images)
    y = tf.one_hot(faces.labels, N_CLASSES).numpy() if targets is None else targets
    ds = tf.data.Dataset.from_tensor_slices((x, y) if weights is None else (x, y, weights))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if augment and photo:
        ds = ds.map(lambda a, b, *w: (jpeg(a, seed), b, *w), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size).map(lambda a, b, *w: (photo_augment(a, seed, soften), b, *w),
                                      num_parallel_calls=tf.data.AUTOTUNE)
    elif augment:
        geometry = tf.keras.Sequential([
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 1),
            layers.RandomRotation(10 / 360, fill_mode="nearest", seed=seed + 2),
            layers.RandomZoom(0.1, fill_mode="nearest", seed=seed + 3),
        ])
        ds = ds.batch(batch_size).map(
            lambda a, b, *w: (random_erasing(geometry(a, training=True), seed + 4), b, *w),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.batch(batch_size)
    if mix_alpha:
        ds = ds.map(lambda a, b, *w: (*mix(a, b, seed, mix_alpha), *w),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(faces: FaceSet, batch_size: int) -> tf.data.Dataset:
    """Unshuffled, unaugmented batches for validation."""
    y = tf.one_hot(faces.labels, N_CLASSES).numpy()
    return tf.data.Dataset.from_tensor_slices((to_inputs(faces.images), y)).batch(batch_size)
