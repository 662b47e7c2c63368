"""Find the photos to score, with their company and any ids from a manifest.

Discovery decides what the output will contain, so it never drops anything silently: a
manifest row whose file is missing and a photo the manifest does not list both become
``Photo`` records with a status, and later one row each in the per-face table.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from facevalue.contract import LABELS
from facevalue.statuses import MISSING, UNLISTED

log = logging.getLogger(__name__)

SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
# Per-face columns a manifest may not reuse, or a copied-through id would overwrite them.
RESERVED = frozenset({
    "path", "company", "status", "error", "face", "faces_in_photo", "x", "y", "w", "h",
    "face_score", "emotion", "photo_sha256", "photos", "faces", "failed", "happiness_share",
    "positivity", *LABELS,
})


# A \xNN escape (see display_path), or any other backslash (a Windows separator).
ESCAPE_OR_BACKSLASH = re.compile(r"\\x[0-9a-fA-F]{2}|\\")


class ManifestError(ValueError):
    """Raised for a manifest that cannot be used; the message names the file and rows."""


class NoPhotosError(ValueError):
    """Raised when a photo folder holds nothing to score (a wrong folder, most likely)."""


NO_IDS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Photo:
    """One photo to score: its path relative to the photo folder, its company and ids.

    ``status`` is None for a photo to score, or ``missing`` / ``unlisted`` when discovery
    already knows it cannot or should not be scored. A run holds one per photo for its
    whole length, so they are kept small: slots, one shared empty ``ids``, and company
    names interned (a company's photos share one string).
    """

    path: str  # posix, relative to the photo folder
    company: str
    ids: Mapping[str, str] = field(default_factory=lambda: NO_IDS)
    status: str | None = None


def find_photos(root: Path) -> list[str]:
    """Image files under ``root`` as sorted posix paths relative to it.

    Symlinked folders are followed (``photos/ACME -> /data/acme`` is a company folder), but
    each real folder is listed once, by device and inode, so a link back up the tree cannot
    repeat photos or loop. Entries named like photos are listed whatever they are (a
    dangling link, a FIFO): reading them gives a status row, never a hang. A folder that
    cannot be listed is named in a warning. Hidden files and folders are skipped: macOS
    leaves ``._IMG_0001.jpg`` resource forks and ``.Trashes`` in copied folders, and those
    are not photos.
    """
    found = []
    seen: set[tuple[int, int]] = set()

    def unlisted(error: OSError) -> None:
        log.warning("cannot list %s (%s); photos in it are not scored",
                    display_path(str(error.filename)), error.strerror or error)

    for folder, dirs, files in os.walk(root, onerror=unlisted, followlinks=True):
        try:
            info = os.stat(folder)
        except OSError as e:
            unlisted(e)
            dirs[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen:  # reached again through a link
            dirs[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in SUFFIXES:
                found.append(Path(folder, name).relative_to(root).as_posix())
    return sorted(found)


def display_path(path: str) -> str:
    """A path as the tables write it: bytes of a non-UTF-8 name as ``\\xNN`` escapes.

    File names are bytes on Linux; Python keeps undecodable ones as surrogates, which
    Parquet, SQLite and CSV cannot store. ``caf\\xe9.jpg`` names a Latin-1 ``café.jpg``;
    a manifest can list it in that form.
    """
    if path.isascii():
        return path
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path


def company_of(path: str) -> str:
    """The first folder of a relative path; empty for a photo directly in the root folder."""
    parts = PurePosixPath(path).parts
    return sys.intern(display_path(parts[0])) if len(parts) > 1 else ""


def discover(root: str | Path, manifest: str | Path | None = None) -> list[Photo]:
    """All photos under ``root`` (sorted by path), with companies from folders or a manifest."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    photos = photos_from_paths(find_photos(root), manifest, root)
    if not photos:
        raise NoPhotosError(f"{root}: no photos found (looked for "
                            f"{', '.join(sorted(SUFFIXES))} in it and its folders)")
    return photos


def photos_from_paths(paths: list[str], manifest: str | Path | None,
                      root: str | Path) -> list[Photo]:
    """Photo records for listed paths: companies from folders, or from the manifest.

    Shared by every engine, whatever lists the files (``os.walk`` here, pyarrow for Ray).
    """
    if manifest is None:
        photos = [Photo(p, company_of(p)) for p in paths]
        _warn_rootless(photos)
        return photos
    return _match_manifest(paths, read_manifest(manifest), Path(root))


def _warn_rootless(photos: list[Photo]) -> None:
    rootless = sum(1 for p in photos if not p.company)
    if rootless:
        log.warning("%d photo(s) lie directly in the photo folder, not in a company folder; "
                    "their company is empty (use --manifest to name it)", rootless)


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Manifest rows as dicts of strings, every value kept as written (GVKEY 001690 stays)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"{path}: cannot read the manifest ({e})") from e
    _check_columns(path, columns)
    _check_rows(path, rows)
    return [{k: (v or "").strip() for k, v in row.items()} for row in rows]


