"""Wire the steps: discover -> decode -> detect -> classify -> aggregate -> write.

Photos stream through in chunks. Each photo is decoded, searched for faces and cropped on
its own (``find_faces``, a plain function with no hidden state that a thread, a process or a
Ray task can call); a chunk's faces are then classified in one batch and turned into rows
(``classify_chunk``), which are appended to the Parquet file. Worker threads find the faces
of one chunk while the calling thread classifies and writes the one before: OpenCV's
decoding and resizing and onnxruntime's inference release the GIL, so threads use every
core without copying photos between processes.

Memory stays flat however many photos there are: rows go to disk as they are made, and the
company table is computed from the written file. Results are saved per chunk beside the
output (``facevalue.state``), so a killed run picks up where it stopped and a re-run scores
only new or changed photos.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from facevalue import __version__, aggregate, decode, discover, write
from facevalue import geometry as geom
from facevalue.classify import (
    DEFAULT_BATCH_SIZE,
    Classifier,
    DeviceError,
    ModelError,
    load_classifier,
    resolve_providers,
)
from facevalue.contract import LABELS, Contract
from facevalue.detect import (
    ALIGN,
    CROP_SCALE,
    CROP_SHIFT,
    Box,
    DetectorError,
    FaceDetector,
    crop_faces,
)
from facevalue.discover import ManifestError, NoPhotosError, Photo
from facevalue.state import (
    BOX_COLUMNS,
    FACE_COLUMNS,
    FileKey,
    PhotoResult,
    SavedResults,
    StateError,
    file_key,
    state_folder,
)
from facevalue.statuses import ERROR

log = logging.getLogger(__name__)

FACES_MODES = ("main", "all")
DEFAULT_CHUNK_SIZE = 256
# Rows are buffered into Parquet row groups of about this many rows: large enough for readers,
# small enough to keep memory flat (a few MB).
ROW_GROUP_ROWS = 4096
# JPEGs are decoded at 1/2, 1/4 or 1/8 scale while the longer side stays at least DETECT_SIDE:
# libjpeg skips most of the work for free, and the detector sees the photo at 128 px (its
# tiles at 256 px) anyway. 512 px rather than 256: a face a sixth of the photo wide then
# still fills a MIN_CROP_SIDE crop, so portraits need one decode (bench/README.md).
DETECT_SIDE = 512
# A face is cropped from that reduced copy when its square crop has at least this many pixels
# a side, twice the classifier's 48; a smaller face is cropped from a larger decode. On
# faces-dev faces, crops of 50-70 reduced pixels lost ~2 points of accuracy against crops
# from the full photo; crops of ~100 pixels lost none.
MIN_CROP_SIDE = 96
# Faces per face-mesh call: its 192 x 192 activations make onnxruntime's buffers grow with
# the batch. 1,000 bench photos with --geometry: peak RSS 802 MB at 64, 503 MB at 16, 432 MB
# at 4 (and a little faster: 13.3, 12.3, 11.4 s); 250 MB without --geometry.
MESH_BATCH = 4
# Chunks handed to the workers beyond the one being classified, so they never wait for it.
AHEAD = 2
STAGES = ("read", "decode", "detect", "crop", "classify", "write", "state")
# Errors that are the user's to fix (a bad model, manifest or device, a locked or damaged
# state); the CLI shows the message.
USER_ERRORS = (ModelError, DeviceError, ManifestError, DetectorError, StateError, NoPhotosError,
               write.OutputError)


@dataclass(frozen=True)
class Options:
    """How photos are scored (the models aside)."""

    faces: str = "main"  # "main" keeps each photo's largest face, "all" keeps every face
    max_pixels: int = decode.DEFAULT_MAX_PIXELS
    batch_size: int = DEFAULT_BATCH_SIZE
    chunk_size: int = DEFAULT_CHUNK_SIZE
    geometry: bool = False  # also measure each face's geometry (facevalue.geometry)

    def __post_init__(self) -> None:
        if self.faces not in FACES_MODES:
            raise ValueError(f"faces must be one of {FACES_MODES}, not {self.faces!r}")
        if min(self.max_pixels, self.batch_size, self.chunk_size) < 1:
            raise ValueError("max_pixels, batch_size and chunk_size must be positive")


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


class Scores(NamedTuple):
    """What ``score_folder`` returns; both frames carry the run's metadata in ``.attrs``."""

    faces: pd.DataFrame
    companies: pd.DataFrame


