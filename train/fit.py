"""Fit an architecture on FER2013 with seeding, checkpoints, a CSV log and resume."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from facevalue import fer2013
from facevalue.contract import LABELS
from facevalue.errors import FacevalueError
from facevalue.evaluate import class_metrics, confusion_matrix
from train import archs, losses, views
from train.data import eval_dataset, to_inputs, training_dataset

log = logging.getLogger(__name__)


class RunError(FacevalueError, ValueError):
    """A run folder that cannot be used as asked (the message says which and why)."""


# The best epoch's weights alone: enough to export the run or start the next cycle from it on
# another machine (config.json names the architecture), small enough to commit.
WEIGHTS = "best.weights.h5"
# The last epoch's weights (with the optimiser's state: Keras 3 saves it beside the weights),
# also committed: a run stopped at any time (a session's end) continues from them on a fresh
# checkout, its learning-rate schedule at the step it reached.
LAST_WEIGHTS = "last.weights.h5"
# The checkpoints a run keeps (the ones export can take) and their committed weights.
CHECKPOINT_WEIGHTS = {"best": WEIGHTS, "last": LAST_WEIGHTS}
EPOCH_CHOICES = tuple(CHECKPOINT_WEIGHTS)
# The validation slice is the same for every run and seed, so runs compare on equal terms.
VAL_SEED = 2013


def load_splits(data: str | Path, val_fraction: float
                ) -> tuple[fer2013.FaceSet, fer2013.FaceSet, dict]:
    """Cleaned Training rows to fit on, and the slice of Training to select on.

    Epochs, temperature and test-time choices are selected on ``val_fraction`` of the cleaned
    Training rows (stratified by label, the same rows for every run), so PublicTest stays an
    honest test set. ``val_fraction`` 0 selects on PublicTest, as runs before 2026-12 did.
    """
    faces = fer2013.load(data)
    train = faces.split("Training")
    held_out = fer2013.FaceSet(faces.images[faces.usage != "Training"],
                               faces.labels[faces.usage != "Training"],
                               faces.usage[faces.usage != "Training"])
    public = faces.split("PublicTest")
    if len(train) == 0 or len(public) == 0:
        raise fer2013.DataError(f"{data}: needs both Training and PublicTest rows")
    train, removed = fer2013.clean_training(train, held_out)
    if val_fraction:
        train, val = validation_slice(train, val_fraction)
    else:
        val = public
    info = {"data_sha256": fer2013.fingerprint(faces), "train_rows": len(train),
            "val_rows": len(val), "val_fraction": val_fraction,
            "selected_on": "Training slice" if val_fraction else "PublicTest",
            "removed": removed}
    return train, val, info


def validation_slice(train: fer2013.FaceSet, fraction: float
                     ) -> tuple[fer2013.FaceSet, fer2013.FaceSet]:
    """Split off ``fraction`` of each label's rows (at least one), by a fixed seed."""
    rng = np.random.default_rng(VAL_SEED)
    val = np.zeros(len(train), bool)
    for label in np.unique(train.labels):
        rows = np.flatnonzero(train.labels == label)
        val[rng.permutation(rows)[:max(1, round(fraction * len(rows)))]] = True

    def subset(keep: np.ndarray) -> fer2013.FaceSet:
        return fer2013.FaceSet(train.images[keep], train.labels[keep], train.usage[keep])

    return subset(~val), subset(val)


