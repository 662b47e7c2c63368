"""The HTML quality report: one self-contained page to check a scoring run by eye.

Before scores go into a regression, a researcher wants to see that the detector found the
executive (not a face on a poster), that crops are sensible, and which companies have few
usable photos. Parquet cannot show that; a page of thumbnails can. Everything is embedded as
data URIs so the file opens from disk, offline, and can be mailed or archived with the run.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from facevalue import __version__, aggregate, decode, geometry, storage, video, write
from facevalue.columns import RESERVED, TIME, TRACK, PhotoError
from facevalue.contract import LABELS
from facevalue.detect import Box
from facevalue.errors import FacevalueError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "company", "status")
SCORED = (aggregate.OK, aggregate.NO_FACE)  # any other status is a failure, as in aggregate
FACE_PX = 88  # face thumbnails are squares this wide: enough to judge a crop, small in bytes
PHOTO_PX = 180  # review photos are scaled so the longer side is this long
WEBP_QUALITY = 80
LINE_BGR = (40, 40, 230)  # fWHR's width and height lines: red
BOX_BGR = (70, 200, 70)  # the main face: green
OTHER_BOX_BGR = (255, 160, 40)  # the other faces: blue
VIDEO_CROPS = 6  # face crops per video strip, at evenly spaced times of its main track
VIDEO_TEXT = ("path", "company", "status", "error")  # in a video's header, not its table


class ReportError(FacevalueError, ValueError):
    """Raised when a report cannot be made (unreadable scores, missing [report] extra)."""


@dataclass(frozen=True)
class Thumb:
    """One picture on the page: a data URI, or the reason it is a placeholder instead."""

    uri: str | None
    caption: str
    title: str
    missing: str = ""


@dataclass(frozen=True)
class CompanySection:
    """A company's block: its score rows, totals, mean emotions and face strip."""

    name: str
    columns: list[tuple[str, bool]]  # (name, numeric): numbers are right-aligned
    rows: list[list[str]]
    photos: int
    faces: int
    failed: int
    no_face: int
    means: dict[str, float]
    thumbs: list[Thumb]
    hidden: int
    videos: int = 0  # its videos (their faces are in their own sections)

    @property
    def top(self) -> str:
        """The emotion with the highest mean, for scanning a long list of companies."""
        return top_emotion(self.means)


@dataclass(frozen=True)
class VideoSection:
    """A video's block: its row of the per-video table, its main track's emotions over
    time (a PNG data URI) and its face at a few times."""

    path: str
    company: str
    status: str
    error: str
    columns: list[tuple[str, bool]]  # (name, numeric), as a company's
    row: list[str]
    frames: int
    main_share: float | None
    means: dict[str, float]
    plot: str | None
    thumbs: list[Thumb]

    @property
    def top(self) -> str:
        """The main track's most probable emotion on average."""
        return top_emotion(self.means)


def top_emotion(means: Mapping[str, float]) -> str:
    """The emotion with the highest mean and its mean, or nothing without means."""
    if not means:
        return ""
    label = max(means, key=means.__getitem__)
    return f"{label} {means[label]:.2f}"


@dataclass(frozen=True)
class ReviewItem:
    """A photo to look at: it has no scored face, or it has several faces."""

    thumb: Thumb
    path: str
    company: str
    status: str
    detail: str


@dataclass(frozen=True)
class Report:
    """What was written, for the CLI to say."""

    path: Path
    size: int
    photos: int
    faces: int
    thumbnails: int
    videos: int = 0


