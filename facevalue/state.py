"""Saved per-photo results beside the output, so a killed run resumes and a grown collection
scores only its new photos.

The state of ``scores.parquet`` is ``.scores.facevalue-state/results.sqlite`` in the same
folder. One SQLite database, two tables:

- ``files``: a photo's path (relative to the photo folder), size, modification time,
  change time and inode (``storage.FileKey``) -> the sha256 of its bytes. An unchanged
  file is found here without being read again.
- ``results``: (photo sha256, setup) -> what scoring found (a ``records.PhotoResult``):
  status, error, faces in the photo, and each kept face's box, detector score,
  probabilities and geometry, packed into bytes here and nowhere else. ``setup`` hashes the
  model's sha256, the detector, the options that change results and the facevalue version,
  so another model or option misses and the photo is scored again.
- ``videos``: (video sha256, video setup) -> a ``records.VideoResult``: status, error,
  duration, and its frames packed the same way (each frame's time, status and face count,
  then its faces with their tracks). The video setup adds ``--fps`` to the setup, so
  another rate scores the videos again and leaves the photos' results valid.

Each chunk of photos is saved in one transaction once it is scored, each video as soon as
it is. A run killed at any moment (even ``kill -9``) loses at most the chunks and videos in
flight: SQLite rolls back a torn
transaction, and the output files are always rebuilt from the photo list plus these results,
so every photo is in them exactly once. While a run holds the database, SQLite's exclusive
lock keeps a second run from writing the same output; the operating system drops the lock
when the process dies.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from facevalue.columns import ALL, GEOMETRY, OK
from facevalue.contract import LABELS
from facevalue.detect import Box
from facevalue.errors import FacevalueError
from facevalue.records import Geometry, PhotoResult, ScoredFace, VideoResult
from facevalue.storage import FileKey

log = logging.getLogger(__name__)

STATE_FILE = "results.sqlite"
# Version 2 added ctime_ns and inode to ``files``; a version-1 database loses only that
# table (its photos are scored again), its results stay. Version 3 added ``videos``: an
# older database gains the table and keeps everything else.
SCHEMA_VERSION = 3
# A face is packed as float64 values, which hold the int32 boxes and float32 scores exactly:
# x, y, w, h (original pixels), the detector's score, the probabilities in LABELS order, then
# with geometry the GEOMETRY columns (geometry_ok as 0 or 1). Results with geometry and without
# never share a setup: the face mesh is part of the setup key. A video frame's faces add their
# track last; each frame is preceded by FRAME_VALUES: time, status (its index in columns.ALL),
# faces in the frame (NaN for None) and the number of faces that follow.
BOX_VALUES = 5
FRAME_VALUES = 4
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, sha256 TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    sha256 TEXT NOT NULL, setup TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
    faces_in_photo INTEGER, faces BLOB NOT NULL,
    PRIMARY KEY (sha256, setup)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS videos (
    sha256 TEXT NOT NULL, setup TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
    duration REAL, frames BLOB NOT NULL, frame_errors TEXT NOT NULL,
    PRIMARY KEY (sha256, setup)) WITHOUT ROWID;
"""
LOOKUP = """
SELECT r.status, r.error, r.faces_in_photo, r.faces, r.sha256 FROM files AS f
JOIN results AS r ON r.sha256 = f.sha256 AND r.setup = ?
WHERE f.path = ? AND f.size = ? AND f.mtime_ns = ? AND f.ctime_ns = ? AND f.inode = ?
"""
LOOKUP_VIDEO = """
SELECT v.status, v.error, v.duration, v.frames, v.frame_errors, v.sha256 FROM files AS f
JOIN videos AS v ON v.sha256 = f.sha256 AND v.setup = ?
WHERE f.path = ? AND f.size = ? AND f.mtime_ns = ? AND f.ctime_ns = ? AND f.inode = ?
"""


class StateError(FacevalueError, RuntimeError):
    """The saved state cannot be used: another run holds it, or it is damaged."""


def state_folder(out: str | Path) -> Path:
    """``scores.parquet`` -> ``.scores.facevalue-state/`` in the same folder."""
    out = Path(out)
    return out.with_name(f".{out.stem}.facevalue-state")


