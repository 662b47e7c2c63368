"""Videos through the whole job: a row per face per sampled second, tracks, the per-video and
company tables, saved results per video, bad videos as status rows."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from images import SAMPLE_PHOTOS
from videos import BAD_VIDEOS, SMALL_LIMIT, TALK, bad_videos, stills, talk, write_lossless

from facevalue import score_folder
from facevalue.cli import cli
from facevalue.columns import OK, TOO_LARGE
from facevalue.contract import LABELS
from facevalue.detect import Box
from facevalue.discover import Photo
from facevalue.local import LocalEngine
from facevalue.pipeline import write_scores
from facevalue.records import Geometry, PhotoResult, ScoredFace, VideoResult
from facevalue.state import STATE_FILE, SavedResults, StateError
from facevalue.storage import FileKey
from facevalue.write import read_metadata


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample photos, the talk with its two people as photos, and every bad video."""
    root = tmp_path_factory.mktemp("mixed") / "photos"
    shutil.copytree(SAMPLE_PHOTOS, root)
    talk(root / "acme")
    bad_videos(root / "bad")
    return root


def score(folder: Path, out: Path | None = None, **settings: Any) -> Any:
    return score_folder(folder, out, model=settings.pop("model"), device="cpu",
                        max_pixels=SMALL_LIMIT, **settings)


def test_known_faces_read_back_second_by_second(folder: Path, tiny_model: Path) -> None:
    """Each sampled second shows whom the talk shows then, scored exactly as that person's
    photo (the video is lossless), with the speaker on track 0 throughout."""
    faces = score(folder, model=tiny_model, faces="all").faces.set_index("path")
    rows = faces.loc["acme/talk.mkv"]
    assert rows["time"].tolist() == [float(t) for t in range(8)]
    assert rows["track"].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    assert (rows["status"] == OK).all() and (rows["face"] == 0).all()
    shown = [TALK[2 * t] for t in range(8)]  # two frames a second
    for (_, row), person in zip(rows.iterrows(), shown, strict=True):
        photo = faces.loc[f"acme/{person}.png"]
        assert row[list(LABELS)].tolist() == photo[list(LABELS)].tolist()
        assert row[["x", "y", "w", "h"]].tolist() == photo[["x", "y", "w", "h"]].tolist()
    photos = faces[~faces.index.str.contains(r"\.(?:mkv|mp4|avi|mov|m4v|webm)$")]
    assert photos["time"].isna().all() and photos["track"].isna().all()
    assert faces["time"].dtype == "float64" and str(faces["track"].dtype) in ("Int32", "float64")


def test_main_track_and_the_per_video_and_company_tables(folder: Path, tiny_model: Path,
                                                         tmp_path: Path) -> None:
    scores = score(folder, tmp_path / "s.parquet", model=tiny_model)
    rows = scores.faces[scores.faces["path"] == "acme/talk.mkv"]
    # the astronaut's seconds keep their row, without a face: --faces main keeps the speaker's
    assert rows["track"].isna().tolist() == [False] * 3 + [True] * 2 + [False] * 3
    assert rows["face"].isna().tolist() == rows["track"].isna().tolist()
    assert rows["status"].eq(OK).all() and rows["faces_in_photo"].eq(1).all()
    video = scores.videos.set_index("path").loc["acme/talk.mkv"]
    grace = scores.faces.set_index("path").loc["acme/grace.png"]
    assert (video["frames"], video["frames_with_face"], video["faces"]) == (8, 8, 6)
    assert video["main_share"] == 0.75 and 7.5 < video["duration"] <= 8.0  # the container's
    assert video["happiness"] == pytest.approx(grace["happiness"])
    assert video["happiness_std"] == 0.0  # the same still in every sampled frame
    acme = scores.companies.set_index("company").loc["acme"]
    assert (acme["photos"], acme["videos"], acme["faces"], acme["failed"]) == (2, 1, 8, 0)
    astronaut = scores.faces.set_index("path").loc["acme/astronaut.png"]
    # three units, each once: two photos and the video (its main track: Grace)
    assert acme["happiness"] == pytest.approx(
        (grace["happiness"] + astronaut["happiness"] + video["happiness"]) / 3)
    out_meta = read_metadata(tmp_path / "s.parquet")
    videos_meta = read_metadata(tmp_path / "s.videos.parquet")
    assert videos_meta["facevalue.run_id"] == out_meta["facevalue.run_id"]
    assert videos_meta["facevalue.model_sha256"] == out_meta["facevalue.model_sha256"]


