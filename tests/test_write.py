"""The Parquet tables: schema, metadata, pandas round trip and atomic writing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from facevalue import __version__
from facevalue.contract import LABELS
from facevalue.write import (
    AtomicParquetWriter,
    company_schema,
    face_schema,
    read_metadata,
    rows_to_table,
    table_metadata,
    write_frame,
)

META = table_metadata("fvnet.onnx", "ab" * 32, "blazeface", {"photos": Path("x"), "faces": "main"})


def test_face_schema_columns_and_types() -> None:
    schema = face_schema(["gvkey", "year"])
    assert schema.names == [
        "path", "company", "gvkey", "year", "status", "error", "time", "track", "face",
        "faces_in_photo", "x", "y", "w", "h", "face_score", *LABELS, "emotion", "photo_sha256"]
    types = {field.name: field.type for field in schema}
    assert types["gvkey"] == pa.string() and types["face"] == pa.int32()
    assert types["time"] == pa.float64() and types["track"] == pa.int32()
    assert types["x"] == pa.int32() and types["face_score"] == pa.float32()
    assert all(types[label] == pa.float32() for label in LABELS)


def test_company_schema_types_by_name() -> None:
    schema = company_schema(["company", "gvkey", "year", "photos", "faces", "failed",
                             *LABELS, "happiness_share", "positivity"])
    types = {field.name: field.type for field in schema}
    assert types["year"] == pa.string() and types["photos"] == pa.int64()
    assert types["positivity"] == pa.float64()


def test_metadata() -> None:
    assert META["facevalue.version"] == __version__
    assert META["facevalue.model"] == "fvnet.onnx"
    assert json.loads(META["facevalue.arguments"]) == {"faces": "main", "photos": "x"}
    assert META["facevalue.created"].endswith("+00:00")


def test_round_trip_through_pandas(tmp_path: Path) -> None:
    schema = face_schema(["gvkey"], META)
    rows = [
        {"path": "a/1.jpg", "company": "a", "gvkey": "001690", "status": "ok", "face": 0,
         "faces_in_photo": 2, "x": 1, "y": 2, "w": 3, "h": 4, "face_score": 0.9,
         **dict.fromkeys(LABELS, 1 / 7), "emotion": "anger", "photo_sha256": "f" * 64},
        {"path": "a/2.jpg", "company": "a", "status": "unreadable", "error": "broken"},
    ]
    out = tmp_path / "faces.parquet"
    with AtomicParquetWriter(out, schema) as writer:
        writer.write(rows_to_table(rows[:1], schema))
        writer.write(rows_to_table([], schema))
        writer.write(rows_to_table(rows[1:], schema))
    frame = pd.read_parquet(out)
    assert frame.loc[0, "gvkey"] == "001690" and pd.isna(frame.loc[1, "gvkey"])
    assert frame.loc[1, "status"] == "unreadable" and pd.isna(frame.loc[1, "face"])
    assert frame["anger"].dtype == "float32"
    assert read_metadata(out) == META


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "faces.parquet"
    out.write_bytes(b"previous run")
    schema = face_schema()
    with pytest.raises(RuntimeError), AtomicParquetWriter(out, schema) as writer:
        writer.write(rows_to_table([{"path": "a.jpg", "company": "a", "status": "ok"}], schema))
        raise RuntimeError("interrupted")
    assert out.read_bytes() == b"previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces.parquet"]


def test_unfinished_file_is_hidden_until_closed(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "faces.parquet"
    writer = AtomicParquetWriter(out, face_schema())
    temp = Path(writer.temp)
    assert not out.exists() and temp.parent == out.parent
    assert temp.name.startswith(".faces.parquet.")
    writer.close()
    assert out.exists() and not temp.exists()
    assert pd.read_parquet(out).empty


def test_write_frame(tmp_path: Path) -> None:
    frame = pd.DataFrame({"company": ["a"], "photos": [2], "faces": [1], "failed": [0],
                          **{label: [0.1] for label in LABELS},
                          "happiness_share": [1.0], "positivity": [0.5]})
    out = tmp_path / "c.parquet"
    write_frame(frame, out, company_schema(frame.columns, META))
    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert read_metadata(out)["facevalue.model_sha256"] == "ab" * 32


def test_writing_to_a_uri_leaves_only_the_finished_file(tmp_path: Path) -> None:
    schema = face_schema(metadata=META)
    target = tmp_path / "deep" / "t.parquet"
    with AtomicParquetWriter(target.as_uri(), schema) as writer:
        writer.write(rows_to_table([{"path": "a.jpg", "company": "a", "status": "ok"}], schema))
    assert pd.read_parquet(target)["path"].tolist() == ["a.jpg"]
    assert read_metadata(target.as_uri()) == META
    assert [p.name for p in target.parent.iterdir()] == ["t.parquet"]
