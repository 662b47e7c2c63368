"""Load FER2013 from Kaggle's CSV (plain or gzipped) or from the image-folder layout.

Both training (``train/``) and ``facevalue evaluate`` read data through this module, so the
two can never disagree about label order, splits or pixel layout. It needs numpy, pandas and
OpenCV only: evaluating a model never imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facevalue.contract import LABELS
from facevalue.errors import FacevalueError

log = logging.getLogger(__name__)

SIZE = 48
SPLITS = ("Training", "PublicTest", "PrivateTest")
# Folder names used by the common Kaggle image-folder copy, in FER2013's label order.
FOLDER_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FOLDER_SPLITS = {"train": "Training", "test": "PublicTest"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


class DataError(FacevalueError, ValueError):
    """Raised for a malformed data set; the message names the file and row."""


@dataclass(frozen=True)
class FaceSet:
    """Faces as uint8 ``(n, 48, 48)``, labels as int64 ``(n,)``, and the split of each row."""

    images: np.ndarray
    labels: np.ndarray
    usage: np.ndarray

    def split(self, name: str) -> FaceSet:
        """Return the rows of one Usage split (Training, PublicTest or PrivateTest)."""
        keep = self.usage == name
        return FaceSet(self.images[keep], self.labels[keep], self.usage[keep])

    def __len__(self) -> int:
        return len(self.labels)


def load(path: str | Path) -> FaceSet:
    """Load a FER2013 CSV (``.csv`` or ``.csv.gz``) or an image-folder tree."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    return _load_csv(path)


def _load_csv(path: Path) -> FaceSet:
    try:
        frame = pd.read_csv(path, dtype={"emotion": str, "pixels": str, "Usage": str})
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable FER2013 CSV ({e})") from e
    missing = {"emotion", "pixels"} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {sorted(missing)}; "
                        "expected emotion,pixels,Usage")
    if "Usage" not in frame.columns:
        frame["Usage"] = "Training"
    images = _parse_all_pixels(frame["pixels"])
    if images is None:  # something is malformed: parse row by row to name the row
        images = np.empty((len(frame), SIZE, SIZE), np.uint8)
        for i, pixels in enumerate(frame["pixels"]):
            images[i] = _parse_pixels(pixels, f"{path}: row {i + 2}")
    labels = np.empty(len(frame), np.int64)
    for i, emotion in enumerate(frame["emotion"]):
        # i + 2: 1-based, after the header line, as a spreadsheet shows the row
        labels[i] = _parse_label(emotion, f"{path}: row {i + 2}")
    usage = frame["Usage"].fillna("").to_numpy(str)
    unknown = sorted(str(u) for u in set(usage) - set(SPLITS))  # str: no np.str_ repr
    if unknown:
        raise DataError(f"{path}: unknown Usage value(s) {unknown}; expected one of {SPLITS}")
    return FaceSet(images, labels, usage)


def _parse_label(value: object, where: str) -> int:
    try:
        label = int(str(value).strip())
    except ValueError:
        label = -1
    if not 0 <= label < len(LABELS):
        raise DataError(f"{where}: emotion {value!r} is not an integer 0-{len(LABELS) - 1}")
    return label


def _parse_all_pixels(column: pd.Series) -> np.ndarray | None:
    """Parse every row at once (3x faster than row by row); None if any row is malformed."""
    if column.isna().any():
        return None
    # np.fromstring's text mode reads 74M integers in C. Rows are joined with a -1 sentinel
    # (pixels are never negative): every row is well-formed iff the sentinels fall exactly
    # every 48*48 values.
    try:
        values = np.fromstring(" -1 ".join(column), dtype=np.int64, sep=" ")
    except ValueError:  # a non-number somewhere (numpy >= 2.3 raises, older ones warned)
        return None
    n, stride = len(column), SIZE * SIZE + 1
    if values.size != n * stride - 1:
        return None
    sentinels = np.flatnonzero(values < 0)
    if not np.array_equal(sentinels, np.arange(1, n) * stride - 1) or values.max() > 255:
        return None
    values = np.delete(values, sentinels)
    return values.reshape(-1, SIZE, SIZE).astype(np.uint8)


