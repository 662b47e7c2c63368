"""Find the photos to score, with their company and any ids from a manifest.

Discovery decides what the output will contain, so it never drops anything silently: a
manifest row whose file is missing and a photo the manifest does not list both become
``Photo`` records with a status, and later one row each in the per-face table.
"""

from __future__ import annotations

import csv
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from facevalue.columns import MISSING, RESERVED, UNLISTED
from facevalue.errors import FacevalueError
from facevalue.storage import SUFFIXES, Location, display_path, open_location

log = logging.getLogger(__name__)

# A \xNN escape (see display_path), or any other backslash (a Windows separator).
ESCAPE_OR_BACKSLASH = re.compile(r"\\x[0-9a-fA-F]{2}|\\")


class ManifestError(FacevalueError, ValueError):
    """Raised for a manifest that cannot be used; the message names the file and rows."""


class NoPhotosError(FacevalueError, ValueError):
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


def company_of(path: str) -> str:
    """The first folder of a relative path; empty for a photo directly in the root folder."""
    parts = PurePosixPath(path).parts
    return sys.intern(display_path(parts[0])) if len(parts) > 1 else ""


def discover(root: str | Path | Location, manifest: str | Path | None = None) -> list[Photo]:
    """All photos under ``root`` (a folder, a URI or a Location; sorted by path), with
    companies from folders or a manifest. Every engine lists photos through this."""
    location = open_location(root)
    photos = photos_from_paths(location.list_photos(), manifest, location.uri)
    if not photos:
        raise NoPhotosError(f"{location.uri}: no photos found (looked for "
                            f"{', '.join(sorted(SUFFIXES))} in it and its folders)")
    return photos


def photos_from_paths(paths: list[str], manifest: str | Path | None,
                      root: str) -> list[Photo]:
    """Photo records for listed paths: companies from folders, or from the manifest."""
    if manifest is None:
        photos = [Photo(p, company_of(p)) for p in paths]
        _warn_rootless(photos)
        return photos
    return _match_manifest(paths, read_manifest(manifest), root)


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


def _match_manifest(paths: list[str], rows: list[dict[str, str]], root: str) -> list[Photo]:
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


def _log_mismatches(photos: Iterable[Photo], root: str) -> None:
    for status, what in ((MISSING, "manifest row(s) name no photo under"),
                         (UNLISTED, "photo(s) are not in the manifest, not scored, under")):
        examples = [display_path(p.path) for p in photos if p.status == status]
        if examples:
            log.warning("%d %s %s (status %r), e.g. %s", len(examples), what, root, status,
                        ", ".join(examples[:3]))


def id_columns(photos: Iterable[Photo]) -> list[str]:
    """Manifest id columns, in manifest order (all photos from one manifest share them)."""
    return next((list(p.ids) for p in photos if p.ids), [])
