"""The Ray engine: the local engine's tables from Ray Data, and no Ray on the local path.

Tests marked ``ray`` share one local Ray (2 CPUs) started once per session and skip only
where Ray is not installed; the others check what must hold without Ray.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from images import SAMPLE_PHOTOS, bad_inputs

from facevalue import score_folder
from facevalue.cli import cli
from facevalue.engine import EngineError
from facevalue.pipeline import Scores, write_scores
from facevalue.ray_engine import RayEngine, RayOptions, check_reachable
from facevalue.runtime import DeviceError
from facevalue.state import SavedResults
from facevalue.storage import FileKey
from facevalue.write import default_companies_path, read_metadata

MANIFEST = SAMPLE_PHOTOS.parent / "manifest.csv"


@pytest.fixture(scope="session")
def local_ray() -> Iterator[Any]:
    """One local Ray for every test that needs it (starting Ray takes seconds)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sample portraits, every awkward file from ``bad_inputs``, and files to skip."""
    root = tmp_path_factory.mktemp("corpus") / "photos"
    shutil.copytree(SAMPLE_PHOTOS, root)
    bad_inputs(root)
    (root / "acme" / "notes.txt").write_text("not a photo")
    (root / "acme" / "._grace.jpg").write_bytes(b"macOS resource fork")
    (root / ".Trashes").mkdir()
    shutil.copy(SAMPLE_PHOTOS / "navy" / "grace_hopper.jpg", root / ".Trashes" / "old.jpg")
    return root


def score_on_ray(photos: Path | str, out: Path | str | None = None,
                 ray_options: RayOptions | None = None, **settings: Any) -> Scores:
    return score_folder(photos, out, engine=RayEngine(ray_options or RayOptions()), **settings)


def assert_same(local: Scores, ray: Scores, local_out: Path, ray_out: Path) -> None:
    """Same frames row for row (Ray keeps discovery order too), same files and metadata."""
    pd.testing.assert_frame_equal(local.faces, ray.faces)
    pd.testing.assert_frame_equal(local.companies, ray.companies)
    for ours, theirs in ((local_out, ray_out),
                         (Path(default_companies_path(local_out)),
                          Path(default_companies_path(ray_out)))):
        pd.testing.assert_frame_equal(pd.read_parquet(ours), pd.read_parquet(theirs))
        assert pq.read_schema(ours).remove_metadata() == pq.read_schema(theirs).remove_metadata()
        local_meta, ray_meta = read_metadata(ours), read_metadata(theirs)
        for key in ("facevalue.version", "facevalue.model", "facevalue.model_sha256",
                    "facevalue.detector"):
            assert local_meta[key] == ray_meta[key]
    assert not list(ray_out.parent.glob(".*.tmp"))  # temporary files renamed or removed


@pytest.mark.ray
def test_ray_tables_equal_local_with_every_bad_input(local_ray: Any, corpus: Path,
                                                      tiny_model: Path, tmp_path: Path) -> None:
    settings = {"model": tiny_model, "device": "cpu", "faces": "all"}
    local = score_folder(corpus, tmp_path / "local.parquet", **settings)
    calls: list[tuple[int, int]] = []
    ray = score_on_ray(corpus, tmp_path / "ray.parquet", **settings,
                           progress=lambda done, total: calls.append((done, total)))
    assert_same(local, ray, tmp_path / "local.parquet", tmp_path / "ray.parquet")
    photos = local.faces["path"].nunique()
    assert calls[-1] == (photos, photos) and calls == sorted(calls)
    statuses = set(ray.faces["status"])
    assert {"ok", "no_face", "empty", "unreadable", "too_large"} <= statuses
    assert (ray.faces["path"] == "acme/two_faces.jpg").sum() == 2
    assert not ray.faces["path"].str.contains("Trashes|notes|\\._").any()
    assert json.loads(ray.faces.attrs["facevalue.arguments"])["engine"] == "ray"


@pytest.mark.ray
def test_both_engines_give_the_same_tables_on_a_tree_full_of_traps(
        local_ray: Any, tiny_model: Path, tmp_path: Path) -> None:
    from images import trap_tree

    expected = trap_tree(tmp_path / "photos", tmp_path / "elsewhere")
    settings = {"model": tiny_model, "device": "cpu"}
    local = score_folder(tmp_path / "photos", tmp_path / "local.parquet", **settings)
    ray = score_on_ray(tmp_path / "photos", tmp_path / "ray.parquet", **settings)
    assert_same(local, ray, tmp_path / "local.parquet", tmp_path / "ray.parquet")
    assert dict(zip(ray.faces["path"], ray.faces["status"], strict=True)) == expected


@pytest.mark.ray
@pytest.mark.parametrize("split", [False, True])
def test_geometry_columns_are_the_same_on_ray(local_ray: Any, tiny_model: Path, tmp_path: Path,
                                             split: bool) -> None:
    settings = {"model": tiny_model, "device": "cpu", "geometry": True}
    local = score_folder(SAMPLE_PHOTOS, tmp_path / "local.parquet", **settings)
    ray = score_on_ray(SAMPLE_PHOTOS, tmp_path / "ray.parquet", **settings,
                           ray_options=RayOptions(split=split))
    assert_same(local, ray, tmp_path / "local.parquet", tmp_path / "ray.parquet")
    assert ray.faces["fwhr"].notna().sum() == 2 and "geometry_faces" in ray.companies


@pytest.mark.ray
@pytest.mark.parametrize("split", [False, True])
def test_videos_give_the_same_three_tables_on_ray(local_ray: Any, tiny_model: Path,
                                                  tmp_path: Path, split: bool) -> None:
    """A folder of photos, a talk and every bad video: each video a unit of work on Ray
    (scored whole on the finding actors in the split plan), the tables the local engine's;
    a local rerun reuses what Ray saved."""
    from videos import SMALL_LIMIT, bad_videos, talk

    folder = tmp_path / "photos"
    shutil.copytree(SAMPLE_PHOTOS, folder)
    talk(folder / "acme")
    bad_videos(folder / "bad")
    settings = {"model": tiny_model, "device": "cpu", "faces": "all", "fps": 2,
                "max_pixels": SMALL_LIMIT}
    local = score_folder(folder, tmp_path / "local.parquet", **settings)
    ray = score_on_ray(folder, tmp_path / "ray.parquet", ray_options=RayOptions(split=split),
                       **settings)
    assert_same(local, ray, tmp_path / "local.parquet", tmp_path / "ray.parquet")
    assert local.videos is not None and ray.videos is not None
    pd.testing.assert_frame_equal(local.videos, ray.videos)
    assert len(ray.videos) == 13 and ray.faces["time"].notna().sum() > 30
    again = write_scores(folder, tmp_path / "ray.parquet", **settings)
    assert again.scored == 2  # the empty video and the FIFO: nothing to key a result on


class Stopped(Exception):
    """Stops a run from inside it, as a kill -9 would, once something is saved."""


@pytest.mark.ray
def test_videos_finished_behind_a_long_one_are_saved_before_it_on_ray(
        local_ray: Any, tiny_model: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A long video first, short ones after it, on two actors: each short one is saved as
    soon as Ray hands it over, while the long one is still being scored, so a run stopped
    then loses only the long one. (With Ray's preserve_order they waited, unsaved, behind
    it: the first thing saved was the long video.)"""
    from test_video_faces import Recording
    from videos import stills, write_lossless, write_opencv

    grace = stills()["grace"]
    clips = tmp_path / "clips" / "acme"
    clips.mkdir(parents=True)
    write_opencv(clips / "a_long.mp4", [np.roll(grace, t % 40, axis=1) for t in range(900)], 1)
    for name in ("b.mkv", "c.mkv", "d.mkv"):
        write_lossless(clips / name, [grace] * 4, [0, 1000, 2000, 3000])
    first: list[str] = []
    original = SavedResults.save

    def save_once(self: SavedResults, entries: list[tuple[FileKey, Any]]) -> None:
        original(self, entries)
        if entries and not first:
            first.extend(Path(key.path).name for key, _ in entries)
            raise Stopped

    monkeypatch.setattr(SavedResults, "save", save_once)
    out = tmp_path / "out" / "s.parquet"
    with pytest.raises(Stopped):
        write_scores(clips.parent, out, model=tiny_model, device="cpu", engine=RayEngine())
    assert len(first) == 1 and first[0] != "a_long.mp4"  # saved while the long one ran
    monkeypatch.undo()
    again = Recording()
    resumed = write_scores(clips.parent, out, model=tiny_model, device="cpu", engine=again)
    assert resumed.reused == 1 and f"acme/{first[0]}" not in again.given
    assert "acme/a_long.mp4" in again.given and len(again.given) == 3


