"""One photo, start to crops: read, decode small, detect, decode larger if a face is small,
align and crop.

``find_faces`` is the per-photo step every engine runs (a worker thread locally, an actor on
Ray): a plain function with no hidden state. What it returns is everything classification
needs, and a photo that cannot be scored comes back with its status instead of an error.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facevalue import decode
from facevalue import geometry as geom
from facevalue.columns import ERROR, MISSING, NO_FACE, OK, PhotoError
from facevalue.contract import Contract
from facevalue.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_FPS,
    DEFAULT_MAX_PIXELS,
    FACES_MODES,
)
from facevalue.detect import CROP_SCALE, Box, FaceDetector, crop_faces
from facevalue.discover import Photo
from facevalue.storage import Location, open_location

log = logging.getLogger(__name__)

# JPEGs are decoded at 1/2, 1/4 or 1/8 scale while the longer side stays at least DETECT_SIDE:
# libjpeg skips part of the work, and the detector sees the photo at 128 px (its tiles, half
# the photo, at 128 px too) anyway. 256 px: a face a sixth of the photo wide still fills a
# MIN_CROP_SIDE crop, so portraits need one decode; a 2048 px JPEG decodes at 1/8 in 0.84 of
# the time of 1/4 (bench/README.md, issue 22).
DETECT_SIDE = 256
# A face is cropped from that reduced copy when its square crop has at least this many pixels
# a side, and at least the classifier's input side (never enlarged); a smaller face is cropped
# from a larger decode. With eye-aligned crops, faces-dev faces cropped at 32-53 px from a
# 1/8-scale copy score as well as the same faces cropped from a larger decode (77.7% against
# 78.3%, bench/crop_side.py), so 48 is no loss, and it spares the speed corpus's second
# portrait (crops of 54-74 px at 256 px) a second decode: 14-18% less CPU a photo (issue 22).
MIN_CROP_SIDE = 48


@dataclass(frozen=True)
class Options:
    """How photos are scored (the models aside)."""

    faces: str = "main"  # "main" keeps each photo's largest face, "all" keeps every face
    max_pixels: int = DEFAULT_MAX_PIXELS
    batch_size: int = DEFAULT_BATCH_SIZE
    chunk_size: int = DEFAULT_CHUNK_SIZE
    geometry: bool = False  # also measure each face's geometry (facevalue.geometry)
    fps: float = DEFAULT_FPS  # video frames sampled a second

    def __post_init__(self) -> None:
        if self.faces not in FACES_MODES:
            raise ValueError(f"faces must be one of {FACES_MODES}, not {self.faces!r}")
        if min(self.max_pixels, self.batch_size, self.chunk_size) < 1:
            raise ValueError("max_pixels, batch_size and chunk_size must be positive")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"fps must be a positive number, not {self.fps}")


@dataclass(frozen=True)
class PhotoFaces:
    """One photo after decoding, detection and cropping: what classification needs.

    ``boxes`` are in original-image pixels (after EXIF rotation); ``crops`` are uint8
    ``(len(boxes), h, w, c)`` in the classifier's input format; with geometry, ``meshes``
    holds the face-mesh crops and ``mesh_matrices`` the (n, 2, 3) maps from their pixels to
    original pixels; ``seconds`` is the time spent on it per stage (read, decode, detect,
    crop).
    """

    photo: Photo
    status: str
    error: str | None = None
    faces_in_photo: int | None = None
    boxes: tuple[Box, ...] = ()
    crops: np.ndarray | None = None
    sha256: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    meshes: np.ndarray | None = None
    mesh_matrices: np.ndarray | None = None


class _Laps:
    """Per-stage seconds of one photo: each ``lap`` charges the time since the last lap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now


def find_faces(photo: Photo, root: str | Path | Location, detector: FaceDetector,
               contract: Contract, options: Options = Options(),
               data: bytes | None = None) -> PhotoFaces:
    """Read one photo from its folder (or take ``data``, its bytes), detect its faces, and
    crop the ones kept."""
    if photo.status is not None:
        return PhotoFaces(photo, photo.status, discovery_error(photo.status))
    sha256 = None
    laps = _Laps()
    try:
        data = open_location(root, check=False).read(photo.path) if data is None else data
        sha256 = hashlib.sha256(data).hexdigest()
        laps.lap("read")
        image = decode.decode(data, options.max_pixels, DETECT_SIDE)
        laps.lap("decode")
        larger = lambda side: decode.decode(data, options.max_pixels, side)  # noqa: E731
        return _detect(photo, image, larger, detector, contract, options, sha256, laps)
    except PhotoError as e:
        return PhotoFaces(photo, e.status, str(e), sha256=sha256, seconds=laps.seconds)
    except (cv2.error, ValueError, MemoryError) as e:
        log.warning("%s: %s: %s", photo.path, type(e).__name__, e)
        return PhotoFaces(photo, ERROR, f"{type(e).__name__}: {e}", sha256=sha256,
                          seconds=laps.seconds)


