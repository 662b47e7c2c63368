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


def test_waiting_for_a_chunk_does_not_spin_while_part_of_it_is_done() -> None:
    """The calling thread sleeps while a chunk's last photo is still being read: a wait that
    returned at once for the photos already done spun, holding the GIL the workers need
    (scoring ran 6.5x slower with 2 workers)."""
    from concurrent.futures import Future
    from threading import Timer

    from facevalue.engine import RunStats
    from facevalue.local import TICK, _wait_for

    done: Future[object] = Future()
    done.set_result(None)
    slow: Future[object] = Future()
    Timer(1.0, slow.set_result, (None,)).start()
    stats = RunStats()
    ticks = []
    stats.tick = lambda: ticks.append(1)
    _wait_for([done, slow], deque(), set(), stats)  # type: ignore[list-item]
    assert slow.done()
    assert len(ticks) <= 1.0 / TICK + 2
