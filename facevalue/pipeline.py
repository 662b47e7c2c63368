"""The scoring job: discover -> decode -> detect -> classify -> aggregate -> write.

Its beginning and end exist once, for every engine: options, models, metadata, ids, the
schema, the saved results, the rows, the two tables and the summary. An engine
(``facevalue.local``, ``facevalue.ray_engine``) only turns the photos without a saved result
into their results, in order; the per-photo step is ``facevalue.faces``, the records
``facevalue.records``, the rows ``facevalue.rows``.

Memory stays flat however many photos there are: photos go to the engine in chunks, rows go
to disk as they are made, and the company table is computed from the written file. Results
are saved per chunk beside the output (``facevalue.state``), so a killed run picks up where
it stopped and a re-run scores only new or changed photos, whichever engine runs it.

Videos in the folder go the same way, each one unit of work (``facevalue.video_faces``):
their frames' rows join the per-face table, each video's result is saved as soon as it
arrives, and the per-video table (``aggregate.videos``) is made from each video's rows as
they pass, one row a video.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing, nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facevalue import __version__, aggregate, discover, storage, write
from facevalue.columns import ERROR, PERSON, TIME, TRACK
from facevalue.contract import LABELS
from facevalue.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_FPS,
    DEFAULT_MAX_PIXELS,
)
from facevalue.detect import ALIGN, CROP_SCALE, CROP_SHIFT
from facevalue.discover import Photo
from facevalue.engine import Engine, Models, RunStats, Work
from facevalue.faces import DETECT_SIDE, MIN_CROP_SIDE, Options
from facevalue.local import LocalEngine
from facevalue.records import PhotoResult, VideoResult
from facevalue.rows import iter_rows
from facevalue.state import SavedResults, state_folder
from facevalue.storage import FileKey, Location

log = logging.getLogger(__name__)

# Rows are buffered into Parquet row groups of about this many rows: large enough for readers,
# small enough to keep memory flat (a few MB).
ROW_GROUP_ROWS = 4096


@dataclass(frozen=True)
class Scores:
    """What ``score_folder`` returns; the frames carry the run's metadata in ``.attrs``.

    Unpacks as ``faces, companies`` (what it was before videos); ``videos`` is the
    per-video table, None when the folder holds no video; ``people`` the per-person table,
    None without a manifest with a ``person`` column.
    """

    faces: pd.DataFrame
    companies: pd.DataFrame
    videos: pd.DataFrame | None = None
    people: pd.DataFrame | None = None

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return iter((self.faces, self.companies))


@dataclass(frozen=True)
class Summary:
    """What a run did: counts for the closing line, timings for the benchmark."""

    out: str
    companies: str
    photos: int  # photos and videos
    faces: int  # faces scored (in photos and video frames)
    statuses: dict[str, int]  # photos (and videos) per status, most common first
    scored: int  # photos without a saved result: scored (or found broken) by this run
    reused: int  # photos whose saved results were reused
    seconds: float
    stages: dict[str, float]  # seconds per stage, summed over threads
    workers: int
    videos: int = 0  # of ``photos``, the videos
    frames: int = 0  # video frames sampled
    video_table: str | None = None  # the per-video table, when there were videos
    people_table: str | None = None  # the per-person table, when the manifest names persons


def video_setup_key(setup: str, options: Options) -> str:
    """A video's setup key: the photos' and the frame rate, so another ``--fps`` scores the
    videos again and the photos' saved results stay valid."""
    return hashlib.sha256(json.dumps({"setup": setup, "fps": options.fps}).encode()).hexdigest()


def setup_key(model_sha256: str, detector: str, options: Options, photos: str | Path | Location,
              mesh: str | None = None) -> str:
    """What besides the photo decides its result; saved results are keyed by it.

    The photo folder is part of it: files are known by a ``FileKey`` (relative path, size,
    times, inode), which another folder scored into the same output could repeat (a bucket
    keeps only the path, size and modification time).
    """
    setup = {"facevalue": __version__, "model": model_sha256, "detector": detector,
             "photos": _photo_folder(photos),
             "faces": options.faces, "max_pixels": options.max_pixels,
             "detect_side": DETECT_SIDE, "min_crop_side": MIN_CROP_SIDE,
             "crop": [CROP_SCALE, CROP_SHIFT, ALIGN], "geometry": mesh}
    return hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()


