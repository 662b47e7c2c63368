"""Generated FER2013 data for the tests, in both layouts the loader reads (CSV and folders).

Faces are noise with a class-dependent brightness gradient, so a network fitted for one
epoch has something to learn and different classes give different scores.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from facevalue.fer2013 import FOLDER_NAMES


def make_faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 48x48 faces and their labels, every class present once n >= 7."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 7
    ramp = np.linspace(0, 1, 48, dtype=np.float32)
    angle = labels[:, None, None] * np.pi / 7
    gradient = np.cos(angle) * ramp[None, :, None] + np.sin(angle) * ramp[None, None, :]
    noise = rng.normal(0, 25, (n, 48, 48))
    images = np.clip(60 + 100 * gradient + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def fer_rows(n_train: int, n_test: int, seed: int = 0):
    """Images, labels and Usage for ``n_train`` Training and ``n_test`` PublicTest faces."""
    images, labels = make_faces(n_train + n_test, seed)
    usage = np.array(["Training"] * n_train + ["PublicTest"] * n_test, dtype="<U11")
    return images, labels, usage


def write_fer_csv(path: Path, images: np.ndarray, labels: np.ndarray,
                  usage: np.ndarray) -> Path:
    """Kaggle's ``emotion,pixels,Usage`` layout; gzipped when ``path`` ends in ``.gz``."""
    pixels = [" ".join(map(str, im.ravel())) for im in images]
    pd.DataFrame({"emotion": labels, "pixels": pixels, "Usage": usage}).to_csv(path, index=False)
    return path


def write_fer_folder(root: Path, images: np.ndarray, labels: np.ndarray,
                     usage: np.ndarray) -> Path:
    """The image-folder layout ``train|test/<emotion>/<Usage>_<i>.png`` (lossless)."""
    for i, (image, label, split) in enumerate(zip(images, labels, usage, strict=True)):
        folder = root / ("train" if split == "Training" else "test") / FOLDER_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{split}_{i:05d}.png"), image)
    return root
