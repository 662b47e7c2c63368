"""Per-company (or company-year) summaries of the per-face table.

Scores average over each photo's main face (``face == 0``, the largest), so a board photo
with ten people counts once, like a portrait. ``positivity`` is the mean of happiness minus
the summed means of anger, disgust, fear and sadness; it lies in [-1, 1].
"""

from __future__ import annotations

import logging

import pandas as pd

from facevalue.columns import (
    COUNTS,
    GEOMETRY_COUNTS,
    GEOMETRY_SCORES,
    NO_FACE,
    OK,
    PERSON,
    PERSON_COUNTS,
    PERSON_GEOMETRY,
    RESULT,
    SCORES,
    STD,
    TIME,
    TRACK,
    UNLISTED,
    VIDEO_COUNTS,
)
from facevalue.contract import LABELS

log = logging.getLogger(__name__)

NEGATIVE = ("anger", "disgust", "fear", "sadness")


def group_keys(id_columns: list[str]) -> list[str]:
    """Companies are grouped by ``company``, and by ``year`` when the manifest has one."""
    return ["company", "year"] if "year" in id_columns else ["company"]


def companies(faces: pd.DataFrame, id_columns: list[str],
              videos: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per company (and year): counts, mean probabilities and the two indices.

    ``photos`` counts the photos in scope (not those outside the manifest), ``videos`` the
    videos (rows of ``videos``, the per-video table), ``faces`` the faces scored in both,
    ``failed`` the photos and videos that could not be scored (any status other than ok or
    no_face). The means take each photo's main face and each video's main-track means, so
    a video counts once, as a photo does; its ``happiness_share`` is its share of frames.
    With geometry columns, ``fwhr`` is the mean over photos' main faces with
    ``geometry_ok`` and ``geometry_faces`` their number. Pass-through ids are the manifest
    columns constant within every group. ``faces`` holds the photos' rows only.
    """
    keys = group_keys(id_columns)
    geometry = "fwhr" in faces.columns
    columns = ["company", *[c for c in id_columns if c not in keys], *keys[1:], *COUNTS,
               *LABELS, *SCORES, *((*GEOMETRY_SCORES, *GEOMETRY_COUNTS) if geometry else ())]
    rows = faces[faces["status"] != UNLISTED]
    clips = _video_units(videos, keys, id_columns)
    if rows.empty and clips.empty:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c))
                             for c in columns if c in (*keys, *COUNTS, *LABELS, *SCORES)})
    others = [c for c in id_columns if c not in keys]
    ids = constant_ids(pd.concat([_plain(rows, [*keys, *others]),
                                  _plain(clips, [*keys, *others])]), others, keys)
    columns = [c for c in columns if c not in id_columns or c in ids or c in keys]
    photos = rows[first_rows(rows)]
    failed = ~photos["status"].isin([OK, NO_FACE])
    scored = rows[(rows["status"] == OK) & rows["face"].notna()]
    main = scored[scored["face"] == 0]
    units = _units(main, clips, keys)
    counts = pd.concat([
        _plain(photos, keys).assign(photos=1, videos=0, faces=0, failed=failed.values),
        _plain(scored, keys).assign(photos=0, videos=0, faces=1, failed=False),
        _plain(clips, keys).assign(photos=0, videos=1, faces=clips["faces"].values,
                                   failed=clips["failed"].values)])
    groups = dict(dropna=False, sort=True, observed=True)
    table = counts.groupby(keys, **groups)[list(COUNTS)].sum()
    named = pd.concat([_plain(rows, [*keys, *ids]), _plain(clips, [*keys, *ids])])
    table = table.join(named.groupby(keys, **groups)[ids].first())
    table = table.join(units.groupby(keys, **groups)[[*LABELS, "happiness_share"]].mean())
    table["positivity"] = _positivity(table)
    if geometry:  # fWHR over photos' main faces measured near-frontal, sharp and large enough
        trusted = main[main["geometry_ok"].fillna(False).astype(bool)]
        grouped = trusted.groupby(keys, dropna=False, observed=True)["fwhr"]
        table["fwhr"] = grouped.mean()
        table["geometry_faces"] = grouped.count()
        table["geometry_faces"] = table["geometry_faces"].fillna(0)
    table = table.reset_index()[columns]
    numbers = (*COUNTS, *LABELS, *SCORES, *((*GEOMETRY_SCORES, *GEOMETRY_COUNTS) if geometry
                                           else ()))
    text = {c: "str" for c in table.columns if c not in numbers}
    return table.astype({**text, **{c: _dtype(c) for c in numbers}})


def _plain(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Those columns with text as plain strings (the per-face file is read back with text as
    categoricals: their categories would differ from another frame's) and a fresh index."""
    picked = frame[columns].reset_index(drop=True)
    text = {c: picked[c].cat.categories.dtype for c in columns
            if isinstance(picked[c].dtype, pd.CategoricalDtype)}
    return picked.astype(text) if text else picked


def _units(main: pd.DataFrame, clips: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """What the means average, one row each: a photo's main face (its probabilities and
    whether happiness tops them) or a video's main track (its means and happiness share)."""
    return pd.concat([_plain(main, [*keys, *LABELS]).assign(
                          happiness_share=(main["emotion"] == "happiness").astype(float).values),
                      _plain(clips, [*keys, *LABELS, "happiness_share"])])


def _video_units(videos: pd.DataFrame | None, keys: list[str],
                 id_columns: list[str]) -> pd.DataFrame:
    """Each video in scope as one unit for the company table: its keys, ids, main-track
    means and happiness share, faces scored and whether it failed."""
    wanted = [*keys, *[c for c in id_columns if c not in keys], *LABELS, "happiness_share",
              "faces"]
    if videos is None or videos.empty:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c) if c in LABELS else "object")
                             for c in [*wanted, "failed"]})
    clips = videos[videos["status"] != UNLISTED]
    return clips[wanted].assign(failed=~clips["status"].isin([OK, NO_FACE])).reset_index(
        drop=True)