def test_results_are_put_back_in_order_and_videos_that_come_early_are_handed_over() -> None:
    import pickle

    from facevalue.discover import Photo
    from facevalue.engine import EngineError, RunStats
    from facevalue.ray_engine import in_order
    from facevalue.records import PhotoResult, VideoResult

    photos = [Photo(name, "acme") for name in ("a.jpg", "b.mp4", "c.jpg", "d.mp4", "e.mp4")]
    frame = PhotoResult("no_face", None, 0, "ab", (), 0.0)
    results = [frame if p.path.endswith("jpg") else
               VideoResult("no_face", None, p.path, 1.0, (frame,) * (i + 1))
               for i, p in enumerate(photos)]
    stats = RunStats()
    early: list[str] = []
    stats.early = lambda photo, result: early.append(photo.path)
    taken: list[int] = []

    def arrived() -> Iterator[tuple[int, bytes]]:
        for place in (3, 1, 0, 2, 4):
            taken.append(place)
            yield place, pickle.dumps(results[place])
    ordered = in_order(arrived(), photos, stats)
    assert next(ordered) == results[0] and taken == [3, 1, 0]  # no further than needed
    assert list(ordered) == results[1:]
    assert early == ["d.mp4", "b.mp4"]  # e.mp4 came in its turn: the job saves it then
    assert stats.sampled == 2 + 4 + 5  # a video's frames, counted as it arrives
    # a result Ray never delivered stops the run with a message, not a short table
    lost = in_order(((p, pickle.dumps(results[p])) for p in (0, 2, 3, 4)), photos, RunStats())
    assert next(lost) == results[0]
    with pytest.raises(EngineError, match=r"no result for b\.mp4 \(4 of 5 files unanswered\)"):
        list(lost)


