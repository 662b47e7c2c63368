"""Wire the steps: discover -> decode -> detect -> classify -> aggregate -> write.

Photos stream through in chunks: each photo is decoded, searched for faces and cropped on
its own (``find_faces``, a plain function with no hidden state that a process pool or a
Ray task can call), then the chunk's faces are classified in one batch and turned into rows
(``classify_chunk``), which are appended to the Parquet file as one row group. Memory stays
flat however many photos there are, and every photo yields at least one row.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa

from facevalue import __version__, aggregate, decode, discover, write
from facevalue.classify import (
    DEFAULT_BATCH_SIZE,
    Classifier,
    DeviceError,
    ModelError,
    load_classifier,
    resolve_providers,
)
from facevalue.contract import LABELS, Contract
from facevalue.detect import Box, DetectorError, FaceDetector, crop_faces
from facevalue.discover import ManifestError, Photo

log = logging.getLogger(__name__)

FACES_MODES = ("main", "all")
ERROR = "error"  # an unexpected failure on one photo; the run goes on
DEFAULT_CHUNK_SIZE = 256
# Errors that are the user's to fix (a bad model, manifest or device); the CLI shows the message.
USER_ERRORS = (ModelError, DeviceError, ManifestError, DetectorError)


@dataclass(frozen=True)
class Options:
    """How photos are scored (the models aside)."""

    faces: str = "main"  # "main" keeps each photo's largest face, "all" keeps every face
    max_pixels: int = decode.DEFAULT_MAX_PIXELS
    batch_size: int = DEFAULT_BATCH_SIZE
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def __post_init__(self) -> None:
        if self.faces not in FACES_MODES:
            raise ValueError(f"faces must be one of {FACES_MODES}, not {self.faces!r}")
        if min(self.max_pixels, self.batch_size, self.chunk_size) < 1:
            raise ValueError("max_pixels, batch_size and chunk_size must be positive")


@dataclass(frozen=True)
class PhotoFaces:
    """One photo after decoding, detection and cropping: what classification needs.

    ``boxes`` are in original-image pixels (after EXIF rotation); ``crops`` are uint8
    ``(len(boxes), h, w, c)`` in the classifier's input format.
    """

    photo: Photo
    status: str
    error: str | None = None
    faces_in_photo: int | None = None
    boxes: tuple[Box, ...] = ()
    crops: np.ndarray | None = None
    sha256: str | None = None


class Scores(NamedTuple):
    """What ``score_folder`` returns; both frames carry the run's metadata in ``.attrs``."""

    faces: pd.DataFrame
    companies: pd.DataFrame


def find_faces(photo: Photo, root: str | Path, detector: FaceDetector, contract: Contract,
               options: Options = Options(), data: bytes | None = None) -> PhotoFaces:
    """Decode one photo, detect its faces, and crop the ones kept (``data``: bytes if read)."""
    if photo.status is not None:
        return PhotoFaces(photo, photo.status, _discovery_error(photo.status))
    sha256 = None
    try:
        data = decode.read_bytes(Path(root, photo.path)) if data is None else data
        sha256 = hashlib.sha256(data).hexdigest()
        image = decode.decode(data, options.max_pixels)
        return _detect(photo, image, detector, contract, options, sha256)
    except decode.DecodeError as e:
        return PhotoFaces(photo, e.status, str(e), sha256=sha256)
    except (cv2.error, ValueError, MemoryError) as e:
        log.warning("%s: %s: %s", photo.path, type(e).__name__, e)
        return PhotoFaces(photo, ERROR, f"{type(e).__name__}: {e}", sha256=sha256)


def _discovery_error(status: str) -> str:
    if status == discover.MISSING:
        return "listed in the manifest but no such photo"
    return "not listed in the manifest, so not scored"


def _detect(photo: Photo, image: decode.Decoded, detector: FaceDetector, contract: Contract,
            options: Options, sha256: str) -> PhotoFaces:
    boxes = detector.detect(image.image)
    if not boxes:
        return PhotoFaces(photo, aggregate.NO_FACE, faces_in_photo=0, sha256=sha256)
    kept = boxes[:1] if options.faces == "main" else boxes
    crops = crop_faces(image.image, kept, size=contract.input_size,
                       color_mode=contract.color_mode)
    original = tuple(_to_original(box, image) for box in kept)
    return PhotoFaces(photo, aggregate.OK, None, len(boxes), original, crops, sha256)


def _to_original(box: Box, image: decode.Decoded) -> Box:
    """A box from the decoded (maybe reduced) image to original pixels, clipped to the image."""
    sx, sy = image.scale
    x0, y0 = max(0, round(box.x * sx)), max(0, round(box.y * sy))
    x1 = min(image.width, round((box.x + box.w) * sx))
    y1 = min(image.height, round((box.y + box.h) * sy))
    return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0), box.score)


def classify_chunk(items: list[PhotoFaces], classifier: Classifier,
                   batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict[str, Any]]:
    """Classify all faces of a chunk of photos in one batch; return their per-face rows."""
    crops = [item.crops for item in items if item.crops is not None and len(item.crops)]
    probs = classifier.predict(np.concatenate(crops), batch_size) if crops else None
    rows, start = [], 0
    for item in items:
        count = len(item.boxes)
        rows += face_rows(item, None if probs is None else probs[start:start + count])
        start += count
    return rows


