"""How big the HTML report gets, and how long it takes, for a large run (issue 6).

Generates a synthetic scored run in a scratch folder (photos plus a per-face Parquet file in
the scorer's schema, with failures and multi-face photos), builds the report with the
default caps, and prints the file size and time. Not a unit test: it writes thousands of
photos. Run it from the repository root:

    python bench/report_size.py --photos 10000 --companies 500 --work /tmp/fv-report-bench
    python bench/report_size.py --photos 10000 --companies 2000 --work /tmp/fv-report-bench

``--faces-from DIR`` uses real face photos (cycled, symlinked) instead of synthetic ones:
real faces have more texture, so their JPEG thumbnails are larger.

Recorded 2026-11-25 with the defaults (--max-faces 12 --max-review 200), 5% failed photos,
5% no face and 5% with two faces. "real" is faces-dev (350 px portraits); synthetic photos
are noisy 480 x 360 colour JPEGs, a worst case for compression. Sizes are exact. Build times
come from a 2-core box that a training run kept busy, so read them as upper bounds:

    photos  companies  photos used  thumbnails  size     build   max RSS
    10000   500        synthetic    6400        23.6 MB  25 s    378 MB
    10000   500        real         6400        11.5 MB  39 s    312 MB
    10000   2000       real         9854        19.1 MB  43 s    356 MB
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from facevalue.contract import LABELS
from facevalue.report import build_report

SUFFIXES = (".jpg", ".jpeg", ".png")
SYNTHETIC_BOX = (180, 80, 120, 150)  # where synthetic photos have their face
REAL_BOX = (100, 90, 150, 170)  # faces-dev photos are 350 x 350 with the face centred


def synthetic_photo(rng: np.random.Generator) -> np.ndarray:
    """A 480 x 360 photo with blurred noise (compresses like a busy background) and a face."""
    image = cv2.resize(rng.integers(40, 220, (45, 60, 3), dtype=np.uint8), (480, 360))
    x, y, w, h = SYNTHETIC_BOX
    cv2.ellipse(image, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360,
                tuple(int(v) for v in rng.integers(60, 230, 3)), -1)
    noise = rng.normal(0, 6, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def make_photos(root: Path, paths: list[str], faces_from: Path | None, seed: int) -> None:
    """Write (or link) one photo per path; nothing is redone if the folder already exists."""
    sources = (sorted(p for p in faces_from.iterdir() if p.suffix.lower() in SUFFIXES)
               if faces_from else [])
    rng = np.random.default_rng(seed)
    for i, path in enumerate(paths):
        target = root / path
        if target.exists() or target.is_symlink():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if sources:
            target.symlink_to(sources[i % len(sources)].resolve())
        else:
            cv2.imwrite(str(target), synthetic_photo(rng), [cv2.IMWRITE_JPEG_QUALITY, 85])


def make_scores(n_photos: int, n_companies: int, seed: int, real: bool) -> pd.DataFrame:
    """Per-face rows: most photos one face, 5% two faces, 5% no face, 5% failed."""
    rng = np.random.default_rng(seed)
    box = REAL_BOX if real else SYNTHETIC_BOX
    rows = []
    for i in range(n_photos):
        path, company = f"C{i % n_companies:05d}/photo_{i:06d}.jpg", f"C{i % n_companies:05d}"
        kind = rng.random()
        base = {"path": path, "company": company, "photo_sha256": f"{i:064x}"}
        if kind < 0.05:
            rows.append({**base, "status": "unreadable", "error": "truncated JPEG"})
        elif kind < 0.10:
            rows.append({**base, "status": "no_face", "faces_in_photo": 0})
        else:
            n_faces = 2 if kind > 0.95 else 1
            for face in range(n_faces):
                probs = rng.dirichlet(np.ones(len(LABELS)))
                x, y, w, h = box if face == 0 else (20, 20, 60, 70)
                rows.append({**base, "status": "ok", "face": face, "faces_in_photo": n_faces,
                             "x": x, "y": y, "w": w, "h": h, "face_score": 0.9,
                             **dict(zip(LABELS, probs, strict=True)),
                             "emotion": LABELS[int(probs.argmax())]})
    return pd.DataFrame(rows)


def write_scores(frame: pd.DataFrame, path: Path) -> None:
    """Write the rows in the scorer's types with its key-value metadata."""
    frame = frame.reindex(columns=["path", "company", "status", "error", "face", "faces_in_photo",
                                   "x", "y", "w", "h", "face_score", *LABELS, "emotion",
                                   "photo_sha256"])
    frame = frame.astype({c: "Int32" for c in ("face", "faces_in_photo", "x", "y", "w", "h")})
    frame = frame.astype({c: "float32" for c in ("face_score", *LABELS)})
    frame = frame.astype({c: "string" for c in ("error", "emotion")})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {"facevalue.version": "bench", "facevalue.model": "synthetic",
            "facevalue.model_sha256": "0" * 64, "facevalue.detector": "synthetic",
            "facevalue.arguments": "{}", "facevalue.created": "bench"}
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, **meta}), path)


def main() -> None:
    """Generate the run (once), build the report, print size and time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--companies", type=int, default=500)
    parser.add_argument("--work", type=Path, default=Path("/tmp/fv-report-bench"))
    parser.add_argument("--faces-from", type=Path, default=None)
    parser.add_argument("--max-faces", type=int, default=12)
    parser.add_argument("--max-review", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    kind = "real" if args.faces_from else "synthetic"
    work = args.work / f"{args.photos}-{args.companies}-{kind}"
    frame = make_scores(args.photos, args.companies, seed=0, real=args.faces_from is not None)
    photos = frame.drop_duplicates("path")
    start = time.perf_counter()
    make_photos(work / "photos", list(photos["path"]), args.faces_from, seed=1)
    write_scores(frame, work / "scores.parquet")
    made = time.perf_counter() - start
    start = time.perf_counter()
    report = build_report(work / "scores.parquet", work / "report.html", photos=work / "photos",
                          max_faces=args.max_faces, max_review=args.max_review)
    took = time.perf_counter() - start
    print(f"photos={report.photos} companies={args.companies} faces-from={kind} "
          f"max_faces={args.max_faces} max_review={args.max_review} "
          f"thumbnails={report.thumbnails} size={report.size / 1e6:.1f} MB "
          f"({report.size / report.photos / 1e3:.1f} kB/photo) build={took:.1f} s "
          f"(generating took {made:.1f} s) -> {report.path}")


if __name__ == "__main__":
    main()