def _optimizer(recipe: archs.Recipe, steps_per_epoch: int, epochs: int) -> keras.Optimizer:
    if recipe.schedule == "cosine":
        total = steps_per_epoch * epochs
        warmup = min(steps_per_epoch * 2, total // 10)
        lr = keras.optimizers.schedules.CosineDecay(
            recipe.learning_rate / 10, decay_steps=total - warmup, alpha=0.01,
            warmup_target=recipe.learning_rate, warmup_steps=warmup)
    else:
        lr = recipe.learning_rate
    ema = {"use_ema": True, "ema_momentum": recipe.ema} if recipe.ema else {}
    if recipe.weight_decay:
        return keras.optimizers.AdamW(lr, weight_decay=recipe.weight_decay, **ema)
    return keras.optimizers.Adam(lr, **ema)


def this_machine() -> str:
    """This machine's CPU, as the card names it (a run may resume elsewhere: the start counts)."""
    model, flags = "unknown CPU", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    bf16 = ", AVX512-BF16" if "avx512_bf16" in flags else ""
    return f"{os.cpu_count()}-core {model}{bf16}, CPU only"


def build(arch: str, precision: str, arch_kwargs: dict | None = None) -> keras.Model:
    """Build an architecture under a dtype policy (``bf16`` halves CPU time on AVX512-BF16)."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        return archs.ARCHS[arch](**(arch_kwargs or {}))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def soft_targets(teacher: str | Path, faces: fer2013.FaceSet, weight: float) -> np.ndarray:
    """``weight`` x the teacher's probabilities + (1 - weight) x the one-hot labels.

    The teacher is an exported classifier (a snapshot ensemble, say), run once through
    onnxruntime on the un-augmented faces: its flip-averaged probabilities hold under the
    flips and small shifts of augmentation, so they need not be recomputed per batch.
    """
    from facevalue.classify import Classifier

    probs = Classifier(teacher, device="cpu").predict(faces.images[..., None], 512)
    return blend(probs, faces.labels, weight)


def blend(probs: np.ndarray, labels: np.ndarray, weight: float) -> np.ndarray:
    """``weight`` x the teacher's probabilities (``(n, 7)``, or ``(n, k, 7)`` for k views of
    each face) + (1 - weight) x the faces' one-hot labels."""
    onehot = np.eye(probs.shape[-1], dtype=np.float32)[labels]
    onehot = onehot.reshape(len(labels), *[1] * (probs.ndim - 2), probs.shape[-1])
    return (weight * probs + (1 - weight) * onehot).astype(np.float32)


