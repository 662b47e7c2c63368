"""Where photos and outputs live: this machine's disk, or a bucket through ``pyarrow.fs``.

Every engine lists, reads and writes through here, so a local folder and a bucket behave
alike and two engines cannot disagree about what a folder holds. The policy is the same
for both:

- directory symlinks are followed, and each real folder is listed once (by device and
  inode on a disk; buckets have no links), so a link back up the tree cannot repeat photos
  or loop;
- hidden names are skipped (macOS's ``._IMG_0001.jpg`` and ``.Trashes`` are not photos);
- anything named like a photo is listed whatever it is, and reading a dangling link, a
  FIFO, a socket or a device gives a status instead of blocking; a file above the byte
  limit is ``too_large`` without being read.

A local folder is read with ``os``, not pyarrow's ``LocalFileSystem``: that one follows
links without telling, has no inode to stop a loop with, and cannot name a file whose name
is not UTF-8. Buckets, which have none of those, go through pyarrow.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import sys
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from facevalue.columns import EMPTY, TOO_LARGE, UNREADABLE, PhotoError
from facevalue.errors import FacevalueError

log = logging.getLogger(__name__)

SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
# Videos are listed beside photos and scored frame by frame (facevalue.video_faces); a file
# is a photo or a video by its name alone, so a video named .jpg is an unreadable photo.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm"})
# No photo worth scoring is this large (a 100-megapixel TIFF, uncompressed, is 300 MB); the
# limit stops a link to a device or a sparse file from being read into memory.
DEFAULT_MAX_BYTES = 512 * 2**20
# One escaped byte of a path as display_path writes it.
ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


class LocationError(FacevalueError, ValueError):
    """A photo folder or output location that cannot be opened or listed."""


class ReadError(PhotoError):
    """A photo whose bytes cannot be had (missing, special, empty or too large)."""


@dataclass(frozen=True)
class FileKey:
    """A photo file as last seen: what must all be unchanged for its saved result to be reused.

    Size and modification time alone miss a same-size edit that keeps the mtime
    (``exiftool -P``, ``cp -p``, ``rsync -t``). On a local disk the change time, which only
    the kernel sets and every write moves, and the inode, which a file renamed over the
    photo changes, close that gap. A bucket has neither (0 here): there the modification
    time is the store's own upload time, which a client cannot set back.
    """

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int = 0
    inode: int = 0


@dataclass(frozen=True)
class Location:
    """A photo folder: a local folder (``fs`` None), or a folder in a pyarrow filesystem.

    ``root`` is the local absolute path or the path within ``fs``; ``uri`` names the folder
    in messages and metadata. Picklable (pyarrow's filesystems are), so a Ray worker opens
    the same folder.
    """

    uri: str
    root: str
    fs: pafs.FileSystem | None = None

    def path(self, relative: str) -> str:
        """The full path (local, or within ``fs``) of a photo's relative path."""
        return os.path.join(self.root, relative) if self.fs is None else \
            f"{self.root.rstrip('/')}/{relative}"

    def list_photos(self) -> list[str]:
        """Image files under the folder as sorted posix paths relative to it."""
        return _list_local(Path(self.root)) if self.fs is None else _list_fs(self.fs, self.root)

    def real_paths(self, relatives: list[str]) -> list[str]:
        """Where each relative path leads once its folders' links are resolved, so the two
        names of one photo (``ACME/x.jpg`` through ``ACME -> zeta``, and ``zeta/x.jpg``)
        meet. A bucket has no links: each path is its own."""
        if self.fs is not None:
            return list(relatives)
        folders: dict[str, str] = {}  # one realpath per folder, not per photo
        real = []
        for relative in relatives:
            folder, _, name = relative.rpartition("/")
            if folder not in folders:
                folders[folder] = os.path.realpath(os.path.join(self.root, folder))
            real.append(os.path.join(folders[folder], name))
        return real

    def read(self, relative: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        """A photo's bytes; an unreadable, special, empty or oversized file raises ReadError."""
        if self.fs is None:
            return read_local(self.path(relative), max_bytes)
        return _read_fs(self.fs, self.path(relative), max_bytes)

    def open(self, relative: str) -> BinaryIO:
        """A video's file, opened for random access (PyAV seeks in it), with no byte limit.

        What ``read`` refuses without reading (a missing, special or empty file) raises
        ReadError here too, so a FIFO named .mp4 gives a status instead of blocking.
        """
        if self.fs is None:
            path = self.path(relative)
            try:
                info = os.stat(path)
                _check_file(stat.S_ISREG(info.st_mode), file_kind(info.st_mode), info.st_size,
                            sys.maxsize)
                _check_data(b"x" if info.st_size else b"", sys.maxsize)
                return open(path, "rb")
            except OSError as e:
                raise ReadError(UNREADABLE, f"cannot read file: {e.strerror or e}") from e
        path = self.path(relative)
        try:
            info = self.fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise ReadError(UNREADABLE, f"cannot read file: {os.strerror(errno.ENOENT)}")
            kind = "a folder" if info.type == pafs.FileType.Directory else "a special file"
            _check_file(info.type == pafs.FileType.File, kind, info.size or 0, sys.maxsize)
            _check_data(b"x" if info.size else b"", sys.maxsize)
            return self.fs.open_input_file(path)  # type: ignore[no-any-return]
        except OSError as e:
            reason = os.strerror(e.errno) if e.errno else str(e)
            raise ReadError(UNREADABLE, f"cannot read file: {reason}") from e

    def key(self, relative: str) -> FileKey | None:
        """The photo's FileKey; None when it cannot be had."""
        if self.fs is None:
            try:
                info = os.stat(self.path(relative))
            except OSError:
                return None
            return FileKey(display_path(relative), info.st_size, info.st_mtime_ns,
                           info.st_ctime_ns, info.st_ino)
        try:
            found = self.fs.get_file_info(self.path(relative))
        except OSError:
            return None
        if found.type != pafs.FileType.File or found.mtime_ns is None:
            return None
        return FileKey(display_path(relative), found.size, found.mtime_ns)


def open_location(place: str | Path | Location, check: bool = True) -> Location:
    """The Location of a local folder or a URI (``s3://bucket/photos``, ``file:///data``).

    ``file://`` is this machine's disk, read as any local folder. ``check`` refuses a place
    that is not a folder; without it, each photo read from there says what is wrong.
    """
    if isinstance(place, Location):
        return place
    text = str(place)
    if is_local(text):
        root = os.path.abspath(local_path(text))
        if check and not os.path.isdir(root):
            raise LocationError(f"{text}: not a folder")
        return Location(root, root)
    fs, root = _filesystem(text)
    if check:
        try:
            kind = fs.get_file_info(root).type
        except OSError as e:
            raise LocationError(f"{text}: cannot open the photo folder ({e})") from e
        if kind != pafs.FileType.Directory:
            raise LocationError(f"{text}: not a folder")
    return Location(text, root, fs)


def is_local(place: str | Path) -> bool:
    """Whether a path or URI is on this machine's disk (a path, or a ``file://`` URI)."""
    text = str(place)
    return "://" not in text or text.startswith("file://")


def local_path(place: str | Path) -> str:
    """The file-system path of a local path or ``file://`` URI."""
    return str(place).removeprefix("file://")


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, OSError) as e:
        raise LocationError(f"{uri}: not a location pyarrow can open ({e})") from e
    return fs, path.rstrip("/") or "/"


def display_path(path: str) -> str:
    """A path as the tables write it: bytes of a non-UTF-8 name, and backslashes, as ``\\xNN``.

    File names are bytes on Linux; Python keeps undecodable ones as surrogates, which
    Parquet, SQLite and CSV cannot store. ``caf\\xe9.jpg`` names a Latin-1 ``café.jpg``; a
    backslash is written ``\\x5c``, so a file literally named ``caf\\xe9.jpg`` is
    ``caf\\x5cxe9.jpg`` and no two files share a path (``fs_path`` reverses it). A
    manifest can list a file in this form.
    """
    if path.isascii() and "\\" not in path:
        return path
    return os.fsencode(path).replace(b"\\", b"\\x5c").decode("utf-8", "backslashreplace")


def fs_path(shown: str) -> str:
    """The file-system name of a path as ``display_path`` writes it (its inverse)."""
    if "\\" not in shown:
        return shown
    parts = ESCAPE.split(shown)  # text, hex digits, text, ...
    raw = b"".join(bytes.fromhex(part) if i % 2 else part.encode("utf-8")
                   for i, part in enumerate(parts))
    return os.fsdecode(raw)


def _is_photo_name(name: str) -> bool:
    """Whether a file is listed: a photo's or a video's name, not hidden."""
    suffix = PurePosixPath(name).suffix.lower()
    return not name.startswith(".") and (suffix in SUFFIXES or suffix in VIDEO_SUFFIXES)


def is_video(path: str) -> bool:
    """Whether a listed path is scored as a video (by its name, as it was listed)."""
    return PurePosixPath(path).suffix.lower() in VIDEO_SUFFIXES


def _list_local(root: Path) -> list[str]:
    """Walk a local folder with a stack of folders, each real folder once.

    Not ``os.walk``: it recurses, and a tree a thousand folders deep raised RecursionError.
    """
    found: list[str] = []
    seen: set[tuple[int, int]] = set()
    folders = [""]  # relative to root, posix
    while folders:
        relative = folders.pop()
        try:
            info = os.stat(os.path.join(root, relative))
            if (info.st_dev, info.st_ino) in seen:  # reached again through a link
                continue
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(os.path.join(root, relative)) as entries:
                for entry in entries:
                    if entry.name.startswith("."):  # hidden: ._IMG_0001.jpg, .Trashes
                        continue
                    path = f"{relative}/{entry.name}" if relative else entry.name
                    if _is_folder(entry):
                        folders.append(path)
                    elif _is_photo_name(entry.name):
                        found.append(path)
        except OSError as e:
            log.warning("cannot list %s (%s); photos in it are not scored",
                        display_path(str(e.filename)), e.strerror or e)
    return sorted(found)


def _is_folder(entry: os.DirEntry[str]) -> bool:
    """Whether an entry is a folder, links followed; a dangling or looping link is not."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _list_fs(fs: pafs.FileSystem, root: str) -> list[str]:
    """Walk a pyarrow filesystem folder by folder (its recursive listing follows links)."""
    found, folders, seen = [], [root], set()
    while folders:
        folder = folders.pop()
        if folder in seen:
            continue
        seen.add(folder)
        try:
            infos = fs.get_file_info(pafs.FileSelector(folder, recursive=False))
        except OSError as e:
            if folder == root:
                raise LocationError(f"{root}: cannot list the photo folder ({e})") from e
            log.warning("cannot list %s (%s); photos in it are not scored", folder, e)
            continue
        for info in infos:
            if info.type == pafs.FileType.Directory and not info.base_name.startswith("."):
                folders.append(info.path)
            elif info.type != pafs.FileType.Directory and _is_photo_name(info.base_name):
                found.append(info.path[len(root):].lstrip("/"))
    return sorted(found)


def read_local(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """A local file's bytes, checked before it is opened.

    Opening a FIFO blocks until someone writes to it, and a link to ``/dev/zero`` or a huge
    sparse file would be read without end; so what the file is (after following links) and
    its size come first.
    """
    try:
        info = os.stat(path)
    except OSError as e:
        raise ReadError(UNREADABLE, f"cannot read file: {e.strerror or e}") from e
    _check_file(stat.S_ISREG(info.st_mode), file_kind(info.st_mode), info.st_size, max_bytes)
    try:
        with open(path, "rb") as f:
            # A buffer the file's size, not the limit's: read(max_bytes + 1) had Python map
            # and unmap 512 MB for every photo (0.16 against 0.04 ms a photo on one thread,
            # issue 22). One byte more tells a file that grew since the stat, read on then.
            data = f.read(info.st_size + 1)
            if len(data) > info.st_size:
                data += f.read(max_bytes + 1 - len(data))
    except OSError as e:
        raise ReadError(UNREADABLE, f"cannot read file: {e.strerror or e}") from e
    return _check_data(data, max_bytes)


def _read_fs(fs: pafs.FileSystem, path: str, max_bytes: int) -> bytes:
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise ReadError(UNREADABLE, f"cannot read file: {os.strerror(errno.ENOENT)}")
        kind = "a folder" if info.type == pafs.FileType.Directory else "a special file"
        _check_file(info.type == pafs.FileType.File, kind, info.size or 0, max_bytes)
        with fs.open_input_stream(path) as stream:
            data = stream.read(max_bytes + 1)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)  # pyarrow's own text names the path
        raise ReadError(UNREADABLE, f"cannot read file: {reason}") from e
    return _check_data(data, max_bytes)


def _check_file(regular: bool, kind: str, size: int, max_bytes: int) -> None:
    if not regular:
        raise ReadError(UNREADABLE, f"not a regular file ({kind})")
    if size > max_bytes:
        raise ReadError(TOO_LARGE, f"{size:,} bytes exceeds the limit of {max_bytes:,} bytes "
                        "for one photo")


def _check_data(data: bytes, max_bytes: int) -> bytes:
    if not data:
        raise ReadError(EMPTY, "file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ReadError(TOO_LARGE, f"more than {max_bytes:,} bytes, the limit for one photo")
    return data


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, for messages ("a FIFO"); also runtime's."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


# --- outputs ---

def output_path(target: str | Path) -> tuple[pafs.FileSystem, str]:
    """The filesystem of an output (local path or URI) and its path within it."""
    text = str(target)
    if is_local(text):
        return pafs.LocalFileSystem(), os.path.abspath(local_path(text))
    return _filesystem(text)


def read_table(target: str | Path, **kwargs: Any) -> pa.Table:
    """A finished Parquet output as an Arrow table (``pq.read_table``'s keyword arguments)."""
    fs, path = output_path(target)
    return pq.read_table(path, filesystem=fs, **kwargs)


class OutputFile:
    """A Parquet output at a local path or URI, written under a hidden temporary name.

    ``open_writer`` starts the temporary file, ``commit`` moves it into place (a rename on a
    disk, a copy on object stores) and ``discard`` removes it: no half-written file ever
    carries the final name.
    """

    def __init__(self, target: str | Path) -> None:
        self.fs, self.path = output_path(target)
        folder, name = self.path.rsplit("/", 1)
        self.folder, self.name = folder or "/", name
        # unique per writer, in the same folder (a rename is atomic only within a filesystem)
        self.temp = f"{self.folder.rstrip('/')}/.{name}.{uuid.uuid4().hex[:12]}.tmp"

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def open_writer(self, schema: pa.Schema) -> pq.ParquetWriter:
        """A ParquetWriter on the temporary file (the folder made first on a disk)."""
        if self.local:
            os.makedirs(self.folder, exist_ok=True)
        try:
            return pq.ParquetWriter(self.temp, schema, filesystem=self.fs, compression="zstd")
        except BaseException:  # e.g. a full disk while writing the header
            self.discard()
            raise

    def commit(self) -> None:
        """Move the finished temporary file to the final name."""
        if self.local:
            os.replace(self.temp, self.path)
        else:
            self.fs.move(self.temp, self.path)

    def discard(self) -> None:
        """Remove the temporary file, if there is one.

        Called while another error unwinds: a file that cannot be removed is logged, so the
        error that says what went wrong (a full disk) is the one the user sees.
        """
        try:
            with suppress(FileNotFoundError):
                self.fs.delete_file(self.temp)
        except OSError as e:
            log.warning("cannot remove the temporary file %s: %s", self.temp, e)

    def remove_stale_temps(self) -> None:
        """Delete temporary files a killed run left beside this output (the caller holds the
        output's lock, so none belongs to a live run)."""
        if not self.local:
            return
        for temp in Path(self.folder).glob(f".{self.name}.*.tmp"):
            log.info("removing %s, left by an interrupted run", temp)
            temp.unlink(missing_ok=True)
