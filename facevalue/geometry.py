"""Facial geometry from MediaPipe's face mesh: fWHR, head pose, and whether to trust them.

The facial width-to-height ratio (Carré & McCormick 2008) is the bizygomatic width over the
upper-face height, from the upper lip to the brow. Here both come from the 468-point face
mesh (``models/face-mesh.onnx``, built by ``tools/build_models.py``), measured in original
photo pixels after the face's roll is removed:

- width: landmarks 234 and 454, the face's outline at the cheekbones (zygion);
- height: landmark 0, the top of the upper lip at the philtrum, to the midpoint of 55 and
  285, the inner ends of the eyebrows (the brow line).

Pose comes from the mesh's own 3-D points (x, y in pixels, z relative depth on about the
same scale): the face's left-right axis (234 -> 454) and its up-down axis (10, the top of
the forehead, -> 152, the chin) give its orientation without a guessed camera. fWHR varies
with pose and lens (Hehman et al. 2013), so ``geometry_ok`` marks the faces a study should
keep: near-frontal, large and sharp enough, and surely a face.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from facevalue.classify import shipped_file
from facevalue.detect import Box, square_transform
from facevalue.errors import FacevalueError
from facevalue.records import Geometry
from facevalue.runtime import ModelSession

log = logging.getLogger(__name__)

MODEL_FILE = "face-mesh.onnx"
INPUT_SIZE = 192
# MediaPipe's own region of interest for the mesh: the detection box, turned level by the
# eyes, 1.5 times its size.
ROI_SCALE = 1.5
POINTS = 468
WIDTH_POINTS = (234, 454)
LIP_POINT = 0
BROW_POINTS = (55, 285)
AXIS_POINTS = (10, 152)  # forehead top, chin: the face's vertical
EYE_POINTS = ((33, 133), (362, 263))  # corners of the right and left eye
# geometry_ok limits (documented in the README): near-frontal, enough pixels, sharp, a face.
# Yaw shortens the measured width by cos(yaw): under 1.5% within 10 degrees. Pitch is read
# off the forehead-chin line, which leans back about 6 degrees on a level frontal face
# (the faces-dev median), hence the wider window. The limits were chosen on faces-dev's
# repeated people (bench/geometry.py), so its ICC there is optimistic.
MAX_YAW = 10.0
MAX_PITCH = 20.0
MIN_EYE_DISTANCE = 40.0  # original pixels between the eye centres
MIN_SHARPNESS = 10.0  # variance of the Laplacian of the 192 px gray face
MIN_LANDMARK_SCORE = 0.5


class LandmarkError(FacevalueError, ValueError):
    """Raised for a missing, corrupt or unexpected landmark model file."""


def default_model_path() -> Path:
    """The shipped face mesh: inside the installed package, else the checkout's models/."""
    return shipped_file(MODEL_FILE)


