"""Score a classifier on labelled faces: FER2013 crops, or a researcher's own labelled photos.

On FER2013 it runs the exported model through onnxruntime only, exactly as ``facevalue
score`` will, so the accuracy a model card claims is the accuracy of the file that ships,
not of the Keras model it came from. On photos (``evaluate_photos``) it runs ``facevalue
score`` itself (discover, decode, detect, crop, classify) and compares each photo's main
face with its label, the validation figure a study reports for its own sample. TensorFlow is
never imported.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facevalue import fer2013
from facevalue.classify import load_classifier
from facevalue.columns import MISSING, NO_FACE, OK
from facevalue.contract import LABELS, Contract
from facevalue.defaults import DEFAULT_BATCH_SIZE
from facevalue.discover import ManifestError, normalize
from facevalue.storage import is_video

log = logging.getLogger(__name__)

ECE_BINS = 15


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall and F1 of one emotion, and how many true faces it has."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Evaluation:
    """What ``facevalue evaluate`` reports for one model on one split."""

    model: str
    split: str
    n: int
    accuracy: float
    accuracy_ci: tuple[float, float]  # bootstrap 95% interval over faces
    macro_f1: float
    kappa: float
    ece: float
    per_class: tuple[ClassMetrics, ...]
    confusion: tuple[tuple[int, ...], ...]  # rows: true label, columns: predicted

    def to_dict(self) -> dict:
        """A JSON-ready dict; ``per_class`` is keyed by label."""
        return {
            "model": self.model, "split": self.split, "n": self.n,
            "accuracy": self.accuracy, "accuracy_ci": list(self.accuracy_ci),
            "macro_f1": self.macro_f1, "kappa": self.kappa, "ece": self.ece,
            "per_class": {c.label: {"precision": c.precision, "recall": c.recall, "f1": c.f1,
                                    "support": c.support} for c in self.per_class},
            "labels": list(LABELS),
            "confusion": [list(row) for row in self.confusion],
        }


def to_crops(images: np.ndarray, contract: Contract) -> np.ndarray:
    """FER2013's uint8 (n, 48, 48) faces as the (n, h, w, c) crops the classifier takes."""
    import cv2

    height, width = contract.input_size
    if images.shape[1:] != (height, width):
        images = np.stack([cv2.resize(im, (width, height), interpolation=cv2.INTER_AREA)
                           for im in images])
    crops = images[..., None]
    return np.repeat(crops, 3, axis=-1) if contract.color_mode == "rgb" else crops


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """ECE: the gap between confidence and accuracy, averaged over equal-width bins.

    Confidence is the top probability; each bin's |accuracy - mean confidence| is weighted by
    its share of faces. 0 means a face scored 0.7 is right 70% of the time.
    """
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray,
                     n_classes: int = len(LABELS)) -> np.ndarray:
    """Counts with true labels as rows and predictions as columns."""
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def class_metrics(matrix: np.ndarray) -> tuple[ClassMetrics, ...]:
    """Per-class precision, recall and F1 from a confusion matrix (0 where undefined)."""
    hits = np.diag(matrix).astype(float)
    # a photo confusion matrix has an extra column for photos without a prediction
    predicted, actual = matrix.sum(axis=0)[:len(hits)], matrix.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return tuple(ClassMetrics(label, float(p), float(r), float(f), int(s))
                 for label, p, r, f, s in zip(LABELS, precision, recall, f1, actual, strict=True))


def score(probs: np.ndarray, labels: np.ndarray, model: str = "", split: str = "") -> Evaluation:
    """Turn probabilities and true labels into an Evaluation."""
    if len(labels) == 0:
        raise fer2013.DataError(f"no {split or 'labelled'} faces to evaluate")
    predicted = probs.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted)
    per_class = class_metrics(matrix)
    return Evaluation(
        model=model, split=split, n=int(len(labels)),
        accuracy=float(np.trace(matrix) / len(labels)),
        accuracy_ci=bootstrap_interval(predicted == labels),
        macro_f1=float(np.mean([c.f1 for c in per_class])),
        kappa=cohen_kappa(matrix),
        ece=expected_calibration_error(probs, labels),
        per_class=per_class,
        confusion=tuple(tuple(int(v) for v in row) for row in matrix))