@pytest.mark.ray
def test_split_plan_with_uris_and_manifest_equals_local(local_ray: Any, corpus: Path,
                                                        tiny_model: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(MANIFEST.read_text() + "nasa/gone.jpg,nasa,009902,NASAX,1992,Nobody\n")
    settings = {"manifest": manifest, "model": tiny_model, "device": "cpu", "batch_size": 3}
    local = score_folder(corpus, tmp_path / "local.parquet", **settings)
    # CPU actors find faces and ship them to classifier actors, as on a GPU cluster.
    ray = score_on_ray(corpus.as_uri(), (tmp_path / "new" / "ray.parquet").as_uri(),
                           ray_options=RayOptions(split=True), **settings)
    assert_same(local, ray, tmp_path / "local.parquet", tmp_path / "new" / "ray.parquet")
    assert {"ok", "no_face", "missing", "unlisted"} == set(ray.faces["status"])
    assert ray.companies["gvkey"].tolist() == ["009902", "009901"]


@pytest.mark.ray
def test_cli_engine_ray(local_ray: Any, tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    result = CliRunner().invoke(cli, [
        "score", str(SAMPLE_PHOTOS), "--out", str(out), "--manifest", str(MANIFEST),
        "--model", str(tiny_model), "--device", "cpu", "--engine", "ray"],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "3 photos (2 ok, 1 no_face), 2 faces scored" in result.output
    local = score_folder(SAMPLE_PHOTOS, manifest=MANIFEST, model=tiny_model, device="cpu")
    pd.testing.assert_frame_equal(pd.read_parquet(out), local.faces)
    arguments = json.loads(read_metadata(out)["facevalue.arguments"])
    assert arguments["engine"] == "ray" and arguments["ray_address"] is None


@pytest.mark.ray
def test_cuda_on_a_cluster_without_gpus_is_refused(local_ray: Any, tiny_model: Path) -> None:
    with pytest.raises(DeviceError, match="the Ray cluster has no GPUs"):
        score_on_ray(SAMPLE_PHOTOS, model=tiny_model, device="cuda")


def test_without_ray_the_cli_says_how_to_install(monkeypatch: pytest.MonkeyPatch,
                                                 tiny_model: Path, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    result = CliRunner().invoke(cli, ["score", str(SAMPLE_PHOTOS), "--engine", "ray", "--out",
                                      str(tmp_path / "s.parquet"), "--model", str(tiny_model)])
    assert result.exit_code == 1
    assert "pip install '.[ray]'" in result.output
    assert not (tmp_path / "s.parquet").exists()


def test_local_engine_refuses_ray_only_arguments(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["score", str(SAMPLE_PHOTOS), "--out",
                                      str(tmp_path / "s.parquet"), "--ray-address", "auto"])
    assert result.exit_code == 2 and "needs --engine ray" in result.output


@pytest.mark.ray
def test_ray_resumes_from_the_saved_results_either_engine_made(
        local_ray: Any, tiny_model: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLE_PHOTOS, photos)
    out = tmp_path / "s.parquet"
    settings = {"model": tiny_model, "device": "cpu"}
    write_scores(photos, out, **settings)  # locally
    shutil.copy(photos / "navy" / "grace_hopper.jpg", photos / "navy" / "again.jpg")
    grown = write_scores(photos, out, engine=RayEngine(), **settings)
    assert (grown.scored, grown.reused) == (1, 3)  # only the new photo went to Ray
    fresh = score_folder(photos, **settings)
    pd.testing.assert_frame_equal(pd.read_parquet(out), fresh.faces)
    again = write_scores(photos, out, engine=RayEngine(), **settings)
    assert (again.scored, again.reused, again.workers) == (0, 4, 0)  # Ray never started


def test_local_path_never_imports_ray() -> None:
    code = ("import sys, facevalue, facevalue.pipeline, facevalue.cli, facevalue.ray_engine; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_an_address_nothing_answers_at_fails_fast() -> None:
    import socket
    import time

    with socket.socket() as probe:  # a port that was just free: nothing listens there now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(EngineError, match=f"cannot join the Ray cluster at {address}"):
            check_reachable(address)
    assert time.monotonic() - started < 5
    with pytest.raises(EngineError, match="expected HOST:PORT"):
        check_reachable("head-node")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}")
    check_reachable("auto")  # Ray's own lookup, left to ray.init


def test_default_companies_path_for_paths_and_uris() -> None:
    assert default_companies_path("out/s.parquet") == "out/s.companies.parquet"
    assert default_companies_path("s.parquet") == "s.companies.parquet"
    assert default_companies_path("s3://b/run/s.parquet") == "s3://b/run/s.companies.parquet"


class FakeRay:
    """Stands in for the ray module where a test checks what facevalue does around it."""

    __file__ = "/stand-in/ray/__init__.py"  # its folder is where the reaper looks for Ray's

    def __init__(self) -> None:
        self.events: list[str] = []

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs: object) -> None:
        import signal

        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # as Ray does
        self.events.append("init")

    def shutdown(self) -> None:
        self.events.append("shutdown")


def test_ray_leaves_sigterm_to_the_cli_and_closes_its_iterator_before_shutdown(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Ray's own SIGTERM handler exited 15 mid-write, and a Ray Data iterator left open until
    after shutdown printed "Ray is not initialized" tracebacks after every run."""
    import signal

    from facevalue import ray_engine
    from facevalue.discover import Photo

    fake = FakeRay()

    def run(*args: object) -> Iterator[str]:
        try:
            yield from ("a", "b")
        finally:
            fake.events.append("iterator closed")

    def mine(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ray_engine, "import_ray", lambda: fake)
    monkeypatch.setattr(ray_engine, "run", run)
    monkeypatch.setattr(ray_engine, "ship", lambda ray, path: None)
    monkeypatch.setattr(ray_engine, "Job", lambda *args: None)
    saved = signal.signal(signal.SIGTERM, mine)
    try:
        work = type("W", (), {"models": type("M", (), {"classifier": type(
            "C", (), {"contract": None, "path": None}), "detector": type("D", (), {"path": None}),
            "mesh": None}), "location": None, "options": None, "device": "cpu", "threads": 1})
        photos = [Photo("a.jpg", "x"), Photo("b.jpg", "x")]
        results = RayEngine().score(photos, work, None)  # type: ignore[arg-type]
        assert list(results) == ["a", "b"]
        assert signal.getsignal(signal.SIGTERM) is mine
        assert fake.events == ["init", "iterator closed", "shutdown"]
        # a stream closed before its end (as the job does) closes the iterator first too
        results = RayEngine().score(photos, work, None)  # type: ignore[arg-type]
        assert next(results) == "a"
        results.close()
    finally:
        signal.signal(signal.SIGTERM, saved)
    assert fake.events == ["init", "iterator closed", "shutdown"] * 2


def test_an_unreachable_cluster_is_named_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from facevalue import ray_engine

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(ray_engine, "import_ray", FakeRay)
    with pytest.raises(EngineError) as refused, \
            ray_engine.ray_session(RayOptions(f"127.0.0.1:{port}")):
        pass
    assert str(refused.value).count("cannot join") == 1, refused.value