def _photo_folder(photos: str | Path | Location) -> str:
    """The photo folder's name for the setup key: resolved on a disk, the URI elsewhere."""
    location = storage.open_location(photos, check=False)
    return os.path.realpath(location.root) if location.fs is None else location.uri


def write_scores(photos: str | Path | Location, out: str | Path, *,
                 companies: str | Path | None = None, manifest: str | Path | None = None,
                 model: str | Path | None = None, device: str = "auto", faces: str = "main",
                 batch_size: int = DEFAULT_BATCH_SIZE,
                 max_pixels: int = DEFAULT_MAX_PIXELS, threads: int | None = None,
                 workers: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 progress: Callable[..., None] | None = None,
                 arguments: Mapping[str, Any] | None = None, geometry: bool = False,
                 engine: Engine | None = None, fps: float = DEFAULT_FPS,
                 videos: str | Path | None = None, people: str | Path | None = None) -> Summary:
    """Score every photo under ``photos`` into the per-face Parquet ``out`` and the
    per-company one (``companies``, default ``<out stem>.companies.parquet``).

    Videos under ``photos`` are sampled at ``fps`` frames a second; their frames' rows join
    the per-face table, and the per-video table goes to ``videos`` (default ``<out
    stem>.videos.parquet``), written only when there are videos. A manifest with a
    ``person`` column adds the per-person table (``aggregate.people``) at ``people``
    (default ``<out stem>.people.parquet``).

    ``photos`` and the outputs may be local paths or URIs (``s3://``, ``gs://``). Memory
    stays flat for any number of photos. Results are saved beside a local ``out``
    (``.<stem>.facevalue-state/``): run the same call again after a crash, or after adding
    photos, and only photos without a saved result are scored; the outputs are complete
    either way. ``engine`` scores the photos (default ``LocalEngine(workers)``: ``workers``
    threads find faces, every core by default); ``threads`` is each onnxruntime session's.
    ``progress(finished, total)`` is called after each chunk (and each video, with the
    frames sampled so far as a third argument when there are videos to score); ``arguments``
    (default: this call's) go into the metadata. ``geometry`` adds each face's fWHR, pose
    and quality columns (``facevalue.geometry``).
    """
    started = time.perf_counter()
    companies = str(companies if companies is not None else write.default_companies_path(out))
    beside = [write.default_videos_path(out) if videos is None else None,
              write.default_people_path(out) if people is None else None]
    videos = str(videos if videos is not None else beside[0])
    people = str(people if people is not None else beside[1])
    write.check_outputs(out, companies, videos, people)
    options = Options(faces, max_pixels, batch_size, chunk_size, geometry, fps)
    engine = engine or LocalEngine(workers or 0)
    location = storage.open_location(photos)
    found = discover.discover(location, manifest)
    models, threads = engine.load(model, device, threads, geometry)
    if arguments is None:
        arguments = {"photos": photos, "manifest": manifest, "model": model, "device": device,
                     "faces": faces, "batch_size": batch_size, "max_pixels": max_pixels,
                     "geometry": geometry, "fps": fps}
    meta = _metadata(models, {**arguments, **engine.arguments()})
    ids = discover.id_columns(found)
    stats = RunStats()
    work = Work(location, models, options, device, threads)
    n_photos = len(found)
    clips = _Videos(ids) if any(storage.is_video(p.path) for p in found) else None
    frames = any(storage.is_video(p.path) and p.status is None for p in found)
    try:  # the saved results' lock covers the temporary files until all tables are renamed
        with _saved_results(out, models, options, location) as saved:
            results = _results(found, work, engine, saved, stats,
                               _counting(progress, n_photos, stats if frames else None), clips)
            faces_file = _write_rows(results, write.face_schema(ids, meta, geometry=geometry),
                                     out, companies, stats)
            del results, models, work, found  # hand back onnxruntime's buffers first
            _write_companies(faces_file, companies, ids, geometry, meta,
                             None if clips is None else (clips.table(), videos),
                             people if PERSON in ids else None)
            made = (clips is not None, PERSON in ids)
            _remove_outdated([path for path, m in zip(beside, made, strict=True)
                              if path is not None and not m])
    except OSError as e:  # photos' own read errors never get here: they are status rows
        raise _output_error(e.filename or out, e) from e
    return Summary(str(out), companies, n_photos, stats.faces,
                   dict(stats.statuses.most_common()), stats.scored, stats.reused,
                   time.perf_counter() - started, dict(stats.seconds), stats.workers,
                   stats.videos, stats.frames, None if clips is None else videos,
                   people if PERSON in ids else None)