@dataclass(frozen=True)
class Summary:
    """What a run did: counts for the closing line, timings for the benchmark."""

    out: Path
    companies: Path
    photos: int
    faces: int  # faces scored (rows with status ok)
    statuses: dict[str, int]  # photos per status, most common first
    scored: int  # photos without a saved result: scored (or found broken) by this run
    reused: int  # photos whose saved results were reused
    seconds: float
    stages: dict[str, float]  # seconds per stage, summed over threads
    workers: int


class RunStats:
    """Counts and stage timings, added up in the calling thread as chunks finish."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.statuses: Counter[str] = Counter()
        self.faces = 0
        self.scored = 0
        self.reused = 0

    def charge(self, stage: str, since: float) -> None:
        """Add the time since ``since`` (a ``time.perf_counter()``) to a stage."""
        self.seconds[stage] += time.perf_counter() - since

    def count(self, results: Iterable[PhotoResult]) -> None:
        """Count finished photos by status, and their faces."""
        for result in results:
            self.statuses[result.status] += 1
            self.faces += len(result.faces)


class _Laps:
    """Per-stage seconds of one photo: each ``lap`` charges the time since the last lap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now


def find_faces(photo: Photo, root: str | Path, detector: FaceDetector, contract: Contract,
               options: Options = Options(), data: bytes | None = None) -> PhotoFaces:
    """Decode one photo, detect its faces, and crop the ones kept (``data``: bytes if read)."""
    if photo.status is not None:
        return PhotoFaces(photo, photo.status, _discovery_error(photo.status))
    sha256 = None
    laps = _Laps()
    try:
        data = decode.read_bytes(Path(root, photo.path)) if data is None else data
        sha256 = hashlib.sha256(data).hexdigest()
        laps.lap("read")
        image = decode.decode(data, options.max_pixels, DETECT_SIDE)
        laps.lap("decode")
        return _detect(photo, data, image, detector, contract, options, sha256, laps)
    except decode.DecodeError as e:
        return PhotoFaces(photo, e.status, str(e), sha256=sha256, seconds=laps.seconds)
    except (cv2.error, ValueError, MemoryError) as e:
        log.warning("%s: %s: %s", photo.path, type(e).__name__, e)
        return PhotoFaces(photo, ERROR, f"{type(e).__name__}: {e}", sha256=sha256,
                          seconds=laps.seconds)


def _discovery_error(status: str) -> str:
    if status == discover.MISSING:
        return "listed in the manifest but no such photo"
    return "not listed in the manifest, so not scored"


def _detect(photo: Photo, data: bytes, image: decode.Decoded, detector: FaceDetector,
            contract: Contract, options: Options, sha256: str, laps: _Laps) -> PhotoFaces:
    boxes = detector.detect(image.image)
    laps.lap("detect")
    if not boxes:
        return PhotoFaces(photo, aggregate.NO_FACE, faces_in_photo=0, sha256=sha256,
                          seconds=laps.seconds)
    kept = boxes[:1] if options.faces == "main" else boxes
    source = _crop_source(data, image, kept, options.max_pixels)
    laps.lap("decode")
    factor = image.scale[0] / source.scale[0]  # detection pixels -> crop source pixels
    in_source = [box.scaled(factor) for box in kept]
    crops = crop_faces(source.image, in_source, size=contract.input_size,
                       color_mode=contract.color_mode)
    original = tuple(_to_original(box, image) for box in kept)
    meshes, matrices = _mesh_crops(source, in_source) if options.geometry else (None, None)
    laps.lap("crop")
    return PhotoFaces(photo, aggregate.OK, None, len(boxes), original, crops, sha256,
                      laps.seconds, meshes, matrices)


