"""Labelled real photos as training and validation faces, cropped as ``facevalue score`` crops.

A network trained on FER2013 alone misreads real press photos (neutral faces as anger). Real
labelled photos fix that only if training sees them exactly as scoring will: the same
detector, decode scale, eye alignment and crop. So the crops come from facevalue's own
per-photo step (``facevalue.faces.find_faces``), main face only, and are cached beside the
photos' labels by a key of everything that decides them (the labels file, each photo's
bytes, facevalue's version), so a rerun of ``fit`` costs no detection.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from facevalue import __version__
from facevalue.contract import LABELS, Contract
from facevalue.detect import FaceDetector
from facevalue.discover import discover
from facevalue.evaluate import read_labels
from facevalue.faces import DETECT_SIDE, MIN_CROP_SIDE, Options, find_faces
from facevalue.fer2013 import DataError, FaceSet

log = logging.getLogger(__name__)

# The usage name photo rows carry inside a FaceSet, beside FER2013's Training/PublicTest.
PHOTO_USAGE = "Photos"


def main_face_crops(photos: Path, truth: dict[str, str], contract: Contract
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """Crops of each labelled photo's main face as ``facevalue score`` makes them, their
    label indices, and how many labelled photos gave no crop."""
    found = {photo.path: photo for photo in discover(photos)}
    missing = [p for p in truth if p not in found]
    if missing:
        raise DataError(f"{len(missing)} labelled photo(s) are not under {photos}, "
                        f"e.g. {missing[0]}")
    detector = FaceDetector()
    crops, labels = [], []
    for path, label in truth.items():
        result = find_faces(found[path], photos, detector, contract, Options())
        if result.crops is not None:
            crops.append(result.crops[0])
            labels.append(LABELS.index(label))
    if not crops:
        raise DataError(f"no faces found in the labelled photos under {photos}")
    return np.stack(crops), np.array(labels), len(truth) - len(crops)


def fingerprint(photos: Path, labels: Path) -> str:
    """sha256 over the labels file, every labelled photo's bytes, facevalue's version, the
    detector and the decode/crop sizes: what decides the crops (and what a run's config.json
    records as its photo data)."""
    crop_path = f"{__version__} {FaceDetector().name} {DETECT_SIDE} {MIN_CROP_SIDE}"
    digest = hashlib.sha256(crop_path.encode())
    digest.update(labels.read_bytes())
    for path in sorted(read_labels(labels)):
        target = photos / path
        digest.update(path.encode())
        digest.update(target.read_bytes() if target.is_file() else b"<missing>")
    return digest.hexdigest()


def load_photos(photos: str | Path, labels: str | Path, contract: Contract,
                cache: str | Path | None = None) -> tuple[FaceSet, str]:
    """The labelled photos' main-face crops as a FaceSet (usage ``Photos``) and their
    fingerprint; photos without a face are left out (logged).

    ``cache`` (a folder, default ``~/.cache/facevalue/photos``) keeps the crops by
    fingerprint: never inside the repository, since the photos may not be redistributed.
    """
    photos, labels = Path(photos), Path(labels)
    if contract.color_mode != "grayscale":
        raise DataError("photo training faces are made for grayscale classifiers only")
    key = fingerprint(photos, labels)
    folder = Path(cache) if cache else Path.home() / ".cache" / "facevalue" / "photos"
    cached = folder / f"{key[:32]}.npz"
    if cached.exists():
        with np.load(cached) as f:
            images, y = f["images"], f["labels"]
    else:
        log.info("cropping the labelled photos under %s (once; cached in %s)", photos, folder)
        crops, y, missed = main_face_crops(photos, read_labels(labels), contract)
        images = crops[..., 0]
        log.info("%d photos cropped, %d without a face left out", len(y), missed)
        save_cache(cached, lambda f: np.savez_compressed(f, images=images, labels=y))
    return FaceSet(images, y.astype(np.int64), np.full(len(y), PHOTO_USAGE)), key


def save_cache(cached: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write a cache file whole or not at all, readable like any other file.

    Through a temporary file beside it and a rename, so a run killed mid-write leaves no half
    a cache for the next run to trust; opened plainly (not as a private temp file), so it
    gets the umask's usual mode.
    """
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            write(f)
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)