def mesh_crop(image: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """The face as the mesh takes it (192 x 192 RGB uint8), and the 2 x 3 matrix that maps
    its pixels back to ``image``'s."""
    matrix = square_transform(box, ROI_SCALE, 0.0, INPUT_SIZE)
    crop = cv2.warpAffine(image, matrix, (INPUT_SIZE, INPUT_SIZE),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    code = cv2.COLOR_GRAY2RGB if crop.ndim == 2 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(crop, code), matrix


class FaceMesh:
    """The face-mesh landmark model on one onnxruntime session; picklable like the detector."""

    def __init__(self, path: Path | None = None, device: str = "cpu",
                 threads: int | None = None) -> None:
        self.path = Path(path) if path is not None else default_model_path()
        self.model = ModelSession(self.path, device, threads, LandmarkError, "face mesh")
        outputs = {o.name: o.shape[1:] for o in self.model.session.get_outputs()}
        if outputs != {"landmarks": [1, 1, 3 * POINTS], "presence": [1, 1, 1]}:
            raise LandmarkError(f"{self.path} is not the face mesh (outputs {outputs})")
        self._input = self.model.session.get_inputs()[0].name
        self.name = f"face-mesh@{self.model.sha256[:12]}"

    def landmarks(self, crops: np.ndarray, batch_size: int = 64
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(n, 468, 3) points in crop pixels and (n,) face scores for (n, 192, 192, 3) crops."""
        points, scores = [], []
        for i in range(0, len(crops), batch_size):
            x = crops[i:i + batch_size].astype(np.float32) / 255.0
            found, presence = self.model.session.run(None, {self._input: x})
            points.append(found.reshape(-1, POINTS, 3))
            scores.append(0.5 + 0.5 * np.tanh(presence.reshape(-1) / 2))  # sigmoid
        if not points:
            return np.zeros((0, POINTS, 3), np.float32), np.zeros(0, np.float32)
        return np.concatenate(points), np.concatenate(scores)

    def measure(self, crops: np.ndarray, matrices: np.ndarray,
                batch_size: int = 64) -> list[Geometry]:
        """Each face's geometry, in photo pixels and degrees.

        fWHR is the mean of the face and its mirror image: the mesh's outline points move
        by a few per cent with the face's tilt and framing, and the mirror's errors partly
        cancel them (on the sample portraits, rotations of up to 15 degrees and scales of
        0.5-2x then move fWHR by under 3%, against 4% without). The other measures come from
        the face as photographed.
        """
        points, scores = self.landmarks(np.concatenate([crops, crops[:, :, ::-1]]),
                                        batch_size)
        n = len(crops)
        faces = []
        for i in range(n):
            face = measure_face(to_photo(points[i], matrices[i]), scores[i], sharpness(crops[i]))
            mirrored = measure_face(points[n + i], scores[n + i], face.sharpness)
            faces.append(replace(face, fwhr=(face.fwhr + mirrored.fwhr) / 2))
        return faces


def to_photo(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Mesh points from crop pixels to photo pixels; z is scaled like x and y."""
    xy = points[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    return np.column_stack([xy, points[:, 2] * scale])


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the 192 px gray face: low for a blurred or tiny face.

    The crop has the same size whatever the face's size in the photo, so a face upscaled
    from a few dozen pixels scores low, as an out-of-focus one does.
    """
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def pose(points: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from the mesh's 3-D points.

    Yaw is positive when the face turns towards the photo's left, pitch positive when the
    chin comes towards the camera, roll positive for a clockwise tilt in the photo.
    """
    across = points[WIDTH_POINTS[1]] - points[WIDTH_POINTS[0]]
    down = points[AXIS_POINTS[1]] - points[AXIS_POINTS[0]]
    x = across / np.linalg.norm(across)
    y = down - (down @ x) * x
    y /= np.linalg.norm(y)
    yaw = math.degrees(math.atan2(x[2], math.hypot(x[0], x[1])))
    pitch = math.degrees(math.atan2(-y[2], math.hypot(y[0], y[1])))
    roll = math.degrees(math.atan2(x[1], x[0]))
    return yaw, pitch, roll


def measure_face(points: np.ndarray, score: float, sharp: float) -> Geometry:
    """One face's geometry from its photo-pixel mesh points."""
    yaw, pitch, roll = pose(points)
    level = rotate(points[:, :2], -roll)
    width = abs(level[WIDTH_POINTS[1], 0] - level[WIDTH_POINTS[0], 0])
    brow = level[list(BROW_POINTS)].mean(axis=0)
    height = abs(level[LIP_POINT, 1] - brow[1])
    right, left = (points[list(pair), :2].mean(axis=0) for pair in EYE_POINTS)
    eyes = float(np.linalg.norm(left - right))
    ok = (abs(yaw) <= MAX_YAW and abs(pitch) <= MAX_PITCH and eyes >= MIN_EYE_DISTANCE
          and sharp >= MIN_SHARPNESS and score >= MIN_LANDMARK_SCORE)
    fwhr = width / height if height > 0 else math.nan
    return Geometry(fwhr, yaw, pitch, roll, eyes, sharp, float(score), bool(ok))


def rotate(xy: np.ndarray, degrees: float) -> np.ndarray:
    """Points turned by ``degrees`` (clockwise in the photo) about the origin."""
    theta = math.radians(degrees)
    c, s = math.cos(theta), math.sin(theta)
    return xy @ np.array([[c, s], [-s, c]])