def build_report(scores: str | Path, out: str | Path, photos: str | Path | None = None,
                 companies: str | Path | None = None, max_faces: int = 12,
                 max_review: int = 200, max_videos: int = 50,
                 videos: str | Path | None = None) -> Report:
    """Write the HTML report for a per-face scores file; return where and how big.

    ``photos`` is the folder that was scored (paths in the table are relative to it); without
    it the page has no thumbnails. ``companies`` defaults to ``<stem>.companies.parquet`` next
    to ``scores``; ``max_faces`` caps thumbnails per company and ``max_review`` the photos in
    each review list, so a 50,000-photo run still gives a page a browser opens. Videos get
    a section each (their main track's emotions over time and face at a few times), the
    first ``max_videos`` of them; ``videos`` (default ``<stem>.videos.parquet`` next to
    ``scores``) is their table.
    """
    require_extra()
    scores = Path(scores)
    check_out(Path(out), [scores, companies_path(scores, companies),
                          videos_path(scores, videos)])
    everything, meta = read_scores(scores)
    clips = everything["path"].map(storage.is_video).astype(bool)
    faces, frames = everything[~clips], everything[clips]
    clip_table = read_videos(scores, frames, videos)
    table = read_companies(scores, companies, faces, clip_table)
    root = Path(photos) if photos is not None else None
    shown = faces[faces["status"].eq(aggregate.OK) & has_box(faces)]
    # main faces first, so a capped strip shows many photos rather than one group photo
    shown = shown.sort_values("face", kind="stable").groupby("company", sort=False).head(max_faces)
    unscored, multi = review_rows(faces)
    face_thumbs, photo_thumbs = make_thumbnails(
        faces, shown, pd.concat([unscored.head(max_review), multi.head(max_review)]), root)
    summary = summarise(faces)
    summary["videos"] = 0 if clip_table is None else len(clip_table)
    sections = ([] if clip_table is None
                else video_sections(frames, clip_table.head(max_videos), root))
    context: dict[str, Any] = {
        "source": scores.name, "meta": meta, "photos_dir": str(root) if root else None,
        "summary": summary, "plot": distribution_png(table),
        "sections": company_sections(faces, table, shown, face_thumbs, max_faces, clip_table),
        "unscored": review_items(unscored.head(max_review), photo_thumbs, root, error=True),
        "unscored_hidden": max(len(unscored) - max_review, 0),
        "multi": review_items(multi.head(max_review), photo_thumbs, root, error=False),
        "multi_hidden": max(len(multi) - max_review, 0),
        "videos": sections, "videos_hidden": max(summary["videos"] - max_videos, 0),
    }
    size = write_atomic(Path(out), render(context))
    n_thumbs = sum(t.uri is not None for t in [*face_thumbs.values(), *photo_thumbs.values(),
                                               *(t for v in sections for t in v.thumbs)])
    log.debug("report: %d photos, %d thumbnails, %.1f MB", summary["photos"], n_thumbs,
              size / 1e6)
    return Report(Path(out), size, summary["photos"], summary["faces"], n_thumbs,
                  summary["videos"])