class _Videos:
    """The per-video table's rows, made from each video's rows as the job passes them."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.rows: list[pd.DataFrame] = []

    def add(self, photo: Photo, result: VideoResult, rows: list[dict[str, Any]]) -> None:
        """One video's row of the per-video table, from its rows in the per-face table."""
        listed = pd.DataFrame([{"path": storage.display_path(photo.path),
                                "company": photo.company, **photo.ids,
                                "status": result.status, "error": result.error,
                                "duration": result.duration}])
        frames = pd.DataFrame(rows, columns=["path", "status", TIME, TRACK, "face", "emotion",
                                             *LABELS])
        self.rows.append(aggregate.videos(frames, listed, self.ids))

    def table(self) -> pd.DataFrame:
        """Every video's row, in path order."""
        return pd.concat(self.rows, ignore_index=True).sort_values("path", ignore_index=True)


def _write_companies(faces_file: storage.OutputFile, companies: str, ids: list[str],
                     geometry: bool, meta: dict[str, str],
                     videos: tuple[pd.DataFrame, str] | None = None,
                     people: str | None = None) -> None:
    """Write the company table from the finished per-face file (and the per-video table,
    ``videos``: the table and where it goes; the per-person one to ``people``), then
    rename all tables.

    The per-face file still has its temporary name: a company table that cannot be written
    (a full disk) leaves the previous run's tables as they were, not a new per-face file
    beside an old company file.
    """
    pending = [faces_file]
    where = companies
    try:
        clips = None if videos is None else videos[0]
        skip = [] if clips is None else clips["path"].tolist()
        columns = _aggregation_columns(faces_file, ids, geometry, skip)
        company_frame = aggregate.companies(columns, ids, clips)
        pending.append(write.write_frame(company_frame, companies,
                                         write.company_schema(company_frame.columns, meta),
                                         commit=False))
        if people is not None:
            where = people
            storage.OutputFile(people).remove_stale_temps()  # a killed run's, as _write_rows
            frames = _video_geometry(faces_file, ids, skip) if geometry and skip else None
            person_frame = aggregate.people(columns, ids, clips, frames)
            pending.append(write.write_frame(person_frame, people,
                                             write.company_schema(person_frame.columns, meta),
                                             commit=False))
        if videos is not None:
            where = videos[1]
            storage.OutputFile(where).remove_stale_temps()
            pending.append(write.write_frame(videos[0], where, write.video_schema(ids, meta),
                                             commit=False))
        for output in pending:
            output.commit()
    except BaseException as e:
        for output in pending:
            output.discard()
        if isinstance(e, OSError):
            raise _output_error(where, e) from e
        raise


def _remove_outdated(paths: list[str]) -> None:
    """Remove an earlier run's per-video or per-person table at its default name when this
    run writes none (its photos lost their videos, its manifest the person column): left
    there, it would pass for this run's, beside tables of other photos. Only a table that
    facevalue wrote goes (its metadata says so); a file the user named is never touched.
    """
    for path in paths:
        try:
            written_by_us = "facevalue.run_id" in write.read_metadata(path)
        except (OSError, pa.ArrowInvalid):  # not there, or not a Parquet file: not ours
            continue
        if written_by_us:
            fs, where = storage.output_path(path)
            fs.delete_file(where)
            log.warning("removed %s: an earlier run's table; this run has no %s", path,
                        "videos" if path.endswith(".videos.parquet") else "person column")


def _output_error(where: str | Path, error: OSError) -> write.OutputError:
    return write.OutputError(f"cannot write {where}: {error.strerror or error} (is the folder "
                             "there, writable, and is there space? the results scored so far "
                             "are saved)")