def fit(data: str | Path, arch: str, out: str | Path, *, epochs: int | None = None,
        seed: int = 2017, precision: str = "fp32", init: str | Path | None = None,
        teacher: str | Path | None = None, mix_alpha: float | None = None,
        ema: float | None = None, photo_weight: float | None = None,
        blur: float | None = None, photo_partial: float | None = None,
        teacher_views: int | None = None,
        photos: tuple[str | Path, str | Path] | None = None,
        dev: tuple[str | Path, str | Path] | None = None,
        limit: int | None = None, verbose: int = 2) -> Path:
    """Train ``arch`` into the run folder ``out``; resume if ``out`` holds an unfinished run.

    The folder gets ``config.json``, ``log.csv`` (one row per epoch), ``best.keras`` (highest
    accuracy on the validation slice of Training, see ``load_splits``), ``last.keras`` (to
    resume) and ``curves.png``. With ``init`` (a finished run folder of the same
    architecture) training starts from that run's best weights under the architecture's
    fine-tuning recipe instead of from scratch. With ``teacher`` (an exported ONNX
    classifier), the targets mix its probabilities in (``soft_targets``); the validation
    slice keeps its true labels. ``mix_alpha`` overrides the recipe's mixup/cutmix
    (``train.data.mix``; 0 turns it off), ``ema`` its weight averaging, ``photo_weight``
    its photos' loss weight, ``blur`` the share of faces its augmentation softens and
    ``photo_partial`` the share of a photo's loss that asks only which of its set's classes
    it shows (``archs.Recipe``, ``train.losses``) and ``teacher_views`` the number of
    augmented views of each face the teacher scores for the student (``train.views``).
    ``photos`` (a folder and its labels CSV) adds real labelled photos to the training faces,
    cropped as ``facevalue score`` crops them (``train.photos``; their targets stay their
    labels, a teacher's or not). ``dev`` (the same, for other photos) selects the best epoch
    on the mean of the slice's accuracy and those photos' mean recall over their labelled
    classes (``select`` in log.csv): a model for photos and FER2013 alike, not one that buys
    photo accuracy by calling every photo neutral.
    """
    out = Path(out)
    recipe = archs.RECIPES[arch]
    if init is not None:
        init = Path(init)
        if arch not in archs.FINETUNE_RECIPES:
            raise RunError(f"{arch} has no fine-tuning recipe; train it without --init")
        if not (init / "best.keras").exists() and not (init / WEIGHTS).exists():
            raise RunError(f"{init} holds no best.keras or {WEIGHTS}: not a finished run")
        init_arch = json.loads((init / "config.json").read_text())["arch"]
        if init_arch != arch:
            raise RunError(f"{init} is a {init_arch} run; --arch is {arch}")
        recipe = archs.FINETUNE_RECIPES[arch]
    if teacher is not None:
        if arch not in archs.DISTILL_RECIPES:
            raise RunError(f"--teacher trains a {'/'.join(archs.DISTILL_RECIPES)} student")
        # From scratch, the distillation recipe; a second cycle keeps the fine-tuning one,
        # the teacher's soft targets standing in for label smoothing.
        recipe = (replace(recipe, label_smoothing=0.0) if init is not None
                  else archs.DISTILL_RECIPES[arch])
    if mix_alpha is not None:
        if mix_alpha < 0:
            raise RunError(f"--mix must be >= 0 (0: no mixing), not {mix_alpha}")
        recipe = replace(recipe, mix_alpha=mix_alpha)
    if ema is not None:
        if not 0 <= ema < 1:
            raise RunError(f"--ema must be in [0, 1) (0: no averaging), not {ema}")
        recipe = replace(recipe, ema=ema)
    if photo_weight is not None:
        if photo_weight <= 0:
            raise RunError(f"--photo-weight must be > 0, not {photo_weight}")
        recipe = replace(recipe, photo_weight=photo_weight)
    if blur is not None:
        if not 0 <= blur <= 1:
            raise RunError(f"--blur must be in [0, 1], not {blur}")
        if not recipe.photo_augment:
            raise RunError(f"--blur sets photo augmentation's blur; {arch}'s recipe has none")
        recipe = replace(recipe, blur=blur)
    if photo_partial is not None:
        if not 0 <= photo_partial <= 1:
            raise RunError(f"--photo-partial must be in [0, 1], not {photo_partial}")
        if photo_partial and photos is None:
            raise RunError("--photo-partial weighs the loss of --photos faces: give --photos")
        recipe = replace(recipe, photo_partial=photo_partial)
    if teacher_views is not None:
        if teacher_views < 0:
            raise RunError(f"--teacher-views must be >= 0 (0: fixed targets), not {teacher_views}")
        if teacher_views and teacher is None:
            raise RunError("--teacher-views needs a --teacher to score the views")
        if teacher_views and not recipe.photo_augment:
            raise RunError(f"--teacher-views draws photo-augmented views; {arch}'s recipe has "
                           "no photo augmentation")
        if teacher_views and teacher is not None and not views.mirror_invariant(teacher):
            raise RunError(f"{teacher} was exported without flip averaging: a mirrored view "
                           "would need its own target; use a teacher exported with --tta hflip")
        recipe = replace(recipe, teacher_views=teacher_views)
    if recipe.teacher_views and recipe.mix_alpha:
        raise RunError("--teacher-views cannot be combined with mixing (--mix 0 turns it off): "
                       "the teacher scored the views unmixed")
    if recipe.photo_partial and recipe.mix_alpha:
        raise RunError("--photo-partial cannot be combined with mixing (--mix 0 turns it off): "
                       "a mixed face has no one set of classes")
    _check_writable(out)
    epochs = epochs or recipe.epochs
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    train, val, info = load_splits(data, recipe.val_fraction)
    if limit:
        train = fer2013.FaceSet(train.images[:limit], train.labels[:limit], train.usage[:limit])
        val = fer2013.FaceSet(val.images[:limit], val.labels[:limit], val.usage[:limit])
    config = {"arch": arch, "epochs": epochs, "seed": seed, "precision": precision,
              "data": str(data), "recipe": asdict(recipe), **info, "hardware": this_machine()}
    if init is not None:
        config["init"] = str(init)
    targets, fer_rows = None, len(train)
    if teacher is not None:
        import hashlib

        # with views, the FER2013 faces' targets are filled in per view below
        targets = (np.eye(archs.N_CLASSES, dtype=np.float32)[train.labels]
                   if recipe.teacher_views else
                   soft_targets(teacher, train, recipe.distill_weight))
        config["teacher"] = {"model": Path(teacher).name, "weight": recipe.distill_weight,
                             "sha256": hashlib.sha256(Path(teacher).read_bytes()).hexdigest()}
    weights = None
    if photos is not None:
        extra, config["photos"] = labelled_photos(*photos)
        if recipe.photo_weight != 1.0:
            weights = np.concatenate([np.ones(len(train), np.float32),
                                      np.full(len(extra), recipe.photo_weight, np.float32)])
        train = fer2013.FaceSet(*(np.concatenate([a, b]) for a, b in zip(
            (train.images, train.labels, train.usage),
            (extra.images, extra.labels, extra.usage), strict=True)))
        if targets is not None:
            targets = np.concatenate([targets, np.eye(archs.N_CLASSES, dtype=np.float32)[
                extra.labels]])
        if recipe.photo_partial:
            # each face's set's classes: all for FER2013, the labelled ones for the photos
            classes = np.ones((len(train), archs.N_CLASSES), np.float32)
            classes[-len(extra):] = np.isin(np.arange(archs.N_CLASSES), extra.labels)
            if targets is None:
                targets = np.eye(archs.N_CLASSES, dtype=np.float32)[train.labels]
            targets = losses.with_classes(targets, classes)
    dev_faces = None
    if dev is not None:
        dev_faces, config["dev"] = labelled_photos(*dev)
        config["selected_on"] = ("mean of the Training slice's accuracy and the dev photos' "
                                 "mean recall over their labelled classes")
    monitor = "select" if dev_faces is not None else "val_accuracy"
    config_path = out / "config.json"
    done_epochs = _completed_epochs(out)
    if done_epochs:
        previous = json.loads(config_path.read_text())
        if _identity(previous) != _identity(config):
            raise RunError(f"{out} holds a different run; choose another --out")
        if first := [f"{option} {archs.recorded(previous, key):g}"
                       for key, option in archs.OVERRIDES.items()
                       if archs.recorded(previous, key) != getattr(recipe, key)]:
            raise RunError(f"{out} was started with {' '.join(first)}: resume with the "
                           "same, or choose another --out")
        for key in ("photos", "dev"):
            if (previous.get(key) or {}).get("sha256") != (config.get(key) or {}).get("sha256"):
                log.warning("the %s crops differ from the run's start (facevalue's crop path "
                            "or detector changed); continuing on the new crops", key)
        log.info("resuming %s at epoch %d/%d", out, done_epochs + 1, epochs)
    else:
        config_path.write_text(json.dumps(config, indent=2))
    steps = -(-len(train) // recipe.batch_size)
    if done_epochs and (out / "last.keras").exists():
        model = keras.models.load_model(out / "last.keras")
    else:
        model = build(arch, precision, recipe.arch_kwargs)
        if init is not None and not done_epochs:
            # Same layers, other dropout rates: the weights carry over one for one.
            model.set_weights(saved_network(init).get_weights())
        if recipe.photo_partial:
            loss: keras.losses.Loss = losses.PartialCrossentropy(recipe.photo_partial,
                                                                 recipe.label_smoothing)
            accuracy: str | keras.metrics.Metric = keras.metrics.MeanMetricWrapper(
                losses.label_accuracy, name="accuracy")
        else:
            loss = keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=recipe.label_smoothing)
            accuracy = "accuracy"
        model.compile(_optimizer(recipe, steps, epochs), loss, metrics=[accuracy])
        if done_epochs:  # a fresh checkout: the committed last weights (the optimiser's
            model.optimizer.build(model.trainable_variables)  # moments are in the file too)
            model.load_weights(out / LAST_WEIGHTS)
            model.optimizer.iterations.assign(done_epochs * steps)
    averaging = []
    if recipe.ema:
        swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
        # Checkpoints hold the average in the model and the raw weights in the optimiser:
        # a resumed run swaps them back before its first epoch.
        swap._ema_weights_in_model = bool(done_epochs)
        averaging.append(swap)
    started = time.time()
    # after the resume checks: the teacher's views can take minutes
    if recipe.teacher_views and teacher is not None and targets is not None:
        face_views = views.draw_views(train.images, recipe.teacher_views, seed, recipe.blur)
        probs = views.teacher_probabilities(teacher, face_views[:fer_rows])
        per_view = np.repeat(targets[:, None], recipe.teacher_views, axis=1)
        per_view[:fer_rows, :, :archs.N_CLASSES] = blend(probs, train.labels[:fer_rows],
                                                         recipe.distill_weight)
        dataset = views.views_dataset(face_views, per_view, recipe.batch_size, seed, weights)
        log.info("views and the teacher's targets ready after %.0f s", time.time() - started)
    else:
        dataset = training_dataset(train, recipe.batch_size, recipe.augment, seed,
                                   photo=recipe.photo_augment, targets=targets,
                                   mix_alpha=recipe.mix_alpha, weights=weights,
                                   soften=recipe.blur)
    best = {"monitor": monitor, "save_best_only": True, "mode": "max",
            "initial_value_threshold": _best_so_far(out, monitor)}
    # each is saved beside its last version, then published over it (_Publish)
    checkpoints: dict[Path, dict] = {
        out / "best.keras": best, out / WEIGHTS: {**best, "save_weights_only": True},
        out / "last.keras": {}, out / LAST_WEIGHTS: {"save_weights_only": True}}
    model.fit(
        dataset,
        validation_data=eval_dataset(val, 512), epochs=epochs, initial_epoch=done_epochs,
        verbose=verbose, callbacks=[
            # first, so the dev figures, the checkpoints and the log see the averaged weights
            *averaging,
            # then, so the checkpoints and the log see its figures
            *([_DevAccuracy(dev_faces)] if dev_faces is not None else []),
            *(keras.callbacks.ModelCheckpoint(_partial(path), **options)
              for path, options in checkpoints.items()),
            _Publish(list(checkpoints)),
            keras.callbacks.CSVLogger(out / "log.csv", append=True),
            _EpochTimer(out / "epoch_seconds.csv"),
        ])
    log.info("trained %s in %.0f s", arch, time.time() - started)
    from facevalue.plots import plot_training_curves

    plot_training_curves(out / "log.csv", out / "curves.png", title=f"{arch} on FER2013")
    return out