def face_rows(item: PhotoFaces, probs: np.ndarray | None) -> list[dict[str, Any]]:
    """Per-face rows of one photo (one row with nulls when it has no face to report)."""
    base = {"path": item.photo.path, "company": item.photo.company, **item.photo.ids,
            "status": item.status, "error": item.error, "faces_in_photo": item.faces_in_photo,
            "photo_sha256": item.sha256}
    if not item.boxes or probs is None:
        return [base]
    return [{**base, "face": i, "x": box.x, "y": box.y, "w": box.w, "h": box.h,
             "face_score": box.score, **dict(zip(LABELS, p.tolist(), strict=True)),
             "emotion": LABELS[int(np.argmax(p))]}
            for i, (box, p) in enumerate(zip(item.boxes, probs, strict=True))]


def score_photos(photos: Iterable[Photo], root: str | Path, detector: FaceDetector,
                 classifier: Classifier, options: Options = Options(),
                 progress: Callable[[int], None] | None = None
                 ) -> Iterator[list[dict[str, Any]]]:
    """Score photos chunk by chunk, yielding each chunk's per-face rows."""
    iterator = iter(photos)
    while chunk := list(islice(iterator, options.chunk_size)):
        items = [find_faces(p, root, detector, classifier.contract, options) for p in chunk]
        yield classify_chunk(items, classifier, options.batch_size)
        if progress is not None:
            progress(len(chunk))


def score_folder(photos: str | Path, out: str | Path | None = None, *,
                 companies: str | Path | None = None, manifest: str | Path | None = None,
                 model: str | Path | None = None, device: str = "auto", faces: str = "main",
                 batch_size: int = DEFAULT_BATCH_SIZE, max_pixels: int = decode.DEFAULT_MAX_PIXELS,
                 threads: int | None = None, progress: Callable[[int, int], None] | None = None,
                 arguments: Mapping[str, Any] | None = None) -> Scores:
    """Score every photo under ``photos``; return per-face and per-company DataFrames.

    With ``out``, also write the per-face Parquet there and the per-company one to
    ``companies`` (default ``<out stem>.companies.parquet``), each atomically; ``companies``
    alone writes only the per-company table.
    ``progress(finished, total)`` is called after each chunk with photo counts;
    ``arguments`` (default: this call's) are recorded in the tables' metadata.
    """
    options = Options(faces, max_pixels, batch_size)
    found = discover.discover(photos, manifest)
    classifier = load_classifier(model, device, threads)
    detector = FaceDetector(providers=resolve_providers(device), threads=threads)
    if arguments is None:
        arguments = {"photos": photos, "manifest": manifest, "model": model, "device": device,
                     "faces": faces, "batch_size": batch_size, "max_pixels": max_pixels}
    meta = write.table_metadata(classifier.name, classifier.sha256, detector.name, arguments)
    ids = discover.id_columns(found)
    chunks = score_photos(found, photos, detector, classifier, options,
                          _counting(progress, len(found)))
    face_frame = _collect(chunks, write.face_schema(ids, meta), out).to_pandas()
    company_frame = aggregate.companies(face_frame, ids)
    if companies is None and out is not None:
        companies = default_companies_path(out)
    if companies is not None:
        schema = write.company_schema(company_frame.columns, meta)
        write.write_frame(company_frame, companies, schema)
    face_frame.attrs.update(meta)
    company_frame.attrs.update(meta)
    return Scores(face_frame, company_frame)


def _counting(progress: Callable[[int, int], None] | None,
              total: int) -> Callable[[int], None] | None:
    """Turn per-chunk counts into ``progress(finished, total)`` calls."""
    if progress is None:
        return None
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        progress(done, total)
    return advance


def _collect(chunks: Iterable[list[dict[str, Any]]], schema: pa.Schema,
             out: str | Path | None) -> pa.Table:
    """Gather the chunks into one table, appending each to ``out`` as a row group if given."""
    tables = []
    with write.AtomicParquetWriter(out, schema) if out is not None else nullcontext() as writer:
        for rows in chunks:
            tables.append(write.rows_to_table(rows, schema))
            if writer is not None:
                writer.write(tables[-1])
    return pa.concat_tables(tables) if tables else schema.empty_table()


def versions() -> dict[str, str]:
    """Versions of facevalue and what scoring runs on, for ``facevalue info`` and bug reports."""
    import platform

    import onnxruntime

    return {"facevalue": __version__, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "available providers": ", ".join(onnxruntime.get_available_providers()),
            "opencv": cv2.__version__, "numpy": np.__version__, "pandas": pd.__version__,
            "pyarrow": pa.__version__}


def default_companies_path(out: str | Path) -> Path:
    """``scores.parquet`` -> ``scores.companies.parquet``, in the same folder."""
    out = Path(out)
    return out.with_name(f"{out.stem}.companies.parquet")