def _metadata(models: Models, arguments: Mapping[str, Any]) -> dict[str, str]:
    return write.table_metadata(models.classifier.name, models.classifier.sha256,
                                models.detector.name, arguments,
                                models.mesh.name if models.mesh else None)


def _saved_results(out: str | Path, models: Models, options: Options,
                   location: Location) -> SavedResults | nullcontext[None]:
    """The saved results of a local ``out``; none for an output in a bucket."""
    if not storage.is_local(out):
        log.info("results are saved only beside a local --out; a rerun into %s scores "
                 "every photo again", out)
        return nullcontext(None)
    mesh = models.mesh.name if models.mesh else None
    setup = setup_key(models.classifier.sha256, models.detector.name, options, location, mesh)
    return SavedResults(state_folder(storage.local_path(out)), setup, mesh is not None,
                        video_setup_key(setup, options))


class _Entry(NamedTuple):
    """A photo in the job's order: its file key and, when found, its saved result."""

    photo: Photo
    key: FileKey | None
    saved: PhotoResult | VideoResult | None


def _results(photos: list[Photo], work: Work, engine: Engine, saved: SavedResults | None,
             stats: RunStats, progress: Callable[[int], None] | None,
             videos: _Videos | None = None) -> Iterator[list[dict[str, Any]]]:
    """Each chunk's rows, in photo order: saved results where found, the engine's otherwise.

    The engine takes the photos without a saved result and gives their results back in
    order; walking every entry, the job takes the next fresh result where it has no saved
    one. New results are saved once a chunk of photos is done, a video's as soon as it
    arrives, or earlier when the engine hands it over ahead of its turn (``RunStats.early``:
    a killed run loses at most the videos in flight). A video's rows go out in
    parts of at most ROW_GROUP_ROWS, and to ``videos`` for the per-video table.
    """
    entries = _Entries(_look_up(photos, work, saved, stats))
    early: set[int] = set()  # the videos saved when the engine handed them early

    def save_early(photo: Photo, result: VideoResult) -> None:
        entry = entries.videos.get(id(photo))
        if entry is not None:
            _save(saved, [(entry, result)], stats)
            early.add(id(photo))
    stats.early = save_early if saved is not None else None
    with closing(engine.score(entries.to_score(), work, stats)) as fresh:
        while chunk := list(islice(entries, work.options.chunk_size)):
            results: list[PhotoResult | VideoResult] = []
            rows: list[dict[str, Any]] = []  # the photos' since the last video
            for entry in chunk:
                result = entry.saved if entry.saved is not None else next(fresh)
                results.append(result)
                if isinstance(result, PhotoResult):
                    rows += iter_rows(entry.photo, result)
                    continue
                if entry.saved is None and id(entry.photo) not in early:
                    _save(saved, [(entry, result)], stats)
                early.discard(id(entry.photo))
                entries.videos.pop(id(entry.photo), None)
                if rows:
                    yield rows
                    rows = []
                yield from _video_rows(entry.photo, result, videos)
                if entry.saved is not None:
                    stats.sample(len(result.frames))  # the engine counts the others
                if progress is not None:
                    progress(1)
            _save(saved, [(entry, result) for entry, result in zip(chunk, results, strict=True)
                          if entry.saved is None and isinstance(result, PhotoResult)], stats)
            reused = sum(entry.saved is not None for entry in chunk)
            stats.count(results)
            stats.reused += reused
            stats.scored += len(chunk) - reused
            yield rows
            if progress is not None:
                progress(sum(isinstance(result, PhotoResult) for result in results))
    if saved is not None:
        saved.check()  # still ours: no other run can be writing these outputs


def _save(saved: SavedResults | None,
          scored: list[tuple[_Entry, PhotoResult | VideoResult]], stats: RunStats) -> None:
    """Save fresh results worth keeping, in one transaction."""
    if saved is None:
        return
    since = time.perf_counter()
    saved.save([(entry.key, result) for entry, result in scored
                if entry.key is not None and _keep(result)])
    stats.charge("state", since)


def _video_rows(photo: Photo, result: VideoResult,
                videos: _Videos | None) -> Iterator[list[dict[str, Any]]]:
    """A video's rows in parts of at most ROW_GROUP_ROWS; its row to the per-video table."""
    rows = list(iter_rows(photo, result))
    if videos is not None:
        videos.add(photo, result, rows)
    for start in range(0, len(rows), ROW_GROUP_ROWS):
        yield rows[start:start + ROW_GROUP_ROWS]