def test_bad_videos_get_status_rows(folder: Path, tiny_model: Path) -> None:
    scores = score(folder, model=tiny_model)
    videos = scores.videos.set_index("path")
    first = scores.faces.drop_duplicates("path").set_index("path")
    for name, status in BAD_VIDEOS.items():
        if name.endswith(".jpg"):  # a video named .jpg is an unreadable photo
            assert first.loc[f"bad/{name}", "status"] == status
            assert f"bad/{name}" not in videos.index
            continue
        assert videos.loc[f"bad/{name}", "status"] == status, name
        if status not in (OK, "no_face"):
            assert videos.loc[f"bad/{name}", "frames"] == 0
            assert first.loc[f"bad/{name}", "error"], name
    assert videos.loc["bad/huge.mov", "status"] == TOO_LARGE
    vfr = scores.faces[scores.faces["path"] == "bad/vfr.mp4"]
    assert vfr["time"].tolist() == [0.0, 1.0, 2.5, 4.1]  # the container's times
    assert videos.loc["bad/cut.avi", "frames"] == 2  # what the cut file holds
    bad = scores.companies.set_index("company").loc["bad"]
    assert (bad["photos"], bad["videos"], bad["failed"]) == (1, 12, 8)


def test_workers_and_chunks_give_the_same_tables(folder: Path, tiny_model: Path) -> None:
    one = score(folder, model=tiny_model, workers=1, faces="all")
    two = score(folder, model=tiny_model, workers=2, chunk_size=2, faces="all")
    for ours, theirs in ((one.faces, two.faces), (one.companies, two.companies),
                         (one.videos, two.videos)):
        pd.testing.assert_frame_equal(ours, theirs)


class Recording:
    """The local engine, recording what it is given to score."""

    def __init__(self) -> None:
        self.given: list[str] = []
        self.local = LocalEngine(2)

    def load(self, *args: Any) -> Any:
        return self.local.load(*args)

    def arguments(self) -> dict[str, Any]:
        return {}

    def score(self, photos: Iterable[Photo], work: Any, stats: Any) -> Any:
        return self.local.score((self._record(p) for p in photos), work, stats)

    def _record(self, photo: Photo) -> Photo:
        self.given.append(photo.path)
        return photo


def test_a_rerun_skips_finished_videos_and_another_fps_scores_only_videos(
        folder: Path, tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    first = write_scores(folder, out, model=tiny_model, device="cpu", max_pixels=SMALL_LIMIT)
    tables = [pd.read_parquet(p) for p in (out, first.companies, first.video_table)]
    again = Recording()
    second = write_scores(folder, out, model=tiny_model, device="cpu", max_pixels=SMALL_LIMIT,
                          engine=again)
    # only what has no content to key a result on is given again (the empty video, the FIFO)
    assert again.given == ["bad/empty.mp4", "bad/fifo.mov"]
    assert second.reused == first.photos - 2
    for table, path in zip(tables, (out, second.companies, second.video_table), strict=True):
        pd.testing.assert_frame_equal(pd.read_parquet(path), table)
    faster = Recording()
    write_scores(folder, out, model=tiny_model, device="cpu", max_pixels=SMALL_LIMIT,
                 engine=faster, fps=2)
    videos = {p for p in first_paths(out) if not p.endswith((".png", ".jpg"))}
    assert set(faster.given) == videos | {"bad/empty.mp4"}
    talk_rows = pd.read_parquet(out).query("path == 'acme/talk.mkv'")
    assert talk_rows["time"].tolist() == [t / 2 for t in range(16)]


def first_paths(out: Path) -> list[str]:
    return pd.read_parquet(out, columns=["path"])["path"].unique().tolist()


# Scores videos in a child process on one worker, reporting each finished video, so the test
# can kill it once the first is saved.
CHILD = """
import sys, time
from facevalue.pipeline import write_scores

last = 0

def report(done, total, frames=None):
    global last
    if done > last:  # not the ticks that show frames while a video is scored
        last = done
        print(done, flush=True)
        time.sleep(0.5)

write_scores(sys.argv[1], sys.argv[2], model=sys.argv[3], device="cpu", workers=1,
             progress=report)
"""


def test_kill_9_mid_video_keeps_the_finished_ones(tiny_model: Path, tmp_path: Path) -> None:
    images = stills()
    clips = tmp_path / "clips" / "acme"
    clips.mkdir(parents=True)
    for i in range(3):
        frames = [np.roll(images["grace"], 3 * i + t, axis=1) for t in range(20)]
        write_lossless(clips / f"v{i}.mkv", frames, [500 * t for t in range(20)])
    out = tmp_path / "out" / "s.parquet"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(clips.parent), str(out),
                              str(tiny_model)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "1"  # the first video is done
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL and not out.exists()
    resumed = write_scores(clips.parent, out, model=tiny_model, device="cpu")
    assert (resumed.reused, resumed.scored) == (1, 2)  # the report stalls the saving
    fresh = write_scores(clips.parent, tmp_path / "fresh.parquet", model=tiny_model,
                         device="cpu")
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(fresh.out))


