"""Resumable and incremental runs: kill -9 anywhere, run again, get the uninterrupted tables;
add photos, run again, score only those."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import build_tiny_model
from images import bad_inputs, encode, portrait
from test_workers import varied_portraits

from facevalue.detect import Box
from facevalue.discover import Photo
from facevalue.faces import Options
from facevalue.local import LocalEngine
from facevalue.pipeline import setup_key, write_scores
from facevalue.records import Geometry, PhotoResult, ScoredFace
from facevalue.state import SavedResults, StateError, state_folder
from facevalue.storage import FileKey

# Scores in a child process that reports each finished chunk and then dawdles, so the test
# can kill it at a chosen point while its worker threads are busy with the next chunk.
CHILD = """
import sys, time
from facevalue.pipeline import write_scores

def report(done, total):
    print(done, flush=True)
    time.sleep(0.1)

summary = write_scores(sys.argv[1], sys.argv[2], model=sys.argv[3], device="cpu",
                       workers=2, chunk_size=3, progress=report)
print("reused", summary.reused, flush=True)
"""


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    bad_inputs(folder)
    varied_portraits(folder, 13)
    return folder  # 24 photos


def score(photos: Path, out: Path, model: Path, **options: object) -> object:
    return write_scores(photos, out, model=model, device="cpu", chunk_size=3, **options)


def tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (pd.read_parquet(out),
            pd.read_parquet(out.with_name(f"{out.stem}.companies.parquet")))


def kill_after(done: int, photos: Path, out: Path, model: Path) -> None:
    """Start the child, SIGKILL it once it has reported ``done`` photos finished."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(photos), str(out), str(model)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for line in child.stdout:
        if line.strip().isdigit() and int(line) >= done:
            child.send_signal(signal.SIGKILL)
            break
    assert child.wait(timeout=60) == -signal.SIGKILL


def test_killed_runs_resume_to_the_uninterrupted_tables(photos: Path, tiny_model: Path,
                                                        tmp_path: Path) -> None:
    reference = tmp_path / "reference" / "s.parquet"
    score(photos, reference, tiny_model)
    out = tmp_path / "killed" / "s.parquet"
    # killed after the first chunk, then (resumed) midway, then (resumed) after the last one,
    # before the tables are complete
    for done in (3, 12, 24):
        kill_after(done, photos, out, tiny_model)
        assert not out.exists()  # a killed run never leaves a half-written table
    resumed = score(photos, out, tiny_model)
    assert (resumed.scored, resumed.reused) == (1, 23)  # only the empty file has no result
    for ours, theirs in zip(tables(out), tables(reference), strict=True):
        pd.testing.assert_frame_equal(ours, theirs)  # every photo once, same rows, same order
    assert not list(out.parent.glob(".*.tmp"))  # the killed runs' temporary files are gone


def test_only_added_photos_are_scored(photos: Path, tiny_model: Path, tmp_path: Path) -> None:
    grown = tmp_path / "photos"
    varied_portraits(grown, 10)
    out = tmp_path / "s.parquet"
    assert score(grown, out, tiny_model).scored == 10
    for i in range(3):
        (grown / "new" / f"n{i}.jpg").parent.mkdir(exist_ok=True)
        (grown / "new" / f"n{i}.jpg").write_bytes(encode(np.roll(portrait(), 7 * i, axis=0)))
    again = score(grown, out, tiny_model)
    assert (again.scored, again.reused, again.photos) == (3, 10, 13)
    fresh = tmp_path / "fresh.parquet"
    score(grown, fresh, tiny_model)
    for ours, theirs in zip(tables(out), tables(fresh), strict=True):
        pd.testing.assert_frame_equal(ours, theirs)


@dataclass
class Recording:
    """The local engine, given its photos all at once before the first result (as Ray reads
    them) or as it goes; records the photos it was given."""

    at_once: bool
    given: list[str] = field(default_factory=list)
    local: LocalEngine = field(default_factory=lambda: LocalEngine(2))

    def load(self, *args: Any) -> Any:
        return self.local.load(*args)

    def arguments(self) -> dict[str, Any]:
        return {}

    def score(self, photos: Iterable[Photo], work: Any, stats: Any) -> Any:
        photos = list(photos) if self.at_once else photos
        return self.local.score((self._record(p) for p in photos), work, stats)

    def _record(self, photo: Photo) -> Photo:
        self.given.append(photo.path)
        return photo


