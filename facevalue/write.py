"""The two output tables: their Parquet schemas, metadata, and atomic writing.

The schemas live here and nowhere else; every engine (the local pipeline, a process pool,
Ray) builds its Arrow tables with ``face_schema`` so the files they write are identical.
A table is written to a temporary file in the destination folder and renamed into place
only when complete, so a crash or Ctrl-C never leaves a half-written Parquet file that
looks finished.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from facevalue import __version__, storage
from facevalue.columns import (
    BOX,
    COUNTS,
    EMOTION,
    FACE_SCORE,
    GEOMETRY,
    GEOMETRY_COUNTS,
    GEOMETRY_SCORES,
    PERSON_COUNTS,
    PERSON_GEOMETRY,
    PHOTO,
    PHOTO_SHA256,
    RESULT,
    SCORES,
    STD,
    TIME,
    TRACK,
    VIDEO_COUNTS,
)
from facevalue.contract import LABELS
from facevalue.errors import FacevalueError

log = logging.getLogger(__name__)

def face_schema(id_columns: Iterable[str] = (), metadata: Mapping[str, str] | None = None,
                geometry: bool = False) -> pa.Schema:
    """The per-face table: one row per face kept, or one per photo that yielded none.

    A video's rows are its sampled frames': ``time`` (float64 seconds from the first frame)
    and ``track`` (int32, the person across frames, 0 the main one), null for photos.
    ``geometry`` adds fwhr, yaw, pitch, roll, eye_distance, sharpness, landmark_score
    (float32) and geometry_ok (bool) after the emotions.
    """
    fields = [pa.field(name, pa.string()) for name in (*PHOTO, *id_columns, *RESULT)]
    fields += [pa.field(TIME, pa.float64()), pa.field(TRACK, pa.int32())]
    fields += [pa.field(name, pa.int32()) for name in BOX]
    fields.append(pa.field(FACE_SCORE, pa.float32()))
    fields += [pa.field(label, pa.float32()) for label in LABELS]
    fields += [pa.field(EMOTION, pa.string())]
    if geometry:
        fields += [pa.field(name, pa.float32()) for name in GEOMETRY[:-1]]
        fields.append(pa.field(GEOMETRY[-1], pa.bool_()))
    fields.append(pa.field(PHOTO_SHA256, pa.string()))
    return pa.schema(fields, metadata=metadata)


def company_schema(columns: Iterable[str], metadata: Mapping[str, str] | None = None
                   ) -> pa.Schema:
    """The per-company (or per-person) table's schema for ``columns`` (``company`` or
    ``person``, ids, counts, scores).

    Its id columns depend on the manifest, so the schema is built from the column names:
    counts are int64, scores float64, and everything else (company, ids, year) strings.
    """
    def kind(name: str) -> pa.DataType:
        if name in (*COUNTS, *GEOMETRY_COUNTS, *PERSON_COUNTS, PERSON_GEOMETRY[1]):
            return pa.int64()
        scores = (*LABELS, *SCORES, *GEOMETRY_SCORES, PERSON_GEOMETRY[0])
        return pa.float64() if name in scores else pa.string()
    return pa.schema([pa.field(name, kind(name)) for name in columns], metadata=metadata)


def video_schema(id_columns: Iterable[str] = (), metadata: Mapping[str, str] | None = None
                 ) -> pa.Schema:
    """The per-video table (``aggregate.videos``): path, company, ids, status, error, the
    counts, the main track's mean probabilities, happiness share, positivity and the
    probabilities' standard deviations over time."""
    fields = [pa.field(name, pa.string()) for name in (*PHOTO, *id_columns, *RESULT)]
    whole = ("frames", "frames_with_face", "faces")
    fields += [pa.field(name, pa.int64() if name in whole else pa.float64())
               for name in VIDEO_COUNTS]
    fields += [pa.field(name, pa.float64())
               for name in (*LABELS, *SCORES, *(label + STD for label in LABELS))]
    return pa.schema(fields, metadata=metadata)


class OutputError(FacevalueError, ValueError):
    """Raised before any work for output paths that cannot be what the user meant."""


def check_outputs(out: str | Path, companies: str | Path, videos: str | Path | None = None,
                  people: str | Path | None = None) -> None:
    """Refuse a non-Parquet name, a companies (videos, people) file that would overwrite
    another table, and a local folder nothing can be written in: before any work, not after
    all the scoring."""
    named = [(out, "--out"), (companies, "--companies")]
    named += [] if videos is None else [(videos, "--videos")]
    named += [] if people is None else [(people, "--people")]
    for path, option in named:
        if PurePosixPath(str(path)).suffix.lower() != ".parquet":
            raise OutputError(f"{option} {path}: facevalue writes Parquet; give a name ending "
                              "in .parquet (pandas.read_parquet reads it; to_csv converts it)")
        if storage.is_local(path):
            check_writable(Path(storage.local_path(path)))
    for i, (path, option) in enumerate(named[1:], start=1):
        for other, other_option in named[:i]:
            if _same_file(path, other):
                raise OutputError(f"{option} {path} is the {other_option} file; each table "
                                  "needs a file of its own")


