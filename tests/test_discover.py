"""Discovery: which photos, in what order, with which company and ids."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from facevalue.discover import (
    MISSING,
    UNLISTED,
    ManifestError,
    Photo,
    discover,
    id_columns,
    normalize,
    read_manifest,
)
from facevalue.storage import LocationError, display_path, open_location


def touch(root: Path, *paths: str) -> None:
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"x")


def write_manifest(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_company_is_first_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    touch(tmp_path, "acme/2020/ceo.jpg", "globex/cfo.png", "stray.jpg")
    with caplog.at_level(logging.WARNING):
        photos = discover(tmp_path)
    assert [(p.path, p.company, p.status) for p in photos] == [
        ("acme/2020/ceo.jpg", "acme", None), ("globex/cfo.png", "globex", None),
        ("stray.jpg", "", None)]
    assert "1 photo(s) lie directly in the photo folder" in caplog.text


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(LocationError, match="nope: not a folder"):
        discover(tmp_path / "nope")


def test_manifest_keeps_ids_as_strings_and_reports_mismatches(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    touch(tmp_path / "photos", "a/ceo.jpg", "a/cfo.jpg", "b/extra.jpg")
    manifest = write_manifest(tmp_path / "m.csv",
                              "path,company,gvkey,year\n"
                              "./a\\ceo.jpg,Acme Inc,001690,2019\n"
                              "a/cfo.jpg,Acme Inc,001690,2020\n"
                              "a/gone.jpg,Acme Inc,001690,2021\n")
    with caplog.at_level(logging.WARNING):
        photos = discover(tmp_path / "photos", manifest)
    assert photos == [
        Photo("a/ceo.jpg", "Acme Inc", {"gvkey": "001690", "year": "2019"}),
        Photo("a/cfo.jpg", "Acme Inc", {"gvkey": "001690", "year": "2020"}),
        Photo("a/gone.jpg", "Acme Inc", {"gvkey": "001690", "year": "2021"}, MISSING),
        Photo("b/extra.jpg", "b", {}, UNLISTED),
    ]
    assert id_columns(photos) == ["gvkey", "year"]
    assert "1 manifest row(s) name no photo" in caplog.text
    assert "1 photo(s) are not in the manifest" in caplog.text


def test_manifest_with_bom_and_only_required_columns(tmp_path: Path) -> None:
    touch(tmp_path, "x/p.jpg")
    manifest = write_manifest(tmp_path / "m.csv", "\ufeffpath,company\nx/p.jpg,X Corp\n")
    photos = discover(tmp_path, manifest)
    assert photos == [Photo("x/p.jpg", "X Corp")]
    assert id_columns(photos) == []


@pytest.mark.parametrize(("text", "message"), [
    ("file,company\na.jpg,A\n", "missing column(s) ['path']"),
    ("path,company,emotion\na.jpg,A,x\n", "would overwrite output columns"),
    ("path,company,year,year\na.jpg,A,1,2\n", "duplicate or empty column names"),
    ("path,company\na.jpg,A\n./a.jpg,B\n", "line 3 repeats 'a.jpg'"),
    ("path,company\na.jpg,\n", "line 2 has an empty path or company"),
    ("path,company\na.jpg,A,surplus\n", "line 2 has more fields than the header"),
    ("path,company,gvkey,year\na.jpg,A,1,2\nb.jpg,B\n",  # issue 20, defect 5
     "line 3 has 2 fields, the header 4"),
    ("path,company\n/data/photos/a.jpg,A\n", "line 2: '/data/photos/a.jpg' is absolute"),
    ("path,company\n../a.jpg,A\n", "line 2: '../a.jpg' goes up"),  # defect 7
    ("path,company\nx/../../a.jpg,A\n", "relative to PHOTOS"),
    ("path,company\nC:\\photos\\a.jpg,A\n", "is absolute"),
    ("path;company\na.jpg;A\n", "found ['path;company']: separated by ';'"),  # defect 18
    ("Path,Company\na.jpg,A\n", "found ['Path', 'Company']: names are exact"),
    ("path, company\na.jpg,A\n", "found ['path', ' company']: names are exact"),
    ("", "is empty"),
])
def test_bad_manifests(tmp_path: Path, text: str, message: str) -> None:
    manifest = write_manifest(tmp_path / "m.csv", text)
    with pytest.raises(ManifestError, match="m.csv") as error:
        read_manifest(manifest)
    assert message in str(error.value)


def test_unreadable_manifest(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_bytes(b"path,company\n\xff\xfe\xfa,A\n")
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        read_manifest(tmp_path / "m.csv")


@pytest.mark.parametrize(("raw", "clean"), [
    ("a/b.jpg", "a/b.jpg"), ("./a/b.jpg", "a/b.jpg"), ("a\\b.jpg", "a/b.jpg"),
    (" a//b.jpg ", "a/b.jpg"), ("", ""), ("a/caf\\xE9.jpg", "a/caf\\xe9.jpg"),
    ("a/caf\\xc3\\xa9.jpg", "a/café.jpg"), ("a\\x5cb.jpg", "a\\x5cb.jpg"),
])
def test_normalize(raw: str, clean: str) -> None:
    assert normalize(raw) == clean


@pytest.mark.parametrize("raw", ["/a.jpg", "\\\\server\\a.jpg", "a/../../b.jpg",
                                 "a\\x2f..\\x2fb.jpg", "c:/a.jpg", "a\\x00.jpg"])
def test_normalize_refuses_paths_that_leave_the_photo_folder(raw: str) -> None:
    with pytest.raises(ManifestError):
        normalize(raw)


def test_ids_are_kept_exactly_as_written(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """Issue 20, defect 5: surrounding spaces stay (a join must see what the file says), and
    a warning says so."""
    touch(tmp_path, "a/x.jpg")
    manifest = write_manifest(tmp_path / "m.csv", "path,company,gvkey\na/x.jpg,Acme , 001690\n")
    with caplog.at_level(logging.WARNING):
        photos = discover(tmp_path, manifest)
    assert photos == [Photo("a/x.jpg", "Acme ", {"gvkey": " 001690"})]
    assert "spaces around them" in caplog.text and "line 2" in caplog.text


def test_ids_with_inconsistent_leading_zeros_are_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 20, defect 18: gvkey 9901 among 001690 (a spreadsheet dropped its zeros) would
    merge to NaN with zero-padded firm data."""
    manifest = write_manifest(tmp_path / "m.csv", "path,company,gvkey,year\n"
                              "a.jpg,A,001690,2019\nb.jpg,B,9901,2019\nc.jpg,C,012345,2020\n")
    with caplog.at_level(logging.WARNING):
        read_manifest(manifest)
    assert "gvkey" in caplog.text and "'9901'" in caplog.text and "year" not in caplog.text
    caplog.clear()
    padded = write_manifest(tmp_path / "p.csv", "path,company,gvkey,year\n"
                            "a.jpg,A,001690,2019\nb.jpg,B,009901,2019\n")
    with caplog.at_level(logging.WARNING):
        read_manifest(padded)
    assert caplog.text == ""


