"""Find faces with MediaPipe's BlazeFace (short range) on onnxruntime, and crop them like FER2013.

Why BlazeFace: OpenCV 5's headless wheel has no Haar cascades, YuNet's model is on no package
registry, and BlazeFace short-range (Apache-2.0) converts to a 230 kB ONNX file that runs in
about 2 ms on one CPU core. ``tools/build_models.py`` rebuilds the shipped file and
``bench/detector_choice.md`` holds the measurements behind the choice and the crop.

The model sees the whole photo letterboxed to 128x128, so it finds faces of at least ~1/9 of
the photo's longer side, or ~1/16 on tiles when the whole photo shows none: right for
portraits, not for large group photos.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facevalue.classify import shipped_file
from facevalue.errors import FacevalueError
from facevalue.runtime import ModelSession

log = logging.getLogger(__name__)

MODEL_FILE = "blazeface-short-range.onnx"
INPUT_SIZE = 128
# Defaults tuned on faces-dev (bench/detector_choice.md): one portrait gives one face.
DEFAULT_MIN_SCORE = 0.5
DEFAULT_NMS_IOU = 0.3
# A box whose area lies more than this share inside another box is the same face (drop_nested).
NESTED_LIMIT = 0.5
# Second look, only when the first finds nothing: BlazeFace short range misses faces that fill
# the whole frame (tight crops), and finds them once the photo is zoomed out by this margin.
ZOOM_OUT_MARGIN = 0.3
# Third look, only when the first two find nothing: tiles of this share of the longer side,
# so faces down to ~1/16 of the photo are found (the whole-photo look stops near 1/9).
TILE_SIZE = 0.5
# FER2013-like crop: a square of CROP_SCALE x the box's longer side, its centre CROP_SHIFT box
# heights below the box centre (negative: up, to take in the forehead as FER2013 faces do),
# turned about its centre so the eye line is level (ALIGN). Chosen on faces-dev by end-to-end
# accuracy (bench/framing.py; the first grid is in bench/detector_choice.md).
CROP_SCALE = 1.2
CROP_SHIFT = -0.1
ALIGN = True
# Roll beyond this is not trusted to the eye keypoints (a profile's far eye is a guess).
MAX_ROLL = 45.0
# Output columns of the model: box (cx, cy, w, h), then six (x, y) keypoints, of which the
# first two are the right and left eye.
KEYPOINTS = 6
COLOR_MODES = ("grayscale", "rgb")


class DetectorError(FacevalueError, ValueError):
    """Raised for a missing, corrupt or unexpected detector model file."""


@dataclass(frozen=True)
class Box:
    """A face: pixel box in the image passed to ``detect`` and the detector's confidence.

    ``eyes`` holds the centres of the person's right and left eye (x, y, x, y; the right eye
    is on the image's left in a frontal face) where the detector gives them: the crop is
    turned so that the eye line is level.
    """

    x: int
    y: int
    w: int
    h: int
    score: float
    eyes: tuple[float, float, float, float] | None = None

    @property
    def area(self) -> int:
        """Box area in pixels (faces are ranked by it: the main face is the largest)."""
        return self.w * self.h

    @property
    def roll(self) -> float:
        """The eye line's angle in degrees, clockwise in the image (0 without eyes)."""
        if self.eyes is None:
            return 0.0
        rx, ry, lx, ly = self.eyes
        return math.degrees(math.atan2(ly - ry, lx - rx))

    def scaled(self, factor: float) -> Box:
        """The box in an image ``factor`` times as large (for detection on a reduced copy)."""
        eyes = None if self.eyes is None else tuple(v * factor for v in self.eyes)
        return Box(round(self.x * factor), round(self.y * factor),
                   round(self.w * factor), round(self.h * factor), self.score,
                   eyes)  # type: ignore[arg-type]


def default_model_path() -> Path:
    """The shipped detector: inside the installed package, else the source checkout's models/."""
    return shipped_file(MODEL_FILE)


def ssd_anchors() -> np.ndarray:
    """The 896 anchor centres (x, y in 0..1) of BlazeFace short range.

    MediaPipe's SsdAnchorsCalculator with the model's options: 128x128 input, strides
    8, 16, 16, 16, two anchors per cell (one per layer), fixed anchor size; layers with the
    same stride share a grid, giving 16x16x2 + 8x8x6 anchors.
    """
    grids = []
    for stride, per_cell in ((8, 2), (16, 6)):
        cells = INPUT_SIZE // stride
        centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        xs, ys = np.meshgrid(centres, centres)
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        grids.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(grids)