@pytest.mark.parametrize("at_once", [False, True])
def test_the_engine_gets_only_photos_to_score_and_the_job_keeps_the_order(
        tiny_model: Path, tmp_path: Path, at_once: bool) -> None:
    folder = tmp_path / "photos"
    varied_portraits(folder, 9)
    out = tmp_path / "s.parquet"
    score(folder, out, tiny_model)
    # new photos before, between and after the saved ones, and chunks of only saved ones
    new = ["firm0/a.jpg", "firm0/p03b.jpg", "firm1/p04b.jpg", "firm2/z.jpg"]
    for i, name in enumerate(new):
        (folder / name).write_bytes(encode(np.roll(portrait(), 5 * i + 3, axis=1)))
    engine = Recording(at_once)
    again = write_scores(folder, out, model=tiny_model, device="cpu", chunk_size=3,
                         engine=engine)
    assert engine.given == new and (again.scored, again.reused) == (4, 9)
    fresh = tmp_path / "fresh.parquet"
    score(folder, fresh, tiny_model)
    for ours, theirs in zip(tables(out), tables(fresh), strict=True):
        pd.testing.assert_frame_equal(ours, theirs)
    nothing = Recording(at_once)
    assert write_scores(folder, out, model=tiny_model, device="cpu",
                        engine=nothing).reused == 13 and nothing.given == []