def evaluate(data: str | Path, split: str = "PublicTest", model: str | Path | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto") -> Evaluation:
    """Load ``data`` (FER2013 CSV or image folder), run ``model`` on ``split``, score it.

    Without ``model``, the shipped default classifier (checksum verified) is used.
    """
    classifier = load_classifier(model, device=device)
    faces = fer2013.load(data)
    subset = faces.split(split)
    if len(subset) == 0:
        present = ", ".join(sorted(set(faces.usage))) or "none"
        raise fer2013.DataError(f"{data}: no {split} rows (splits present: {present})")
    log.info("scoring %d %s faces with %s", len(subset), split, classifier.path)
    probs = classifier.predict(to_crops(subset.images, classifier.contract), batch_size)
    return score(probs, subset.labels, model=str(classifier.path), split=split)


def format_report(result: Evaluation) -> str:
    """The human-readable report: headline figures, a per-class table, the confusion matrix."""
    low, high = result.accuracy_ci
    lines = [f"{result.model} on {result.split}: {result.n} faces",
             f"accuracy {result.accuracy:.4f} (95% CI {low:.4f}-{high:.4f})   macro F1 "
             f"{result.macro_f1:.4f}   kappa {result.kappa:.4f}   "
             f"ECE ({ECE_BINS} bins) {result.ece:.4f}", "",
             f"{'class':<10} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>8}"]
    lines += [f"{c.label:<10} {c.precision:>9.3f} {c.recall:>7.3f} {c.f1:>6.3f} {c.support:>8d}"
              for c in result.per_class]
    lines += ["", "confusion (rows true, columns predicted):",
              " " * 10 + "".join(f"{label[:7]:>8}" for label in LABELS)]
    lines += [f"{label:<10}" + "".join(f"{v:>8d}" for v in row)
              for label, row in zip(LABELS, result.confusion, strict=True)]
    return "\n".join(lines)


# --- labelled photos ---
NO_PREDICTION = "none"  # the confusion column of photos that yielded no scored face
BOOTSTRAP_RESAMPLES = 2000
# Label spellings accepted in a labels CSV, beside facevalue's own names.
LABEL_ALIASES = {
    "angry": "anger", "disgusted": "disgust", "fearful": "fear", "scared": "fear",
    "happy": "happiness", "sad": "sadness", "surprised": "surprise",
}


@dataclass(frozen=True)
class PhotoEvaluation:
    """What ``facevalue evaluate PHOTOS --labels CSV`` reports.

    Photos with no scored face (no face found, unreadable, missing) count as wrong; the
    confusion matrix gives them a last column, ``none``. Macro F1 averages the classes that
    have labelled photos (a sample without disgust says nothing about disgust).
    """

    model: str
    n: int
    accuracy: float
    accuracy_ci: tuple[float, float]  # bootstrap 95% interval over photos
    macro_f1: float
    kappa: float
    ece: float | None  # over the scored photos only; None when none was scored
    per_class: tuple[ClassMetrics, ...]
    confusion: tuple[tuple[int, ...], ...]  # rows: label; columns: prediction, then none
    no_face: int  # labelled photos where the detector found no face
    not_scored: int  # labelled photos that could not be scored at all (status in statuses)
    statuses: dict[str, int]

    def to_dict(self) -> dict:
        """A JSON-ready dict; ``per_class`` is keyed by label and holds labelled classes."""
        return {
            "model": self.model, "n": self.n, "accuracy": self.accuracy,
            "accuracy_ci": list(self.accuracy_ci), "macro_f1": self.macro_f1,
            "kappa": self.kappa, "ece": self.ece,
            "per_class": {c.label: {"precision": c.precision, "recall": c.recall, "f1": c.f1,
                                    "support": c.support}
                          for c in self.per_class if c.support},
            "labels": list(LABELS), "columns": [*LABELS, NO_PREDICTION],
            "confusion": [list(row) for row in self.confusion],
            "no_face": self.no_face, "not_scored": self.not_scored, "statuses": self.statuses,
        }


def read_labels(path: str | Path) -> dict[str, str]:
    """``path`` (or ``file``) -> facevalue label from a labels CSV; names the bad rows.

    Paths are normalised exactly as a manifest's (``discover.normalize``: ``./a.jpg`` and
    ``a\\b.jpg`` are ``a.jpg`` and ``a/b.jpg``), since the labels become the run's manifest
    and are then matched with the paths it writes.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise fer2013.DataError(f"{path}: not a readable labels CSV ({e})") from e
    key = "path" if "path" in columns else "file" if "file" in columns else None
    if key is None or "label" not in columns:
        raise fer2013.DataError(f"{path}: needs a path (or file) column and a label column; "
                                f"has {columns}")
    labels: dict[str, str] = {}
    for i, row in enumerate(rows, start=2):
        name = (row.get("label") or "").strip().lower()
        label = LABEL_ALIASES.get(name, name)
        if label not in LABELS:
            raise fer2013.DataError(f"{path}: row {i}: label {row.get('label')!r} is not one of "
                                    f"{', '.join(LABELS)} (or {', '.join(LABEL_ALIASES)})")
        try:
            photo = normalize(row.get(key) or "")
        except ManifestError as e:
            raise fer2013.DataError(f"{path}: row {i}: {e}") from e
        if not photo:
            raise fer2013.DataError(f"{path}: row {i}: empty {key}")
        if labels.setdefault(photo, label) != label:
            raise fer2013.DataError(f"{path}: row {i}: {photo} is labelled twice, differently")
    if not labels:
        raise fer2013.DataError(f"{path}: no labelled photos")
    return labels


def evaluate_photos(photos: str | Path, labels: str | Path, model: str | Path | None = None,
                    device: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE,
                    progress: Callable[[int, int], None] | None = None,
                    seed: int = 0) -> PhotoEvaluation:
    """Score the labelled photos under ``photos`` with ``facevalue score``; compare main faces.

    The labels CSV becomes the run's manifest, so exactly the labelled photos are scored, by
    the same code and defaults as ``facevalue score --manifest``: the accuracy here is the
    one a merge of that command's output with the labels gives. Videos are refused: their
    label would have to be per second and per person, which no labels CSV here says.
    """
    from facevalue.pipeline import score_folder

    truth = read_labels(labels)
    videos = [path for path in truth if is_video(path)]
    if videos:
        raise fer2013.DataError(f"{labels}: {videos[0]} is a video; facevalue evaluate scores "
                                "labelled photos, not videos (save the labelled frames as "
                                "photos)")
    with tempfile.TemporaryDirectory(prefix="facevalue-evaluate-") as scratch:
        manifest = Path(scratch, "manifest.csv")
        with manifest.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "company"])
            writer.writerows([photo, "labelled"] for photo in truth)
        faces, _ = score_folder(photos, manifest=manifest, model=model, device=device,
                                batch_size=batch_size, progress=progress)
    _check_found(faces, truth, photos)
    return score_photos(faces, truth, seed=seed)


def _check_found(faces: pd.DataFrame, truth: dict[str, str], photos: str | Path) -> None:
    """Refuse labels that name no photo at all, and say aloud how many name none.

    Labelled photos that are not there count as wrong (status ``missing``): a reader must
    hear of them, or the accuracy differs from the one the researcher thinks was measured.
    """
    missing = faces.loc[faces["status"] == MISSING, "path"].tolist()
    examples = ", ".join(missing[:3])
    if len(missing) == len(truth):
        raise fer2013.DataError(f"none of the {len(truth)} labelled photos is under {photos} "
                                f"(e.g. {examples}); label paths are relative to it")
    if missing:
        log.warning("%d of %d labelled photos are not under %s (e.g. %s); they count as wrong "
                    "(status missing): remove their rows to leave them out", len(missing),
                    len(truth), photos, examples)


def score_photos(faces: pd.DataFrame, truth: dict[str, str], seed: int = 0) -> PhotoEvaluation:
    """A PhotoEvaluation from a per-face table (as ``facevalue score`` writes) and labels."""
    main = faces[faces["face"].isna() | (faces["face"] == 0)].drop_duplicates("path")
    main = main[main["path"].isin(truth.keys())].set_index("path")
    column = {label: i for i, label in enumerate(LABELS)}
    actual = np.array([column[truth[p]] for p in truth])
    emotion = main["emotion"].reindex(list(truth)).where(
        main["status"].reindex(list(truth)) == OK)
    predicted = np.array([column.get(e, len(LABELS)) if isinstance(e, str) else len(LABELS)
                          for e in emotion])
    matrix = np.zeros((len(LABELS), len(LABELS) + 1), np.int64)
    np.add.at(matrix, (actual, predicted), 1)
    per_class = class_metrics(matrix)
    statuses = main["status"].reindex(list(truth)).fillna(MISSING).value_counts()
    # calibration is a property of the probabilities, so only photos that have them count
    scored = emotion.notna().to_numpy()
    probs = main[list(LABELS)].reindex(list(truth)).to_numpy(np.float64)[scored]
    return PhotoEvaluation(
        model=str(faces.attrs.get("facevalue.model", "")), n=len(actual),
        accuracy=float(np.mean(actual == predicted)),
        accuracy_ci=bootstrap_interval(actual == predicted, seed),
        macro_f1=float(np.mean([c.f1 for c in per_class if c.support])),
        kappa=cohen_kappa(matrix),
        ece=expected_calibration_error(probs, actual[scored]) if scored.any() else None,
        per_class=per_class,
        confusion=tuple(tuple(int(v) for v in row) for row in matrix),
        no_face=int(statuses.get(NO_FACE, 0)),
        not_scored=int(len(actual) - statuses.get(OK, 0) - statuses.get(NO_FACE, 0)),
        statuses={str(k): int(v) for k, v in statuses.items()})


def bootstrap_interval(correct: np.ndarray, seed: int = 0,
                       resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of accuracy over photos (or faces) resampled with
    replacement."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(correct), (resamples, len(correct)))
    accuracy = correct[draws].mean(axis=1)
    low, high = np.percentile(accuracy, [2.5, 97.5])
    return float(low), float(high)


def cohen_kappa(matrix: np.ndarray) -> float:
    """Cohen's kappa of labels (rows) against predictions (columns, ``none`` included).

    Agreement beyond chance: 1 is perfect, 0 what guessing with the same class shares gives.
    """
    square = np.zeros((matrix.shape[1], matrix.shape[1]))
    square[:matrix.shape[0]] = matrix
    n = square.sum()
    observed = np.trace(square) / n
    expected = float((square.sum(axis=1) * square.sum(axis=0)).sum()) / n**2
    return float((observed - expected) / (1 - expected)) if expected < 1 else 1.0


def format_photo_report(result: PhotoEvaluation) -> str:
    """The human-readable photo report: headline figures, labelled classes, confusion."""
    low, high = result.accuracy_ci
    lines = [f"{result.model}: {result.n} labelled photos "
             f"({result.no_face} without a face, {result.not_scored} not scored)",
             f"accuracy {result.accuracy:.4f} (95% CI {low:.4f}-{high:.4f})   "
             f"macro F1 {result.macro_f1:.4f}   kappa {result.kappa:.4f}"
             + ("" if result.ece is None else
                f"   ECE ({ECE_BINS} bins, scored photos) {result.ece:.4f}"), "",
             f"{'class':<10} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>8}"]
    lines += [f"{c.label:<10} {c.precision:>9.3f} {c.recall:>7.3f} {c.f1:>6.3f} {c.support:>8d}"
              for c in result.per_class if c.support]
    columns = [*LABELS, NO_PREDICTION]
    lines += ["", "confusion (rows label, columns predicted; none: no scored face):",
              " " * 10 + "".join(f"{label[:7]:>8}" for label in columns)]
    lines += [f"{label:<10}" + "".join(f"{v:>8d}" for v in row)
              for label, row in zip(LABELS, result.confusion, strict=True) if sum(row)]
    return "\n".join(lines)