def shrink(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize for the detector, fast on any photo.

    INTER_AREA from 3000 px to 128 px takes ~50 ms. A bilinear step to exactly twice the
    target first, then INTER_AREA by 2 (OpenCV's fast integer path), takes ~0.2 ms from the
    ~640 px detection copy (half the time of a step to 4x) and averages 16 source samples per
    output pixel; it finds the same faces on faces-dev at 256-3000 px (bench/detector_choice).
    """
    if image.shape[1] > 2 * width and image.shape[0] > 2 * height:
        image = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    method = cv2.INTER_AREA if image.shape[1] > width else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=method)


def letterbox(image: np.ndarray, margin: float = 0.0
              ) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Fit a BGR or gray uint8 image into the model input, keeping its aspect ratio.

    ``margin`` adds black space on every side, as a fraction of the image's longer side, which
    zooms out. Returns the (1, 128, 128, 3) float32 RGB tensor in [-1, 1], the scale factor and
    the (left, top) padding, which map boxes back to the image's pixels.
    """
    height, width = image.shape[:2]
    scale = INPUT_SIZE / (max(height, width) * (1 + 2 * margin))
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = shrink(image, new_w, new_h)
    if resized.ndim == 2:
        resized = cv2.cvtColor(resized, cv2.COLOR_GRAY2RGB)
    else:
        resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    left, top = (INPUT_SIZE - new_w) // 2, (INPUT_SIZE - new_h) // 2
    canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    canvas[top:top + new_h, left:left + new_w] = resized
    tensor = canvas.astype(np.float32)[None] / 127.5 - 1.0
    return tensor, scale, (left, top)


def decode_boxes(regressors: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Anchor offsets to (x0, y0, x1, y1, then six keypoints x, y) in the 128-px letterbox.

    Each row has 16 values; the first four are the box corners, the next two pairs the right
    and left eye.
    """
    offsets = anchors * INPUT_SIZE
    centres = regressors[:, :2] + offsets
    half = regressors[:, 2:4] / 2
    keypoints = regressors[:, 4:4 + 2 * KEYPOINTS] + np.tile(offsets, KEYPOINTS)
    return np.concatenate([centres - half, centres + half, keypoints], axis=1)


def _shift(points: np.ndarray, x: float, y: float) -> np.ndarray:
    """Add (x, y) to every point of decode_boxes' rows (corners and keypoints alike)."""
    return points + np.tile([x, y], points.shape[1] // 2)


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection over union of one (x0, y0, x1, y1) box with each row of ``others``."""
    top_left = np.maximum(box[:2], others[:, :2])
    bottom_right = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(others[:, 2:] - others[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float
                 ) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression.

    Each cluster of overlapping candidates becomes one box, the score-weighted mean of the
    cluster (keypoints averaged alike), with the best score. Averaging steadies the box between
    neighbouring anchors, which plain NMS would pick from at random. Overlap is measured on
    each row's first four values, the corners.
    """
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    kept = []
    while len(scores):
        cluster = iou(boxes[0, :4], boxes[:, :4]) > threshold
        cluster[0] = True
        weights = scores[cluster][:, None]
        kept.append(((boxes[cluster] * weights).sum(0) / weights.sum(), float(scores[0])))
        boxes, scores = boxes[~cluster], scores[~cluster]
    return kept


def drop_nested(faces: list[tuple[np.ndarray, float]], limit: float = NESTED_LIMIT
                ) -> list[tuple[np.ndarray, float]]:
    """Drop boxes that lie mostly inside a better-scored one (or contain it).

    On a face that fills the photo, BlazeFace also fires on an eye or cheek region inside the
    face; IoU is small there, so NMS keeps both. Two real faces never nest like that.
    """
    kept: list[tuple[np.ndarray, float]] = []
    for points, score in faces:  # best score first, as weighted_nms returns them
        nested = False
        box = points[:4]
        for other_points, _ in kept:
            other = other_points[:4]
            top_left = np.maximum(box[:2], other[:2])
            bottom_right = np.minimum(box[2:], other[2:])
            inter = np.prod(np.clip(bottom_right - top_left, 0, None))
            smaller = min(np.prod(box[2:] - box[:2]), np.prod(other[2:] - other[:2]))
            nested = nested or inter > limit * max(smaller, 1e-9)
        if not nested:
            kept.append((points, score))
    return kept


def to_pixels(points: np.ndarray, shape: tuple[int, ...], score: float) -> Box | None:
    """A Box from (x0, y0, x1, y1[, keypoints]), clipped to the image; None if nothing is left.

    The eyes are kept unclipped (a crop may reach past the image edge) when the eye line's
    roll is within MAX_ROLL.
    """
    x0, y0, x1, y1 = points[:4]
    height, width = shape[:2]
    x0, x1 = np.clip([x0, x1], 0, width)
    y0, y1 = np.clip([y0, y1], 0, height)
    x, y = round(float(x0)), round(float(y0))
    w, h = round(float(x1)) - x, round(float(y1)) - y
    eyes = tuple(float(v) for v in points[4:8]) if len(points) >= 8 else None
    box = Box(x, y, w, h, score, eyes)  # type: ignore[arg-type]
    if abs(box.roll) > MAX_ROLL:
        box = Box(x, y, w, h, score)
    return box if w > 0 and h > 0 else None


def check_image(image: np.ndarray) -> None:
    """Refuse what the detector cannot read, with a message naming the problem."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy image, got {getattr(image, 'dtype', image)!r}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected HxW gray or HxWx3 BGR, got shape {image.shape}")
    if min(image.shape[:2]) == 0:
        raise ValueError(f"empty image, shape {image.shape}")


class FaceDetector:
    """BlazeFace short range on one onnxruntime session, reused for every photo.

    Picklable: its ``ModelSession`` is opened again from the model file on unpickling, so
    process pools and Ray can ship a detector to their workers.
    """

    def __init__(self, path: Path | None = None, min_score: float = DEFAULT_MIN_SCORE,
                 device: str = "cpu", threads: int | None = None,
                 nms_iou: float = DEFAULT_NMS_IOU, zoom_out: float = ZOOM_OUT_MARGIN,
                 tiles: bool = True) -> None:
        self.path = Path(path) if path is not None else default_model_path()
        self.min_score = min_score
        self.nms_iou = nms_iou
        self.zoom_out = zoom_out
        self.tiles = tiles
        self.model = ModelSession(self.path, device, threads, DetectorError, "face detector")
        shapes = {o.name: o.shape for o in self.model.session.get_outputs()}
        expected = {"regressors": [1, 896, 16], "classificators": [1, 896, 1]}
        if shapes != expected or self.model.session.get_inputs()[0].shape != [1, 128, 128, 3]:
            raise DetectorError(f"{self.path} is not BlazeFace short range (outputs {shapes})")
        self._input = self.model.session.get_inputs()[0].name
        self._anchors = ssd_anchors()
        self.name = f"blazeface-short-range@{self.model.sha256[:12]}"

    def __repr__(self) -> str:
        return f"FaceDetector({self.name}, min_score={self.min_score})"

    def detect(self, image: np.ndarray) -> list[Box]:
        """Faces in a uint8 gray (HxW) or BGR (HxWx3) image, largest first.

        Boxes are in the pixels of ``image``; for a reduced copy of a photo, map them back
        with ``Box.scaled``. Photos where the first look finds nothing get a second, zoomed
        out (a face filling the frame), then a third on tiles (a face under ~1/9 of the
        photo's longer side).
        """
        check_image(image)
        corners, scores = self.candidates(image)
        if not len(scores) and self.zoom_out:
            corners, scores = self.candidates(image, self.zoom_out)
        if not len(scores) and self.tiles:
            corners, scores = self.tile_candidates(image)
        faces = drop_nested(weighted_nms(corners, scores, self.nms_iou))
        boxes = (to_pixels(box, image.shape, score) for box, score in faces)
        return sorted((b for b in boxes if b is not None), key=lambda b: -b.area)

    def candidates(self, image: np.ndarray, margin: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray]:
        """One pass of the model: boxes (x0, y0, x1, y1 in image pixels) over min_score."""
        tensor, scale, (left, top) = letterbox(image, margin)
        regressors, logits = self.model.session.run(None, {self._input: tensor})
        scores = 0.5 + 0.5 * np.tanh(logits[0, :, 0] / 2)  # sigmoid without exp overflow
        keep = scores >= self.min_score
        points = decode_boxes(regressors[0][keep], self._anchors[keep])
        return _shift(points, -left, -top) / scale, scores[keep]

    def tile_candidates(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidates from overlapping tiles half the photo's size: each face looks 2x larger."""
        corners, scores = [np.empty((0, 4 + 2 * KEYPOINTS))], [np.empty(0)]
        for x, y, tile in tiles(image):
            found, score = self.candidates(tile)
            corners.append(_shift(found, x, y))
            scores.append(score)
        return np.concatenate(corners), np.concatenate(scores)


def tiles(image: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
    """(x, y, view) of square tiles TILE_SIZE x the longer side, overlapping by half."""
    height, width = image.shape[:2]
    side = max(1, round(max(height, width) * TILE_SIZE))
    for y in tile_starts(height, side):
        for x in tile_starts(width, side):
            yield x, y, image[y:y + side, x:x + side]


def tile_starts(length: int, side: int) -> list[int]:
    """Evenly spaced tile origins along one axis, neighbours overlapping by at least half."""
    if length <= side:
        return [0]
    count = math.ceil((length - side) / (side / 2)) + 1
    return [round(i * (length - side) / (count - 1)) for i in range(count)]


def square_around(box: Box, scale: float, shift: float) -> tuple[int, int, int]:
    """(x0, y0, side) of the square crop for a box: ``scale`` x its longer side, shifted down."""
    side = max(1, round(max(box.w, box.h) * scale))
    cx, cy = box.x + box.w / 2, box.y + box.h / 2 + shift * box.h
    return round(cx - side / 2), round(cy - side / 2), side


def crop_square(image: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The square ``image[y0:y0+side, x0:x0+side]``, edge-replicated where it leaves the image."""
    height, width = image.shape[:2]
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y0 + side - height), max(0, x0 + side - width)
    inside = image[max(0, y0):min(height, y0 + side), max(0, x0):min(width, x0 + side)]
    if inside.size == 0:  # the square misses the image; replicate the nearest pixel
        ny, nx = min(max(y0, 0), height - 1), min(max(x0, 0), width - 1)
        inside, top, bottom, left, right = image[ny:ny + 1, nx:nx + 1], 0, side - 1, 0, side - 1
    if top or bottom or left or right:
        inside = cv2.copyMakeBorder(inside, top, bottom, left, right, cv2.BORDER_REPLICATE)
    return inside


def to_color_mode(image: np.ndarray, color_mode: str) -> np.ndarray:
    """Gray (HxWx1) or RGB (HxWx3) from a gray or BGR image."""
    if color_mode == "grayscale":
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return gray[..., None]
    code = cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(image, code)


def crop_faces(image: np.ndarray, boxes: Sequence[Box], size: tuple[int, int],
               color_mode: str, scale: float = CROP_SCALE, shift: float = CROP_SHIFT,
               align: bool = ALIGN) -> np.ndarray:
    """Square, FER2013-like crops of each box, resized to ``size`` = (height, width).

    With ``align``, a box with eyes is cut turned by its roll, so the eye line is level as in
    FER2013's faces, whose heads are mostly upright; the shift then follows the face's own
    vertical. Returns uint8 (n, h, w, 1) for ``"grayscale"`` or (n, h, w, 3) RGB for
    ``"rgb"``, ready for the classifier's normalisation. ``image`` is the gray or BGR photo
    the boxes refer to.
    """
    check_image(image)
    if color_mode not in COLOR_MODES:
        raise ValueError(f"color_mode must be one of {COLOR_MODES}, got {color_mode!r}")
    height, width = size
    out = np.empty((len(boxes), height, width, 1 if color_mode == "grayscale" else 3), np.uint8)
    for i, box in enumerate(boxes):
        if align and box.eyes is not None:
            square = turned_square(image, box, scale, shift, 4 * max(size))
        else:
            square = crop_square(image, *square_around(box, scale, shift))
        method = cv2.INTER_AREA if square.shape[0] > max(size) else cv2.INTER_LINEAR
        resized = cv2.resize(square, (width, height), interpolation=method)
        out[i] = to_color_mode(resized, color_mode).reshape(out.shape[1:])
    return out


def turned_square(image: np.ndarray, box: Box, scale: float, shift: float,
                  max_side: int) -> np.ndarray:
    """The crop square of ``box`` turned by its roll, at most ``max_side`` pixels a side.

    One bilinear warp samples the turned square (edges replicated, as crop_square does);
    capping its side at a few times the classifier's input keeps the warp cheap on large
    faces, and the INTER_AREA resize that follows still averages every output pixel.
    """
    work = max(1, min(round(max(box.w, box.h) * scale), max_side))
    return cv2.warpAffine(image, square_transform(box, scale, shift, work), (work, work),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def square_transform(box: Box, scale: float, shift: float, side: int) -> np.ndarray:
    """The 2 x 3 matrix from a ``side``-pixel square crop of ``box`` to image pixels.

    The square is ``scale`` x the box's longer side, turned by the box's roll, its centre
    ``shift`` box heights along the face's own down direction from the box centre.
    """
    extent = max(1.0, max(box.w, box.h) * scale)
    theta = math.radians(box.roll)
    cos, sin = math.cos(theta), math.sin(theta)
    # the face's own down direction is (-sin, cos): shift the centre along it
    cx = box.x + box.w / 2 - sin * shift * box.h
    cy = box.y + box.h / 2 + cos * shift * box.h
    step = extent / side
    # crop pixel p -> image: centre + step * R (p - (side - 1) / 2), R = rotation by theta
    rotation = np.array([[cos, -sin], [sin, cos]]) * step
    offset = np.array([cx, cy]) - rotation @ np.full(2, (side - 1) / 2)
    return np.hstack([rotation, offset[:, None]])
