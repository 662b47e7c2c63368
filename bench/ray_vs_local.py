"""The Ray engine beside the local one on this machine: photos/s, and equal tables.

One process: a local Ray is started once (its start-up is reported apart), the page cache is
warmed, then the local engine, the Ray engine (one actor per core) and the Ray engine's split
plan (CPU actors find faces, a classifier actor classifies) score the same jpeg corpus,
interleaved ``--repeat`` times. Every Ray run's tables must equal the local run's.

    python bench/ray_vs_local.py --n 6000 --readme bench/README.md

Needs the ray extra. On one machine the Ray engine cannot beat the local one (same work, plus
Ray's scheduling); the figure says what it costs, and a cluster is where it pays off.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import corpus
import numpy as np
import pandas as pd
from run import HERE, update_readme

from facevalue.classify import default_model
from facevalue.engine import default_workers
from facevalue.pipeline import score_folder
from facevalue.ray_engine import RayEngine, RayOptions


def timed(run, photos: Path, out: Path) -> tuple[float, pd.DataFrame, pd.DataFrame]:
    """Seconds for one scoring call into a fresh ``out``, and its two tables."""
    shutil.rmtree(out.parent, ignore_errors=True)
    started = time.perf_counter()
    faces, companies = run(photos, out)
    return time.perf_counter() - started, faces, companies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=6000, help="photos in the jpeg corpus")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=HERE / "out")
    parser.add_argument("--readme", type=Path, help="write the table into this README")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import ray

    photos = corpus.build(args.work / "corpus", args.n, "jpeg").photos
    cores = default_workers()
    started = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, logging_level=logging.WARNING)
    ray_start = time.perf_counter() - started
    engines = {
        "local (`--workers` default)": lambda p, o: score_folder(p, o, device="cpu"),
        "Ray, one actor per core (`--engine ray`)": lambda p, o: score_folder(
            p, o, device="cpu", engine=RayEngine()),
        "Ray, split plan forced (`RayOptions(split=True)`)": lambda p, o: score_folder(
            p, o, device="cpu", engine=RayEngine(RayOptions(split=True))),
    }
    timed(engines["local (`--workers` default)"], photos, args.work / "ray" / "warm" / "s.parquet")
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.repeat):
        reference = None
        for i, (name, run) in enumerate(engines.items()):
            seconds, faces, companies = timed(run, photos, args.work / "ray" / str(i) / "s.parquet")
            rates[name].append(args.n / seconds)
            logging.info("%s: %.0f photos/s", name, args.n / seconds)
            if reference is None:
                reference = faces, companies
            else:  # the point of the Ray engine: the same tables
                pd.testing.assert_frame_equal(faces, reference[0])
                pd.testing.assert_frame_equal(companies, reference[1])
    ray.shutdown()
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cores} cores, "
             f"{args.n:,} photos of the jpeg mix, the default model ({default_model().name}), "
             "page cache warm, "
             f"{args.repeat} interleaved runs; Ray's start-up ({ray_start:.1f} s) not counted. "
             "Every Ray run's tables equalled the local run's.", "",
             "| engine | photos/s (median, range) |", "|---|---|"]
    lines += [f"| {name} | {np.median(r):.0f} ({min(r):.0f}-{max(r):.0f}) |"
              for name, r in rates.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.readme:
        update_readme(args.readme, text, "ray")


if __name__ == "__main__":
    main()
