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
from facevalue.storage import (
    ESCAPE,
    SUFFIXES,
    VIDEO_SUFFIXES,
    Location,
    display_path,
    fs_path,
    open_location,
)

log = logging.getLogger(__name__)

# A \xNN escape (see display_path), or any other backslash (a Windows separator).
ESCAPE_OR_BACKSLASH = re.compile(ESCAPE.pattern + r"|\\")
WINDOWS_DRIVE = re.compile(r"[A-Za-z]:(/|$)")
RELATIVE = "paths are relative to PHOTOS, the photo folder (e.g. ACME/2020/ceo.jpg)"


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
    photos = photos_from_paths(location.list_photos(), manifest, location)
    if not photos:
        raise NoPhotosError(f"{location.uri}: no photos found (looked for "
                            f"{', '.join(sorted(SUFFIXES | VIDEO_SUFFIXES))} in it and its "
                            "folders)")
    return photos


def photos_from_paths(paths: list[str], manifest: str | Path | None,
                      location: Location) -> list[Photo]:
    """Photo records for listed paths: companies from folders, or from the manifest."""
    if manifest is None:
        photos = [Photo(p, company_of(p)) for p in paths]
        _warn_rootless(photos)
        return photos
    return _match_manifest(paths, read_manifest(manifest), location)