def test_changed_files_and_other_models_are_scored_again(tiny_model: Path,
                                                         tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    varied_portraits(folder, 4)
    out = tmp_path / "s.parquet"
    score(folder, out, tiny_model)
    changed = folder / "firm0" / "p00.jpg"
    changed.write_bytes(encode(cv2.flip(portrait(), 0)))
    assert score(folder, out, tiny_model).scored == 1
    other = build_tiny_model(tmp_path / "other.onnx", seed=1)
    rescored = score(folder, out, other)
    assert (rescored.scored, rescored.reused) == (4, 0)
    assert score(folder, out, tiny_model, faces="all").scored == 4  # options count too
    assert score(folder, out, tiny_model).reused == 4  # earlier results stay saved


def test_a_second_run_on_the_same_output_is_refused(photos: Path, tiny_model: Path,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    with SavedResults(state_folder(out), "any"):
        with pytest.raises(StateError, match="another facevalue run is writing"):
            score(photos, out, tiny_model)
    assert score(photos, out, tiny_model).photos == 24  # the lock went with the first holder


def test_damaged_state_says_how_to_recover(photos: Path, tiny_model: Path,
                                           tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    state_folder(out).mkdir()
    (state_folder(out) / "results.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(StateError, match="delete the folder"):
        score(photos, out, tiny_model)


def _face(x: int, geometry: Geometry | None = None) -> ScoredFace:
    """A scored face as the engines make it: float32 scores held as Python floats."""
    probabilities = np.float32([0.1, 0.2, 0.05, 0.3, 0.15, 0.1, 0.1]).tolist()
    return ScoredFace(Box(x, 20, 30, 40, float(np.float32(0.91))), tuple(probabilities),
                      geometry)


@pytest.mark.parametrize("geometry", [None, Geometry(1.93, -4.5, float("nan"), 2.25, 61.0,
                                                     312.5, float(np.float32(0.97)), True)])
def test_saved_results_round_trip_exactly(tmp_path: Path, geometry: Geometry | None) -> None:
    faces = (_face(10, geometry), _face(70, geometry))
    entries = [(FileKey("a/x.jpg", 100, 7), PhotoResult("ok", None, 2, "ab" * 32, faces)),
               (FileKey("a/y.jpg", 5, 8), PhotoResult("no_face", None, 0, "cd" * 32))]
    with SavedResults(tmp_path / "state", "setup-1", geometry is not None) as saved:
        saved.save(entries)
    with SavedResults(tmp_path / "state", "setup-1", geometry is not None) as saved:
        found = saved.lookup(FileKey("a/x.jpg", 100, 7))
        assert found is not None and found.faces[1].box == faces[1].box
        # by repr, as NaN is not equal to itself (and geometry_ok comes back a bool)
        assert repr(found) == repr(entries[0][1])
        assert saved.lookup(FileKey("a/y.jpg", 5, 8)) == entries[1][1]
        assert saved.lookup(FileKey("a/x.jpg", 100, 9)) is None  # touched since
    with SavedResults(tmp_path / "state", "setup-2") as saved:
        assert saved.lookup(FileKey("a/x.jpg", 100, 7)) is None  # another model or options


def test_setup_key_follows_what_changes_results() -> None:
    base = setup_key("m" * 64, "blazeface@1", Options(), "photos")
    assert base == setup_key("m" * 64, "blazeface@1", Options(batch_size=7, chunk_size=9),
                             "photos")
    assert base != setup_key("n" * 64, "blazeface@1", Options(), "photos")
    assert base != setup_key("m" * 64, "blazeface@2", Options(), "photos")
    assert base != setup_key("m" * 64, "blazeface@1", Options(max_pixels=10), "photos")
    assert base != setup_key("m" * 64, "blazeface@1", Options(), "other_photos")


def test_stale_temporary_files_are_removed(photos: Path, tiny_model: Path,
                                           tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    stale = tmp_path / ".s.parquet.0123456789ab.tmp"
    stale.write_bytes(b"left by a killed run")
    other = tmp_path / ".other.parquet.0123456789ab.tmp"  # another output's: not ours
    other.write_bytes(b"x")
    score(photos, out, tiny_model)
    assert not stale.exists() and other.exists() and out.exists()


def test_state_lives_beside_the_output(tmp_path: Path) -> None:
    assert state_folder(tmp_path / "scores.parquet") == tmp_path / ".scores.facevalue-state"


def test_a_kill_between_the_two_renames_is_caught_by_the_run_ids(
        photos: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second run killed after renaming its per-face file, before its companies file.

    Both tables are complete before either is renamed, so only a kill between the two
    renames can mismatch them (a kill while writing the companies table leaves both old
    tables); the run ids catch that.
    """
    from facevalue import storage
    from facevalue.report import ReportError, build_report
    from facevalue.write import default_companies_path, read_metadata

    out = tmp_path / "s.parquet"
    write_scores(photos, out, model=tiny_model)
    first = read_metadata(default_companies_path(out))["facevalue.run_id"]
    commit = storage.OutputFile.commit

    def killed_after_one(self: storage.OutputFile) -> None:
        if self.name.endswith(".companies.parquet"):
            raise KeyboardInterrupt
        commit(self)

    monkeypatch.setattr(storage.OutputFile, "commit", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        write_scores(photos, out, model=tiny_model)
    monkeypatch.undo()
    assert not list(tmp_path.glob(".*.tmp"))
    assert read_metadata(out)["facevalue.run_id"] != first  # the pair is mismatched now
    assert read_metadata(default_companies_path(out))["facevalue.run_id"] == first
    pytest.importorskip("jinja2")
    with pytest.raises(ReportError, match="comes from another run"):
        build_report(out, tmp_path / "r.html")
    write_scores(photos, out, model=tiny_model)  # the same command again mends it
    assert read_metadata(out)["facevalue.run_id"] == \
        read_metadata(default_companies_path(out))["facevalue.run_id"]


def test_a_state_damaged_mid_file_gives_the_delete_message(photos: Path, tiny_model: Path,
                                                           tmp_path: Path) -> None:
    from facevalue.state import STATE_FILE, StateError

    out = tmp_path / "s.parquet"
    write_scores(photos, out, model=tiny_model)
    database = state_folder(out) / STATE_FILE
    data = bytearray(database.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) > page  # the schema on page 1, the rows on the pages after it
    data[page:] = b"\xff" * (len(data) - page)  # every page but the first
    database.write_bytes(bytes(data))
    with pytest.raises(StateError, match="delete the folder"):
        write_scores(photos, out, model=tiny_model)


def test_state_deleted_mid_run_stops_it_before_any_output(photos: Path, tiny_model: Path,
                                                          tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "out" / "s.parquet"

    def delete_state(done: int, total: int) -> None:
        shutil.rmtree(state_folder(out), ignore_errors=True)  # as a second user might

    with pytest.raises(StateError, match="deleted or replaced during the run"):
        write_scores(photos, out, model=tiny_model, device="cpu", chunk_size=3,
                     progress=delete_state)
    assert list(out.parent.iterdir()) == []  # no table, no temp file
    summary = write_scores(photos, out, model=tiny_model, device="cpu")  # the same command
    assert summary.scored == summary.photos and out.exists()


def test_a_photo_changed_in_place_with_the_same_size_and_mtime_is_scored_again(
        tiny_model: Path, tmp_path: Path) -> None:
    """Issue 20, defect 1: ``exiftool -P`` or ``cp -p`` of a same-size file keeps size and
    mtime; the change time (and, for a new file, the inode) still tells."""
    import hashlib
    import os

    folder = tmp_path / "photos"
    before = encode(portrait())
    after = encode(cv2.flip(portrait(), 1))
    size = max(len(before), len(after))  # bytes after a JPEG's end marker are ignored
    before, after = before.ljust(size, b"\0"), after.ljust(size, b"\0")
    photo = folder / "firm" / "p.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(before)
    mtime = photo.stat().st_mtime_ns
    out = tmp_path / "s.parquet"
    score(folder, out, tiny_model)
    with photo.open("r+b") as f:  # in place: the same inode
        f.write(after)
    os.utime(photo, ns=(mtime, mtime))
    again = score(folder, out, tiny_model)
    assert (again.scored, again.reused) == (1, 0)
    assert pd.read_parquet(out)["photo_sha256"].tolist() == [hashlib.sha256(after).hexdigest()]
    replaced = folder / "firm" / "new.jpg"  # a same-size copy renamed over it (rsync -t)
    replaced.write_bytes(before)
    os.utime(replaced, ns=(mtime, mtime))
    replaced.replace(photo)
    third = score(folder, out, tiny_model)
    assert (third.scored, third.reused) == (1, 0)
    assert pd.read_parquet(out)["photo_sha256"].tolist() == [hashlib.sha256(before).hexdigest()]
    assert score(folder, out, tiny_model).reused == 1  # unchanged: still reused


def test_a_version_1_state_keeps_its_results(tmp_path: Path) -> None:
    """A database from before the change time and inode were keyed: its file keys go (those
    photos are scored again), its results and the folder stay usable."""
    import sqlite3

    from facevalue.state import STATE_FILE

    state_folder(tmp_path / "s.parquet").mkdir()
    database = state_folder(tmp_path / "s.parquet") / STATE_FILE
    with sqlite3.connect(database) as db:
        db.executescript("""
            CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL) WITHOUT ROWID;
            CREATE TABLE results (sha256 TEXT NOT NULL, setup TEXT NOT NULL,
                status TEXT NOT NULL, error TEXT, faces_in_photo INTEGER,
                faces BLOB NOT NULL, PRIMARY KEY (sha256, setup)) WITHOUT ROWID;
            INSERT INTO files VALUES ('a.jpg', 1, 1, 'ab');
            INSERT INTO results VALUES ('ab', 'setup', 'no_face', NULL, 0, x'');
            PRAGMA user_version = 1;""")
    db.close()
    key = FileKey("a.jpg", 1, 1, 2, 3)
    with SavedResults(state_folder(tmp_path / "s.parquet"), "setup") as saved:
        assert saved.lookup(key) is None
        saved.save([(key, PhotoResult("no_face", None, 0, "ab"))])
        found = saved.lookup(key)
        assert found is not None and (found.status, found.sha256) == ("no_face", "ab")


@pytest.mark.parametrize("damage", [
    "faces = x'0102'",  # not a whole number of faces
    "faces_in_photo = 'three'",
    "status = 'bogus'",
    "status = 7",
    "error = x'00'",
    "faces = 'text'",
])
def test_a_damaged_row_gives_the_delete_message(photos: Path, tiny_model: Path,
                                                tmp_path: Path, damage: str) -> None:
    """Issue 20, defect 9: a row SQLite reads back intact but that no run wrote."""
    import sqlite3

    from facevalue.state import STATE_FILE

    out = tmp_path / "s.parquet"
    write_scores(photos, out, model=tiny_model)
    with sqlite3.connect(state_folder(out) / STATE_FILE) as db:
        db.execute(f"UPDATE results SET {damage} WHERE status = 'ok'")
    db.close()
    with pytest.raises(StateError, match="damaged.*delete the folder"):
        write_scores(photos, out, model=tiny_model)