def _mesh_crops(source: decode.Decoded, boxes: list[Box]) -> tuple[np.ndarray, np.ndarray]:
    """Face-mesh crops of the boxes, and maps from their pixels to original pixels."""
    pairs = [geom.mesh_crop(source.image, box) for box in boxes]
    to_original = np.diag([*source.scale, 1.0])[:2]  # source pixels -> original pixels
    matrices = [to_original @ np.vstack([matrix, [0, 0, 1]]) for _, matrix in pairs]
    return np.stack([crop for crop, _ in pairs]), np.stack(matrices)


def _crop_source(data: bytes, image: decode.Decoded, boxes: list[Box],
                 max_pixels: int) -> decode.Decoded:
    """The image to crop from: the detection copy, or a larger decode if a face is small in it.

    Portraits keep the reduced copy (one decode); a small face in a large group photo gets a
    decode with enough pixels for a MIN_CROP_SIDE crop, at most the full image.
    """
    side = CROP_SCALE * min(max(box.w, box.h) for box in boxes)
    if side >= MIN_CROP_SIDE or image.scale[0] == 1:
        return image
    needed = math.ceil(max(image.image.shape[:2]) * MIN_CROP_SIDE / max(side, 1))
    return decode.decode(data, max_pixels, needed)


def _to_original(box: Box, image: decode.Decoded) -> Box:
    """A box from the decoded (maybe reduced) image to original pixels, clipped to the image."""
    sx, sy = image.scale
    x0, y0 = max(0, round(box.x * sx)), max(0, round(box.y * sy))
    x1 = min(image.width, round((box.x + box.w) * sx))
    y1 = min(image.height, round((box.y + box.h) * sy))
    eyes = None if box.eyes is None else (box.eyes[0] * sx, box.eyes[1] * sy,
                                          box.eyes[2] * sx, box.eyes[3] * sy)
    return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0), box.score, eyes)


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
    base = {"path": discover.display_path(photo.path), "company": photo.company, **photo.ids,
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
                           for k, v in zip(geom.COLUMNS, values, strict=True)}
    row["geometry_ok"] = bool(row["geometry_ok"])
    return row


@dataclass(frozen=True)
class _Chunk:
    """A chunk on its way: saved results where found, futures for the photos being scored."""

    photos: list[Photo]
    keys: list[FileKey | None]
    saved: list[PhotoResult | None]
    futures: list[Future[PhotoFaces]]


def score_photos(photos: Iterable[Photo], root: str | Path, detector: FaceDetector,
                 classifier: Classifier, options: Options = Options(),
                 progress: Callable[[int], None] | None = None, *, workers: int = 1,
                 saved: SavedResults | None = None, stats: RunStats | None = None,
                 mesh: geom.FaceMesh | None = None) -> Iterator[list[dict[str, Any]]]:
    """Score photos chunk by chunk, yielding each chunk's per-face rows in photo order.

    ``workers`` threads find the faces of the next chunks while this thread classifies the
    current one; the rows do not depend on ``workers``. With ``saved``, photos it holds are
    not scored again, and new results are saved once their chunk is done.
    """
    stats = RunStats() if stats is None else stats
    iterator = iter(photos)
    pending: deque[_Chunk] = deque()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="facevalue")
    try:
        while chunk := list(islice(iterator, options.chunk_size)):
            pending.append(_start(chunk, Path(root), detector, classifier.contract, options,
                                  saved, pool, stats))
            if len(pending) > AHEAD:
                yield from _finish(pending.popleft(), classifier, options, saved, stats,
                                   progress, mesh)
        while pending:
            yield from _finish(pending.popleft(), classifier, options, saved, stats, progress,
                               mesh)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _start(chunk: list[Photo], root: Path, detector: FaceDetector, contract: Contract,
           options: Options, saved: SavedResults | None, pool: ThreadPoolExecutor,
           stats: RunStats) -> _Chunk:
    """Look the chunk's photos up in the saved results and start scoring the others."""
    since = time.perf_counter()
    # stat before the worker reads: a file changed in between is saved under its old key
    # and so scored again next time, never reused stale.
    keys = [file_key(root, p.path) if saved is not None and p.status is None else None
            for p in chunk]
    found = [saved.lookup(k) if saved is not None and k else None for k in keys]
    stats.charge("state", since)
    futures = [pool.submit(find_faces, photo, root, detector, contract, options)
               for photo, result in zip(chunk, found, strict=True) if result is None]
    return _Chunk(chunk, keys, found, futures)