_END = _Entry(Photo("", ""), None, None)  # the end of the entries, for ``_Entries._next``


class _Entries:
    """The run's entries in order, each looked up once, read by the job and the engine at
    their own pace.

    Iterating gives the job every entry; ``to_score()`` gives the engine the photos without
    a saved result, as far ahead as it reads. Whichever side reaches a photo first looks it
    up, so its file is stat'ed before the engine reads it: a file changed in between is
    saved under its old key and so scored again next time, never reused stale. An entry
    waits only while one side has passed it and the other has not: for the job, the
    entries the engine read ahead; for the engine, at most one photo (the job cannot pass a
    photo to score without its result).
    """

    def __init__(self, source: Iterator[_Entry]) -> None:
        self._source = source
        self._for_job: deque[_Entry] = deque()  # passed by the engine, not yet by the job
        self._for_engine: deque[Photo] = deque()  # to score, passed by the job only
        # The videos to score whose results the job has not yet taken, by their Photo's id:
        # what an engine's early result (RunStats.early) is saved under.
        self.videos: dict[int, _Entry] = {}

    def __iter__(self) -> Iterator[_Entry]:
        return self

    def __next__(self) -> _Entry:
        if self._for_job:
            entry = self._for_job.popleft()
        else:
            entry = self._next()
            if entry.saved is None:
                self._for_engine.append(entry.photo)
        return entry

    def _next(self, default: _Entry | None = None) -> _Entry:
        entry = next(self._source) if default is None else next(self._source, default)
        if entry.saved is None and storage.is_video(entry.photo.path):
            self.videos[id(entry.photo)] = entry
        return entry

    def to_score(self) -> Iterator[Photo]:
        """The photos without a saved result, in order."""
        while True:
            if self._for_engine:
                yield self._for_engine.popleft()
                continue
            entry = self._next(_END)
            if entry is _END:
                return
            self._for_job.append(entry)
            if entry.saved is None:
                yield entry.photo


def _look_up(photos: list[Photo], work: Work, saved: SavedResults | None,
             stats: RunStats) -> Iterator[_Entry]:
    """Each photo with its file key and saved result (none without saved results, or for a
    photo discovery already gave a status), looked up a chunk at a time."""
    iterator = iter(photos)
    while chunk := list(islice(iterator, work.options.chunk_size)):
        since = time.perf_counter()
        keys = [work.location.key(p.path) if saved is not None and p.status is None
                else None for p in chunk]
        found = [saved.lookup(k, storage.is_video(p.path)) if saved is not None and k else None
                 for p, k in zip(chunk, keys, strict=True)]
        stats.charge("state", since)
        yield from map(_Entry, chunk, keys, found)


def _keep(result: PhotoResult | VideoResult) -> bool:
    """Whether a result is worth saving: read and hashed, and not an unexpected error."""
    return result.sha256 is not None and result.status != ERROR