class SavedResults:
    """The state database of one output, held (locked) from opening to ``close``."""

    def __init__(self, folder: str | Path, setup: str, geometry: bool = False,
                 video_setup: str | None = None) -> None:
        self.folder = Path(folder)
        self.setup = setup
        self.video_setup = video_setup or setup
        self.values = BOX_VALUES + len(LABELS) + (len(GEOMETRY) if geometry else 0)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StateError(f"cannot make {self.folder} for the saved results: "
                             f"{e.strerror or e}") from e
        try:
            self.db = _connect(self.folder / STATE_FILE)
        except sqlite3.OperationalError as e:
            if "locked" in str(e):
                raise StateError(f"another facevalue run is writing this output (its state "
                                 f"{self.folder} is locked); wait for it to finish") from e
            raise StateError(f"{self.folder}: cannot open the saved results ({e})") from e
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from e
        self._identity = _identity(self.folder / STATE_FILE)

    def check(self) -> None:
        """Stop if the database was deleted or replaced under the run.

        The lock lives on the file this run opened: once that is gone, another run can take
        a new one and write the same outputs, and this run's saves would go nowhere.
        """
        if _identity(self.folder / STATE_FILE) != self._identity:
            raise StateError(f"{self.folder}: the saved results were deleted or replaced "
                             "during the run; stopped without writing the outputs (run the "
                             "command again)")

    def lookup(self, key: FileKey, video: bool = False) -> PhotoResult | VideoResult | None:
        """The saved result for this file (a video's with ``video``) under this setup, or None."""
        query, setup = (LOOKUP_VIDEO, self.video_setup) if video else (LOOKUP, self.setup)
        try:
            row = self.db.execute(query, (setup, key.path, key.size, key.mtime_ns,
                                          key.ctime_ns, key.inode)).fetchone()
        except sqlite3.DatabaseError as e:  # a damaged page, found only when read
            raise self._damaged(e) from e
        if row is None:
            return None
        return self._video(row) if video else self._result(row)

    def _result(self, row: tuple[Any, ...]) -> PhotoResult:
        """A saved row as a PhotoResult, checked first.

        SQLite hands back any row it can read, also one this code never wrote (a flipped bit
        in a page whose checksum SQLite does not keep, an edit by hand); unchecked, that
        stops the run later in numpy or Arrow with no hint of the cure.
        """
        status, error, faces_in_photo, faces, sha256 = row
        if not (status in ALL and isinstance(error, str | None) and isinstance(sha256, str)
                and isinstance(faces_in_photo, int | None) and isinstance(faces, bytes)
                and len(faces) % (8 * self.values) == 0 and bool(faces) == (status == OK)):
            raise self._damaged(f"a saved row reads status={status!r}, "
                                f"faces_in_photo={faces_in_photo!r}, {len(faces)} bytes of faces")
        packed = np.frombuffer(faces, np.float64).reshape(-1, self.values).tolist()
        return PhotoResult(status, error, faces_in_photo, sha256,
                           tuple(_unpack(values) for values in packed))

    def _video(self, row: tuple[Any, ...]) -> VideoResult:
        """A saved video row as a VideoResult, checked as ``_result`` checks a photo's."""
        status, error, length, frames, frame_errors, sha256 = row
        try:
            if not (status in ALL and isinstance(error, str | None)
                    and isinstance(sha256, str) and isinstance(length, float | None)
                    and isinstance(frames, bytes) and len(frames) % 8 == 0):
                raise ValueError(f"status={status!r}, {len(frames)} bytes of frames")
            errors = {int(i): str(message) for i, message in json.loads(frame_errors)}
            unpacked = _unpack_frames(np.frombuffer(frames, np.float64).tolist(),
                                      self.values + 1, sha256, errors)
        except (ValueError, TypeError, IndexError) as e:
            raise self._damaged(f"a saved video reads {e}") from e
        return VideoResult(status, error, sha256, length, unpacked)

    def _damaged(self, cause: object) -> StateError:
        return StateError(f"{self.folder}: the saved results are damaged ({cause}); delete "
                          "the folder to score every photo again")

    def save(self, entries: list[tuple[FileKey, PhotoResult | VideoResult]]) -> None:
        """Save scored photos and videos in one transaction (all or none survive a crash)."""
        self.check()
        photos = [r for _, r in entries if isinstance(r, PhotoResult)]
        videos = [r for _, r in entries if isinstance(r, VideoResult)]
        try:
            with self.db:
                self.db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                    [(k.path, k.size, k.mtime_ns, k.ctime_ns, k.inode, r.sha256)
                     for k, r in entries])
                self.db.executemany(
                    "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
                    [(r.sha256, self.setup, r.status, r.error, r.faces_in_photo,
                      _pack(r.faces)) for r in photos])
                self.db.executemany(
                    "INSERT OR REPLACE INTO videos VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(r.sha256, self.video_setup, r.status, r.error, r.duration,
                      _pack_frames(r.frames), json.dumps(_frame_errors(r.frames)))
                     for r in videos])
        except sqlite3.Error as e:  # a full disk, or the folder deleted under the run
            raise StateError(f"{self.folder}: cannot save results ({e}); free space or "
                             "delete the folder, then run again") from e

    def close(self) -> None:
        """Release the lock (the database and its write-ahead log stay for the next run)."""
        self.db.close()

    def __enter__(self) -> SavedResults:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def _connect(path: Path) -> sqlite3.Connection:
    """Open, lock and if new create the database.

    EXCLUSIVE locking mode keeps the lock from the first write until the connection closes;
    set before WAL mode, SQLite then needs no shared-memory file. ``synchronous=NORMAL`` in
    WAL mode survives a killed process (only a power cut may lose the last transactions).
    """
    db = sqlite3.connect(path, timeout=1.0)
    try:
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        with db:
            db.execute("BEGIN EXCLUSIVE")  # take the lock now, not at the first save
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, 2, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"schema version {version}, not {SCHEMA_VERSION}")
            if version == 1:
                db.execute("DROP TABLE files")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.Error:
        db.close()
        raise
    return db