def _same_file(a: str | Path, b: str | Path) -> bool:
    if str(a) == str(b):
        return True
    return "://" not in str(a) and "://" not in str(b) and Path(a).resolve() == Path(b).resolve()


def check_writable(path: Path) -> None:
    """Create and remove a file in the nearest existing folder of ``path`` (the rest of the
    folders are made when the table is written), or raise OutputError naming ``path``."""
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e} ({folder})") from e


def table_metadata(model: str, model_sha256: str, detector: str,
                   arguments: Mapping[str, Any], landmarks: str | None = None) -> dict[str, str]:
    """Key-value metadata naming what produced a table, so a published result is traceable.

    ``facevalue.run_id`` is new for every run and the same in both tables of a run, so a
    per-face file and a per-company file from different runs can be told apart.
    """
    return {
        "facevalue.run_id": uuid.uuid4().hex,
        "facevalue.version": __version__,
        "facevalue.model": model,
        "facevalue.model_sha256": model_sha256,
        "facevalue.detector": detector,
        "facevalue.arguments": json.dumps(dict(arguments), default=str, sort_keys=True),
        "facevalue.created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **({"facevalue.landmarks": landmarks} if landmarks else {}),
    }


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``facevalue.*`` key-value metadata of a table written by facevalue (path or URI)."""
    fs, where = storage.output_path(path)
    raw = pq.read_schema(where, filesystem=fs).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"facevalue.")}


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Row dicts to an Arrow table of exactly ``schema`` (absent keys become nulls)."""
    return pa.Table.from_pylist(rows, schema=schema)


class AtomicParquetWriter:
    """Write row groups to a temporary file beside ``path`` (a local path or a URI); move it
    into place on close.

    Used as a context manager: leaving the block with an exception deletes the temporary
    file and leaves any earlier file at ``path`` untouched. With ``commit=False`` the
    finished file keeps its temporary name, for the caller to ``output.commit()`` once the
    run's other table is complete too.
    """

    def __init__(self, path: str | Path, schema: pa.Schema, commit: bool = True) -> None:
        self.output = storage.OutputFile(path)
        self.schema = schema
        self.temp = self.output.temp
        self.commit = commit
        self._writer = self.output.open_writer(schema)

    def write(self, table: pa.Table) -> None:
        """Append one row group (skipped when empty)."""
        if table.num_rows:
            self._writer.write_table(table.cast(self.schema))

    def close(self) -> None:
        """Finish the file and move it to ``path`` (one atomic rename on a disk), unless the
        caller commits it."""
        self._writer.close()
        if self.commit:
            self.output.commit()

    def abort(self) -> None:
        """Drop the unfinished file (even when closing it fails too, as on a full disk)."""
        try:
            with suppress(OSError):  # the file is thrown away; the first error stands
                self._writer.close()
        finally:
            self.output.discard()

    def __enter__(self) -> AtomicParquetWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_frame(frame: pd.DataFrame, path: str | Path, schema: pa.Schema,
                commit: bool = True) -> storage.OutputFile:
    """Write a whole DataFrame atomically with ``schema`` (columns in the schema's order);
    ``commit`` as for ``AtomicParquetWriter``."""
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    with AtomicParquetWriter(path, schema, commit) as writer:
        writer.write(table)
    return writer.output


def default_companies_path(out: str | Path) -> str:
    """``.../scores.parquet`` -> ``.../scores.companies.parquet``, for local paths and URIs.

    The one naming rule for both engines, the CLI's summary and the report.
    """
    return _beside(out, "companies")


def default_videos_path(out: str | Path) -> str:
    """``.../scores.parquet`` -> ``.../scores.videos.parquet`` (see default_companies_path)."""
    return _beside(out, "videos")


def default_people_path(out: str | Path) -> str:
    """``.../scores.parquet`` -> ``.../scores.people.parquet`` (see default_companies_path)."""
    return _beside(out, "people")


def _beside(out: str | Path, table: str) -> str:
    text = str(out)
    if "://" not in text:
        local = Path(text)
        return str(local.with_name(f"{local.stem}.{table}.parquet"))
    folder, _, name = text.rpartition("/")
    return f"{folder}/{PurePosixPath(name).stem}.{table}.parquet"
