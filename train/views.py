"""Consistent teaching: the teacher's probabilities for the very views the student sees.

Fixed soft targets (``fit.soft_targets``) give every face the teacher's reading of the
*un-augmented* face, while the student sees it turned, zoomed, relit, blurred, erased and
re-encoded; for a heavily augmented face the two disagree, and the student is taught a
target that does not match its input. Distillation closes the student-teacher gap when the
teacher labels the same view the student gets ("function matching": Beyer et al., 2022,
*Knowledge distillation: a good teacher is patient and consistent*). Running the teacher
every step would cost about four student steps on a CPU (fvnet64 has eight times fvlite's
multiply-adds), so ``k`` augmented views of each training face are drawn once, with the
photo augmentation training uses, rounded to 8-bit pixels as scoring's crops are, and the
teacher scores each view once. Every epoch the student gets one of its face's ``k`` views at
random, mirrored at random: the shipped teachers average each face with its mirror image, so
a mirrored view's target is the same.

The teacher's probabilities are cached view by view, by the sha256 of the teacher file and of
the view, so a resumed run pays for the teacher once per machine, a run with more views (the
first ``k`` are the same for a seed) pays only for the new ones, and a change in a view
(another TensorFlow, other augmentation code) is a cache miss, never a stale target.
"""

from __future__ import annotations

import hashlib
import logging
from functools import partial
from pathlib import Path

import numpy as np
import tensorflow as tf

from train.data import N_CLASSES, jpeg, photo_augment, to_inputs
from train.photos import save_cache

log = logging.getLogger(__name__)

# Seeds of the k views: far apart, since each augmentation op seeds at ``seed + small k``.
VIEW_SEED_STRIDE = 1000


def draw_views(images: np.ndarray, k: int, seed: int, soften: float,
               batch_size: int = 512) -> np.ndarray:
    """``k`` photo-augmented views of each face, uint8 ``(n, k, 48, 48)``: view ``v`` is the
    training augmentation (JPEG re-encoding, then ``photo_augment``) under seed
    ``seed + 1000 (v + 1)``, in order, so the same faces and seed give the same views. The
    ops' seeds combine with TensorFlow's global seed, which ``fit`` sets to the run's seed
    first: a caller that sets another draws other views."""
    views = np.empty((len(images), k, *images.shape[1:]), np.uint8)
    inputs = to_inputs(images)
    for v in range(k):
        view_seed = seed + VIEW_SEED_STRIDE * (v + 1)
        ds = (tf.data.Dataset.from_tensor_slices(inputs)
              .map(lambda a, s=view_seed: jpeg(a, s))
              .batch(batch_size)
              .map(lambda a, s=view_seed: photo_augment(a, s, soften)))
        done = 0
        for batch in ds:
            pixels = np.rint(batch.numpy()[..., 0] * 255.0).clip(0, 255).astype(np.uint8)
            views[done:done + len(pixels), v] = pixels
            done += len(pixels)
    return views


def mirror_invariant(teacher: str | Path) -> bool:
    """Whether the teacher averages each face with its mirror image (exported with flips
    folded in), so that a mirrored view has the same target."""
    from facevalue.classify import Classifier

    return Classifier(teacher, device="cpu").contract.extra.get("facevalue.tta") == "hflip"


def teacher_probabilities(teacher: str | Path, views: np.ndarray,
                          cache: str | Path | None = None) -> np.ndarray:
    """The teacher's probabilities for each view, ``(n, k, 7)``, cached view by view (module
    doc) in ``cache`` (default ``~/.cache/facevalue/views``)."""
    from facevalue.classify import Classifier

    model = hashlib.sha256(Path(teacher).read_bytes())
    folder = Path(cache) if cache else Path.home() / ".cache" / "facevalue" / "views"
    classifier = None
    probs = np.empty((*views.shape[:2], N_CLASSES), np.float32)
    for v in range(views.shape[1]):
        digest = model.copy()
        view = np.ascontiguousarray(views[:, v])
        digest.update(str(view.shape).encode())
        digest.update(view.data)
        cached = folder / f"{digest.hexdigest()[:32]}.npy"
        if cached.exists():
            probs[:, v] = np.load(cached)
            continue
        log.info("teacher %s on view %d of %d (%d faces; cached once scored)",
                 Path(teacher).name, v + 1, views.shape[1], len(views))
        classifier = classifier or Classifier(teacher, device="cpu")
        probs[:, v] = classifier.predict(view[..., None], 512)
        save_cache(cached, partial(np.save, arr=probs[:, v]))
    return probs


def views_dataset(views: np.ndarray, targets: np.ndarray, batch_size: int, seed: int,
                  weights: np.ndarray | None = None) -> tf.data.Dataset:
    """Shuffled batches of one random view per face, mirrored at random, with that view's
    targets: ``views`` uint8 ``(n, k, h, w)``, ``targets`` ``(n, k, c)``, ``weights`` ``(n,)``
    per-face loss weights."""
    k = views.shape[1]
    ds = tf.data.Dataset.from_tensor_slices(
        (views, targets) if weights is None else (views, targets, weights))
    ds = ds.shuffle(len(views), seed=seed, reshuffle_each_iteration=True)

    def pick(v, t, *w):
        i = tf.random.uniform([], 0, k, tf.int32, seed=seed + 71)
        x = tf.cast(v[i], tf.float32)[..., None] / 255.0
        mirror = tf.random.uniform([], seed=seed + 72) < 0.5
        return tf.where(mirror, tf.reverse(x, [1]), x), t[i], *w

    return (ds.map(pick, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
            .prefetch(tf.data.AUTOTUNE))
