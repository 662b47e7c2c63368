"""One video, start to result: sample its frames, find and classify their faces as a photo's,
link them into tracks, and keep the main track's faces (or all).

``score_video`` is the per-video step every engine runs as one unit of work (a worker thread
locally, an actor on Ray): a plain function, like ``faces.find_faces``, and a video that
cannot be scored comes back with its status instead of an error.

Memory stays flat however long the video is: frames are decoded as they are sampled, their
faces classified every ``batch_size`` faces, and only the scored faces (a box, seven
probabilities) are kept until the end, when the tracks are linked. The main track is known
only then, so every face is classified; ``--faces main`` drops the others afterwards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import av.error
import cv2

from facevalue import track, video
from facevalue.classify import Classifier
from facevalue.columns import ERROR, NO_FACE, OK, PhotoError
from facevalue.detect import FaceDetector
from facevalue.discover import Photo
from facevalue.faces import Options, PhotoFaces, discovery_error, frame_faces
from facevalue.geometry import FaceMesh
from facevalue.records import PhotoResult, VideoResult
from facevalue.rows import classify_results
from facevalue.storage import Location, open_location

log = logging.getLogger(__name__)

HASH_BLOCK = 2**20  # bytes read at a time for a video's sha256


def score_video(photo: Photo, root: str | Path | Location, detector: FaceDetector,
                classifier: Classifier, options: Options, mesh: FaceMesh | None = None,
                on_frame: Callable[[], None] | None = None) -> VideoResult:
    """Sample a video at ``options.fps`` and score every sampled frame's faces; ``on_frame``
    is called as each frame is sampled (a progress bar's count)."""
    if photo.status is not None:
        return VideoResult(photo.status, discovery_error(photo.status))
    location = open_location(root, check=False)
    sha256 = None
    try:
        sha256 = file_sha256(location, photo.path)
        with location.open(photo.path) as file:
            length = video.duration(file)
        with location.open(photo.path) as file:
            frames = list(_frames(photo, file, detector, classifier, options, mesh, sha256,
                                  on_frame))
    except PhotoError as e:  # VideoError, or storage's ReadError
        return VideoResult(e.status, str(e), sha256)
    except (cv2.error, av.error.FFmpegError, ValueError, MemoryError, OSError) as e:
        log.warning("%s: %s: %s", photo.path, type(e).__name__, e)
        return VideoResult(ERROR, f"{type(e).__name__}: {e}", sha256)
    return VideoResult(_status(frames), None, sha256, length, _tracked(frames, options.faces))


def file_sha256(location: Location, path: str) -> str:
    """The sha256 of a file's bytes, read a block at a time (a video may not fit in memory)."""
    digest = hashlib.sha256()
    with location.open(path) as file:
        while block := file.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _frames(photo: Photo, file: video.Source, detector: FaceDetector, classifier: Classifier,
            options: Options, mesh: FaceMesh | None, sha256: str,
            on_frame: Callable[[], None] | None) -> Iterator[PhotoResult]:
    """Each sampled frame's result with every face found (the tracks decide later which are
    kept), classified a batch of faces at a time."""
    every = dataclasses.replace(options, faces="all")
    pending: list[tuple[float, PhotoFaces | PhotoResult]] = []
    waiting = 0  # faces in ``pending``
    for frame in video.sample_frames(file, options.fps, options.max_pixels):
        if on_frame is not None:
            on_frame()
        if frame.image is None:  # refused (too large): a row with its status
            error = frame.error
            status, message = (error.status, str(error)) if error else (ERROR, None)
            pending.append((frame.time, PhotoResult(status, message, sha256=sha256)))
        else:
            found = frame_faces(photo, frame.image, detector, classifier.contract, every, sha256)
            pending.append((frame.time, found))
            waiting += len(found.boxes)
        if waiting >= options.batch_size:
            yield from _classified(pending, classifier, options, mesh)
            pending, waiting = [], 0
    yield from _classified(pending, classifier, options, mesh)


def _classified(pending: list[tuple[float, PhotoFaces | PhotoResult]], classifier: Classifier,
                options: Options, mesh: FaceMesh | None) -> Iterator[PhotoResult]:
    """The frames' results in order, their faces classified in one batch, with their times."""
    found = [item for _, item in pending if isinstance(item, PhotoFaces)]
    results = iter(classify_results(found, classifier, options.batch_size, mesh))
    for time, item in pending:
        result = next(results) if isinstance(item, PhotoFaces) else item
        yield dataclasses.replace(result, time=time)


def _tracked(frames: list[PhotoResult], faces: str) -> tuple[PhotoResult, ...]:
    """The frames with each face's track (0 the main one), only the main track's with
    ``faces`` main. A frame keeps its status and face count when its faces are dropped."""
    boxes = [[face.box for face in frame.faces] for frame in frames]
    numbers = track.rank_tracks(boxes, track.link_tracks([f.time or 0.0 for f in frames], boxes))
    tracked = []
    for frame, tracks in zip(frames, numbers, strict=True):
        kept = tuple(dataclasses.replace(face, track=n)
                     for face, n in zip(frame.faces, tracks, strict=True)
                     if faces == "all" or n == 0)
        tracked.append(dataclasses.replace(frame, faces=kept))
    return tuple(tracked)


def _status(frames: list[PhotoResult]) -> str:
    """The video's status: ok with a face in any frame, no_face with frames but no face,
    else its frames' (all refused)."""
    statuses = {frame.status for frame in frames}
    for status in (OK, NO_FACE):
        if status in statuses:
            return status
    return frames[0].status
