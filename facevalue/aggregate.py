"""Per-company (or company-year) summaries of the per-face table.

Scores average over each photo's main face (``face == 0``, the largest), so a board photo
with ten people counts once, like a portrait. ``positivity`` is the mean of happiness minus
the summed means of anger, disgust, fear and sadness; it lies in [-1, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pandas as pd

from facevalue.columns import (
    COUNTS,
    GEOMETRY_COUNTS,
    GEOMETRY_SCORES,
    NO_FACE,
    OK,
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


def companies(faces: pd.DataFrame, id_columns: list[str]) -> pd.DataFrame:
    """One row per company (and year): counts, mean probabilities and the two indices.

    ``photos`` counts the photos in scope (not those outside the manifest), ``faces`` the
    faces scored, ``failed`` the photos that could not be scored (any status other than
    ok or no_face). With geometry columns, ``fwhr`` is the mean over main faces with
    ``geometry_ok`` and ``geometry_faces`` their number. Pass-through ids are the manifest
    columns constant within every group.
    """
    keys = group_keys(id_columns)
    ids = [c for c in constant_ids(faces, id_columns, keys) if c not in keys]
    geometry = "fwhr" in faces.columns
    columns = ["company", *ids, *keys[1:], *COUNTS, *LABELS, *SCORES,
               *((*GEOMETRY_SCORES, *GEOMETRY_COUNTS) if geometry else ())]
    rows = faces[faces["status"] != UNLISTED]
    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in columns})
    photos = rows[first_rows(rows)]
    table = photos.groupby(keys, dropna=False, sort=True, observed=True).agg(
        photos=("status", "size"),
        failed=("status", lambda s: int((~s.isin([OK, NO_FACE])).sum())),
        **{c: (c, "first") for c in ids})
    scored = rows[rows["status"] == OK]
    table["faces"] = scored.groupby(keys, dropna=False, observed=True).size()
    main = scored[scored["face"] == 0]
    table = table.join(main.groupby(keys, dropna=False, observed=True)[list(LABELS)].mean())
    table["happiness_share"] = (main["emotion"] == "happiness").groupby(
        [main[k] for k in keys], dropna=False, observed=True).mean()
    table["positivity"] = _positivity(table)
    table["faces"] = table["faces"].fillna(0)
    if geometry:  # fWHR over main faces measured near-frontal, sharp and large enough
        trusted = main[main["geometry_ok"].fillna(False).astype(bool)]
        grouped = trusted.groupby(keys, dropna=False, observed=True)["fwhr"]
        table["fwhr"] = grouped.mean()
        table["geometry_faces"] = grouped.count()
        table["geometry_faces"] = table["geometry_faces"].fillna(0)
    table = table.reset_index()[columns]
    # Text read back as categoricals (pipeline._aggregation_columns) goes out as plain text.
    text = {c: table[c].cat.categories.dtype for c in table.columns
            if isinstance(table[c].dtype, pd.CategoricalDtype)}
    numbers = (*COUNTS, *LABELS, *SCORES, *((*GEOMETRY_SCORES, *GEOMETRY_COUNTS) if geometry
                                           else ()))
    return table.astype({**text, **{c: _dtype(c) for c in numbers}})


def videos(faces: pd.DataFrame, durations: Mapping[str, float | None],
           id_columns: list[str]) -> pd.DataFrame:
    """One row per video, from its frames' rows (those with a ``time``).

    ``duration`` comes from ``durations`` (the container's, by path); ``frames`` counts the
    sampled frames, ``frames_with_face`` those scored, ``main_share`` the share of sampled
    frames in which the main track (``track`` 0) is seen. The seven means, ``positivity``
    and the standard deviations over time (sample, so NaN from a single frame) take the main
    track's faces, one a frame.
    """
    rows = faces[faces[TIME].notna()]
    by_path = rows.groupby("path", sort=True)
    table = by_path[["company", *id_columns]].first()
    table["duration"] = [durations.get(path) for path in table.index]
    table["frames"] = by_path[TIME].nunique()
    scored = rows[rows["status"] == OK].groupby("path")[TIME].nunique()
    table["frames_with_face"] = scored.reindex(table.index, fill_value=0)
    main = rows[rows[TRACK] == 0].groupby("path")
    seen = main[TIME].nunique().reindex(table.index, fill_value=0)
    table["main_share"] = seen / table["frames"]
    table = table.join(main[list(LABELS)].mean())
    table["positivity"] = _positivity(table)
    table = table.join(main[list(LABELS)].std().add_suffix(STD))
    spread = [label + STD for label in LABELS]
    numbers = {"duration": "float64", "frames": "int64", "frames_with_face": "int64",
               **{c: "float64" for c in (*LABELS, "positivity", *spread)}}
    columns = ["path", "company", *id_columns, *VIDEO_COUNTS, *LABELS, "positivity", *spread]
    return table.reset_index().astype(numbers)[columns]


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
    rows = faces[faces["status"] != UNLISTED]
    if rows.empty:
        return [c for c in id_columns if c not in keys]
    groups = rows.groupby(keys, dropna=False, observed=True)
    return [c for c in id_columns
            if c not in keys and int(groups[c].nunique(dropna=False).max()) <= 1]


def _dtype(column: str) -> str:
    if column in COUNTS or column in GEOMETRY_COUNTS:
        return "int64"
    if column in LABELS or column in SCORES or column in GEOMETRY_SCORES:
        return "float64"
    return "str"