# Scores on two workers, printing the number of results in each save that holds any.
SAVING_CHILD = """
import sys
from facevalue import state
from facevalue.pipeline import write_scores

original = state.SavedResults.save

def save(self, entries):
    original(self, entries)
    if entries:
        print(len(entries), flush=True)

state.SavedResults.save = save
write_scores(sys.argv[1], sys.argv[2], model=sys.argv[3], device="cpu", workers=2)
"""


def test_videos_finished_behind_a_long_one_are_saved_before_it(tiny_model: Path,
                                                               tmp_path: Path) -> None:
    """A long video first, two short ones after it: the short ones are saved while the long
    one is still being scored, so kill -9 then loses only the long one."""
    from videos import write_opencv

    images = stills()
    clips = tmp_path / "clips" / "acme"
    clips.mkdir(parents=True)
    write_opencv(clips / "a_long.mp4", [np.roll(images["grace"], t % 40, axis=1)
                                        for t in range(300)], 1)
    for name in ("b.mkv", "c.mkv"):
        write_lossless(clips / name, [images["grace"]] * 4, [0, 1000, 2000, 3000])
    out = tmp_path / "out" / "s.parquet"
    child = subprocess.Popen([sys.executable, "-c", SAVING_CHILD, str(clips.parent), str(out),
                              str(tiny_model)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert [child.stdout.readline().strip() for _ in range(2)] == ["1", "1"]
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL and not out.exists()
    again = Recording()
    resumed = write_scores(clips.parent, out, model=tiny_model, device="cpu", engine=again)
    assert again.given == ["acme/a_long.mp4"] and resumed.reused == 2


def test_progress_counts_a_long_videos_frames_as_they_are_sampled(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from videos import write_opencv

    import facevalue.local as local

    monkeypatch.setattr(local, "TICK", 0.01)
    clips = tmp_path / "clips" / "acme"
    clips.mkdir(parents=True)
    write_opencv(clips / "long.mp4", [np.roll(stills()["grace"], t % 40, axis=1)
                                      for t in range(120)], 1)
    calls: list[tuple[int, ...]] = []
    write_scores(clips.parent, tmp_path / "s.parquet", model=tiny_model, device="cpu",
                 workers=1, progress=lambda *args: calls.append(args))
    assert any(done == 0 and 0 < frames < 120 for done, _, frames in calls)  # mid-video
    assert calls[-1] == (1, 1, 120) and calls == sorted(calls)
    again: list[tuple[int, ...]] = []
    write_scores(clips.parent, tmp_path / "s.parquet", model=tiny_model, device="cpu",
                 progress=lambda *args: again.append(args))
    assert again[-1] == (1, 1, 120)  # a saved video's frames count too


@pytest.mark.parametrize("geometry", [None, Geometry(1.9, 2.0, -3.0, 0.5, 60.0, 120.0, 0.9,
                                                     True)])
def test_a_saved_video_round_trips_exactly(tmp_path: Path, geometry: Geometry | None) -> None:
    face = ScoredFace(Box(1, 2, 30, 40, 0.875), (0.1,) * 6 + (0.4,), geometry, 0)
    other = ScoredFace(Box(50, 2, 20, 20, 0.75), (0.2,) * 5 + (0.0, 0.0), geometry, 1)
    frames = (PhotoResult(OK, None, 2, "ab", (face, other), 0.0),
              PhotoResult("no_face", None, 0, "ab", (), 1.04),
              PhotoResult(TOO_LARGE, "too many pixels", None, "ab", (), 2.0),
              PhotoResult(OK, None, 3, "ab", (), 3.0))  # faces, none of them the main track's
    video = VideoResult(OK, None, "ab", 3.5, frames)
    key = FileKey("a.mp4", 1, 2, 3, 4)
    with SavedResults(tmp_path, "setup", geometry is not None, "video setup") as saved:
        saved.save([(key, video)])
        assert saved.lookup(key, video=True) == video
        assert saved.lookup(key) is None  # not a photo's result
    with SavedResults(tmp_path, "setup", geometry is not None, "other fps") as saved:
        assert saved.lookup(key, video=True) is None


def test_a_damaged_video_row_gives_the_delete_message(tmp_path: Path) -> None:
    key = FileKey("a.mp4", 1, 2, 3, 4)
    with SavedResults(tmp_path, "setup") as saved:
        saved.save([(key, VideoResult(OK, None, "ab", 1.0, (PhotoResult(OK, None, 1, "ab", (
            ScoredFace(Box(1, 2, 3, 4, 0.9), (1 / 7,) * 7, None, 0),), 0.0),)))])
    with sqlite3.connect(tmp_path / STATE_FILE) as db:
        db.execute("UPDATE videos SET frames = substr(frames, 1, 40)")
    db.close()
    with SavedResults(tmp_path, "setup") as saved, \
            pytest.raises(StateError, match="damaged.*delete the folder"):
        saved.lookup(key, video=True)


def test_a_version_2_state_keeps_its_photo_results(tmp_path: Path) -> None:
    """A database from before videos gains their table and keeps every photo's result."""
    key = FileKey("a.jpg", 1, 2, 3, 4)
    with SavedResults(tmp_path, "setup") as saved:
        saved.save([(key, PhotoResult("no_face", None, 0, "ab"))])
    with sqlite3.connect(tmp_path / STATE_FILE) as db:
        db.executescript("DROP TABLE videos; PRAGMA user_version = 2;")
    db.close()
    with SavedResults(tmp_path, "setup") as saved:
        assert saved.lookup(key) == PhotoResult("no_face", None, 0, "ab")
        assert saved.lookup(FileKey("v.mp4", 1, 2, 3, 4), video=True) is None


def test_cli_fps_faces_and_videos_options(folder: Path, tiny_model: Path,
                                          tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    talk(clips / "acme")
    out, videos = tmp_path / "s.parquet", tmp_path / "per-video.parquet"
    result = CliRunner().invoke(cli, ["score", str(clips), "--out", str(out), "--model",
                                      str(tiny_model), "--device", "cpu", "--fps", "0.5",
                                      "--faces", "all", "--videos", str(videos)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 photos and 1 video (4 frames)" in result.output and str(videos) in result.output
    rows = pd.read_parquet(out).query("path == 'acme/talk.mkv'")
    assert rows["time"].tolist() == [0.0, 2.0, 4.0, 6.0] and rows["track"].tolist() == [0, 0, 1, 0]
    assert pd.read_parquet(videos)["frames"].tolist() == [4]
    bad = CliRunner().invoke(cli, ["score", str(clips), "--out", str(out), "--fps", "0"])
    assert bad.exit_code == 2 and "--fps" in bad.output
    same = CliRunner().invoke(cli, ["score", str(clips), "--out", str(out), "--videos",
                                    str(out)])
    assert same.exit_code == 1 and "file of its own" in same.output


def test_the_readme_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """README "Videos": its Python and shell blocks, in order, from a folder beside
    sample_data, give the summary and the main_share the text quotes."""
    pytest.importorskip("matplotlib")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n## Videos\n")[1].split("\n## ")[0]
    blocks = [block.split("\n", 1) for block in section.split("```")[1::2]]
    (tmp_path / "sample_data").symlink_to(SAMPLE_PHOTOS.parent)
    monkeypatch.chdir(tmp_path)
    outputs = []
    for language, code in blocks:
        if language == "bash":
            command = code.split()
            assert command[0] == "facevalue"
            result = CliRunner().invoke(cli, command[1:], catch_exceptions=False)
            assert result.exit_code == 0, result.output
            outputs.append(result.output)
        else:
            exec(compile(code, "README.md", "exec"), {})  # noqa: S102 (our own README)
    assert "1 video (60 frames) (1 ok), 54 faces scored" in outputs[0]
    assert "54 faces scored" in section and "`main_share` is 0.9" in section
    assert pd.read_parquet("press.videos.parquet")["main_share"].tolist() == [0.9]
    assert Path("press.png").stat().st_size > 10_000 and "ECB/2020-03-12.mp4" in \
        capsys.readouterr().out


def test_a_video_in_a_bucket_scores_as_on_disk(tiny_model: Path, tmp_path: Path) -> None:
    """Read through pyarrow.fs as a random-access file (PyAV seeks in it), hashed a block at
    a time: the same rows, and a rerun reuses it."""
    from test_storage import bucket

    talk(tmp_path / "photos" / "acme")
    settings = {"model": tiny_model, "device": "cpu", "faces": "all"}
    local = score_folder(tmp_path / "photos", **settings)
    remote = bucket(tmp_path / "photos")
    first = write_scores(remote, tmp_path / "s.parquet", **settings)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "s.parquet"), local.faces)
    assert local.videos is not None and first.video_table is not None
    pd.testing.assert_frame_equal(pd.read_parquet(first.video_table), local.videos)
    assert write_scores(remote, tmp_path / "s.parquet", **settings).reused == 3