def _check_columns(path: Path, columns: list[str]) -> None:
    missing = {"path", "company"} - set(columns)
    if missing:
        raise ManifestError(f"{path}: missing column(s) {sorted(missing)}; "
                            "a manifest needs `path` (relative to PHOTOS) and `company`")
    clash = sorted((set(columns) - {"path", "company"}) & RESERVED)
    if clash:
        raise ManifestError(f"{path}: column(s) {clash} would overwrite output columns; "
                            "rename them")
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes or "" in columns:
        raise ManifestError(f"{path}: duplicate or empty column names {dupes}")


def _check_rows(path: Path, rows: list[dict[str, str]]) -> None:
    if any(None in row for row in rows):  # csv puts surplus fields under the key None
        raise ManifestError(f"{path}: some rows have more fields than the header")
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        key = normalize(row.get("path") or "")
        if not key or not (row.get("company") or "").strip():
            raise ManifestError(f"{path}: line {line} has an empty path or company")
        if key in seen:
            raise ManifestError(f"{path}: line {line} repeats {key!r} (first on line "
                                f"{seen[key]}); list each photo once")
        seen[key] = line


def normalize(path: str) -> str:
    """A manifest path as the posix relative path discovery produces (``./a\\b.jpg`` -> a/b.jpg).

    Backslashes are Windows separators, except in the ``\\xNN`` escapes of ``display_path``.
    """
    slashed = ESCAPE_OR_BACKSLASH.sub(lambda m: m.group(0) if len(m.group(0)) > 1 else "/",
                                      path.strip())
    parts = [p for p in slashed.split("/") if p not in ("", ".")]
    return "/".join(parts)


def _match_manifest(paths: list[str], rows: list[dict[str, str]], root: Path) -> list[Photo]:
    listed = {normalize(r["path"]): r for r in rows}
    # manifests are text: a non-UTF-8 name is matched by its escaped form
    on_disk = {display_path(p): p for p in paths}
    photos = [_photo_from_row(on_disk.get(p, p), r, p in on_disk) for p, r in listed.items()]
    photos += [Photo(p, company_of(p), status=UNLISTED) for shown, p in on_disk.items()
               if shown not in listed]
    photos.sort(key=lambda p: p.path)
    _log_mismatches(photos, root)
    return photos


def _photo_from_row(path: str, row: dict[str, str], exists: bool) -> Photo:
    ids = {k: v for k, v in row.items() if k not in ("path", "company")}
    return Photo(path, sys.intern(row["company"]), ids, None if exists else MISSING)


def _log_mismatches(photos: Iterable[Photo], root: Path) -> None:
    for status, what in ((MISSING, "manifest row(s) name no photo under"),
                         (UNLISTED, "photo(s) are not in the manifest, not scored, under")):
        examples = [display_path(p.path) for p in photos if p.status == status]
        if examples:
            log.warning("%d %s %s (status %r), e.g. %s", len(examples), what, root, status,
                        ", ".join(examples[:3]))


def id_columns(photos: Iterable[Photo]) -> list[str]:
    """Manifest id columns, in manifest order (all photos from one manifest share them)."""
    return next((list(p.ids) for p in photos if p.ids), [])
