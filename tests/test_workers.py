"""Worker threads: any number gives the very same tables as one, and the CLI takes --workers."""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from images import bad_inputs, encode, portrait

from facevalue import score_folder
from facevalue.cli import cli
from facevalue.engine import default_workers


def varied_portraits(folder: Path, count: int) -> None:
    """Portraits at several sizes, mirrored and shifted, so every photo differs."""
    image = portrait()
    for i in range(count):
        width = (256, 512, 1100, 1700)[i % 4]
        moved = np.roll(cv2.flip(image, 1) if i % 2 else image, 3 * i, axis=1)
        resized = cv2.resize(moved, (width, round(width * 600 / 512)))
        path = folder / f"firm{i % 3}" / f"p{i:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(resized))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    bad_inputs(folder)
    varied_portraits(folder, 16)
    return folder


@pytest.mark.parametrize("faces", ["main", "all"])
def test_workers_give_identical_tables(photos: Path, tiny_model: Path, tmp_path: Path,
                                       faces: str) -> None:
    runs = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}.parquet"
        runs[workers] = score_folder(photos, out, model=tiny_model, device="cpu", faces=faces,
                                     workers=workers, chunk_size=4)
        assert len(runs[workers].faces) >= 27  # 11 awkward files and 16 portraits
    for workers in (2, 3):
        pd.testing.assert_frame_equal(runs[workers].faces, runs[1].faces)
        pd.testing.assert_frame_equal(runs[workers].companies, runs[1].companies)
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / f"w{workers}.parquet"),
                                      pd.read_parquet(tmp_path / "w1.parquet"))
    ok = runs[1].faces[runs[1].faces["status"] == "ok"]
    assert ok["path"].str.startswith("firm").sum() >= 16


def test_cli_workers_and_summary(photos: Path, tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    args = ["score", str(photos), "--out", str(out), "--model", str(tiny_model),
            "--device", "cpu", "--workers", "2"]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "27 photos (" in first.output and "photos/s" in first.output
    assert "reused" not in first.output
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    # all but the empty file, which has no content to key a result on
    assert "26 reused from an earlier run" in again.output


def test_workers_need_the_local_engine(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["score", str(tmp_path), "--out", str(tmp_path / "s.pq"),
                                      "--engine", "ray", "--workers", "2"])
    assert result.exit_code == 2 and "--workers is for --engine local" in result.output


def test_default_workers_is_the_usable_cores() -> None:
    assert 1 <= default_workers() <= (os.cpu_count() or 1)


def test_waiting_for_a_photo_does_not_spin_while_a_video_behind_it_is_done() -> None:
    """The calling thread sleeps while the photo at the head is still being read: a wait
    that returned at once for a future already done spun, holding the GIL the workers need
    (scoring ran 6.5x slower with 2 workers)."""
    from concurrent.futures import Future
    from threading import Timer

    from facevalue.discover import Photo
    from facevalue.engine import RunStats
    from facevalue.local import TICK, _wait_for

    done: Future[object] = Future()
    done.set_result(None)
    slow: Future[object] = Future()
    Timer(1.0, slow.set_result, (None,)).start()
    stats = RunStats()
    ticks = []
    stats.tick = lambda: ticks.append(1)
    behind = deque([(Photo("v.mp4", ""), [done])])
    _wait_for(slow, behind, set(), stats)  # type: ignore[arg-type]
    assert slow.done()
    assert len(ticks) <= 1.0 / TICK + 2


def test_a_chunk_is_classified_batch_by_batch_as_its_photos_come(tiny_model: Path) -> None:
    """The calling thread classifies a chunk's faces while its last photos are still being
    found (issue 22), in the very batches of the whole chunk: the chunk's faces in order,
    cut every batch_size faces, so the numbers are those of one call on the whole chunk."""
    from facevalue.classify import Classifier
    from facevalue.detect import Box
    from facevalue.discover import Photo
    from facevalue.faces import PhotoFaces
    from facevalue.rows import classify_results

    rng = np.random.default_rng(0)
    counts = [1, 0, 3, 2, 1, 1, 4, 0, 2, 1]  # faces per photo: 15 in all
    items = [PhotoFaces(Photo(f"p{i}.jpg", "acme"), "ok" if n else "no_face",
                        boxes=tuple(Box(0, 0, 9, 9, 0.9) for _ in range(n)),
                        crops=rng.integers(0, 256, (n, 48, 48, 1), dtype=np.uint8))
             for i, n in enumerate(counts)]
    classifier = Classifier(tiny_model, device="cpu")
    taken, calls = [], []
    predict = classifier.predict

    def recording(faces: np.ndarray, batch_size: int) -> np.ndarray:
        calls.append((len(taken), len(faces)))
        return predict(faces, batch_size)
    classifier.predict = recording  # type: ignore[method-assign]

    def arriving() -> object:
        for item in items:
            taken.append(item)
            yield item
    results = classify_results(arriving(), classifier, batch_size=4)  # type: ignore[arg-type]
    # a batch's worth after the 3rd, 6th and 7th photos; the last 3 faces once all are in
    assert calls == [(3, 4), (6, 4), (7, 4), (10, 3)]
    whole = predict(np.concatenate([item.crops for item in items]), 4)  # type: ignore[misc]
    got = [face.probabilities for result in results for face in result.faces]
    assert np.array_equal(np.array(got, np.float32), whole)
    assert [len(result.faces) for result in results] == counts