def score_folder(photos: str | Path | Location, out: str | Path | None = None, *,
                 companies: str | Path | None = None, manifest: str | Path | None = None,
                 model: str | Path | None = None, device: str = "auto", faces: str = "main",
                 batch_size: int = DEFAULT_BATCH_SIZE, max_pixels: int = DEFAULT_MAX_PIXELS,
                 threads: int | None = None, workers: int | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE,
                 progress: Callable[..., None] | None = None,
                 arguments: Mapping[str, Any] | None = None, geometry: bool = False,
                 engine: Engine | None = None, fps: float = DEFAULT_FPS,
                 videos: str | Path | None = None, people: str | Path | None = None) -> Scores:
    """Score every photo (and video) under ``photos``; return the tables as DataFrames.

    ``write_scores`` with the tables returned in memory: with ``out``, the per-face Parquet
    is written there and the per-company one to ``companies`` (default ``<out
    stem>.companies.parquet``), the per-video one to ``videos`` (default ``<out
    stem>.videos.parquet``), the per-person one (a manifest with ``person``) to ``people``
    (default ``<out stem>.people.parquet``), and a repeated call reuses the saved results;
    ``companies`` alone writes only the per-company table; neither keeps nothing on disk.
    ``engine`` as for ``write_scores``. For collections too large for memory, call
    ``write_scores``.
    """
    if arguments is None:
        arguments = {"photos": photos, "manifest": manifest, "model": model, "device": device,
                     "faces": faces, "batch_size": batch_size, "max_pixels": max_pixels,
                     "geometry": geometry, "fps": fps}
    with tempfile.TemporaryDirectory(prefix="facevalue-") as scratch:
        target = Path(scratch, "faces.parquet") if out is None else out
        if out is None and companies is None:
            companies = Path(scratch, "companies.parquet")
        summary = write_scores(photos, target, companies=companies, manifest=manifest,
                               model=model, device=device, faces=faces, batch_size=batch_size,
                               max_pixels=max_pixels, threads=threads, workers=workers,
                               chunk_size=chunk_size, progress=progress, arguments=arguments,
                               geometry=geometry, engine=engine, fps=fps, videos=videos,
                               people=people)
        meta = write.read_metadata(summary.out)
        frames = {name: None if path is None else storage.read_table(path).to_pandas()
                  for name, path in (("faces", summary.out), ("companies", summary.companies),
                                     ("videos", summary.video_table),
                                     ("people", summary.people_table))}
    for frame in frames.values():
        if frame is not None:
            frame.attrs = dict(meta)
    return Scores(**frames)


def _write_rows(chunks: Iterable[list[dict[str, Any]]], schema: pa.Schema, out: str | Path,
                companies: str, stats: RunStats) -> storage.OutputFile:
    """Stream rows into a temporary file for ``out`` in row groups of about ROW_GROUP_ROWS
    rows; the caller renames it once the company table is written too.

    Temporary files a killed run left beside the outputs go first (the saved results' lock
    says no live run owns them).
    """
    storage.OutputFile(out).remove_stale_temps()
    storage.OutputFile(companies).remove_stale_temps()
    buffered: list[pa.Table] = []
    with write.AtomicParquetWriter(out, schema, commit=False) as writer:
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
    stats.charge("write", since)  # the last row group and the footer
    return writer.output


def _aggregation_columns(faces_file: storage.OutputFile, ids: list[str],
                         geometry: bool, videos: list[str] | None = None) -> pd.DataFrame:
    """The columns the company table needs of the photos' rows, read back from the per-face
    file (its temporary name: it is renamed with the company table); the rows of
    ``videos`` (paths) are left out while reading (the per-video table stands for them).

    Text columns come back as categoricals (a company's name is stored once, not once per
    face) and Arrow's buffers are freed while converting: memory stays flat with the rows.
    """
    text = ["company", *ids, "status", "emotion"]
    measures = ["fwhr", "geometry_ok"] if geometry else []
    photos = ~pc.field("path").isin(videos) if videos else None
    table = pq.read_table(faces_file.temp, filesystem=faces_file.fs, filters=photos,
                          columns=[*text, "face", *LABELS, *measures], read_dictionary=text)
    return table.to_pandas(self_destruct=True, split_blocks=True)


def _video_geometry(faces_file: storage.OutputFile, ids: list[str],
                    videos: list[str]) -> pd.DataFrame:
    """The videos' main-track rows with their geometry, for the per-person fWHR."""
    keys = aggregate.person_keys(ids)
    wanted = pc.field("path").isin(videos) & (pc.field(TRACK) == 0)
    table = pq.read_table(faces_file.temp, filesystem=faces_file.fs, filters=wanted,
                          columns=["path", *keys, TRACK, "fwhr", "geometry_ok"],
                          read_dictionary=["path", *keys])
    return table.to_pandas(self_destruct=True, split_blocks=True)


def _counting(progress: Callable[..., None] | None, total: int,
              videos: RunStats | None = None) -> Callable[[int], None] | None:
    """Turn per-chunk counts of files into ``progress(finished, total)`` calls, with the
    video frames sampled so far (``videos.sampled``) as a third argument when there are
    videos to score; their engine's ``tick`` repeats the call as frames are sampled."""
    if progress is None:
        return None
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if videos is not None:
            progress(done, total, videos.sampled)
        else:
            progress(done, total)
    if videos is not None:
        videos.tick = lambda: advance(0)
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