def _pack(faces: tuple[ScoredFace, ...]) -> bytes:
    """A result's faces as the bytes saved (see BOX_VALUES)."""
    return np.array([_face_values(face) for face in faces], np.float64).tobytes()


def _face_values(face: ScoredFace) -> list[float]:
    return [face.box.x, face.box.y, face.box.w, face.box.h, face.box.score,
            *face.probabilities,
            *(() if face.geometry is None else
              (getattr(face.geometry, name) for name in GEOMETRY))]


def _pack_frames(frames: tuple[PhotoResult, ...]) -> bytes:
    """A video's frames as the bytes saved (see FRAME_VALUES): one flat float64 array."""
    values: list[float] = []
    for frame in frames:
        count = math.nan if frame.faces_in_photo is None else frame.faces_in_photo
        values += [frame.time if frame.time is not None else math.nan,
                   ALL.index(frame.status), count, len(frame.faces)]
        for face in frame.faces:
            values += [*_face_values(face), -1 if face.track is None else face.track]
    return np.array(values, np.float64).tobytes()


def _frame_errors(frames: tuple[PhotoResult, ...]) -> list[tuple[int, str]]:
    """The frames with an error message (refused ones), by index: kept beside the numbers."""
    return [(i, frame.error) for i, frame in enumerate(frames) if frame.error is not None]


def _unpack_frames(values: list[float], per_face: int, sha256: str,
                   errors: dict[int, str]) -> tuple[PhotoResult, ...]:
    """The frames of ``_pack_frames``; ValueError or IndexError on bytes it did not write."""
    frames: list[PhotoResult] = []
    at = 0
    while at < len(values):
        time, status, count, n = values[at:at + FRAME_VALUES]
        if len(values) < at + FRAME_VALUES + int(n) * per_face or n < 0:
            raise ValueError(f"a frame of {n} faces past the end of {len(values)} values")
        at += FRAME_VALUES
        faces: list[ScoredFace] = []
        for _ in range(int(n)):
            face, track = _unpack(values[at:at + per_face - 1]), int(values[at + per_face - 1])
            faces.append(ScoredFace(face.box, face.probabilities, face.geometry,
                                    None if track < 0 else track))
            at += per_face
        frames.append(PhotoResult(ALL[int(status)], errors.get(len(frames)),
                                  None if math.isnan(count) else int(count), sha256,
                                  tuple(faces), None if math.isnan(time) else time))
    return tuple(frames)


def _unpack(values: list[float]) -> ScoredFace:
    """One face from its packed values (their number checked by the caller)."""
    x, y, w, h, score = values[:BOX_VALUES]
    probabilities = tuple(values[BOX_VALUES:BOX_VALUES + len(LABELS)])
    geometry = None
    if len(values) > BOX_VALUES + len(LABELS):
        named: dict[str, Any] = dict(zip(GEOMETRY, values[BOX_VALUES + len(LABELS):],
                                         strict=True))
        geometry = Geometry(**named | {"geometry_ok": bool(named["geometry_ok"])})
    return ScoredFace(Box(int(x), int(y), int(w), int(h), score), probabilities, geometry)


def _identity(path: Path) -> tuple[int, int] | None:
    """A file's (device, inode), or None when it is gone."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino
