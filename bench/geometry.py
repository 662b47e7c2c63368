"""Does fWHR measure the person? Test-retest reliability on people photographed more than once.

``facevalue score --geometry`` on a folder of portraits; people are told apart by file name
(``Name_Surname_0001.jpg``: everything before the last ``_NNNN``, as in faces-dev), or by a
``person`` column of a labels CSV. Reported: the share of faces that pass ``geometry_ok``,
the intraclass correlation ICC(1) of fWHR across each person's passing photos (one-way
random effects, single measure, unequal group sizes; Shrout & Fleiss 1979) with a bootstrap
95% interval over people, and photos/s with and without ``--geometry`` in the same run.

    python bench/geometry.py /work/shared/data/faces-dev/images --readme bench/README.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from run import update_readme

from facevalue import score_folder

RESAMPLES = 2000


def icc1(groups: list[np.ndarray]) -> float:
    """ICC(1) from one-way ANOVA: (MSB - MSW) / (MSB + (k0 - 1) MSW)."""
    sizes = np.array([len(g) for g in groups], float)
    values = np.concatenate(groups)
    n, k = sizes.sum(), len(groups)
    grand = values.mean()
    between = sum(len(g) * (g.mean() - grand) ** 2 for g in groups) / (k - 1)
    within = sum(((g - g.mean()) ** 2).sum() for g in groups) / (n - k)
    k0 = (n - (sizes**2).sum() / n) / (k - 1)
    return float((between - within) / (between + (k0 - 1) * within))


def icc_interval(groups: list[np.ndarray], seed: int = 0) -> tuple[float, float]:
    """Bootstrap 95% interval of ICC(1), resampling people with replacement."""
    rng = np.random.default_rng(seed)
    draws = [icc1([groups[i] for i in rng.integers(0, len(groups), len(groups))])
             for _ in range(RESAMPLES)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def timed(photos: Path, geometry: bool) -> tuple[pd.DataFrame, float]:
    """One fresh scoring run (no saved results): its per-face table and photos/s."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        faces, _ = score_folder(photos, Path(tmp) / "s.parquet", device="cpu",
                                geometry=geometry)
        return faces, faces["path"].nunique() / (time.perf_counter() - started)


def people(paths: pd.Series, table: Path | None) -> pd.Series:
    """Each photo's person: from a CSV's person column, else its file name less ``_NNNN``."""
    if table is None:
        return paths.str.replace(r"_\d+\.\w+$", "", regex=True)
    listed = pd.read_csv(table, dtype=str)
    key = "path" if "path" in listed else "file"
    return paths.map(dict(zip(listed[key], listed["person"], strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("--people", type=Path,
                        help="CSV with path (or file) and person columns [default: people "
                             "from file names, Name_NNNN.jpg]")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--readme", type=Path)
    args = parser.parse_args()
    speeds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeat):
        for geometry in (False, True):
            faces, rate = timed(args.photos, geometry)
            speeds[geometry].append(rate)
    main_faces = faces[faces["face"] == 0].copy()
    main_faces["person"] = people(main_faces["path"], args.people)
    passing = main_faces[main_faces["geometry_ok"].fillna(False).astype(bool)]
    groups = [g["fwhr"].to_numpy(float) for _, g in passing.groupby("person") if len(g) >= 2]
    low, high = icc_interval(groups)
    share = len(passing) / len(main_faces)
    fwhr = passing["fwhr"]
    lines = [
        f"`python bench/geometry.py {args.photos}` on {os.cpu_count()} cores, "
        f"{faces['path'].nunique()} photos, {len(main_faces)} with a face.", "",
        "| measure | value |", "|---|---|",
        f"| faces passing `geometry_ok` | {len(passing)} of {len(main_faces)} ({share:.1%}) |",
        f"| fWHR of passing faces, mean (sd) | {fwhr.mean():.3f} ({fwhr.std():.3f}) |",
        f"| people with 2+ passing photos | {len(groups)} ({sum(map(len, groups))} photos) |",
        f"| ICC(1) of fWHR across a person's photos | {icc1(groups):.2f} "
        f"(95% CI {low:.2f}-{high:.2f}) |",
        f"| photos/s without `--geometry` (median of {args.repeat}) | "
        f"{statistics.median(speeds[False]):.0f} |",
        f"| photos/s with `--geometry` | {statistics.median(speeds[True]):.0f} |", ""]
    text = "\n".join(lines)
    print(text)
    if args.readme:
        update_readme(args.readme, text, "geometry")


if __name__ == "__main__":
    main()