def _identity(config: dict) -> dict:
    """What makes two configs one run: the photo sets by folder, labels and size, not by the
    crops' fingerprint (which follows facevalue's crop code: a resume logs that change)."""
    keys = ("arch", "epochs", "seed", "data_sha256", "init", "teacher", "photos", "dev")
    return {k: {**config[k], "sha256": None} if k in ("photos", "dev") and config.get(k)
            else config.get(k) for k in keys}


def _check_writable(out: Path) -> None:
    """Make the run folder and write a probe file in it: a folder that cannot take the
    checkpoints fails now, not after the first epoch's minutes."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise RunError(f"cannot write the run folder {out}: {e.strerror or e}") from e


def labelled_photos(folder: str | Path, labels: str | Path) -> tuple[fer2013.FaceSet, dict]:
    """Labelled photos' main-face crops (``train.photos``) and what config.json says of them."""
    from train.export import CONTRACT
    from train.photos import load_photos

    faces, sha256 = load_photos(folder, labels, CONTRACT)
    counts = np.bincount(faces.labels, minlength=archs.N_CLASSES)
    return faces, {"folder": str(folder), "labels": str(labels), "sha256": sha256,
                   "rows": len(faces),
                   "per_class": {k: int(n) for k, n in zip(LABELS, counts, strict=True) if n}}