def test_undecodable_and_backslash_names_never_share_a_path(tmp_path: Path) -> None:
    """Issue 20, defect 4: a Latin-1 caf\\xe9.jpg and a file literally named so are two
    photos with two paths, and a manifest names each."""
    import os

    (tmp_path / "acme").mkdir()
    for name in (b"caf\xe9.jpg", b"caf\\xe9.jpg"):
        with open(os.path.join(os.fsencode(tmp_path / "acme"), name), "wb") as f:
            f.write(b"x")
    shown = [display_path(p.path) for p in discover(tmp_path)]
    assert shown == ["acme/caf\\x5cxe9.jpg", "acme/caf\\xe9.jpg"]
    manifest = write_manifest(tmp_path / "m.csv", "path,company\n"
                              "acme/caf\\xE9.jpg,Latin\nacme/caf\\x5cxe9.jpg,Literal\n")
    photos = discover(tmp_path, manifest)
    assert sorted((display_path(p.path), p.company, p.status) for p in photos) == [
        ("acme/caf\\x5cxe9.jpg", "Literal", None), ("acme/caf\\xe9.jpg", "Latin", None)]
    for photo in photos:  # each path names its own file
        assert open_location(tmp_path).read(photo.path) == b"x"


def test_a_manifest_reaches_a_photo_through_either_name_of_a_linked_folder(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 20, defect 6: with photos/ACME -> zeta the folder is listed once, under one
    name; a manifest row using the other name still finds its photo."""
    touch(tmp_path, "zeta/x.jpg", "zeta/y.jpg")
    (tmp_path / "ACME").symlink_to("zeta", target_is_directory=True)
    manifest = write_manifest(tmp_path / "m.csv", "path,company\nzeta/x.jpg,Zeta\n"
                              "ACME/y.jpg,Acme\n")
    with caplog.at_level(logging.WARNING):
        photos = discover(tmp_path, manifest)
    assert photos == [Photo("ACME/y.jpg", "Acme"), Photo("zeta/x.jpg", "Zeta")]
    assert caplog.text == ""
