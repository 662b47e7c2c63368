"""The per-person table through the whole job: a manifest with a person column, photos and a
video of the same people, either engine, any number of workers."""

from __future__ import annotations

import csv
import logging
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from images import SAMPLE_PHOTOS
from videos import talk

from facevalue import score_folder
from facevalue.cli import cli
from facevalue.contract import LABELS
from facevalue.write import default_people_path, default_videos_path, read_metadata

# Grace Hopper in a photo at two companies and in the talk (whose speaker she is); Eileen
# Collins in two photos; the landscape's person left empty.
PEOPLE = [("navy/grace_hopper.jpg", "navy", "1984", "Grace Hopper"),
          ("nasa/astronaut.jpg", "nasa", "1992", "Eileen Collins"),
          ("nasa/landscape.jpg", "nasa", "1992", ""),
          ("acme/grace.png", "acme", "1984", "Grace Hopper"),
          ("acme/astronaut.png", "acme", "1992", "Eileen Collins"),
          ("acme/talk.mkv", "acme", "1984", "Grace Hopper")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sample photos and the talk with its two people as photos, and a manifest naming
    each file's person and year."""
    root = tmp_path_factory.mktemp("people") / "photos"
    shutil.copytree(SAMPLE_PHOTOS, root)
    talk(root / "acme")
    manifest = root.parent / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "company", "year", "person"])
        writer.writerows(PEOPLE)
    return root, manifest


def expected(scores: Any, person: str, year: str) -> dict[str, Any]:
    """One person's row, recomputed from the per-face and per-video tables."""
    faces = scores.faces[(scores.faces["person"] == person) & (scores.faces["year"] == year)]
    photos = faces[faces["time"].isna()]
    frames = faces[faces["time"].notna()]
    videos = scores.videos[(scores.videos["person"] == person)
                           & (scores.videos["year"] == year)]
    main = photos[(photos["status"] == "ok") & (photos["face"] == 0)]
    units = pd.concat([main[list(LABELS)], videos[list(LABELS)].dropna()])
    ok = frames[(frames["track"] == 0) & frames["geometry_ok"].fillna(False).astype(bool)]
    measured = [*main.loc[main["geometry_ok"].fillna(False).astype(bool), "fwhr"],
                *ok.groupby("path")["fwhr"].median()]
    return {"photos": photos["path"].nunique(), "videos": len(videos),
            "main_faces": len(units), **units.mean().to_dict(),
            "fwhr_median": pd.Series(measured, dtype=float).median(),
            "fwhr_faces": len(measured)}


def test_people_table_from_photos_and_a_video(folder: tuple[Path, Path], tiny_model: Path,
                                              tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    root, manifest = folder
    out = tmp_path / "s.parquet"
    with caplog.at_level(logging.WARNING, logger="facevalue"):
        scores = score_folder(root, out, manifest=manifest, model=tiny_model, device="cpu",
                              geometry=True)
    assert "1 photo(s) with an empty person" in caplog.text
    people = scores.people
    assert people is not None
    assert list(people.columns[:6]) == ["person", "year", "photos", "videos", "failed",
                                        "main_faces"]  # company varies: Grace at navy, acme
    assert people[["person", "year"]].values.tolist() == [["Eileen Collins", "1992"],
                                                         ["Grace Hopper", "1984"]]
    for row in people.to_dict("records"):
        for column, value in expected(scores, row["person"], row["year"]).items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(row[column]), column
            else:
                assert row[column] == pytest.approx(value, rel=1e-6), column
    grace = people.set_index("person").loc["Grace Hopper"]
    assert (grace["photos"], grace["videos"], grace["main_faces"]) == (2, 1, 3)
    assert grace["fwhr_faces"] >= 1  # her press photo is near-frontal (test_geometry)
    stored = pd.read_parquet(default_people_path(out))
    pd.testing.assert_frame_equal(stored, people)
    assert read_metadata(default_people_path(out)) == read_metadata(out)  # run id, sha256


def test_a_video_main_track_is_one_fwhr_measurement(tiny_model: Path, tmp_path: Path) -> None:
    """Grace's press photo and a lossless video of it (three seconds): two measurements, the
    photo's and the video's median, which are equal (the frames are the photo's pixels). The
    people and videos tables' temporary files left by a killed run are removed."""
    import cv2
    from images import GRACE
    from videos import write_lossless

    root = tmp_path / "photos"
    (root / "navy").mkdir(parents=True)
    shutil.copy(GRACE, root / "navy" / "grace.jpg")
    write_lossless(root / "navy" / "speech.mkv", [cv2.imread(str(GRACE))] * 3, [0, 1000, 2000])
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,company,person\nnavy/grace.jpg,navy,Grace Hopper\n"
                        "navy/speech.mkv,navy,Grace Hopper\n")
    stale = [tmp_path / f".s.{table}.parquet.0123456789ab.tmp" for table in ("people", "videos")]
    for temp in stale:
        temp.write_bytes(b"left by a killed run")
    scores = score_folder(root, tmp_path / "s.parquet", manifest=manifest, model=tiny_model,
                          device="cpu", geometry=True)
    frames = scores.faces[scores.faces["time"].notna()]
    assert frames["geometry_ok"].all() and len(frames) == 3
    assert scores.people is not None
    row = scores.people.iloc[0]
    assert (row["photos"], row["videos"], row["main_faces"], row["fwhr_faces"]) == (1, 1, 2, 2)
    photo = scores.faces.set_index("path").loc["navy/grace.jpg", "fwhr"]
    assert row["fwhr_median"] == pytest.approx(
        (photo + frames["fwhr"].median()) / 2, rel=1e-6)
    assert not any(temp.exists() for temp in stale)