def _parse_pixels(value: object, where: str) -> np.ndarray:
    try:
        pixels = np.array(str(value).split(), dtype=np.int64)
    except ValueError as e:
        raise DataError(f"{where}: pixels are not space-separated integers") from e
    if pixels.size != SIZE * SIZE:
        raise DataError(f"{where}: {pixels.size} pixels, expected {SIZE * SIZE} (48x48)")
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{where}: pixel values outside 0-255")
    return pixels.reshape(SIZE, SIZE).astype(np.uint8)


def _load_folder(root: Path) -> FaceSet:
    import cv2

    images, labels, usage = [], [], []
    splits = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name.lower() in FOLDER_SPLITS]
    if not splits:
        raise DataError(f"{root}: expected train/ and/or test/ folders with one folder per emotion")
    for split_dir in splits:
        split = FOLDER_SPLITS[split_dir.name.lower()]
        for emotion_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            name = emotion_dir.name.lower()
            if name not in FOLDER_NAMES:
                raise DataError(f"{emotion_dir}: unknown emotion folder; expected {FOLDER_NAMES}")
            for file in sorted(emotion_dir.iterdir()):
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                image = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
                if image is None:
                    raise DataError(f"{file}: not a readable image")
                if image.shape != (SIZE, SIZE):
                    image = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
                images.append(image)
                labels.append(FOLDER_NAMES.index(name))
                # Kaggle's copy names test files PublicTest_*/PrivateTest_*: keep that split.
                usage.append(_usage_from_name(file.name, split))
    if not images:
        raise DataError(f"{root}: no images found")
    return FaceSet(np.stack(images), np.array(labels, np.int64), np.array(usage))


def _usage_from_name(name: str, default: str) -> str:
    for split in SPLITS:
        if name.startswith(split + "_"):
            return split
    return default


def fingerprint(faces: FaceSet) -> str:
    """sha256 over pixels and labels: names the training data exactly in a model card."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(faces.images).tobytes())
    digest.update(np.ascontiguousarray(faces.labels).tobytes())
    return digest.hexdigest()


def clean_training(train: FaceSet, held_out: FaceSet) -> tuple[FaceSet, dict[str, int]]:
    """Remove FER2013's known warts from the training rows; return what was removed.

    - rows that are exact pixel copies of a held-out (PublicTest/PrivateTest) face: training
      on them leaks the test set into the fit;
    - near-blank rows (pixel standard deviation < 1): there is no face to learn from;
    - exact duplicates within Training: keep one copy, or none when the copies disagree on
      the label.
    """
    keys = np.array([hashlib.blake2b(im.tobytes(), digest_size=16).digest()
                     for im in train.images])
    held = {hashlib.blake2b(im.tobytes(), digest_size=16).digest() for im in held_out.images}
    leak = np.array([k in held for k in keys], bool)
    blank = train.images.reshape(len(train), -1).std(axis=1) < 1.0
    first: dict[bytes, int] = {}
    conflict: set[bytes] = set()
    dup = np.zeros(len(train), bool)
    for i, (k, y) in enumerate(zip(keys, train.labels, strict=True)):
        if k in first:
            dup[i] = True
            if train.labels[first[k]] != y:
                conflict.add(k)
        else:
            first[k] = i
    conflicted = np.array([k in conflict for k in keys], bool)
    drop = leak | blank | dup | conflicted
    report = {"leak_into_test": int(leak.sum()), "near_blank": int(blank.sum()),
              "duplicate_copies": int((dup & ~conflicted).sum()),
              "conflicting_label_rows": int(conflicted.sum()), "kept": int((~drop).sum())}
    keep = ~drop
    return FaceSet(train.images[keep], train.labels[keep], train.usage[keep]), report
