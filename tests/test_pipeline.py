"""The whole scoring path from Python: sample portraits, every bad input, streaming."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from images import GRACE as GRACE_PATH
from images import LANDSCAPE as LANDSCAPE_PATH
from images import SAMPLE_PHOTOS, bad_inputs, encode, portrait

from facevalue import decode, score_folder
from facevalue.classify import Classifier
from facevalue.columns import ERROR
from facevalue.contract import LABELS
from facevalue.detect import Box, FaceDetector, crop_faces
from facevalue.discover import Photo
from facevalue.faces import MIN_CROP_SIDE, Options, _crop_source, find_faces
from facevalue.rows import classify_chunk
from facevalue.write import default_companies_path, read_metadata

MANIFEST = SAMPLE_PHOTOS.parent / "manifest.csv"


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("bad")
    return folder, bad_inputs(folder)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(device="cpu", threads=1)


def test_sample_data_end_to_end(tmp_path: Path, tiny_model: Path) -> None:
    out = tmp_path / "s.parquet"
    faces, companies = score_folder(SAMPLE_PHOTOS, out, manifest=MANIFEST, model=tiny_model,
                                    device="cpu")
    assert faces["path"].tolist() == ["nasa/astronaut.jpg", "nasa/landscape.jpg",
                                      "navy/grace_hopper.jpg"]
    assert faces["status"].tolist() == ["ok", "no_face", "ok"]
    assert faces["faces_in_photo"].tolist() == [1, 0, 1]  # one portrait, one face
    assert faces["gvkey"].tolist() == ["009902", "009902", "009901"]
    ok = faces[faces["status"] == "ok"]
    assert np.allclose(ok[list(LABELS)].sum(axis=1), 1, atol=1e-5)
    assert (ok["emotion"] == ok[list(LABELS)].idxmax(axis=1)).all()
    assert len(set(ok["photo_sha256"])) == 2
    pd.testing.assert_frame_equal(pd.read_parquet(out), faces, check_dtype=False)
    assert companies[["company", "gvkey", "ticker", "year", "photos", "faces", "failed"]
                     ].values.tolist() == [["nasa", "009902", "NASAX", "1992", 2, 1, 0],
                                           ["navy", "009901", "NAVYX", "1984", 1, 1, 0]]
    assert "person" not in companies.columns  # varies within nasa
    stored = pd.read_parquet(default_companies_path(out))
    pd.testing.assert_frame_equal(stored, companies, check_dtype=False)
    meta = read_metadata(out)
    assert meta == read_metadata(default_companies_path(out)) == faces.attrs
    assert meta["facevalue.model"] == "tiny.onnx"
    assert meta["facevalue.detector"].startswith("blazeface")


def test_every_bad_input_gets_one_status_row(bad_folder: tuple[Path, dict[str, str]],
                                             tiny_model: Path, tmp_path: Path) -> None:
    folder, expected = bad_folder
    faces, companies = score_folder(folder, tmp_path / "bad.parquet", model=tiny_model,
                                    device="cpu")
    assert dict(zip(faces["path"], faces["status"], strict=True)) == expected
    assert faces.set_index("path").loc["acme/two_faces.jpg", "faces_in_photo"] == 2
    failed = faces[~faces["status"].isin(["ok", "no_face"])]
    assert failed["error"].notna().all() and failed["face"].isna().all()
    assert faces.loc[faces["status"] == "ok", "error"].isna().all()
    assert companies.loc[0, "failed"] == 4 and companies.loc[0, "photos"] == len(expected)


def test_boxes_are_in_upright_original_pixels(bad_folder: tuple[Path, dict[str, str]],
                                              tiny_model: Path) -> None:
    folder, _ = bad_folder
    faces = score_folder(folder, model=tiny_model, device="cpu").faces.set_index("path")
    upright = faces.loc["acme/cmyk.jpg", ["x", "y", "w", "h"]].to_numpy(float)
    rotated = faces.loc["acme/exif_rotated.jpg", ["x", "y", "w", "h"]].to_numpy(float)
    assert np.abs(upright - rotated).max() <= 4
    x, y, w, h = upright
    assert 0 <= x and x + w <= 512 and 0 <= y and y + h <= 600 and w > 100


def test_all_faces_and_main_face(bad_folder: tuple[Path, dict[str, str]],
                                 tiny_model: Path) -> None:
    folder, _ = bad_folder
    every = score_folder(folder, model=tiny_model, device="cpu", faces="all").faces
    two = every[every["path"] == "acme/two_faces.jpg"]
    assert two["face"].tolist() == [0, 1] and two["faces_in_photo"].tolist() == [2, 2]
    assert (two["w"] * two["h"]).is_monotonic_decreasing  # the main face is the largest
    assert not np.allclose(two.iloc[0][list(LABELS)].astype(float),
                           two.iloc[1][list(LABELS)].astype(float))


def test_reduced_decoding_reports_full_size_boxes(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "small.jpg").write_bytes(encode(portrait()))
    (tmp_path / "big" / "large.jpg").write_bytes(encode(cv2.resize(portrait(), (2560, 3000))))
    faces = score_folder(tmp_path, model=tiny_model, device="cpu").faces.set_index("path")
    small = faces.loc["big/small.jpg", ["x", "y", "w", "h"]].to_numpy(float)
    large = faces.loc["big/large.jpg", ["x", "y", "w", "h"]].to_numpy(float)
    assert np.abs(large - 5 * small).max() <= 20  # decoded at 1/2, reported at full size


def test_chunks_stream_the_same_rows(bad_folder: tuple[Path, dict[str, str]],
                                     tiny_model: Path) -> None:
    folder, expected = bad_folder
    seen: list[int] = []
    small = score_folder(folder, model=tiny_model, device="cpu", chunk_size=3,
                         progress=lambda done, total: seen.append(done))
    large = score_folder(folder, model=tiny_model, device="cpu", chunk_size=256)
    assert seen == [3, 6, 9, 11] and len(expected) == 11
    pd.testing.assert_frame_equal(small.faces, large.faces)
    pd.testing.assert_frame_equal(small.companies, large.companies)


def test_progress_reports_finished_and_total(bad_folder: tuple[Path, dict[str, str]],
                                             tiny_model: Path) -> None:
    folder, expected = bad_folder
    calls: list[tuple[int, int]] = []
    score_folder(folder, model=tiny_model, device="cpu",
                 progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (len(expected), len(expected))


def test_find_faces_from_bytes_and_discovery_statuses(detector: FaceDetector,
                                                      tiny_model: Path) -> None:
    contract = Classifier(tiny_model, device="cpu").contract
    item = find_faces(Photo("x/p.jpg", "x"), "/nonexistent", detector, contract,
                      data=encode(portrait()))
    assert item.status == "ok" and item.crops.shape == (1, 48, 48, 1)
    assert len(item.sha256) == 64 and item.boxes[0].w > 100
    missing = find_faces(Photo("x/gone.jpg", "x", status="missing"), "/", detector, contract)
    assert missing.status == "missing" and "no such photo" in missing.error
    unreadable = find_faces(Photo("x/gone.jpg", "x"), "/nonexistent", detector, contract)
    assert unreadable.status == "unreadable"


class BrokenDetector:
    """A detector that fails on one photo, as a bug or an odd image might make it."""

    name = "broken"

    def __init__(self, real: FaceDetector) -> None:
        self.real = real

    def detect(self, image: np.ndarray) -> list[Box]:
        if image.shape[0] == 1:
            raise cv2.error("detector exploded")
        return self.real.detect(image)


def test_unexpected_failure_on_one_photo_does_not_stop_the_run(
        bad_folder: tuple[Path, dict[str, str]], detector: FaceDetector,
        tiny_model: Path) -> None:
    folder, expected = bad_folder
    photos = [Photo(path, "acme") for path in sorted(expected)]
    model = Classifier(tiny_model, device="cpu")
    items = [find_faces(p, folder, BrokenDetector(detector), model.contract) for p in photos]
    rows = classify_chunk(items, model)
    status = {row["path"]: row["status"] for row in rows}
    assert status["acme/one_pixel.png"] == ERROR
    assert status["acme/two_faces.jpg"] == "ok" and len(status) == len(expected)
    error = next(row["error"] for row in rows if row["status"] == ERROR)
    assert "detector exploded" in error


def test_interrupted_run_leaves_no_output(tmp_path: Path, tiny_model: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import facevalue.local as local

    def explode(*args: object, **kwargs: object) -> list[dict[str, object]]:
        raise KeyboardInterrupt

    monkeypatch.setattr(local, "finish_chunk", explode)
    with pytest.raises(KeyboardInterrupt):
        score_folder(SAMPLE_PHOTOS, tmp_path / "s.parquet", model=tiny_model, device="cpu")
    # only the hidden saved-results folder, for the next run to resume from
    assert [p.name for p in tmp_path.iterdir()] == [".s.facevalue-state"]


def test_without_out_nothing_is_written_unless_companies(tmp_path: Path,
                                                         tiny_model: Path) -> None:
    faces, companies = score_folder(SAMPLE_PHOTOS, model=tiny_model, device="cpu")
    assert len(faces) == 3 and len(companies) == 2 and list(tmp_path.iterdir()) == []
    score_folder(SAMPLE_PHOTOS, companies=tmp_path / "c.parquet", model=tiny_model,
                 device="cpu")
    assert [p.name for p in tmp_path.iterdir()] == ["c.parquet"]


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="faces must be one of"):
        Options(faces="some")
    with pytest.raises(ValueError, match="must be positive"):
        Options(batch_size=0)


def test_small_faces_are_cropped_from_a_larger_decode(detector: FaceDetector,
                                                      tiny_model: Path) -> None:
    # A portrait a sixth of a 3000 px photo: detected on a 1/8-scale decode, where its crop
    # would be under MIN_CROP_SIDE pixels, so it is cropped from a 1/4-scale decode instead.
    canvas = np.full((1800, 3000, 3), 90, np.uint8)
    canvas[600:1200, 1200:1712] = portrait()
    contract = Classifier(tiny_model, device="cpu").contract
    item = find_faces(Photo("x/p.jpg", "x"), "/", detector, contract, data=encode(canvas))
    assert item.status == "ok" and item.seconds["decode"] > 0
    box = item.boxes[0]  # in original pixels
    assert 1200 < box.x < 1712 and 600 < box.y < 1200
    full = crop_faces(canvas, [box], (48, 48), "grayscale")
    # the same face, the same crop (softer: cut from ~75 px of the 1/4 copy, which scores as
    # well as a crop from the full photo on faces-dev, bench/crop_side.py)
    assert np.abs(item.crops.astype(int) - full).mean() < 10


def test_a_crop_from_the_reduced_copy_is_never_smaller_than_the_classifiers_input() -> None:
    reduced = decode.Decoded(np.zeros((256, 256, 3), np.uint8), 2048, 2048)
    larger = decode.Decoded(np.zeros((512, 512, 3), np.uint8), 2048, 2048)
    asked: list[int] = []

    def decode_larger(side: int) -> decode.Decoded:
        asked.append(side)
        return larger

    face = [Box(100, 100, 45, 45, 0.9)]  # a 54 px crop (CROP_SCALE 1.2)
    assert MIN_CROP_SIDE <= 54
    assert _crop_source(reduced, face, decode_larger, max(MIN_CROP_SIDE, 48)) is reduced
    assert asked == []
    # a model with 64 px input gets a larger decode rather than an enlarged 54 px crop
    assert _crop_source(reduced, face, decode_larger, max(MIN_CROP_SIDE, 64)) is larger
    assert asked == [304]  # 256 * 64 / 54, rounded up


def test_a_tree_full_of_traps_scores_each_photo_once(tmp_path: Path, tiny_model: Path) -> None:
    from images import trap_tree

    expected = trap_tree(tmp_path / "photos", tmp_path / "elsewhere")
    out = tmp_path / "out" / "s.parquet"
    faces, companies = score_folder(tmp_path / "photos", out, model=tiny_model, device="cpu")
    assert dict(zip(faces["path"], faces["status"], strict=True)) == expected
    assert faces["path"].is_unique  # the loops added nothing
    errors = dict(zip(faces["path"], faces["error"], strict=True))
    assert "FIFO" in errors["acme/fifo.jpg"] and "JPEG, PNG" in errors["acme/bomb.jpg"]
    assert "bytes exceeds the limit" in errors["acme/sparse.jpg"]
    assert set(companies["company"]) == {"acme", "linked"}
    # a rerun reuses every saved result, the escaped name included
    again, _ = score_folder(tmp_path / "photos", out, model=tiny_model, device="cpu")
    pd.testing.assert_frame_equal(again, faces)


def test_the_trap_tree_never_hangs_and_memory_stays_bounded(tmp_path: Path,
                                                            tiny_model: Path) -> None:
    import subprocess
    import sys

    from images import trap_tree

    trap_tree(tmp_path / "photos", tmp_path / "elsewhere")
    # the child's own peak (VmHWM): ru_maxrss carries the parent's over through fork and exec,
    # so late in a full run it reported pytest's 1.2 GB
    code = ("import sys; from facevalue.pipeline import write_scores; "
            "write_scores(sys.argv[1], sys.argv[2], model=sys.argv[3], device='cpu'); "
            "print(next(line for line in open('/proc/self/status') if line.startswith('VmHWM')))")
    child = subprocess.run([sys.executable, "-c", code, str(tmp_path / "photos"),
                            str(tmp_path / "s.parquet"), str(tiny_model)],
                           capture_output=True, text=True, timeout=120)  # a FIFO would hang
    assert child.returncode == 0, child.stderr
    peak_mb = int(child.stdout.split()[-2]) / 1024  # "VmHWM:  187628 kB"
    assert peak_mb < 600  # the GIF bomb alone would take 3.3 GB, the sparse file 1 TB


def test_a_manifest_lists_a_non_utf8_name_in_its_escaped_form(tmp_path: Path,
                                                              tiny_model: Path) -> None:
    from images import trap_tree

    trap_tree(tmp_path / "photos", tmp_path / "elsewhere")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,company\nacme/caf\\xe9.jpg,Café SA\n", encoding="utf-8")
    faces, _ = score_folder(tmp_path / "photos", manifest=manifest, model=tiny_model,
                            device="cpu")
    row = faces[faces["path"] == "acme/caf\\xe9.jpg"].iloc[0]
    assert row["status"] == "ok" and row["company"] == "Café SA"


def test_outputs_are_checked_before_any_work(tmp_path: Path, tiny_model: Path) -> None:
    from facevalue.discover import NoPhotosError
    from facevalue.write import OutputError

    with pytest.raises(OutputError, match="ending in .parquet"):
        score_folder(SAMPLE_PHOTOS, tmp_path / "s.csv", model=tiny_model)
    with pytest.raises(OutputError, match="needs a file of its own"):
        score_folder(SAMPLE_PHOTOS, tmp_path / "s.parquet", companies=tmp_path / "s.parquet",
                     model=tiny_model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoPhotosError, match="no photos found"):
        score_folder(tmp_path / "empty", tmp_path / "e.parquet", model=tiny_model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_another_folder_scored_into_the_same_output_reuses_nothing(tmp_path: Path,
                                                                   tiny_model: Path) -> None:
    from facevalue.pipeline import write_scores

    for name, source in (("a", GRACE_PATH), ("b", LANDSCAPE_PATH)):
        folder = tmp_path / name / "x"
        folder.mkdir(parents=True)
        (folder / "p.jpg").write_bytes(source.read_bytes())
        os.utime(folder / "p.jpg", ns=(1, 1))  # same relative path, size aside, same mtime
    first = write_scores(tmp_path / "a", tmp_path / "s.parquet", model=tiny_model)
    second = write_scores(tmp_path / "b", tmp_path / "s.parquet", model=tiny_model)
    assert first.reused == second.reused == 0
    assert second.statuses == {"no_face": 1}


def test_output_failures_are_one_line_and_leave_no_temp_file(
        tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from facevalue.cli import cli

    blocker = tmp_path / "afile"
    blocker.write_text("a file where the output folder should be")
    result = CliRunner().invoke(cli, ["score", str(SAMPLE_PHOTOS), "--out",
                                      str(blocker / "s.parquet"), "--model", str(tiny_model)])
    assert result.exit_code == 1 and "Not a directory" in result.output
    assert "Traceback" not in result.output

    class FullDisk(pq.ParquetWriter):
        def __init__(self, where: object, *args: object, **kwargs: object) -> None:
            if "companies" in str(where):  # the per-face file fits, the second does not
                open(str(where), "wb").close()
                raise OSError(errno.ENOSPC, "No space left on device")
            super().__init__(where, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetWriter", FullDisk)
    out = tmp_path / "out" / "s.parquet"
    result = CliRunner().invoke(cli, ["score", str(SAMPLE_PHOTOS), "--out", str(out),
                                      "--model", str(tiny_model)])
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert "Traceback" not in result.output
    assert not list(out.parent.glob(".*.tmp"))


def test_a_companies_file_that_cannot_be_written_replaces_no_table(
        tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--companies where nothing can be written is refused before scoring; one that fails at
    the end (a full disk) is named, and the per-face file of an earlier run stays as it was:
    the two tables are renamed into place only once both are complete."""
    import errno

    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from facevalue.cli import cli
    from facevalue.state import state_folder

    out = tmp_path / "s.parquet"
    blocker = tmp_path / "afile"
    blocker.write_text("a file where the companies folder should be")
    command = ["score", str(SAMPLE_PHOTOS), "--out", str(out), "--model", str(tiny_model),
               "--device", "cpu", "--companies"]
    result = CliRunner().invoke(cli, [*command, str(blocker / "c.parquet")])
    assert result.exit_code == 1, result.output
    assert f"cannot write {blocker / 'c.parquet'}: Not a directory" in result.output
    assert not out.exists() and not state_folder(out).exists()  # refused before scoring

    class FullDisk(pq.ParquetWriter):
        def __init__(self, where: object, *args: object, **kwargs: object) -> None:
            if ".c.parquet." in str(where):  # the per-face file fits, the second does not
                open(str(where), "wb").close()
                raise OSError(errno.ENOSPC, "No space left on device")
            super().__init__(where, *args, **kwargs)

    out.write_bytes(b"the per-face table of an earlier run")
    monkeypatch.setattr(pq, "ParquetWriter", FullDisk)
    companies = tmp_path / "c.parquet"
    result = CliRunner().invoke(cli, [*command, str(companies)])
    assert result.exit_code == 1, result.output
    assert f"cannot write {companies}: No space left on device" in result.output
    assert out.read_bytes() == b"the per-face table of an earlier run"
    assert not companies.exists() and not list(tmp_path.glob(".*.tmp"))


def test_a_failing_state_database_is_a_state_error(tmp_path: Path) -> None:
    import sqlite3

    from facevalue.records import PhotoResult
    from facevalue.state import SavedResults, StateError
    from facevalue.storage import FileKey

    with SavedResults(tmp_path / "state", "setup") as saved:
        saved.db.close()  # as when the disk fills or the folder goes mid-run
        with pytest.raises(StateError, match="cannot save results"):
            saved.save([(FileKey("a.jpg", 1, 1), PhotoResult("ok", sha256="ab" * 32))])
        saved.db = sqlite3.connect(":memory:")