class _DevAccuracy(keras.callbacks.Callback):
    """After each epoch on labelled photos: ``dev_accuracy``, ``dev_recall`` (the mean of
    the labelled classes' recalls) and ``select``, the mean of ``dev_recall`` and the
    Training slice's ``val_accuracy`` (what the best epoch is chosen on).

    Selecting on recall rather than accuracy: 600 of faces-dev's 838 photos are neutral or
    happy, so its accuracy rewards an epoch that reads every real photo as one of the two
    (the shortcut that training photos of only those classes invite, see ``Recipe``).
    """

    def __init__(self, faces: fer2013.FaceSet):
        super().__init__()
        self.inputs, self.labels = to_inputs(faces.images), faces.labels

    def on_epoch_end(self, epoch, logs=None):
        predicted = np.argmax(self.model.predict(self.inputs, batch_size=512, verbose=0), axis=1)
        logs["dev_accuracy"] = float(np.mean(predicted == self.labels))
        logs["dev_recall"] = float(np.mean([c.recall for c in class_metrics(
            confusion_matrix(self.labels, predicted)) if c.support]))
        logs["select"] = (float(logs["val_accuracy"]) + logs["dev_recall"]) / 2


def _partial(path: Path) -> Path:
    """Where the checkpoint ``path`` is written before it replaces the one there
    (``best.keras`` -> ``best.partial.keras``: Keras wants the suffixes kept)."""
    return path.with_name(path.name.replace(".", ".partial.", 1))