def test_workers_give_the_same_people_table(folder: tuple[Path, Path],
                                            tiny_model: Path) -> None:
    root, manifest = folder
    one = score_folder(root, manifest=manifest, model=tiny_model, device="cpu", workers=1)
    two = score_folder(root, manifest=manifest, model=tiny_model, device="cpu", workers=2,
                       chunk_size=2)
    assert one.people is not None and "fwhr_median" not in one.people
    pd.testing.assert_frame_equal(one.people, two.people)


def test_no_person_column_no_people_table(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    scores = score_folder(SAMPLE_PHOTOS, out, model=tiny_model, device="cpu")
    assert scores.people is None and not Path(default_people_path(out)).exists()


def test_cli_people_option(folder: tuple[Path, Path], tiny_model: Path,
                           tmp_path: Path) -> None:
    root, manifest = folder
    out, people = tmp_path / "s.parquet", tmp_path / "by" / "person.parquet"
    result = CliRunner().invoke(cli, [
        "score", str(root), "--out", str(out), "--manifest", str(manifest), "--model",
        str(tiny_model), "--device", "cpu", "--people", str(people)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert str(people) in result.output
    assert pd.read_parquet(people)["person"].tolist() == ["Eileen Collins", "Grace Hopper"]
    assert not Path(default_people_path(out)).exists()
    clash = CliRunner().invoke(cli, [
        "score", str(root), "--out", str(out), "--manifest", str(manifest), "--model",
        str(tiny_model), "--people", str(out)])
    assert clash.exit_code == 1 and "--people" in clash.output and "--out file" in clash.output


@pytest.fixture(scope="module")
def ray_session() -> Iterator[Any]:
    """A local Ray, or the one another module started."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.ray
def test_ray_gives_the_same_people_table(ray_session: Any, folder: tuple[Path, Path],
                                         tiny_model: Path, tmp_path: Path) -> None:
    from facevalue.ray_engine import RayEngine, RayOptions

    root, manifest = folder
    settings = {"manifest": manifest, "model": tiny_model, "device": "cpu", "geometry": True}
    local = score_folder(root, tmp_path / "local.parquet", **settings)
    ray = score_folder(root, tmp_path / "ray.parquet", engine=RayEngine(RayOptions()),
                       **settings)
    pd.testing.assert_frame_equal(local.people, ray.people)
    assert pq.read_schema(tmp_path / "ray.people.parquet").remove_metadata() == pq.read_schema(
        tmp_path / "local.people.parquet").remove_metadata()


def test_a_rerun_without_videos_or_people_removes_their_old_tables(
        folder: tuple[Path, Path], tiny_model: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The same --out, first with a video and a person column, then over photos without
    either: the old per-video and per-person tables must not pass for the new run's."""
    root, manifest = folder
    out = tmp_path / "s.parquet"
    first = score_folder(root, out, manifest=manifest, model=tiny_model, device="cpu")
    assert first.people is not None and first.videos is not None
    with caplog.at_level(logging.WARNING, logger="facevalue"):
        second = score_folder(SAMPLE_PHOTOS, out, model=tiny_model, device="cpu")
    assert second.people is None and second.videos is None
    assert not Path(default_people_path(out)).exists()
    assert not Path(default_videos_path(out)).exists()
    assert "removed" in caplog.text and "person column" in caplog.text
    other = tmp_path / "t.parquet"  # a file facevalue did not write stays, whatever its name
    Path(default_people_path(other)).write_text("my notes")
    score_folder(SAMPLE_PHOTOS, other, model=tiny_model, device="cpu")
    assert Path(default_people_path(other)).read_text() == "my notes"
