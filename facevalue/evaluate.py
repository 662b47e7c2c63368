"""Score an ONNX classifier on labelled FER2013 faces: accuracy, per-class figures, calibration.

It runs the exported model through onnxruntime only, exactly as ``facevalue score`` will, so
the accuracy a model card claims is the accuracy of the file that ships, not of the Keras
model it came from. TensorFlow is never imported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facevalue import fer2013
from facevalue.classify import DEFAULT_BATCH_SIZE, load_classifier
from facevalue.contract import LABELS, Contract

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
    macro_f1: float
    ece: float
    per_class: tuple[ClassMetrics, ...]
    confusion: tuple[tuple[int, ...], ...]  # rows: true label, columns: predicted

    def to_dict(self) -> dict:
        """A JSON-ready dict; ``per_class`` is keyed by label."""
        return {
            "model": self.model, "split": self.split, "n": self.n,
            "accuracy": self.accuracy, "macro_f1": self.macro_f1, "ece": self.ece,
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
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
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
    matrix = confusion_matrix(labels, probs.argmax(axis=1))
    per_class = class_metrics(matrix)
    return Evaluation(
        model=model, split=split, n=int(len(labels)),
        accuracy=float(np.trace(matrix) / len(labels)),
        macro_f1=float(np.mean([c.f1 for c in per_class])),
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
    lines = [f"{result.model} on {result.split}: {result.n} faces",
             f"accuracy {result.accuracy:.4f}   macro F1 {result.macro_f1:.4f}   "
             f"ECE ({ECE_BINS} bins) {result.ece:.4f}", "",
             f"{'class':<10} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>8}"]
    lines += [f"{c.label:<10} {c.precision:>9.3f} {c.recall:>7.3f} {c.f1:>6.3f} {c.support:>8d}"
              for c in result.per_class]
    lines += ["", "confusion (rows true, columns predicted):",
              " " * 10 + "".join(f"{label[:7]:>8}" for label in LABELS)]
    lines += [f"{label:<10}" + "".join(f"{v:>8d}" for v in row)
              for label, row in zip(LABELS, result.confusion, strict=True)]
    return "\n".join(lines)