def discovery_error(status: str) -> str:
    """The error of a photo (or video) discovery gave a status: missing or unlisted."""
    if status == MISSING:
        return "listed in the manifest but no such photo"
    return "not listed in the manifest, so not scored"


def frame_faces(photo: Photo, frame: np.ndarray, detector: FaceDetector, contract: Contract,
                options: Options, sha256: str) -> PhotoFaces:
    """A video frame's faces, found as a photo's: on a copy reduced by 2, 4 or 8 while its
    longer side stays at least DETECT_SIDE, cropped from the whole frame when small in it."""
    laps = _Laps()
    height, width = frame.shape[:2]
    factor = next(f for f in (8, 4, 2, 1) if f == 1 or max(height, width) // f >= DETECT_SIDE)
    reduced = frame if factor == 1 else cv2.resize(
        frame, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
    image = decode.Decoded(reduced, height, width)
    laps.lap("decode")
    whole = decode.Decoded(frame, height, width)
    return _detect(photo, image, lambda side: whole, detector, contract, options, sha256, laps)


def _detect(photo: Photo, image: decode.Decoded, larger: Callable[[int], decode.Decoded],
            detector: FaceDetector, contract: Contract, options: Options, sha256: str,
            laps: _Laps) -> PhotoFaces:
    """Detect, keep, and crop: ``larger(side)`` gives the image again with at least ``side``
    pixels on its longer side, for faces too small in ``image``."""
    boxes = detector.detect(image.image)
    laps.lap("detect")
    if not boxes:
        return PhotoFaces(photo, NO_FACE, faces_in_photo=0, sha256=sha256,
                          seconds=laps.seconds)
    kept = boxes[:1] if options.faces == "main" else boxes
    source = _crop_source(image, kept, larger, max(MIN_CROP_SIDE, *contract.input_size))
    laps.lap("decode")
    factor = image.scale[0] / source.scale[0]  # detection pixels -> crop source pixels
    in_source = [box.scaled(factor) for box in kept]
    crops = crop_faces(source.image, in_source, size=contract.input_size,
                       color_mode=contract.color_mode)
    original = tuple(_to_original(box, image) for box in kept)
    meshes, matrices = _mesh_crops(source, in_source) if options.geometry else (None, None)
    laps.lap("crop")
    return PhotoFaces(photo, OK, None, len(boxes), original, crops, sha256,
                      laps.seconds, meshes, matrices)


def _mesh_crops(source: decode.Decoded, boxes: list[Box]) -> tuple[np.ndarray, np.ndarray]:
    """Face-mesh crops of the boxes, and maps from their pixels to original pixels."""
    pairs = [geom.mesh_crop(source.image, box) for box in boxes]
    to_original = np.diag([*source.scale, 1.0])[:2]  # source pixels -> original pixels
    matrices = [to_original @ np.vstack([matrix, [0, 0, 1]]) for _, matrix in pairs]
    return np.stack([crop for crop, _ in pairs]), np.stack(matrices)


def _crop_source(image: decode.Decoded, boxes: list[Box],
                 larger: Callable[[int], decode.Decoded], floor: int) -> decode.Decoded:
    """The image to crop from: the detection copy, or a larger decode if a face is small in it.

    Portraits keep the reduced copy (one decode); a face whose crop would have fewer than
    ``floor`` pixels a side in it (a small face in a large group photo) gets a decode with
    enough pixels for one, at most the full image.
    """
    side = CROP_SCALE * min(max(box.w, box.h) for box in boxes)
    if side >= floor or image.scale[0] == 1:
        return image
    needed = math.ceil(max(image.image.shape[:2]) * floor / max(side, 1))
    return larger(needed)


def _to_original(box: Box, image: decode.Decoded) -> Box:
    """A box from the decoded (maybe reduced) image to original pixels, clipped to the image."""
    sx, sy = image.scale
    x0, y0 = max(0, round(box.x * sx)), max(0, round(box.y * sy))
    x1 = min(image.width, round((box.x + box.w) * sx))
    y1 = min(image.height, round((box.y + box.h) * sy))
    eyes = None if box.eyes is None else (box.eyes[0] * sx, box.eyes[1] * sy,
                                          box.eyes[2] * sx, box.eyes[3] * sy)
    return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0), box.score, eyes)
