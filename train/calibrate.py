"""Temperature scaling: one scalar T so that softmax(logits / T) means what it says.

Scores feed regressions, so a face scored 0.8 happy should be right about 80% of the time.
A network trained with cross-entropy is usually over-confident (or, with label smoothing,
under-confident); dividing its logits by a single fitted T fixes most of that without
changing a single prediction (argmax is unaffected). T is fitted on PublicTest and folded
into the exported graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facevalue.evaluate import expected_calibration_error

# NLL is convex in 1/T, so a golden-section search over log T finds the global minimum.
LOG_T_RANGE = (math.log(0.05), math.log(20.0))
GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class Calibration:
    """The fitted temperature and what it did to calibration on PublicTest.

    ``ece_after`` is measured on the faces T was fitted on; ``ece_after_crossfit`` fits T on
    one half of them and measures on the other (and vice versa), the honest figure.
    """

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    ece_after_crossfit: float


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float64, stable for large logits."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels at ``temperature``."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, tolerance: float = 1e-4) -> float:
    """The T in [0.05, 20] that minimises NLL, by golden-section search over log T."""
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on zero faces")
    low, high = LOG_T_RANGE
    a, b = high - GOLDEN * (high - low), low + GOLDEN * (high - low)
    fa, fb = nll(logits, labels, math.exp(a)), nll(logits, labels, math.exp(b))
    while high - low > tolerance:
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - GOLDEN * (high - low)
            fa = nll(logits, labels, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + GOLDEN * (high - low)
            fb = nll(logits, labels, math.exp(b))
    return math.exp((low + high) / 2)


def _crossfit_ece(logits: np.ndarray, labels: np.ndarray) -> float:
    """ECE of probabilities whose T was fitted on the other half of the faces."""
    halves = (np.arange(len(labels)) % 2 == 0, np.arange(len(labels)) % 2 == 1)
    probs = np.empty(logits.shape, np.float64)
    for fit_on, apply_to in (halves, halves[::-1]):
        t = fit_temperature(logits[fit_on], labels[fit_on])
        probs[apply_to] = softmax(logits[apply_to], t)
    return expected_calibration_error(probs, labels)


def calibrate(logits: np.ndarray, labels: np.ndarray) -> Calibration:
    """Fit T on ``logits`` and report NLL and ECE (15 bins) before and after."""
    t = fit_temperature(logits, labels)
    return Calibration(
        temperature=t,
        nll_before=nll(logits, labels), nll_after=nll(logits, labels, t),
        ece_before=expected_calibration_error(softmax(logits), labels),
        ece_after=expected_calibration_error(softmax(logits, t), labels),
        ece_after_crossfit=_crossfit_ece(logits, labels) if len(labels) >= 4 else float("nan"))
