"""Per-company aggregation: counts, means over main faces, and the two indices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from facevalue import aggregate
from facevalue.aggregate import companies, constant_ids, status_counts
from facevalue.columns import NO_FACE, OK
from facevalue.contract import LABELS


def face(path: str, company: str, status: str = "ok", index: int | None = 0,
         top: str | None = "happiness", **ids: str) -> dict[str, object]:
    """A per-face row whose probabilities put 0.7 on ``top`` and 0.05 on the others."""
    probs = {label: (0.7 if label == top else 0.05) if top else np.nan for label in LABELS}
    return {"path": path, "company": company, **ids, "status": status, "face": index,
            "emotion": top, **probs}


def frame(*rows: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def test_counts_and_means_use_main_faces() -> None:
    faces = frame(
        face("a/1.jpg", "a", top="happiness", ticker="AAA"),
        face("a/1.jpg", "a", index=1, top="anger", ticker="AAA"),  # second face: not averaged
        face("a/2.jpg", "a", top="sadness", ticker="AAA"),
        face("a/3.jpg", "a", status="no_face", index=None, top=None, ticker="AAA"),
        face("a/4.jpg", "a", status="unreadable", index=None, top=None, ticker="AAA"),
        face("b/1.jpg", "b", top="neutral", ticker="BBB"),
    )
    table = companies(faces, ["ticker"])
    assert list(table.columns) == ["company", "ticker", "photos", "videos", "faces", "failed",
                                   *LABELS, "happiness_share", "positivity"]
    a, b = table.iloc[0], table.iloc[1]
    assert (a["company"], a["ticker"], a["photos"], a["faces"], a["failed"]) == (
        "a", "AAA", 4, 3, 1)
    assert a["happiness"] == pytest.approx((0.7 + 0.05) / 2)
    assert a["anger"] == pytest.approx(0.05)  # the second face's anger is not counted
    assert a["happiness_share"] == pytest.approx(0.5)
    assert a["positivity"] == pytest.approx(0.375 - (0.05 + 0.05 + 0.05 + 0.375))
    assert b["positivity"] == pytest.approx(0.05 - 0.2)
    assert table["photos"].dtype == "int64" and table["happiness"].dtype == "float64"


def test_positivity_spans_minus_one_to_one() -> None:
    faces = pd.DataFrame([
        {"path": "h.jpg", "company": "h", "status": "ok", "face": 0, "emotion": "happiness",
         **{label: float(label == "happiness") for label in LABELS}},
        {"path": "s.jpg", "company": "s", "status": "ok", "face": 0, "emotion": "sadness",
         **{label: float(label == "sadness") for label in LABELS}},
    ])
    assert companies(faces, [])["positivity"].tolist() == [1.0, -1.0]


def test_groups_by_year_and_keeps_only_constant_ids() -> None:
    faces = frame(
        face("a/1.jpg", "a", gvkey="001690", year="2019", person="Ann"),
        face("a/2.jpg", "a", gvkey="001690", year="2019", person="Bob"),
        face("a/3.jpg", "a", gvkey="001690", year="2020", person="Ann"),
    )
    ids = ["gvkey", "year", "person"]
    assert constant_ids(faces, ids, ["company", "year"]) == ["gvkey"]
    table = companies(faces, ids)
    assert list(table.columns[:3]) == ["company", "gvkey", "year"]
    assert table[["year", "photos"]].values.tolist() == [["2019", 2], ["2020", 1]]
    assert table["gvkey"].tolist() == ["001690", "001690"]


def test_company_without_faces_and_unlisted_photos() -> None:
    faces = frame(
        face("a/1.jpg", "a", status="unreadable", index=None, top=None),
        face("a/2.jpg", "a", status="missing", index=None, top=None),
        face("z/1.jpg", "z", status="unlisted", index=None, top=None),
    )
    table = companies(faces, [])
    assert table["company"].tolist() == ["a"]  # unlisted photos are outside the study
    row = table.iloc[0]
    assert (row["photos"], row["faces"], row["failed"]) == (2, 0, 2)
    assert np.isnan(row["happiness"]) and np.isnan(row["positivity"])


def test_empty_input_gives_empty_typed_table() -> None:
    faces = pd.DataFrame(columns=["path", "company", "status", "face", "emotion", *LABELS])
    table = companies(faces, [])
    assert table.empty and table["faces"].dtype == "int64"


def test_status_counts_count_photos_once() -> None:
    faces = frame(face("a/1.jpg", "a"), face("a/1.jpg", "a", index=1),
                  face("a/2.jpg", "a", status="no_face", index=None, top=None))
    assert status_counts(faces) == {"ok": 1, "no_face": 1}


def test_text_read_back_as_categoricals_gives_the_same_table() -> None:
    # write_scores reads the per-face file back with text as categoricals (less memory)
    faces = frame(
        face("a/1.jpg", "a", top="happiness", ticker="AAA", year="2019"),
        face("a/1.jpg", "a", index=1, top="anger", ticker="AAA", year="2019"),
        face("a/2.jpg", "a", status="no_face", index=None, top=None, ticker="AAA", year="2020"),
        face("b/1.jpg", "b", top="neutral", ticker="BBB", year="2019"),
        face("c/1.jpg", "c", status="unlisted", index=None, top=None, ticker="CCC", year="2019"),
    )
    text = ["company", "ticker", "year", "status", "emotion"]
    categorical = faces.drop(columns="path").astype(dict.fromkeys(text, "category"))
    expected = companies(faces, ["ticker", "year"])
    assert list(expected["company"]) == ["a", "a", "b"]  # c has only an unlisted photo
    pd.testing.assert_frame_equal(companies(categorical, ["ticker", "year"]), expected)


def video_rows() -> pd.DataFrame:
    """Two videos' frame rows: a.mp4 with a main track (0) seen in 3 of 4 frames, a second
    person (1) once and a frame without a face; b.mp4 with no face at all."""
    happy = dict(zip(LABELS, (0, 0, 0, 0.8, 0, 0, 0.2), strict=True))
    sad = dict(zip(LABELS, (0, 0, 0, 0.2, 0.6, 0, 0.2), strict=True))
    none = dict.fromkeys(LABELS, np.nan)
    rows = [("a.mp4", 0.0, OK, 0, happy), ("a.mp4", 0.0, OK, 1, sad),
            ("a.mp4", 1.0, OK, 0, sad), ("a.mp4", 2.0, NO_FACE, None, none),
            ("a.mp4", 3.0, OK, 0, happy), ("b.mp4", 0.0, NO_FACE, None, none),
            ("photo.jpg", None, OK, None, happy)]
    faces = {"a.mp4": iter([0, 1, 0, None, 0]), "b.mp4": iter([None]), "photo.jpg": iter([0])}
    return pd.DataFrame([{"path": p, "company": "ACME", "gvkey": "001690", "time": t,
                          "status": s, "face": next(faces[p]), "track": k, **probs,
                          "emotion": {0.8: "happiness", 0.2: "sadness"}.get(probs["happiness"])}
                         for p, t, s, k, probs in rows])


def listed_videos() -> pd.DataFrame:
    """What the job knows of each video: a.mp4 and b.mp4 sampled, c.mp4 unreadable."""
    return pd.DataFrame({"path": ["a.mp4", "b.mp4", "c.mp4"], "company": "ACME",
                         "gvkey": "001690", "status": [OK, NO_FACE, "unreadable"],
                         "error": [None, None, "not a video"], "duration": [4.0, None, None]})


def test_videos_table() -> None:
    table = aggregate.videos(video_rows(), listed_videos(), ["gvkey"]).set_index("path")
    assert list(table.index) == ["a.mp4", "b.mp4", "c.mp4"]  # the photo is no video
    a, b, c = table.loc["a.mp4"], table.loc["b.mp4"], table.loc["c.mp4"]
    assert (a["company"], a["gvkey"], a["status"], a["duration"]) == ("ACME", "001690", OK, 4.0)
    assert (a["frames"], a["frames_with_face"], a["faces"], a["main_share"]) == (4, 3, 4, 0.75)
    assert a["happiness"] == pytest.approx(0.6) and a["sadness"] == pytest.approx(0.2)
    assert a["positivity"] == pytest.approx(0.4)
    assert a["happiness_std"] == pytest.approx(np.std([0.8, 0.2, 0.8], ddof=1))
    assert (b["frames"], b["frames_with_face"], b["main_share"]) == (1, 0, 0.0)
    assert np.isnan(b["duration"]) and np.isnan(b["happiness"]) and np.isnan(b["positivity"])
    assert (c["status"], c["error"], c["frames"]) == ("unreadable", "not a video", 0)
    assert np.isnan(c["main_share"])
    assert table["frames"].dtype == "int64" and table["happiness_std"].dtype == "float64"


def test_a_video_counts_once_in_its_company() -> None:
    """Two photos and two videos of one company: four units, each weighing the same; a
    failed video counts among the failed."""
    photos = frame(face("ACME/1.jpg", "ACME", top="happiness", gvkey="001690"),
                   face("ACME/2.jpg", "ACME", top="sadness", gvkey="001690"))
    clips = aggregate.videos(video_rows(), listed_videos(), ["gvkey"])
    table = companies(photos, ["gvkey"], clips)
    row = table.iloc[0]
    assert (row["photos"], row["videos"], row["faces"], row["failed"]) == (2, 3, 6, 1)
    # units: photo 1 (0.7), photo 2 (0.05), a.mp4 (0.6); b.mp4 and c.mp4 have no face
    assert row["happiness"] == pytest.approx((0.7 + 0.05 + 0.6) / 3)
    assert row["happiness_share"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert table["videos"].dtype == "int64"