def videos(faces: pd.DataFrame, listed: pd.DataFrame, id_columns: list[str]) -> pd.DataFrame:
    """One row per video of ``listed`` (path, company, ids, status, error, duration: what
    discovery and the job know of each), from its frames' rows in ``faces``.

    ``frames`` counts the sampled frames, ``frames_with_face`` those with a face found,
    ``faces`` the faces scored in them, ``main_share`` the share of sampled frames in which
    the main track (``track`` 0) is seen. The seven means, ``happiness_share``,
    ``positivity`` and the standard deviations over time (sample, so NaN from a single
    frame) take the main track's faces, one a frame. A video that could not be sampled has
    its status, 0 frames and no means.
    """
    rows = faces[faces[TIME].notna()]
    table = listed.set_index("path")
    index = table.index
    scored = rows[(rows["status"] == OK)]
    table["frames"] = rows.groupby("path")[TIME].nunique().reindex(index, fill_value=0)
    table["frames_with_face"] = scored.groupby("path")[TIME].nunique().reindex(
        index, fill_value=0)
    table["faces"] = scored.groupby("path")["face"].count().reindex(index, fill_value=0)
    main = rows[rows[TRACK] == 0]
    seen = main.groupby("path")[TIME].nunique().reindex(index, fill_value=0)
    table["main_share"] = seen / table["frames"].where(table["frames"] > 0)
    by_path = main.groupby("path")
    table = table.join(by_path[list(LABELS)].mean())
    table["happiness_share"] = (main["emotion"] == "happiness").groupby(main["path"]).mean()
    table["positivity"] = _positivity(table)
    table = table.join(by_path[list(LABELS)].std().add_suffix(STD))
    spread = [label + STD for label in LABELS]
    numbers = {"duration": "float64", "frames": "int64", "frames_with_face": "int64",
               "faces": "int64",
               **{c: "float64" for c in ("main_share", *LABELS, *SCORES, *spread)}}
    columns = ["path", "company", *id_columns, *RESULT, *VIDEO_COUNTS, *LABELS, *SCORES,
               *spread]
    return table.reset_index().astype(numbers)[columns].sort_values("path",
                                                                    ignore_index=True)


def person_keys(id_columns: list[str]) -> list[str]:
    """People are grouped by ``person``, and by ``year`` when the manifest has one."""
    return [PERSON, "year"] if "year" in id_columns else [PERSON]


