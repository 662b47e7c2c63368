"""Build the benchmark corpus from the sample portraits: a few hundred distinct files, then
N photos as hard links to them.

The distinct files are the two sample portraits (Grace Hopper, the astronaut) resized to 512,
1024, 2048 (and, in the ``full`` mix, ~3000) px wide, each copy shifted, flipped, lit and
grained a little differently (so no two files share a hash, and the grain gives file sizes
like real photos: ~85 kB at 512 px, ~800 kB at 2048 px), JPEG quality 90. The ``full`` mix
adds PNG portraits, face-less photos (the sample landscape) and broken files (truncated,
not an image, empty).

N photos (up to 100,000 and beyond) are hard links into 100-photo company folders, cycling
through the distinct files in a shuffled order: a collection of any size costs the disk only
the distinct files (80 MB for the jpeg mix, 150 MB for the full one) and its folder entries,
and every photo has its own path, so facevalue scores each one (saved results are looked up
by path, size and modification time). Hard-linked photos come from the page cache after
their first read, like a collection read a second time; ext4 allows 65,000 links per file,
so 240 distinct files carry up to ~15 million photos.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_data" / "photos"
PORTRAITS = (SAMPLES / "navy" / "grace_hopper.jpg", SAMPLES / "nasa" / "astronaut.jpg")
LANDSCAPE = SAMPLES / "nasa" / "landscape.jpg"
VARIANTS = 40  # distinct copies per portrait and width
PER_COMPANY = 100
MIXES = ("jpeg", "full")


@dataclass(frozen=True)
class Corpus:
    """A built corpus: its photo folder, photo count and what kinds of files it holds."""

    photos: Path
    n: int
    kinds: dict[str, int]  # kind -> distinct files of that kind


def varied(image: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """The image cropped a little off-centre, maybe mirrored, relit, resized, with grain."""
    height = image.shape[0]
    dy, dx = rng.integers(0, max(1, height // 20), 2)
    crop = image[dy:height - height // 20 + dy, dx:image.shape[1] - image.shape[1] // 20 + dx]
    if rng.random() < 0.5:
        crop = cv2.flip(crop, 1)
    size = (width, round(crop.shape[0] * width / crop.shape[1]))
    big = cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    big = big * rng.uniform(0.85, 1.15) + rng.normal(0, 3, big.shape).astype(np.float32)
    return np.clip(big, 0, 255).astype(np.uint8)


def encode(image: np.ndarray, ext: str) -> bytes:
    """JPEG (quality 90) or PNG bytes."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise ValueError(f"cannot encode {ext}")
    return buf.tobytes()


def distinct_files(mix: str, seed: int = 0) -> list[tuple[str, str, bytes]]:
    """(kind, file name, bytes) of every distinct file of a mix."""
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}")
    rng = np.random.default_rng(seed)
    portraits = [cv2.imread(str(p)) for p in PORTRAITS]
    widths = (512, 1024, 2048) + ((3000,) if mix == "full" else ())
    files = []
    for width in widths:
        count = VARIANTS if width <= 2048 else VARIANTS // 4
        for p, image in enumerate(portraits):
            for v in range(count):
                data = encode(varied(image, width, rng), ".jpg")
                files.append((f"jpeg{width}", f"p{p}_{width}_{v:02d}.jpg", data))
    if mix == "full":
        files += _extra_files(portraits, cv2.imread(str(LANDSCAPE)), rng)
    return files


def _extra_files(portraits: list[np.ndarray], landscape: np.ndarray,
                 rng: np.random.Generator) -> list[tuple[str, str, bytes]]:
    """PNG portraits, face-less photos and broken files: about a fifth of the full mix."""
    files = []
    for v in range(VARIANTS // 2):
        image = varied(portraits[v % 2], 1024, rng)
        files.append(("png1024", f"png_{v:02d}.png", encode(image, ".png")))
        files.append(("no_face", f"land_{v:02d}.jpg",
                      encode(varied(landscape, (512, 1024, 2048)[v % 3], rng), ".jpg")))
    whole = encode(varied(portraits[0], 1024, rng), ".jpg")
    for v in range(VARIANTS // 4):
        files.append(("broken", f"trunc_{v:02d}.jpg", whole[: len(whole) // (2 + v)]))
        files.append(("broken", f"text_{v:02d}.jpg", f"not a photo {v}\n".encode()))
    files.append(("broken", "empty.jpg", b""))
    return files


def build(folder: Path, n: int, mix: str = "jpeg", seed: int = 0) -> Corpus:
    """The corpus of ``n`` photos of a mix: ``folder/<mix>-<n>/``, reused when already built.

    The distinct files (``folder/distinct-<mix>/``) are shared by every size of a mix.
    """
    distinct = folder / f"distinct-{mix}"
    files = sorted(distinct.glob("*")) if distinct.is_dir() else []
    if not files:
        files = _write_distinct(distinct, mix, seed)
    kinds: dict[str, int] = {}
    for f in files:
        kinds[_kind_of(f.name)] = kinds.get(_kind_of(f.name), 0) + 1
    order = np.random.default_rng(seed).permutation(len(files))
    photos = folder / f"{mix}-{n}"
    done = photos / ".complete"
    if not done.is_file() or done.read_text() != f"{mix} {n} {len(files)}":
        _link(photos, [files[i] for i in order], n)
        done.write_text(f"{mix} {n} {len(files)}")
    return Corpus(photos, n, kinds)


def _write_distinct(folder: Path, mix: str, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for _, name, data in distinct_files(mix, seed):
        (folder / name).write_bytes(data)
        written.append(folder / name)
    log.info("wrote %d distinct %s files to %s", len(written), mix, folder)
    return sorted(written)


def _kind_of(name: str) -> str:
    if name.startswith("p") and not name.startswith("png"):
        return f"jpeg{name.split('_')[1]}"
    return {"png": "png1024", "lan": "no_face"}.get(name[:3], "broken")


def _link(photos: Path, files: list[Path], n: int) -> None:
    """Photo i is a hard link to files[i % len(files)], in company folder i // PER_COMPANY."""
    if photos.exists():
        for old in sorted(photos.rglob("*"), reverse=True):
            old.rmdir() if old.is_dir() else old.unlink()
    for i in range(n):
        source = files[i % len(files)]
        target = photos / f"c{i // PER_COMPANY:05d}" / f"{i:06d}{source.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target)