def _finish(chunk: _Chunk, classifier: Classifier, options: Options,
            saved: SavedResults | None, stats: RunStats,
            progress: Callable[[int], None] | None,
            mesh: geom.FaceMesh | None) -> Iterator[list[dict[str, Any]]]:
    """Wait for the chunk's faces, classify them, save the results, yield the rows."""
    items = [future.result() for future in chunk.futures]
    for item in items:
        for stage, seconds in item.seconds.items():
            stats.seconds[stage] += seconds
    since = time.perf_counter()
    fresh = iter(classify_results(items, classifier, options.batch_size, mesh))
    stats.charge("classify", since)
    results = [result if result is not None else next(fresh) for result in chunk.saved]
    if saved is not None:
        since = time.perf_counter()
        saved.save([(key, result) for key, result, old in
                    zip(chunk.keys, results, chunk.saved, strict=True)
                    if key is not None and old is None and _keep(result)])
        stats.charge("state", since)
    stats.count(results)
    stats.scored += len(items)
    stats.reused += len(results) - len(items)
    yield [row for photo, result in zip(chunk.photos, results, strict=True)
           for row in result_rows(photo, result)]
    if progress is not None:
        progress(len(chunk.photos))


def _keep(result: PhotoResult) -> bool:
    """Whether a result is worth saving: read and hashed, and not an unexpected error."""
    return result.sha256 is not None and result.status != ERROR


