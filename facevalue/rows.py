"""A chunk of photos' faces, classified in batches, and the per-face rows they make.

Fresh results and saved ones become rows through the same ``result_rows``, so a resumed run
writes exactly the rows an uninterrupted one writes, whichever engine scored the photo. A
video's result makes a row per face per sampled frame (or one per frame without a face).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from facevalue import geometry as geom
from facevalue.classify import Classifier
from facevalue.columns import GEOMETRY, TIME, TRACK
from facevalue.contract import LABELS
from facevalue.defaults import DEFAULT_BATCH_SIZE
from facevalue.detect import Box
from facevalue.discover import Photo
from facevalue.faces import PhotoFaces
from facevalue.records import Geometry, PhotoResult, ScoredFace, VideoResult
from facevalue.storage import display_path

# Faces per face-mesh call: its 192 x 192 activations make onnxruntime's buffers grow with
# the batch. 1,000 bench photos with --geometry: peak RSS 802 MB at 64, 503 MB at 16, 432 MB
# at 4 (and a little faster: 13.3, 12.3, 11.4 s); 250 MB without --geometry.
MESH_BATCH = 4


def classify_results(items: Iterable[PhotoFaces], classifier: Classifier,
                     batch_size: int = DEFAULT_BATCH_SIZE,
                     mesh: geom.FaceMesh | None = None) -> list[PhotoResult]:
    """Classify the faces of a chunk of photos in batches; one result per photo.

    The batches are the chunk's faces in order, cut every ``batch_size`` faces, however
    ``items`` arrive: each is classified as soon as the photos in front of it have given its
    faces, so with a lazy ``items`` (the local engine's workers still finding the chunk's
    last photos) the classifier runs beside the finding instead of after it (issue 22).
    With ``mesh``, their geometry is measured in one batch at the end.
    """
    taken: list[PhotoFaces] = []
    probs: list[list[float]] = []
    waiting: list[np.ndarray] = []  # crops not yet classified, in order
    for item in items:
        taken.append(item)
        if item.crops is not None and len(item.crops):
            waiting.append(item.crops)
            if sum(len(crops) for crops in waiting) >= batch_size:
                crops = np.concatenate(waiting)
                full = len(crops) - len(crops) % batch_size
                probs += classifier.predict(crops[:full], batch_size).tolist()
                waiting = [crops[full:]]
    if any(len(crops) for crops in waiting):
        probs += classifier.predict(np.concatenate(waiting), batch_size).tolist()
    geometry: list[Geometry | None] = [None] * len(probs)
    if mesh is not None and probs:
        meshes = np.concatenate([i.meshes for i in taken if i.meshes is not None])
        matrices = np.concatenate([i.mesh_matrices for i in taken if i.mesh_matrices is not None])
        geometry = list(mesh.measure(meshes, matrices, MESH_BATCH))
    results, start = [], 0
    for item in taken:
        end = start + len(item.boxes)
        results.append(photo_result(item, probs[start:end], geometry[start:end]))
        start = end
    return results


def finish_chunk(items: Iterable[PhotoFaces | VideoResult], classifier: Classifier,
                 batch_size: int = DEFAULT_BATCH_SIZE,
                 mesh: geom.FaceMesh | None = None) -> list[PhotoResult | VideoResult]:
    """A chunk's results in order: its photos classified in batches as they come
    (``classify_results``), its videos as they came (scored whole by
    ``video_faces.score_video``)."""
    order: list[PhotoFaces | VideoResult] = []

    def photos() -> Iterator[PhotoFaces]:
        for item in items:
            order.append(item)
            if isinstance(item, PhotoFaces):
                yield item
    results = iter(classify_results(photos(), classifier, batch_size, mesh))
    return [next(results) if isinstance(item, PhotoFaces) else item for item in order]


def classify_chunk(items: list[PhotoFaces], classifier: Classifier,
                   batch_size: int = DEFAULT_BATCH_SIZE,
                   mesh: geom.FaceMesh | None = None) -> list[dict[str, Any]]:
    """Classify all faces of a chunk of photos (``classify_results``); return their per-face
    rows."""
    results = classify_results(items, classifier, batch_size, mesh)
    return [row for item, result in zip(items, results, strict=True)
            for row in result_rows(item.photo, result)]


def photo_result(item: PhotoFaces, probs: list[list[float]],
                 geometry: list[Geometry | None]) -> PhotoResult:
    """A photo's result from its boxes and, per box, its probabilities and geometry.

    The boxes keep what the tables show (the detector's eye points served the crop only).
    """
    faces = tuple(ScoredFace(Box(box.x, box.y, box.w, box.h, float(box.score)), tuple(p), g)
                  for box, p, g in zip(item.boxes, probs, geometry, strict=True))
    return PhotoResult(item.status, item.error, item.faces_in_photo, item.sha256, faces)


def result_rows(photo: Photo, result: PhotoResult | VideoResult) -> list[dict[str, Any]]:
    """The per-face rows of a photo from its result, fresh or saved (so both give equal rows)."""
    return list(iter_rows(photo, result))


def iter_rows(photo: Photo, result: PhotoResult | VideoResult) -> Iterator[dict[str, Any]]:
    """``result_rows`` one row at a time."""
    if isinstance(result, VideoResult):
        if not result.frames:  # the video could not be sampled: one row with its status
            yield _base(photo, PhotoResult(result.status, result.error, sha256=result.sha256))
        for frame in result.frames:
            yield from iter_rows(photo, frame)
        return
    base = _base(photo, result)
    if not result.faces:
        yield base
    for i, face in enumerate(result.faces):
        box = face.box
        row = {**base, "face": i, "x": box.x, "y": box.y, "w": box.w, "h": box.h,
               "face_score": box.score, **dict(zip(LABELS, face.probabilities, strict=True)),
               "emotion": face.emotion, TRACK: face.track}
        if face.geometry is not None:
            row |= geometry_values(face.geometry)
        yield row


def _base(photo: Photo, result: PhotoResult) -> dict[str, Any]:
    """What every row of a photo (or video frame) carries, with or without a face."""
    return {"path": display_path(photo.path), "company": photo.company, **photo.ids,
            "status": result.status, "error": result.error, TIME: result.time,
            "faces_in_photo": result.faces_in_photo, "photo_sha256": result.sha256}


def geometry_values(geometry: Geometry) -> dict[str, Any]:
    """A face's geometry columns, read by name: NaN (not measurable) as null."""
    values = {name: getattr(geometry, name) for name in GEOMETRY}
    return {name: None if math.isnan(value) else value for name, value in values.items()}
