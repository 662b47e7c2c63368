"""A chunk of photos' faces, classified in one batch, and the per-face rows they make.

Fresh results and saved ones become rows through the same ``result_rows``, so a resumed run
writes exactly the rows an uninterrupted one writes, whichever engine scored the photo.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from facevalue import geometry as geom
from facevalue.classify import Classifier
from facevalue.columns import GEOMETRY
from facevalue.contract import LABELS
from facevalue.defaults import DEFAULT_BATCH_SIZE
from facevalue.discover import Photo
from facevalue.faces import PhotoFaces
from facevalue.state import BOX_COLUMNS, FACE_COLUMNS, PhotoResult
from facevalue.storage import display_path

# Faces per face-mesh call: its 192 x 192 activations make onnxruntime's buffers grow with
# the batch. 1,000 bench photos with --geometry: peak RSS 802 MB at 64, 503 MB at 16, 432 MB
# at 4 (and a little faster: 13.3, 12.3, 11.4 s); 250 MB without --geometry.
MESH_BATCH = 4


def classify_results(items: list[PhotoFaces], classifier: Classifier,
                     batch_size: int = DEFAULT_BATCH_SIZE,
                     mesh: geom.FaceMesh | None = None) -> list[PhotoResult]:
    """Classify all faces of a chunk of photos in one batch; one result per photo.

    With ``mesh``, their geometry is measured in one batch too and follows the
    probabilities in each face's row.
    """
    crops = [item.crops for item in items if item.crops is not None and len(item.crops)]
    probs = classifier.predict(np.concatenate(crops), batch_size) if crops else None
    if probs is not None and mesh is not None:
        meshes = np.concatenate([i.meshes for i in items if i.meshes is not None])
        matrices = np.concatenate([i.mesh_matrices for i in items if i.mesh_matrices is not None])
        probs = np.hstack([probs, mesh.measure(meshes, matrices, MESH_BATCH)])
    results, start = [], 0
    for item in items:
        count = len(item.boxes)
        results.append(photo_result(item, None if probs is None else probs[start:start + count]))
        start += count
    return results


def classify_chunk(items: list[PhotoFaces], classifier: Classifier,
                   batch_size: int = DEFAULT_BATCH_SIZE,
                   mesh: geom.FaceMesh | None = None) -> list[dict[str, Any]]:
    """Classify all faces of a chunk of photos in one batch; return their per-face rows."""
    results = classify_results(items, classifier, batch_size, mesh)
    return [row for item, result in zip(items, results, strict=True)
            for row in result_rows(item.photo, result)]


def photo_result(item: PhotoFaces, probs: np.ndarray | None) -> PhotoResult:
    """A photo's boxes and probabilities ((n, 7), or None without faces; geometry columns
    after them) as one record."""
    if not item.boxes or probs is None:
        return PhotoResult(item.status, item.error, item.faces_in_photo, item.sha256)
    boxes = np.array([[b.x, b.y, b.w, b.h, b.score] for b in item.boxes], np.float64)
    return PhotoResult(item.status, item.error, item.faces_in_photo, item.sha256,
                       np.hstack([boxes, probs.astype(np.float64)]))


def result_rows(photo: Photo, result: PhotoResult) -> list[dict[str, Any]]:
    """The per-face rows of a photo from its result, fresh or saved (so both give equal rows)."""
    base = {"path": display_path(photo.path), "company": photo.company, **photo.ids,
            "status": result.status, "error": result.error,
            "faces_in_photo": result.faces_in_photo, "photo_sha256": result.sha256}
    if not len(result.faces):
        return [base]
    rows = []
    for i, face in enumerate(result.faces.tolist()):
        probs = face[BOX_COLUMNS:FACE_COLUMNS]
        row = {**base, "face": i, "x": int(face[0]), "y": int(face[1]),
               "w": int(face[2]), "h": int(face[3]), "face_score": face[4],
               **dict(zip(LABELS, probs, strict=True)),
               "emotion": LABELS[probs.index(max(probs))]}
        if len(face) > FACE_COLUMNS:
            row |= geometry_values(face[FACE_COLUMNS:])
        rows.append(row)
    return rows


def geometry_values(values: list[float]) -> dict[str, Any]:
    """A face's geometry columns: NaN (not measurable) as null, geometry_ok as a bool."""
    row: dict[str, Any] = {k: None if math.isnan(v) else v
                           for k, v in zip(GEOMETRY, values, strict=True)}
    row["geometry_ok"] = bool(row["geometry_ok"])
    return row