def _warn_rootless(photos: list[Photo]) -> None:
    rootless = sum(1 for p in photos if not p.company)
    if rootless:
        log.warning("%d photo(s) lie directly in the photo folder, not in a company folder; "
                    "their company is empty (use --manifest to name it)", rootless)


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Manifest rows as dicts of strings, every value kept exactly as written.

    GVKEY ``001690`` keeps its zeros and `` 001690`` its space: the ids are what a study
    joins on, so they are not tidied behind its back (a warning names what looks wrong).
    """
    path = Path(path)
    lines, rows = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            for row in reader:
                lines.append(reader.line_num)  # a quoted value may span lines; blanks skip
                rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"{path}: cannot read the manifest ({e})") from e
    _check_columns(path, columns)
    _check_rows(path, columns, rows, lines)
    _warn_spaces(path, columns, rows, lines)
    _warn_leading_zeros(path, columns, rows)
    return rows


def _check_columns(path: Path, columns: list[str]) -> None:
    if not columns:
        raise ManifestError(f"{path}: the manifest is empty; it needs a header line such as "
                            "`path,company,gvkey` and a row per photo")
    missing = {"path", "company"} - set(columns)
    if missing:
        raise ManifestError(f"{path}: missing column(s) {sorted(missing)}; found {columns}: "
                            f"{_likely_cause(columns)}")
    clash = sorted((set(columns) - {"path", "company"}) & RESERVED)
    if clash:
        raise ManifestError(f"{path}: column(s) {clash} would overwrite output columns; "
                            "rename them")
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes or "" in columns:
        raise ManifestError(f"{path}: duplicate or empty column names {dupes}")


def _likely_cause(columns: list[str]) -> str:
    """Why a header lacks ``path`` or ``company``, as far as the header tells."""
    header = ",".join(columns)
    for separator, name in ((";", "';'"), ("\t", "tabs")):
        if separator in header:
            return (f"separated by {name}, not commas (spreadsheets in many locales save CSV "
                    "so); save it comma-separated")
    if {c.strip().lower() for c in columns} >= {"path", "company"}:
        return "names are exact: lower case, no spaces around them (`path`, `company`)"
    return "a manifest needs `path` (relative to PHOTOS) and `company`"


def _check_rows(path: Path, columns: list[str], rows: list[dict[str, str]],
                lines: list[int]) -> None:
    seen: dict[str, int] = {}
    for line, row in zip(lines, rows, strict=True):
        if None in row:  # csv puts surplus fields under the key None
            raise ManifestError(f"{path}: line {line} has more fields than the header "
                                f"({len(columns)})")
        if None in row.values():  # and leaves missing ones None
            given = sum(value is not None for value in row.values())
            raise ManifestError(f"{path}: line {line} has {given} fields, the header "
                                f"{len(columns)}; give every row one per column (empty ones "
                                "too: `a.jpg,ACME,,2020`)")
        try:
            key = normalize(row["path"])
        except ManifestError as e:
            raise ManifestError(f"{path}: line {line}: {e}") from e
        if not key or not row["company"].strip():
            raise ManifestError(f"{path}: line {line} has an empty path or company")
        if key in seen:
            raise ManifestError(f"{path}: line {line} repeats {key!r} (first on line "
                                f"{seen[key]}); list each photo once")
        seen[key] = line


def _warn_spaces(path: Path, columns: list[str], rows: list[dict[str, str]],
                 lines: list[int]) -> None:
    """Say when ids carry spaces around them: kept as written, they would not join."""
    spaced = [(line, column, row[column]) for line, row in zip(lines, rows, strict=True)
              for column in columns if column != "path" and row[column] != row[column].strip()]
    if spaced:
        line, column, value = spaced[0]
        log.warning("%s: %d value(s) have spaces around them, kept as written (e.g. line %d, "
                    "%s %r); a join with values without the spaces finds nothing",
                    path, len(spaced), line, column, value)


def _warn_leading_zeros(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    """Say when an id column of digits mixes zero-padded ids with shorter unpadded ones.

    GVKEY ``9901`` beside ``001690`` is a spreadsheet that dropped the zeros; a merge with
    zero-padded firm data then gives NaN for those rows, without a word.
    """
    for column in columns:
        if column in ("path", "company"):
            continue
        values = {row[column] for row in rows} - {""}
        if not values or not all(v.isascii() and v.isdigit() for v in values):
            continue
        width = max((len(v) for v in values if v.startswith("0")), default=0)
        short = sorted(v for v in values if len(v) < width and not v.startswith("0"))
        if short:
            padded = min(v for v in values if v.startswith("0") and len(v) == width)
            log.warning("%s: column %s mixes zero-padded ids (%r) with %d shorter one(s) "
                        "without zeros (e.g. %r); if those lost their zeros in a spreadsheet, "
                        "write %r, or a merge with padded firm data gives NaN for them",
                        path, column, padded, len(short), short[0], short[0].zfill(width))


def normalize(path: str) -> str:
    """A manifest (or labels) path as discovery writes it: ``./a\\b.jpg`` -> ``a/b.jpg``.

    Surrounding spaces, ``.`` and empty parts go; backslashes are Windows separators except
    in ``display_path``'s ``\\xNN`` escapes, which come out in its spelling (``\\xE9`` ->
    ``\\xe9``). A path that would leave the photo folder (absolute, a drive, ``..``)
    raises ManifestError: a manifest names photos under PHOTOS only, and re-rooting it
    silently would match other photos or none.
    """
    slashed = ESCAPE_OR_BACKSLASH.sub(lambda m: m.group(0) if len(m.group(0)) > 1 else "/",
                                      path.strip())
    if "\\" in slashed:  # escapes decoded first: an escaped / or .. must not slip through
        slashed = display_path(fs_path(slashed))
    if slashed.startswith("/") or WINDOWS_DRIVE.match(slashed):
        raise ManifestError(f"{path!r} is absolute; {RELATIVE}")
    parts = [p for p in slashed.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ManifestError(f"{path!r} goes up a folder (..); {RELATIVE}")
    if "\0" in slashed:
        raise ManifestError(f"{path!r} holds a NUL byte, which no file name can")
    return "/".join(parts)


def _match_manifest(paths: list[str], rows: list[dict[str, str]],
                    location: Location) -> list[Photo]:
    listed = {normalize(r["path"]): r for r in rows}
    # manifests are text: a non-UTF-8 name is matched by its escaped form
    on_disk = {display_path(p): p for p in paths}
    aliases = _aliases([p for p in listed if p not in on_disk], list(on_disk), location)
    direct = listed.keys() & on_disk.keys()
    reached = direct | set(aliases.values())
    if len(direct) + len(aliases) > len(reached):
        log.warning("%d photo(s) are named by two manifest rows, through two names of a "
                    "linked folder; each row is scored", len(direct) + len(aliases) - len(reached))
    photos = [_photo_from_row(fs_path(p), r, p in on_disk or p in aliases)
              for p, r in listed.items()]
    photos += [Photo(p, company_of(p), status=UNLISTED) for shown, p in on_disk.items()
               if shown not in reached]
    photos.sort(key=lambda p: p.path)
    _log_mismatches(photos, location.uri)
    return photos


def _aliases(unmatched: list[str], listed: list[str], location: Location) -> dict[str, str]:
    """Manifest paths that reach a listed photo through another name of a folder (a link:
    ``ACME -> zeta`` lists ``ACME/x.jpg``, the manifest says ``zeta/x.jpg``) -> that photo.

    Discovery lists each real folder once, under one of its names; a manifest may use any.
    Both sides are in display form.
    """
    if not unmatched or not listed:
        return {}
    where = dict(zip(location.real_paths([fs_path(s) for s in listed]), listed, strict=True))
    wanted = location.real_paths([fs_path(p) for p in unmatched])
    return {p: where[r] for p, r in zip(unmatched, wanted, strict=True) if r in where}


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