def check_out(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse an ``out`` that is not an HTML name, or that would replace one of the inputs
    (``--out scores.parquet`` would swap a run's scores for a page about them)."""
    if out.suffix.lower() != ".html":
        raise ReportError(f"--out {out}: the report is an HTML page; give a name ending "
                          "in .html")
    for source in inputs:
        if out.resolve() == source.resolve():
            raise ReportError(f"--out {out} is the report's input {source}; give the page "
                              "a file of its own")


def companies_path(scores: Path, companies: str | Path | None) -> Path:
    """The companies table a report reads: ``companies``, else the one beside ``scores``."""
    return Path(companies if companies else write.default_companies_path(scores))


def read_scores(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The per-face table and its ``facevalue.*`` key-value metadata (prefix dropped)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise ReportError(f"cannot read scores {path}: {e}") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ReportError(f"{path} is not a facevalue scores file (no {', '.join(missing)})")
    meta = {k.removeprefix("facevalue."): v for k, v in write.read_metadata(path).items()}
    if "arguments" in meta:
        try:
            meta["arguments"] = json.dumps(json.loads(meta["arguments"]), indent=1)
        except ValueError:
            log.warning("%s: facevalue.arguments is not JSON; shown as stored", path)
    faces = table.to_pandas()
    for column in ("error", TIME, TRACK, "face", "faces_in_photo", "x", "y", "w", "h", "emotion",
                   *LABELS):
        if column not in faces:
            faces[column] = None
    return faces, meta


def read_companies(scores: Path, companies: str | Path | None, faces: pd.DataFrame,
                   videos: pd.DataFrame | None = None) -> pd.DataFrame:
    """The per-company table written next to the scores, or one summarised from the faces.

    The scorer's table is preferred: it is what the researcher will regress on. Without it
    (a renamed or copied file) the report still shows counts and mean scores. A companies
    table from another run than the scores (its ``facevalue.run_id`` differs: a run killed
    between writing its two files, or files mixed up by hand) is refused. ``faces`` are the
    photos' rows, ``videos`` the per-video table.
    """
    path = companies_path(scores, companies)
    if path.is_file():
        return read_table(path, scores, "companies", "score again, or pass --companies")
    if companies:
        raise ReportError(f"companies table {path} does not exist")
    log.warning("no %s; per-company scores are recomputed from the per-face rows", path.name)
    return aggregate.companies(faces, id_columns(faces), videos)


def videos_path(scores: Path, videos: str | Path | None) -> Path:
    """The videos table a report reads: ``videos``, else the one beside ``scores``."""
    return Path(videos if videos else write.default_videos_path(scores))


def read_videos(scores: Path, frames: pd.DataFrame,
                videos: str | Path | None = None) -> pd.DataFrame | None:
    """The per-video table (``videos``, else the one next to the scores; of the same run),
    or one made from the videos' rows when it is missing; None for a run without videos."""
    path = videos_path(scores, videos)
    if videos and not path.is_file():
        raise ReportError(f"videos table {path} does not exist")
    if frames.empty:
        return None
    if path.is_file():
        return read_table(path, scores, "videos", "score again, or pass --videos")
    log.warning("no %s; per-video scores are recomputed from the per-face rows", path.name)
    ids = id_columns(frames)
    first = frames.drop_duplicates("path")
    seen = frames.loc[frames["status"] == aggregate.OK, "path"]
    listed = first[["path", "company", *ids, "error"]].assign(
        status=first["status"].where(~first["path"].isin(seen), aggregate.OK),
        duration=np.nan)
    return aggregate.videos(frames, listed, ids)


def read_table(path: Path, scores: Path, name: str, fix: str) -> pd.DataFrame:
    """A table written beside ``scores`` (the companies or videos one), refused when another
    run wrote it (its ``facevalue.run_id`` differs from the scores')."""
    try:
        table = pd.read_parquet(path)
        theirs = write.read_metadata(path).get("facevalue.run_id")
    except (OSError, pa.ArrowException) as e:
        raise ReportError(f"cannot read {name} table {path}: {e}") from e
    key = "company" if name == "companies" else "path"
    if key not in table:
        raise ReportError(f"{path} is not a facevalue {name} table (no {key} column)")
    ours = write.read_metadata(scores).get("facevalue.run_id")
    if ours and theirs and ours != theirs:
        raise ReportError(f"{path} comes from another run than {scores.name} (run ids "
                          f"{theirs[:8]} and {ours[:8]}); {fix}")
    return table


def id_columns(faces: pd.DataFrame) -> list[str]:
    """The manifest's ids in a per-face table: its columns facevalue does not name."""
    return [c for c in faces.columns if c not in RESERVED]


def summarise(faces: pd.DataFrame) -> dict[str, Any]:
    """Run-level counts for the page's header."""
    photos = faces.drop_duplicates("path")
    statuses = photos["status"].value_counts()
    return {
        "photos": len(photos),
        "faces": int(faces["face"].notna().sum()),
        "companies": faces["company"].nunique(),
        "failed": int((~photos["status"].isin(SCORED)).sum()),
        "no_face": int(photos["status"].eq(aggregate.NO_FACE).sum()),
        "multi": int((pd.to_numeric(photos["faces_in_photo"]) > 1).sum()),
        "statuses": [(str(s), int(n)) for s, n in statuses.items()],
    }


def review_rows(faces: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per photo without a scored face (failures first), one per photo with several."""
    photos = faces.drop_duplicates("path")
    unscored = photos[photos["status"].ne(aggregate.OK)]
    unscored = (unscored.assign(_no_face=unscored["status"].eq(aggregate.NO_FACE))
                .sort_values(["_no_face", "status", "path"], kind="stable")
                .drop(columns="_no_face"))
    multi = photos[pd.to_numeric(photos["faces_in_photo"]) > 1]
    return unscored, multi


def has_box(faces: pd.DataFrame) -> pd.Series:
    """Rows with a face and its whole box: only those can be cropped or drawn."""
    return faces[["face", "x", "y", "w", "h"]].notna().all(axis=1)


def make_thumbnails(faces: pd.DataFrame, shown: pd.DataFrame, review: pd.DataFrame,
                    root: Path | None) -> tuple[dict[Any, Thumb], dict[str, Thumb]]:
    # a run with geometry: the face mesh draws the lines fWHR was measured on
    mesh = geometry.FaceMesh(threads=1) if "fwhr" in faces and root is not None else None
    """Face crops (keyed by row index) and whole-photo views (keyed by path).

    Each photo is decoded once, however many of its faces and views the page shows.
    """
    face_thumbs: dict[Any, Thumb] = {}
    photo_thumbs: dict[str, Thumb] = {}
    if root is None:
        return face_thumbs, photo_thumbs
    crops: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for index, row in shown.to_dict("index").items():  # plain dicts: iterrows is slow
        crops.setdefault(row["path"], []).append((index, row))
    views = set(review["path"])
    boxes: dict[str, list[dict[str, Any]]] = {}
    for row in faces[faces["path"].isin(views) & has_box(faces)].to_dict("records"):
        boxes.setdefault(row["path"], []).append(row)
    for path in sorted(crops.keys() | views):
        image, why = read_photo(root, path)
        for index, row in crops.get(path, []):
            face_thumbs[index] = face_thumb(image, row, why, mesh)
        if path in views:
            photo_thumbs[path] = photo_thumb(image, path, boxes.get(path, []), why)
    return face_thumbs, photo_thumbs


def read_photo(root: Path, relative: str) -> tuple[decode.Decoded | None, str]:
    """The photo decoded as the scorer decodes it (EXIF upright, pixel limit), or why not."""
    path = root / relative
    if not path.is_file():
        return None, "photo not found"
    try:
        return decode.decode(storage.read_local(path)), ""
    except PhotoError as e:
        return None, e.status.replace("_", " ")


def face_thumb(image: decode.Decoded | None, row: Mapping[str, Any], why: str,
               mesh: geometry.FaceMesh | None = None) -> Thumb:
    """A square crop around the face box with the box drawn, captioned with the top emotion.

    With ``mesh`` and a measured fWHR, the caption gives fWHR and yaw, and the crop shows the
    width (cheekbones) and height (upper lip to brow) lines, measured again on this decode.
    """
    label = str(row["emotion"]) if pd.notna(row["emotion"]) else "?"
    share = float(row[label]) if label in LABELS and pd.notna(row[label]) else float("nan")
    caption = f"{label} {share:.0%}" if share == share else label
    title = f"{row['path']} · face {int(row['face'])}"
    measured = mesh is not None and pd.notna(row.get("fwhr"))
    if measured:
        mark = "" if row.get("geometry_ok") else " (not ok)"
        caption += f" · fWHR {row['fwhr']:.2f}{mark}"
        title += f" · yaw {row['yaw']:.0f}°, pitch {row['pitch']:.0f}°, roll {row['roll']:.0f}°"
    if image is None:
        return Thumb(None, caption, title, why)
    box = decoded_box(image, row)
    lines = fwhr_lines(mesh, image.image, box, float(row["roll"])) if measured and mesh else []
    return Thumb(image_uri(crop_face(image.image, box, lines=lines)), caption, title)


def fwhr_lines(mesh: geometry.FaceMesh, image: np.ndarray, box: tuple[int, int, int, int],
               roll: float) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """The width and height segments of fWHR in ``image``'s pixels, from a fresh mesh pass."""
    x, y, w, h = box
    cx, cy, half = x + w / 2, y + h / 2, w / 4
    dx, dy = half * np.cos(np.radians(roll)), half * np.sin(np.radians(roll))
    face = Box(x, y, w, h, 1.0, (cx - dx, cy - dy, cx + dx, cy + dy))  # eyes along the roll
    crop, matrix = geometry.mesh_crop(image, face)
    points, _ = mesh.landmarks(crop[None])
    found = geometry.to_photo(points[0], matrix)[:, :2]
    brow = found[list(geometry.BROW_POINTS)].mean(axis=0)
    left, right = (found[i] for i in geometry.WIDTH_POINTS)
    return [((left[0], left[1]), (right[0], right[1])),
            ((found[geometry.LIP_POINT][0], found[geometry.LIP_POINT][1]), (brow[0], brow[1]))]


def decoded_box(image: decode.Decoded, row: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """A row's box (original pixels) in the decoded image, which may be a reduced JPEG."""
    sx, sy = image.scale
    return (round(row["x"] / sx), round(row["y"] / sy),
            max(round(row["w"] / sx), 1), max(round(row["h"] / sy), 1))


def crop_face(image: np.ndarray, box: tuple[int, ...], size: int = FACE_PX,
              lines: Sequence[tuple[tuple[float, float], tuple[float, float]]] = ()
              ) -> np.ndarray:
    """A square around ``box`` with a margin for context, padded where it leaves the photo;
    ``lines`` (image pixels) are drawn over it."""
    x, y, w, h = box
    side = max(int(max(w, h) * 1.6), 1)
    x0, y0 = int(x + w / 2 - side / 2), int(y + h / 2 - side / 2)
    height, width = image.shape[:2]
    left, top = max(-x0, 0), max(-y0, 0)
    right, bottom = max(x0 + side - width, 0), max(y0 + side - height, 0)
    crop = image[max(y0, 0):min(y0 + side, height), max(x0, 0):min(x0 + side, width)]
    if crop.size == 0:  # a box outside the photo: show a grey square rather than fail
        crop = np.full((side, side, 3), 200, np.uint8)
    else:
        crop = cv2.copyMakeBorder(crop, top, bottom, left, right, cv2.BORDER_CONSTANT,
                                  value=(200, 200, 200))
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    scale = size / side
    corner = (int((x - x0) * scale), int((y - y0) * scale))
    cv2.rectangle(crop, corner, (int(corner[0] + w * scale), int(corner[1] + h * scale)),
                  BOX_BGR, 1)
    for start, end in lines:
        ends = [(round((px - x0) * scale), round((py - y0) * scale)) for px, py in (start, end)]
        cv2.line(crop, ends[0], ends[1], LINE_BGR, 1, cv2.LINE_AA)
    return crop


def photo_thumb(image: decode.Decoded | None, path: str, boxes: Sequence[Mapping[str, Any]],
                why: str) -> Thumb:
    """The whole photo, small, with every recorded face box (the main face, 0, in green)."""
    if image is None:
        return Thumb(None, "", path, why)
    scale = PHOTO_PX / max(image.height, image.width)
    small = cv2.resize(image.image, (max(round(image.width * scale), 1),
                                     max(round(image.height * scale), 1)),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    for row in sorted(boxes, key=lambda row: -int(row["face"])):  # the main face drawn last
        x, y, w, h = (float(row[k]) * scale for k in "xywh")
        main = int(row["face"]) == 0
        cv2.rectangle(small, (round(x), round(y)), (round(x + w), round(y + h)),
                      BOX_BGR if main else OTHER_BOX_BGR, 2 if main else 1)
    return Thumb(image_uri(small), "", path)


def image_uri(image: np.ndarray) -> str:
    """A WebP data URI: the report carries its pictures, so it opens offline from disk.

    WebP, not JPEG: face thumbnails come out about half the size at the same quality
    (measured on real portraits), and every current browser shows it.
    """
    ok, data = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY])
    if not ok:
        raise ReportError("OpenCV could not encode a thumbnail as WebP")
    return "data:image/webp;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def distribution_png(table: pd.DataFrame) -> str | None:
    """The emotions-across-companies plot as a PNG data URI (None when no company has scores)."""
    from facevalue.plots import plot_emotion_distributions

    scored = table.dropna(subset=[label for label in LABELS if label in table], how="all")
    if scored.empty or not set(LABELS) & set(table.columns):
        return None
    buffer = io.BytesIO()
    plot_emotion_distributions(scored, buffer, f"Mean emotion per company ({len(scored)} rows)")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def company_sections(faces: pd.DataFrame, table: pd.DataFrame, shown: pd.DataFrame,
                     thumbs: dict[Any, Thumb], max_faces: int,
                     videos: pd.DataFrame | None = None) -> list[CompanySection]:
    """One section per company, in the companies table's order, then any it lacks;
    ``faces`` are the photos' rows, ``videos`` the per-video table (for their number).

    Everything is grouped once up front: per-company pandas calls take seconds per
    thousand companies.
    """
    names = table["company"].astype(str)
    columns = [c for c in table.columns if c != "company"]
    header = [(c, pd.api.types.is_numeric_dtype(table[c])) for c in columns]
    rows: dict[str, list[list[str]]] = {}
    for name, values in zip(names, table[columns].itertuples(index=False), strict=True):
        rows.setdefault(name, []).append([format_cell(v) for v in values])
    strips: dict[str, list[Thumb]] = {}
    for index, company in shown["company"].astype(str).items():
        if index in thumbs:
            strips.setdefault(company, []).append(thumbs[index])
    counts = company_counts(faces)
    counts = counts.reindex(list(dict.fromkeys([*names, *counts.index])), fill_value=0)
    clips = (pd.Series(dtype=int) if videos is None
             else videos["company"].astype(str).value_counts())
    counts = counts.reindex(list(dict.fromkeys([*counts.index, *clips.index])), fill_value=0)
    means = company_means(table)
    return [CompanySection(name, header, rows.get(name, []), int(n["photos"]), int(n["faces"]),
                           int(n["failed"]), int(n["no_face"]), means.get(name, {}),
                           strips.get(name, []), max(int(n["faces"]) - max_faces, 0),
                           int(clips.get(name, 0)))
            for name, n in counts.to_dict("index").items()]


def company_counts(faces: pd.DataFrame) -> pd.DataFrame:
    """Photos, faces, failed and face-less photos per company, for the section headers."""
    photos = faces.drop_duplicates("path")
    status = photos["status"]
    counts = pd.DataFrame({"photos": 1, "failed": ~status.isin(SCORED),
                           "no_face": status.eq(aggregate.NO_FACE)})
    counts = counts.groupby(photos["company"].astype(str), sort=False).sum()
    counts["faces"] = faces["face"].notna().groupby(faces["company"].astype(str)).sum()
    return counts.fillna(0).astype(int)


def company_means(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Each company's mean probabilities over its rows (years), weighted by faces."""
    labels = [label for label in LABELS if label in table]
    scored = table.dropna(subset=labels) if labels else table.iloc[:0]
    if scored.empty:
        return {}
    key = scored["company"].astype(str)
    weights = (scored["faces"].astype(float) if "faces" in scored
               else pd.Series(1.0, index=scored.index))
    sums = scored[labels].astype(float).mul(weights, axis=0).groupby(key).sum()
    means = sums.div(weights.groupby(key).sum(), axis=0).dropna()
    return {str(name): {k: float(v) for k, v in row.items()}
            for name, row in means.to_dict("index").items()}


def review_items(rows: pd.DataFrame, thumbs: dict[str, Thumb], root: Path | None,
                 error: bool) -> list[ReviewItem]:
    """Cards for the review lists: the photo (or a placeholder) and what went wrong."""
    items = []
    for row in rows.itertuples(index=False):
        if root is None:
            thumb = Thumb(None, "", row.path, "")
        else:
            thumb = thumbs.get(row.path, Thumb(None, "", row.path, "not shown"))
        if error:
            detail = str(row.error) if pd.notna(row.error) else ""
        else:
            detail = f"{int(row.faces_in_photo)} faces"
        items.append(ReviewItem(thumb, row.path, str(row.company), str(row.status), detail))
    return items


def video_sections(frames: pd.DataFrame, videos: pd.DataFrame,
                   root: Path | None) -> list[VideoSection]:
    """One section per row of ``videos``, in its order, from its frames' rows."""
    columns = [c for c in videos.columns if c not in VIDEO_TEXT]
    header = [(c, pd.api.types.is_numeric_dtype(videos[c])) for c in columns]
    by_path = dict(tuple(frames.groupby("path", sort=False)))
    sections = []
    for row in videos.to_dict("records"):
        rows = by_path.get(row["path"], frames.iloc[:0])
        main = rows[rows[TRACK].eq(0) & rows[TRACK].notna()]
        means = {label: float(row[label]) for label in LABELS
                 if label in row and pd.notna(row[label])}
        share = row.get("main_share")
        sections.append(VideoSection(
            str(row["path"]), str(row["company"]), str(row["status"]),
            str(row["error"]) if pd.notna(row.get("error")) else "", header,
            [format_cell(row[c]) for c in columns], int(row.get("frames", 0) or 0),
            float(share) if share is not None and pd.notna(share) else None, means,
            timeline_png(rows, main), video_thumbs(root, str(row["path"]), main)))
    return sections


def timeline_png(rows: pd.DataFrame, main: pd.DataFrame) -> str | None:
    """The main track's probabilities at every sampled time (a gap where it is not seen),
    as a PNG data URI; None when the main track is never seen."""
    from facevalue.plots import plot_emotions_over_time

    if main.empty:
        return None
    times = pd.DataFrame({TIME: rows[TIME].dropna().drop_duplicates()})
    line = times.merge(main[[TIME, *LABELS]].drop_duplicates(TIME), on=TIME, how="left")
    buffer = io.BytesIO()
    plot_emotions_over_time(line.astype(float), buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def video_thumbs(root: Path | None, path: str, main: pd.DataFrame,
                 count: int = VIDEO_CROPS) -> list[Thumb]:
    """The main track's face at ``count`` evenly spaced times, cut from the video's frames
    at those times (decoded again: the video itself, as the scorer sampled it)."""
    boxed = main[has_box(main)].sort_values(TIME)
    if root is None or boxed.empty:
        return []
    picked = boxed.iloc[np.unique(np.linspace(0, len(boxed) - 1, min(count, len(boxed)))
                                  .round().astype(int))]
    images = read_frames(root, path, picked[TIME].tolist())
    thumbs = []
    for row, (image, why) in zip(picked.to_dict("records"), images, strict=True):
        thumb = face_thumb(image, row, why)
        thumbs.append(dataclasses.replace(
            thumb, caption=f"{clock(row[TIME])} · {thumb.caption}",
            title=f"{path} at {row[TIME]:.2f} s"))
    return thumbs


def read_frames(root: Path, relative: str,
                times: list[float]) -> list[tuple[decode.Decoded | None, str]]:
    """A video's frames at ``times`` as the scorer sampled them (upright), or why not."""
    path = root / relative
    if not path.is_file():
        return [(None, "video not found")] * len(times)
    try:
        frames = list(video.frames_at(path, times))
    except PhotoError as e:  # VideoError: the video no longer opens
        return [(None, e.status.replace("_", " "))] * len(times)
    return [(None, "no frame there") if f.image is None
            else (decode.Decoded(f.image, *f.image.shape[:2]), "") for f in frames]


def clock(seconds: float) -> str:
    """A time in a video as m:ss (h:mm:ss past an hour)."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_cell(value: Any) -> str:
    """A table cell: floats to three decimals, missing values as a dash."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "–"
    if isinstance(value, float | np.floating):
        return f"{value:.3f}"
    return str(value)


def require_extra() -> None:
    """Fail before any work when jinja2 or matplotlib (the [report] extra) is missing."""
    try:
        import jinja2  # noqa: F401
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ReportError(f"the report needs the [report] extra ({e.name} is missing): "
                          "pip install '.[report]' in a clone of the repository "
                          "(matplotlib, jinja2)") from e


def render(context: dict[str, Any]) -> str:
    """Fill the Jinja2 template (autoescaped: paths and error messages are data, not HTML)."""
    import jinja2

    from facevalue.plots import EMOTION_COLORS

    env = jinja2.Environment(loader=jinja2.PackageLoader("facevalue", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2").render(
        labels=LABELS, colors=EMOTION_COLORS, version=__version__, **context)


def write_atomic(out: Path, html: str) -> int:
    """Write ``html`` via a temporary file and rename, so no half-written report is left."""
    data = html.encode("utf-8")
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(tmp, out)
    except OSError as e:  # a read-only or full folder, a file where the folder should be
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise ReportError(f"cannot write {out}: {e.strerror or e}") from e
    return len(data)
