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
from facevalue.storage import LocationError


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
    ("path,company\na.jpg,A,surplus\n", "more fields than the header"),
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
    (" a//b.jpg ", "a/b.jpg"), ("", ""),
])
def test_normalize(raw: str, clean: str) -> None:
    assert normalize(raw) == clean