def people(faces: pd.DataFrame, id_columns: list[str], videos: pd.DataFrame | None = None,
           frames: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per person (and year) of a manifest with a ``person`` column.

    ``faces`` are the photos' rows (as for ``companies``), ``videos`` the per-video table and
    ``frames`` the videos' main-track rows (path, the keys, fwhr, geometry_ok), for fWHR.
    ``photos`` and ``videos`` count those in the study, ``failed`` those that could not be
    scored, ``main_faces`` what the means average: each photo's scored main face and each
    video's main track, once (a video weighs as a photo, as in the companies table). With
    geometry columns, ``fwhr_median`` is the median over the person's near-frontal faces
    (``geometry_ok``: |yaw| <= 10, |pitch| <= 20, large and sharp enough): each photo's main
    face and each video's main track (the median of its frames), ``fwhr_faces`` how many.
    A median, not a mean: one odd measurement moves a person's few faces' mean a lot.
    Photos and videos whose person is empty are left out, with a warning: they belong to
    nobody. Pass-through ids (company, ticker) are those constant per person.
    """
    keys = person_keys(id_columns)
    others = [c for c in ("company", *id_columns) if c not in keys]
    geometry = "fwhr" in faces.columns
    rows = _named(faces[faces["status"] != UNLISTED], "photo(s)")
    clips = _named(_video_units(videos, keys, ["company", *id_columns]), "video(s)")
    columns = [PERSON, *others, *keys[1:], *PERSON_COUNTS, *LABELS, *SCORES,
               *(PERSON_GEOMETRY if geometry else ())]
    if rows.empty and clips.empty:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c))
                             for c in columns if c not in others})
    ids = constant_ids(pd.concat([_plain(rows, [*keys, *others]),
                                  _plain(clips, [*keys, *others])]), others, keys)
    columns = [c for c in columns if c not in others or c in ids]
    photos = rows[first_rows(rows)]
    main = rows[(rows["status"] == OK) & (rows["face"] == 0)]
    units = _units(main, clips, keys)
    counts = pd.concat([
        _plain(photos, keys).assign(photos=1, videos=0,
                                    failed=~photos["status"].isin([OK, NO_FACE]).values),
        _plain(clips, keys).assign(photos=0, videos=1, failed=clips["failed"].values)])
    groups = dict(dropna=False, sort=True, observed=True)
    table = counts.groupby(keys, **groups)[["photos", "videos", "failed"]].sum()
    by_unit = units.groupby(keys, **groups)
    table["main_faces"] = by_unit["happiness"].count()
    table = table.join(pd.concat([_plain(rows, [*keys, *ids]), _plain(clips, [*keys, *ids])])
                       .groupby(keys, **groups)[ids].first())
    table = table.join(by_unit[[*LABELS, "happiness_share"]].mean())
    table["positivity"] = _positivity(table)
    if geometry:
        measured = _fwhr_units(main, frames, keys).groupby(keys, **groups)["fwhr"]
        table["fwhr_median"] = measured.median()
        table["fwhr_faces"] = measured.count()
    table = table.reset_index()
    whole = ["main_faces", *(["fwhr_faces"] if geometry else [])]
    table[whole] = table[whole].fillna(0)  # people with no unit or no measurement
    numbers = (*PERSON_COUNTS, *LABELS, *SCORES, *(PERSON_GEOMETRY if geometry else ()))
    text = {c: "str" for c in columns if c not in numbers}
    return table[columns].astype({**text, **{c: _dtype(c) for c in numbers}})


def _named(rows: pd.DataFrame, what: str) -> pd.DataFrame:
    """The rows with a person; a warning counts the photos (or videos) without one."""
    blank = _blank(rows[PERSON])
    if blank.any():
        unnamed = rows[blank]
        n = len(unnamed) if "face" not in unnamed else int(first_rows(unnamed).sum())
        log.warning("%d %s with an empty person in the manifest are left out of the people "
                    "table", n, what)
    return rows[~blank]


def _blank(person: pd.Series) -> pd.Series:
    """An empty (or all-space) person: a manifest cell left empty."""
    return person.isna() | person.astype("string").str.strip().eq("")


def _fwhr_units(main: pd.DataFrame, frames: pd.DataFrame | None,
                keys: list[str]) -> pd.DataFrame:
    """The keys and fWHR of each near-frontal measurement: a photo's main face with
    ``geometry_ok``, or a video's main track (the median of its ``geometry_ok`` frames)."""
    ok = main[main["geometry_ok"].fillna(False).astype(bool)]
    photos = _plain(ok, [*keys, "fwhr"])
    if frames is None or frames.empty:
        return photos
    shown = frames[frames["geometry_ok"].fillna(False).astype(bool) & (frames[TRACK] == 0)
                   & ~_blank(frames[PERSON])]  # the video's own row warned of an empty one
    clips = _plain(shown, ["path", *keys, "fwhr"]).groupby(["path", *keys], dropna=False,
                                                            observed=True)["fwhr"].median()
    return pd.concat([photos, clips.reset_index()[[*keys, "fwhr"]]], ignore_index=True)


def _positivity(means: pd.DataFrame) -> pd.Series:
    """Mean happiness less the summed means of the four negative emotions, in [-1, 1]."""
    return means["happiness"] - means[list(NEGATIVE)].sum(axis=1, min_count=4)


def first_rows(faces: pd.DataFrame) -> pd.Series:
    """True on each photo's first row: its face 0, or its one row without a face.

    Counting photos this way needs no ``path`` column, the largest one to hold in memory.
    """
    return faces["face"].isna() | (faces["face"] == 0)


def status_counts(faces: pd.DataFrame) -> dict[str, int]:
    """Photos per status (each photo once, however many faces it has), most common first."""
    counts = faces.drop_duplicates("path")["status"].value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def constant_ids(faces: pd.DataFrame, id_columns: list[str], keys: list[str]) -> list[str]:
    """Manifest columns with one value per group (ticker, gvkey), not per photo (person)."""
    rows = faces[faces["status"] != UNLISTED] if "status" in faces.columns else faces
    if rows.empty:
        return [c for c in id_columns if c not in keys]
    groups = rows.groupby(keys, dropna=False, observed=True)
    return [c for c in id_columns
            if c not in keys and int(groups[c].nunique(dropna=False).max()) <= 1]


def _dtype(column: str) -> str:
    if column in (*COUNTS, *GEOMETRY_COUNTS, *PERSON_COUNTS, PERSON_GEOMETRY[1]):
        return "int64"
    if column in (*LABELS, *SCORES, *GEOMETRY_SCORES, PERSON_GEOMETRY[0]):
        return "float64"
    return "str"
