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


def person_rows() -> pd.DataFrame:
    """Photos of Ann (two years, one photo with a second face, one broken) and Bob, with
    geometry: Ann's 2019 main faces measure 1.9 (ok), 2.5 (ok), 3.0 (not ok)."""
    rows = [
        face("a/1.jpg", "a", top="happiness", person="Ann", year="2019", ticker="AAA"),
        face("a/1.jpg", "a", index=1, top="anger", person="Ann", year="2019", ticker="AAA"),
        face("a/2.jpg", "a", top="sadness", person="Ann", year="2019", ticker="AAA"),
        face("a/3.jpg", "a", top="neutral", person="Ann", year="2019", ticker="AAA"),
        face("a/4.jpg", "a", status="unreadable", index=None, top=None, person="Ann",
             year="2019", ticker="AAA"),
        face("a/5.jpg", "a", top="surprise", person="Ann", year="2020", ticker="AAA"),
        face("b/1.jpg", "b", top="neutral", person="Bob", year="2019", ticker="BBB"),
        face("b/2.jpg", "b", status="no_face", index=None, top=None, person="Bob",
             year="2019", ticker="BBB"),
        face("z/1.jpg", "z", status="unlisted", index=None, top=None),
    ]
    table = frame(*rows)
    table["fwhr"] = np.array([1.9, 1.0, 2.5, 3.0, np.nan, 2.0, 1.7, np.nan, np.nan], "float32")
    table["geometry_ok"] = [True, True, True, False, None, True, False, None, None]
    return table


def test_people_counts_and_means_from_the_faces() -> None:
    faces = person_rows()
    table = aggregate.people(faces, ["ticker", "year", "person"])
    assert list(table.columns) == [
        "person", "company", "ticker", "year", "photos", "videos", "failed", "main_faces",
        *LABELS, "happiness_share", "positivity", "fwhr_median", "fwhr_faces"]
    table = table.set_index(["person", "year"])
    assert list(table.index) == [("Ann", "2019"), ("Ann", "2020"), ("Bob", "2019")]
    for (person, year), got in table.iterrows():  # recomputed here from the faces
        mine = faces[(faces["person"] == person) & (faces["year"] == year)]
        main = mine[(mine["status"] == OK) & (mine["face"] == 0)]
        assert got["photos"] == mine["path"].nunique()
        assert got["failed"] == mine.drop_duplicates("path")["status"].isin(
            ["unreadable"]).sum()
        assert (got["videos"], got["main_faces"]) == (0, len(main))
        for label in LABELS:
            assert got[label] == pytest.approx(main[label].mean())
        assert got["positivity"] == pytest.approx(main["happiness"].mean() - sum(
            main[n].mean() for n in ("anger", "disgust", "fear", "sadness")))
        ok = main[main["geometry_ok"].fillna(False).astype(bool)]
        assert got["fwhr_faces"] == len(ok)
    # the median over Ann's 2019 main faces with geometry_ok: not the 3.0 (not ok) nor the
    # second face's 1.0; Bob's one face is not ok: no fWHR, n 0
    assert table.loc[("Ann", "2019"), "fwhr_median"] == pytest.approx((1.9 + 2.5) / 2, 1e-6)
    assert table.loc[("Ann", "2019"), "fwhr_faces"] == 2
    assert np.isnan(table.loc[("Bob", "2019"), "fwhr_median"])
    assert table.loc[("Bob", "2019"), "fwhr_faces"] == 0
    assert table["company"].tolist() == ["a", "a", "b"] and table["ticker"].tolist() == [
        "AAA", "AAA", "BBB"]
    assert table["fwhr_faces"].dtype == "int64" and table["main_faces"].dtype == "int64"
    # the job reads the per-face file back with text as categoricals: the same table
    text = ["company", "ticker", "year", "person", "status", "emotion"]
    pd.testing.assert_frame_equal(
        aggregate.people(faces.astype(dict.fromkeys(text, "category")),
                         ["ticker", "year", "person"]).set_index(["person", "year"]), table)


def test_people_without_year_and_companies_differing() -> None:
    """Without a year a person is one row; a person who moved between companies keeps no
    company column (it is not constant), and a table without geometry has no fWHR."""
    faces = person_rows().drop(columns=["fwhr", "geometry_ok", "year"])
    faces.loc[faces["path"] == "a/5.jpg", "company"] = "c"
    table = aggregate.people(faces, ["ticker", "person"])
    assert list(table.columns[:3]) == ["person", "ticker", "photos"]
    assert "fwhr_median" not in table and "company" not in table
    assert table[["person", "photos", "main_faces"]].values.tolist() == [["Ann", 5, 4],
                                                                        ["Bob", 2, 1]]


def test_an_empty_person_is_left_out_with_a_warning(caplog) -> None:
    faces = person_rows()
    faces.loc[faces["path"].isin(["a/2.jpg", "b/1.jpg"]), "person"] = ["", " ", ""][:2]
    table = aggregate.people(faces, ["ticker", "year", "person"])
    assert "" not in set(table["person"]) and " " not in set(table["person"])
    assert table.set_index(["person", "year"]).loc[("Ann", "2019"), "photos"] == 3
    assert "2 photo(s) with an empty person" in caplog.text


def test_a_video_counts_once_for_its_person_and_its_track_gives_one_fwhr() -> None:
    """a.mp4 (person Ann) is one unit of the means, and its main track's geometry_ok frames
    one fWHR measurement (their median), beside her photo's."""
    photos = frame(face("ACME/1.jpg", "ACME", top="happiness", gvkey="001690", person="Ann"))
    photos["fwhr"] = np.array([2.0], "float32")
    photos["geometry_ok"] = [True]
    clips = aggregate.videos(video_rows().assign(person="Ann"),
                             listed_videos().assign(person="Ann"), ["gvkey", "person"])
    frames = video_rows().assign(person="Ann")
    frames = frames[frames["time"].notna()]
    frames["fwhr"] = [1.5, 9.0, 1.6, np.nan, 5.0, np.nan]  # 9.0 is track 1's, 5.0 not ok
    frames["geometry_ok"] = [True, True, True, None, False, None]
    row = aggregate.people(photos, ["gvkey", "person"], clips, frames).iloc[0]
    assert (row["photos"], row["videos"], row["failed"], row["main_faces"]) == (1, 3, 1, 2)
    assert row["happiness"] == pytest.approx((0.7 + 0.6) / 2)
    assert (row["fwhr_median"], row["fwhr_faces"]) == (pytest.approx((2.0 + 1.55) / 2), 2)


def test_no_person_rows_gives_an_empty_typed_table() -> None:
    faces = pd.DataFrame(columns=["path", "company", "person", "status", "face", "emotion",
                                  *LABELS])
    table = aggregate.people(faces, ["person"])
    assert table.empty and table["photos"].dtype == "int64"