class _Publish(keras.callbacks.Callback):
    """Move each checkpoint saved this epoch over the one before it, atomically.

    ModelCheckpoint writes its file in place, so a run killed mid-save would leave a
    truncated ``last.weights.h5`` and nothing to resume from; written beside it and then
    renamed, a kill at any moment leaves the last complete checkpoint. A killed run's
    leftover partial files are removed first, so a half-written one is never published.
    """

    def __init__(self, paths: list[Path]):
        super().__init__()
        self.paths = paths

    def on_train_begin(self, logs=None):
        for path in self.paths:
            _partial(path).unlink(missing_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        for path in self.paths:
            if _partial(path).exists():
                os.replace(_partial(path), path)


class _EpochTimer(keras.callbacks.Callback):
    """Append wall-clock seconds per epoch: the model card reports training time from it."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        with self.path.open("a") as f:
            f.write(f"{epoch},{time.time() - self.started:.1f}\n")


def saved_network(run: Path, precision: str | None = None, epoch: str = "best"
                  ) -> keras.Model:
    """A run's saved network: the ``epoch`` (``best`` or ``last``) checkpoint's ``.keras``
    file, or its architecture with the committed weights (``best.weights.h5`` or
    ``last.weights.h5``) where git carried only those.

    ``precision`` rebuilds it under another dtype policy (``fp32`` for export); None keeps
    the run's own.
    """
    config = json.loads((run / "config.json").read_text())
    whole = run / f"{epoch}.keras"
    if whole.exists() and precision is None:
        return keras.models.load_model(whole, compile=False)
    model = build(config["arch"], precision or config.get("precision", "fp32"),
                  config.get("recipe", {}).get("arch_kwargs"))
    if whole.exists():
        model.set_weights(keras.models.load_model(whole, compile=False).get_weights())
    else:
        model.load_weights(run / CHECKPOINT_WEIGHTS[epoch])
    return model


def _completed_epochs(out: Path) -> int:
    """Epochs already in ``log.csv`` whose ``last.keras`` or last weights exist (0 for a new
    run)."""
    log_csv = out / "log.csv"
    last = (out / "last.keras").exists() or (out / LAST_WEIGHTS).exists()
    if not last or not log_csv.exists():
        return 0
    return max(0, len(log_csv.read_text().strip().splitlines()) - 1)


def _best_so_far(out: Path, monitor: str) -> float | None:
    import pandas as pd

    log_csv = out / "log.csv"
    if not log_csv.exists() or not (out / WEIGHTS).exists():
        return None
    return float(pd.read_csv(log_csv)[monitor].max())
