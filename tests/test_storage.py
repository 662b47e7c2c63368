"""The I/O layer: a local folder and a bucket list, read and score alike."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest
from images import SAMPLE_PHOTOS, bad_inputs

from facevalue import score_folder
from facevalue.columns import EMPTY, TOO_LARGE, UNREADABLE
from facevalue.pipeline import write_scores
from facevalue.storage import (
    Location,
    LocationError,
    ReadError,
    display_path,
    fs_path,
    open_location,
    read_local,
)


def touch(root: Path, *paths: str) -> None:
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"x")


def bucket(source: Path) -> Location:
    """The files under ``source`` copied into an in-memory pyarrow filesystem (a bucket)."""
    fs = pafs._MockFileSystem()
    for path in sorted(source.rglob("*")):
        target = f"bucket/photos/{path.relative_to(source).as_posix()}"
        if path.is_dir():
            fs.create_dir(target)
        else:
            with fs.open_output_stream(target) as stream:
                stream.write(path.read_bytes())
    return Location("mock://bucket/photos", "bucket/photos", fs)


def status_of(location: Location, path: str, **kwargs: int) -> str:
    with pytest.raises(ReadError) as error:
        location.read(path, **kwargs)
    return error.value.status


def test_finds_images_recursively_sorted_case_insensitive(tmp_path: Path) -> None:
    touch(tmp_path, "b/2.JPG", "a/deep/er/1.jpeg", "a/x.PNG", "c/y.Tiff", "c/z.webp",
          "c/w.bmp", "c/v.tif", "a/notes.txt", "a/.hidden.jpg", ".trash/old.jpg",
          "a/._resource.jpg", "a/raw.cr2")
    expected = ["a/deep/er/1.jpeg", "a/x.PNG", "b/2.JPG", "c/v.tif", "c/w.bmp", "c/y.Tiff",
                "c/z.webp"]
    assert open_location(tmp_path).list_photos() == expected
    assert open_location(tmp_path.as_uri()).list_photos() == expected  # file:// is local
    assert bucket(tmp_path).list_photos() == expected  # walked folder by folder


def test_local_and_bucket_reads_give_the_same_statuses(tmp_path: Path) -> None:
    expected = bad_inputs(tmp_path)
    local, remote = open_location(tmp_path), bucket(tmp_path)
    assert local.list_photos() == remote.list_photos() == sorted(expected)
    for location in (local, remote):
        assert location.read("acme/landscape.jpg").startswith(b"\xff\xd8")
        assert status_of(location, "acme/empty.jpg") == EMPTY
        assert status_of(location, "acme/gone.jpg") == UNREADABLE
        assert status_of(location, "acme") == UNREADABLE  # a folder named as a photo
        assert status_of(location, "acme/landscape.jpg", max_bytes=10) == TOO_LARGE
    messages = set()
    for location in (local, remote):
        with pytest.raises(ReadError) as error:
            location.read("acme/gone.jpg")
        messages.add(str(error.value))
    assert messages == {"cannot read file: No such file or directory"}


def test_special_files_are_refused_before_they_are_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.jpg")  # opening it would block until someone writes
    with pytest.raises(ReadError, match="not a regular file \\(a FIFO\\)"):
        read_local(tmp_path / "fifo.jpg")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    with pytest.raises(ReadError, match="a character device"):
        read_local(tmp_path / "zero.jpg")


def test_keys_follow_size_and_mtime_on_both_backends(tmp_path: Path) -> None:
    touch(tmp_path, "a/p.jpg")
    local, remote = open_location(tmp_path), bucket(tmp_path)
    for location in (local, remote):
        key = location.key("a/p.jpg")
        assert key is not None and key.path == "a/p.jpg" and key.size == 1
        assert location.key("a/gone.jpg") is None
    (tmp_path / "a" / "p.jpg").write_bytes(b"longer")
    assert local.key("a/p.jpg").size == 6
    info = os.stat(tmp_path / "a" / "p.jpg")  # a disk also has the change time and inode
    assert (local.key("a/p.jpg").ctime_ns, local.key("a/p.jpg").inode) == (info.st_ctime_ns,
                                                                            info.st_ino)
    assert (remote.key("a/p.jpg").ctime_ns, remote.key("a/p.jpg").inode) == (0, 0)


def test_a_location_that_is_not_a_folder_is_refused(tmp_path: Path) -> None:
    touch(tmp_path, "file.jpg")
    for place in (tmp_path / "nope", tmp_path / "file.jpg", "mock://bucket/photos"):
        with pytest.raises(LocationError, match="not a folder"):
            open_location(place)
    with pytest.raises(LocationError, match="not a location pyarrow can open"):
        open_location("nosuchscheme://bucket/photos")


def test_a_bucket_scores_to_the_local_tables_and_resumes(tmp_path: Path,
                                                         tiny_model: Path) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLE_PHOTOS, photos)
    bad_inputs(photos)
    settings = {"model": tiny_model, "device": "cpu", "faces": "all"}
    local = score_folder(photos, **settings)
    remote = bucket(photos)
    out = tmp_path / "s.parquet"
    first = write_scores(remote, out, **settings)
    frame = pd.read_parquet(out)
    pd.testing.assert_frame_equal(frame, local.faces)
    again = write_scores(remote, out, **settings)  # keyed by the bucket's size and mtime
    # all reused but the empty file, which has no bytes to hash and is never saved
    assert (first.reused, again.reused, again.scored) == (0, again.photos - 1, 1)
    pd.testing.assert_frame_equal(pd.read_parquet(out), frame)


NAMES = [b"plain.jpg", b"caf\xc3\xa9.jpg", b"caf\xe9.jpg", b"caf\\xe9.jpg",
         b"caf\\x5cxe9.jpg", b"a\\b\xff\\x41.jpg"]


def test_display_path_is_reversible() -> None:
    """Issue 20, defect 4: backslashes are escaped too, so no two names share a path."""
    shown = [display_path(os.fsdecode(name)) for name in NAMES]
    assert shown[:4] == ["plain.jpg", "café.jpg", "caf\\xe9.jpg", "caf\\x5cxe9.jpg"]
    assert len(set(shown)) == len(NAMES)
    assert [os.fsencode(fs_path(s)) for s in shown] == NAMES


def test_a_folder_nested_a_thousand_deep_is_listed(tmp_path: Path) -> None:
    """Issue 20, defect 10: no RecursionError however deep the tree."""
    deep = tmp_path
    for _ in range(1000):  # one at a time: mkdir(parents=True) recurses too
        deep /= "d"
        deep.mkdir()
    (deep / "p.jpg").write_bytes(b"x")
    try:
        assert open_location(tmp_path).list_photos() == ["d/" * 1000 + "p.jpg"]
    finally:  # pytest's clean-up of old temporary folders would recurse 1,000 deep too
        (deep / "p.jpg").unlink()
        while deep != tmp_path:
            deep.rmdir()
            deep = deep.parent


def test_a_file_that_grew_since_its_stat_is_read_whole(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """read_local sizes its buffer from the stat (issue 22); a file longer by then is still
    read to its end, and refused once past the limit."""
    path = tmp_path / "p.jpg"
    path.write_bytes(bytes(range(256)) * 4)  # 1,024 bytes
    real_stat = os.stat

    def earlier(target: object) -> os.stat_result:  # the size before the file grew
        info = list(real_stat(target))  # type: ignore[arg-type]
        info[6] = 100  # st_size
        return os.stat_result(info)
    monkeypatch.setattr(os, "stat", earlier)
    assert read_local(path) == path.read_bytes()
    with pytest.raises(ReadError, match="more than 500 bytes"):
        read_local(path, max_bytes=500)
