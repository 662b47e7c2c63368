"""What scoring finds, as typed records: a face's geometry, a scored face, a photo's result,
a video's result.

Every engine makes them (``facevalue.rows.classify_results``, ``facevalue.video_faces``), the
job turns them into rows (``facevalue.rows.result_rows``), and only ``facevalue.state``
packs them into bytes: a face's parts are read by name everywhere, never by column position.

A result says nothing about which photo it is (the job pairs it with its ``Photo``), so a
video frame's result is the same record: a frame's ``time`` on ``PhotoResult`` and a
``track`` on ``ScoredFace``, both None for photos. A video's result holds its frames'.
"""

from __future__ import annotations

from dataclasses import dataclass

from facevalue.contract import LABELS
from facevalue.detect import Box


@dataclass(frozen=True)
class Geometry:
    """A face's geometry (``facevalue.geometry``), in photo pixels and degrees.

    The fields are the per-face table's ``columns.GEOMETRY``, in that order; NaN is a
    measure that could not be taken (a null in the tables).
    """

    fwhr: float  # facial width-to-height ratio, the mean of the face and its mirror image
    yaw: float
    pitch: float
    roll: float
    eye_distance: float
    sharpness: float
    landmark_score: float
    geometry_ok: bool  # near-frontal, sharp and large enough for fWHR to be trusted


@dataclass(frozen=True)
class ScoredFace:
    """One classified face: its box in original-image pixels (with the detector's score),
    the class probabilities in ``LABELS`` order, and its geometry when measured."""

    box: Box
    probabilities: tuple[float, ...]
    geometry: Geometry | None = None
    track: int | None = None  # in a video: the person across frames, 0 the main track

    @property
    def emotion(self) -> str:
        """The most probable label (the first of equals)."""
        return LABELS[self.probabilities.index(max(self.probabilities))]


@dataclass(frozen=True)
class PhotoResult:
    """What scoring found in one photo, apart from which photo it is: what the state saves.

    ``faces`` are the faces kept (the largest, or all), largest first; ``faces_in_photo``
    counts every face found; ``sha256`` is the hash of the bytes scored (None when they
    could not be read); ``time`` is a video frame's, in seconds from the first frame.
    """

    status: str
    error: str | None = None
    faces_in_photo: int | None = None
    sha256: str | None = None
    faces: tuple[ScoredFace, ...] = ()
    time: float | None = None


@dataclass(frozen=True)
class VideoResult:
    """What scoring found in one video: a result per sampled frame, in time order.

    ``status`` is the video's: ``ok`` when a face was seen in some frame, ``no_face`` when
    frames were sampled but none showed a face, otherwise why it could not be sampled (then
    with no frames). ``duration`` is the container's length in seconds, when it gives one.
    """

    status: str
    error: str | None = None
    sha256: str | None = None
    duration: float | None = None
    frames: tuple[PhotoResult, ...] = ()