def default_workers() -> int:
    """The cores this process may use (its CPU affinity where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def setup_key(model_sha256: str, detector: str, options: Options, photos: str | Path,
              mesh: str | None = None) -> str:
    """What besides the photo decides its result; saved results are keyed by it.

    The photo folder is part of it: files are known by relative path, size and modification
    time, which another folder scored into the same output could repeat.
    """
    setup = {"facevalue": __version__, "model": model_sha256, "detector": detector,
             "photos": str(Path(photos).resolve()),
             "faces": options.faces, "max_pixels": options.max_pixels,
             "detect_side": DETECT_SIDE, "min_crop_side": MIN_CROP_SIDE,
             "crop": [CROP_SCALE, CROP_SHIFT, ALIGN], "geometry": mesh}
    return hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()


def write_scores(photos: str | Path, out: str | Path, *, companies: str | Path | None = None,
                 manifest: str | Path | None = None, model: str | Path | None = None,
                 device: str = "auto", faces: str = "main",
                 batch_size: int = DEFAULT_BATCH_SIZE,
                 max_pixels: int = decode.DEFAULT_MAX_PIXELS, threads: int | None = None,
                 workers: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 progress: Callable[[int, int], None] | None = None,
                 arguments: Mapping[str, Any] | None = None, geometry: bool = False) -> Summary:
    """Score every photo under ``photos`` into the per-face Parquet ``out`` and the
    per-company one (``companies``, default ``<out stem>.companies.parquet``).

    Memory stays flat for any number of photos. Results are saved beside ``out``
    (``.<stem>.facevalue-state/``): run the same call again after a crash, or after adding
    photos, and only photos without a saved result are scored; the outputs are complete
    either way. ``workers`` threads find faces (default: every core); ``threads`` is each
    onnxruntime session's (default: cores / (workers + 1), at least 1).
    ``progress(finished, total)`` is called after each chunk; ``arguments`` (default: this
    call's) go into the metadata. ``geometry`` adds each face's fWHR, pose and quality
    columns (``facevalue.geometry``).
    """
    started = time.perf_counter()
    out = Path(out)
    companies = Path(companies if companies is not None else write.default_companies_path(out))
    write.check_outputs(out, companies)
    options = Options(faces, max_pixels, batch_size, chunk_size, geometry)
    workers = workers or default_workers()
    # the calling thread classifies beside the workers; onnxruntime threads beyond the free
    # cores would only spin
    threads = threads or max(1, default_workers() // (workers + 1))
    found = discover.discover(photos, manifest)
    classifier = load_classifier(model, device, threads)
    detector = FaceDetector(providers=resolve_providers(device), threads=threads)
    mesh = geom.FaceMesh(providers=resolve_providers(device), threads=threads) \
        if geometry else None
    if arguments is None:
        arguments = {"photos": photos, "manifest": manifest, "model": model, "device": device,
                     "faces": faces, "batch_size": batch_size, "max_pixels": max_pixels,
                     "geometry": geometry}
    meta = write.table_metadata(classifier.name, classifier.sha256, detector.name, arguments,
                                mesh.name if mesh else None)
    ids = discover.id_columns(found)
    stats = RunStats()
    setup = setup_key(classifier.sha256, detector.name, options, photos,
                      mesh.name if mesh else None)
    columns = FACE_COLUMNS + (len(geom.COLUMNS) if mesh else 0)
    try:
        with SavedResults(state_folder(out), setup, columns) as saved:
            _remove_stale_temps(out, companies)
            chunks = score_photos(found, photos, detector, classifier, options,
                                  _counting(progress, len(found)), workers=workers,
                                  saved=saved, stats=stats, mesh=mesh)
            _write_rows(chunks, write.face_schema(ids, meta, geometry=mesh is not None), out,
                        stats)
        n_photos = len(found)
        # hand back onnxruntime's buffers and the photo list before aggregating
        del chunks, classifier, detector, mesh, found
        company_frame = aggregate.companies(_aggregation_columns(out, ids, geometry), ids)
        write.write_frame(company_frame, companies,
                          write.company_schema(company_frame.columns, meta))
    except OSError as e:  # photos' own read errors never get here: they are status rows
        where = e.filename or f"the outputs in {out.parent}"
        raise write.OutputError(f"cannot write {where}: {e.strerror or e} (is the folder "
                                "there, writable, and is there space? the results scored "
                                "so far are saved)") from e
    return Summary(out, companies, n_photos, stats.faces, dict(stats.statuses.most_common()),
                   stats.scored, stats.reused, time.perf_counter() - started,
                   dict(stats.seconds), workers)


def score_folder(photos: str | Path, out: str | Path | None = None, *,
                 companies: str | Path | None = None, manifest: str | Path | None = None,
                 model: str | Path | None = None, device: str = "auto", faces: str = "main",
                 batch_size: int = DEFAULT_BATCH_SIZE, max_pixels: int = decode.DEFAULT_MAX_PIXELS,
                 threads: int | None = None, workers: int | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE,
                 progress: Callable[[int, int], None] | None = None,
                 arguments: Mapping[str, Any] | None = None, geometry: bool = False) -> Scores:
    """Score every photo under ``photos``; return per-face and per-company DataFrames.

    ``write_scores`` with the tables returned in memory: with ``out``, the per-face Parquet
    is written there and the per-company one to ``companies`` (default ``<out
    stem>.companies.parquet``), and a repeated call reuses the saved results; ``companies``
    alone writes only the per-company table; neither keeps nothing on disk. For collections
    too large for memory, call ``write_scores``.
    """
    if arguments is None:
        arguments = {"photos": photos, "manifest": manifest, "model": model, "device": device,
                     "faces": faces, "batch_size": batch_size, "max_pixels": max_pixels,
                     "geometry": geometry}
    with tempfile.TemporaryDirectory(prefix="facevalue-") as scratch:
        target = Path(scratch, "faces.parquet") if out is None else Path(out)
        if out is None and companies is None:
            companies = Path(scratch, "companies.parquet")
        summary = write_scores(photos, target, companies=companies, manifest=manifest,
                               model=model, device=device, faces=faces, batch_size=batch_size,
                               max_pixels=max_pixels, threads=threads, workers=workers,
                               chunk_size=chunk_size, progress=progress, arguments=arguments,
                               geometry=geometry)
        meta = write.read_metadata(summary.out)
        face_frame = pq.read_table(summary.out).to_pandas()
        company_frame = pq.read_table(summary.companies).to_pandas()
    face_frame.attrs = dict(meta)
    company_frame.attrs = dict(meta)
    return Scores(face_frame, company_frame)


def summarize(faces: pd.DataFrame, out: str | Path, companies: str | Path,
              seconds: float) -> Summary:
    """A Summary from a per-face frame, for engines that return one (Ray)."""
    statuses = aggregate.status_counts(faces)
    return Summary(Path(out), Path(companies), sum(statuses.values()),
                   int((faces["status"] == aggregate.OK).sum()), statuses,
                   sum(statuses.values()), 0, seconds, {}, 0)


def _remove_stale_temps(out: Path, companies: Path) -> None:
    """Delete temporary files a killed run left beside the outputs (we hold their lock)."""
    for target in (out, companies):
        for temp in target.parent.glob(f".{target.name}.*.tmp"):
            log.info("removing %s, left by an interrupted run", temp)
            temp.unlink(missing_ok=True)


def _write_rows(chunks: Iterable[list[dict[str, Any]]], schema: pa.Schema, out: Path,
                stats: RunStats) -> None:
    """Stream rows into ``out`` in row groups of about ROW_GROUP_ROWS rows, atomically."""
    buffered: list[pa.Table] = []
    with write.AtomicParquetWriter(out, schema) as writer:
        for rows in chunks:
            since = time.perf_counter()
            buffered.append(write.rows_to_table(rows, schema))
            if sum(t.num_rows for t in buffered) >= ROW_GROUP_ROWS:
                writer.write(pa.concat_tables(buffered))
                buffered = []
            stats.charge("write", since)
        since = time.perf_counter()
        if buffered:
            writer.write(pa.concat_tables(buffered))
    stats.charge("write", since)  # the last row group, the footer and the rename


def _aggregation_columns(out: Path, ids: list[str], geometry: bool) -> pd.DataFrame:
    """The columns the company table needs, read back from the per-face file.

    Text columns come back as categoricals (a company's name is stored once, not once per
    face) and Arrow's buffers are freed while converting: memory stays flat with the rows.
    """
    text = ["company", *ids, "status", "emotion"]
    measures = ["fwhr", "geometry_ok"] if geometry else []
    table = pq.read_table(out, columns=[*text, "face", *LABELS, *measures],
                          read_dictionary=text)
    return table.to_pandas(self_destruct=True, split_blocks=True)


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


def versions() -> dict[str, str]:
    """Versions of facevalue and what scoring runs on, for ``facevalue info`` and bug reports."""
    import platform

    import onnxruntime

    return {"facevalue": __version__, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "available providers": ", ".join(onnxruntime.get_available_providers()),
            "opencv": cv2.__version__, "numpy": np.__version__, "pandas": pd.__version__,
            "pyarrow": pa.__version__}

