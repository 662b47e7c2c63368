"""A correction for real photos, fitted on labelled ones: numpy only (train/adapt.py reads the
features from the network's graph and folds the fitted correction into it).

A linear function of the network's penultimate features (the mean over the graph's views and
members, as the graph's own head sees them) added to its calibrated logits, then one
temperature,

    logits' = (logits + (features - mean) / sd @ dW + db) / T.

dW and db minimise class-balanced cross-entropy on the photos, plus the KL divergence from
the network's own predictions on a sample of FER2013 Training faces (the anchor: without it
the correction learns that classes the photos lack, fear and disgust on faces-dev, never
occur), plus an L2 penalty on dW whose strength is chosen by cross-validation on the photos.
Classes the labels lack get no term of their own, and the terms of the labelled classes sum
to zero for every face. T is fitted on the out-of-fold corrected logits.

The figures a user should report are the cross-validated ones (each photo predicted by a
correction fitted without it, its penalty chosen without it); a correction's score on the
photos it was fitted on is in-sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from facevalue.contract import LABELS
from facevalue.evaluate import bootstrap_interval, expected_calibration_error
from train import calibrate

log = logging.getLogger(__name__)

PENALTIES = (10.0, 3.0, 1.0, 0.3, 0.1)
FOLDS = 5
STEPS = 1500  # Nesterov steps of full-batch gradient descent (the problem is convex)
ANCHOR_WEIGHT = 1.0  # the anchor faces' total weight; the labelled photos' is 1


@dataclass(frozen=True)
class Correction:
    """``logits + features @ weights + bias``, in the features' own units."""

    weights: np.ndarray  # (features, 7) float32
    bias: np.ndarray  # (7,) float32
    temperature: float = 1.0  # divides the corrected logits (fitted on photos, see train.adapt)

    def apply(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return (logits + features @ self.weights + self.bias) / self.temperature


@dataclass(frozen=True)
class Anchor:
    """FER2013 faces whose predictions the correction should leave as they were."""

    features: np.ndarray
    logits: np.ndarray
    weight: float = ANCHOR_WEIGHT


def fit(features: np.ndarray, logits: np.ndarray, labels: np.ndarray, penalty: float,
        anchor: Anchor) -> Correction:
    """The correction minimising class-balanced cross-entropy on the photos
    + anchor.weight * KL(network || corrected) on the anchor faces + penalty * |dW|^2 / 2.

    Features are standardised (by the photos) so one penalty suits every feature; gradients
    of classes absent from ``labels`` are zeroed and those of the present ones centred,
    which keeps the constraints of the module docstring exactly.
    """
    present = np.isin(np.arange(len(LABELS)), np.unique(labels))
    mean, sd = features.mean(axis=0), features.std(axis=0) + 1e-6
    x = np.vstack([features, anchor.features])
    x = np.hstack([(x - mean) / sd, np.ones((len(x), 1))])  # the last column fits db
    z0 = np.vstack([logits, anchor.logits])
    counts = np.bincount(labels, minlength=len(LABELS))
    weight = np.concatenate([
        (1.0 / counts[labels]) / present.sum(),  # each labelled class weighs the same
        np.full(len(anchor.logits), anchor.weight / max(len(anchor.logits), 1))])
    target = np.vstack([np.eye(len(LABELS))[labels], calibrate.softmax(anchor.logits)])
    # Lipschitz constant of the gradient: softmax curvature <= 1/2 along any direction
    step = 1.0 / (0.5 * np.linalg.norm(x * np.sqrt(weight)[:, None], 2) ** 2 + penalty)
    ridge = np.ones((x.shape[1], 1))
    ridge[-1] = 0.0  # db is not penalised
    params = np.zeros((x.shape[1], len(LABELS)))  # dW rows, then db
    previous = params.copy()
    for t in range(STEPS):
        look = params + (t / (t + 3)) * (params - previous)
        residual = weight[:, None] * (calibrate.softmax(z0 + x @ look) - target)
        grad = x.T @ residual + penalty * ridge * look
        grad[:, ~present] = 0.0
        grad[:, present] -= grad[:, present].mean(axis=1, keepdims=True)
        previous, params = params, look - step * grad
    weights = params[:-1] / sd[:, None]
    return Correction(weights.astype(np.float32),
                      (params[-1] - mean @ weights).astype(np.float32))


def folds_of(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold per photo, stratified: each class is dealt round the folds after a shuffle."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), np.int64)
    start = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = (start + np.arange(len(members))) % folds
        start += len(members)
    return fold


def macro_recall(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean([np.mean(predicted[labels == c] == c) for c in np.unique(labels)]))


def choose_penalty(features: np.ndarray, logits: np.ndarray, labels: np.ndarray,
                   anchor: Anchor, seed: int) -> float:
    """The penalty of PENALTIES with the best cross-validated macro recall.

    Macro recall, not accuracy: the correction should read every labelled class, not lean on
    the labelled set's own class shares, which a researcher's photos will not share.
    """
    fold = folds_of(labels, FOLDS, seed)
    scores = []
    for penalty in PENALTIES:
        predicted = np.empty(len(labels), np.int64)
        for k in range(FOLDS):
            held = fold == k
            correction = fit(features[~held], logits[~held], labels[~held], penalty, anchor)
            predicted[held] = correction.apply(features[held], logits[held]).argmax(axis=1)
        scores.append(macro_recall(labels, predicted))
    return PENALTIES[int(np.argmax(scores))]


def cross_validate(features: np.ndarray, logits: np.ndarray, labels: np.ndarray,
                   anchor: Anchor, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold corrected logits, each fold's penalty chosen by an inner cross-validation
    on the other folds only (so the figures owe nothing to the photos they are measured on)."""
    fold = folds_of(labels, FOLDS, seed)
    corrected = np.empty(logits.shape)
    penalties = []
    for k in range(FOLDS):
        held = fold == k
        penalty = choose_penalty(features[~held], logits[~held], labels[~held], anchor,
                                 seed + 1)
        correction = fit(features[~held], logits[~held], labels[~held], penalty, anchor)
        corrected[held] = correction.apply(features[held], logits[held])
        penalties.append(penalty)
        log.info("cross-validation fold %d of %d: penalty %g, accuracy %.3f", k + 1, FOLDS,
                 penalty, np.mean(corrected[held].argmax(axis=1) == labels[held]))
    return corrected, penalties


def figures(labels: np.ndarray, probs: np.ndarray, missed: int, seed: int = 0,
            ece: float | None = None) -> dict:
    """Accuracy (with its bootstrap 95% interval), per-class recall and ECE (``probs``' own
    unless given); ``missed`` photos without a face count as wrong, as in ``facevalue
    evaluate`` (ECE is over faces)."""
    predicted = probs.argmax(axis=1)
    correct = np.concatenate([predicted == labels, np.zeros(missed, bool)])
    recall = {LABELS[c]: round(float(np.mean(predicted[labels == c] == c)), 4)
              for c in np.unique(labels)}
    return {"accuracy": round(float(correct.mean()), 4),
            "accuracy_ci": [round(v, 4) for v in bootstrap_interval(correct, seed)],
            "recall": recall,
            "ece": round(expected_calibration_error(probs, labels) if ece is None else ece, 4),
            "n": int(len(correct))}
