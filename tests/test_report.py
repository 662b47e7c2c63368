"""The HTML report, built from a generated run with failures, several faces and moved photos."""

from __future__ import annotations

import base64
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from facevalue.cli import cli
from facevalue.contract import LABELS
from facevalue.report import ReportError, build_report, company_means, crop_face, read_photo

SHA = "ab" * 32
FACE_BGR = (40, 90, 230)  # a red-orange "face", easy to find again in a crop


def photo(path: Path, size: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> None:
    """A smooth background with a filled ellipse per face box (what a crop should centre)."""
    height, width = size
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = np.linspace(90, 200, width, dtype=np.uint8)[None, :, None]
    for x, y, w, h in boxes:
        cv2.ellipse(image, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, FACE_BGR, -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def rotated_photo(path: Path, box: tuple[int, int, int, int]) -> None:
    """A portrait stored sideways with EXIF orientation 6: upright, it has the face at ``box``."""
    upright = path.with_suffix(".tmp.png")
    photo(upright, (240, 160), [box])
    stored = cv2.rotate(cv2.imread(str(upright)), cv2.ROTATE_90_COUNTERCLOCKWISE)
    upright.unlink()
    image = Image.fromarray(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(path, exif=exif, quality=95)


def row(path: str, company: str, status: str = "ok", box=None, face: int | None = 0,
        faces_in_photo: int = 1, top: str = "happiness", error: str | None = None) -> dict:
    """A per-face row in the issue-2 schema; ``top`` gets probability 0.7."""
    probs = {label: (0.7 if label == top else 0.05) for label in LABELS}
    if box is None:
        probs = {label: None for label in LABELS}
        face, top = None, None
        faces_in_photo = 0
    x, y, w, h = box or (None,) * 4
    return {"path": path, "company": company, "ticker": company[:3], "status": status,
            "error": error, "face": face, "faces_in_photo": faces_in_photo,
            "x": x, "y": y, "w": w, "h": h, "face_score": 0.9 if box else None,
            **probs, "emotion": top, "photo_sha256": "0" * 64}


def write_scores(path: Path, rows: list[dict]) -> Path:
    """Write rows with the scorer's column types and key-value metadata."""
    frame = pd.DataFrame(rows)
    for column in ("face", "faces_in_photo", "x", "y", "w", "h"):
        frame[column] = frame[column].astype("Int32")
    for column in ("face_score", *LABELS):
        frame[column] = frame[column].astype("float32")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {"facevalue.version": "0.1.0", "facevalue.model": "fvnet.onnx",
            "facevalue.model_sha256": SHA, "facevalue.detector": "blazeface-short",
            "facevalue.arguments": '{"faces": "all"}', "facevalue.created": "2026-11-25T12:00Z"}
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, **meta}), path)
    return path


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, Path]:
    """A scored run: photos/ and scores.parquet with every kind of row the report handles."""
    photos = tmp_path / "photos"
    photo(photos / "Acme/ceo.jpg", (300, 240), [(70, 60, 100, 120)])
    photo(photos / "Acme/board.png", (240, 400), [(40, 50, 90, 100), (260, 80, 60, 70)])
    rotated_photo(photos / "Beta/rotated.jpg", (40, 60, 80, 100))
    photo(photos / "Beta/landscape.jpg", (200, 300), [])
    (photos / "Beta/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (photos / "Gamma").mkdir()  # a PNG header claiming 50000 x 50000 pixels: never decoded
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    (photos / "Gamma/huge.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\r" + ihdr + bytes(8))
    rows = [
        row("Acme/ceo.jpg", "Acme", box=(70, 60, 100, 120)),
        row("Acme/board.png", "Acme", box=(40, 50, 90, 100), faces_in_photo=2, top="neutral"),
        row("Acme/board.png", "Acme", box=(260, 80, 60, 70), face=1, faces_in_photo=2),
        row("Beta/rotated.jpg", "Beta", box=(40, 60, 80, 100), top="surprise"),
        row("Beta/landscape.jpg", "Beta", status="no_face"),
        row("Beta/broken.jpg", "Beta", status="unreadable", error="cannot identify image file"),
        row("Gamma/huge.png", "Gamma", status="too_large", error="2500000000 pixels > limit"),
        row("Gamma/gone.jpg", "Gamma", status="missing", error="in manifest, file not found"),
        row("Delta/moved.jpg", "Delta", box=(10, 10, 50, 50), top="sadness"),
    ]
    return photos, write_scores(tmp_path / "scores.parquet", rows)


def images(html: str, kind: str = "webp") -> list[str]:
    """The base64 payloads of the page's embedded images of one kind."""
    return re.findall(rf'src="data:image/{kind};base64,([A-Za-z0-9+/=]+)"', html)


def test_report_shows_counts_companies_failures_and_images(run, tmp_path):
    photos, scores = run
    result = build_report(scores, tmp_path / "out/report.html", photos=photos)
    html = result.path.read_text()
    assert result.size == len(html.encode()) and result.photos == 8 and result.faces == 5
    for number, label in ((8, "photos"), (5, "faces"), (4, "companies"), (1, "no face"),
                          (3, "failed photos"), (1, "several faces")):
        assert f"<b>{number}</b><span>{label}</span>" in html
    for company in ("Acme", "Beta", "Gamma", "Delta"):
        assert f'<span class="name">{company}</span>' in html
    for status, error in (("unreadable", "cannot identify image file"),
                          ("too_large", "2500000000 pixels"), ("missing", "file not found")):
        assert f'<span class="status {status}">{status}</span>' in html
        assert error in html
    assert "fvnet.onnx" in html and SHA in html and "blazeface-short" in html
    # 4 face crops (the moved photo is a placeholder) + landscape (no_face) + board (2 faces)
    assert len(images(html)) == result.thumbnails == 6
    assert html.count(">photo not found<") == 2  # Delta's face and Gamma/gone.jpg
    assert ">too large<" in html and ">unreadable<" in html  # placeholders say why
    plot = cv2.imdecode(np.frombuffer(base64.b64decode(images(html, "png")[0]), np.uint8), 1)
    assert plot.shape[1] > 600 and plot.std() > 10
    assert "https://" not in html and "http://" not in html  # nothing fetched when opened


def test_report_without_photos_says_so_and_embeds_no_thumbnails(run, tmp_path):
    _, scores = run
    html = build_report(scores, tmp_path / "r.html").path.read_text()
    assert "No thumbnails" in html and images(html) == []
    assert len(images(html, "png")) == 1
    assert "Beta/broken.jpg" in html and "Gamma/gone.jpg" in html


def test_report_prefers_the_companies_table(run, tmp_path):
    photos, scores = run
    table = pd.DataFrame({"company": ["Acme", "Beta"], "year": ["2019", "2020"],
                          "photos": [2, 3], "faces": [2, 1], "failed": [0, 2],
                          **{label: [0.1, 0.2] for label in LABELS},
                          "happiness_share": [0.5, 0.0], "positivity": [-0.3, -0.6]})
    table.to_parquet(scores.with_name("scores.companies.parquet"))
    html = build_report(scores, tmp_path / "r.html", photos=photos).path.read_text()
    assert '<th class="n">positivity</th>' in html and "<td class=\"n\">-0.600</td>" in html
    assert "Not in the companies table." in html  # Gamma and Delta only have per-face rows


def test_company_bar_weights_years_by_faces():
    table = pd.DataFrame({"company": ["A", "A", "B"], "year": ["2019", "2020", "2020"],
                          "faces": [1, 3, 0], **{label: [0.2, 0.6, None] for label in LABELS}})
    means = company_means(table)
    assert means["A"]["happiness"] == pytest.approx(0.5) and "B" not in means


def test_face_thumbnails_are_capped_per_company_main_faces_first(tmp_path):
    photos = tmp_path / "p"
    group = [(10, 10, 40, 40), (60, 10, 30, 30), (60, 60, 25, 25)]
    photo(photos / "Big/group.jpg", (120, 120), group)
    rows = [row("Big/group.jpg", "Big", box=box, face=i, faces_in_photo=3)
            for i, box in enumerate(group)]
    for i in range(4):
        photo(photos / f"Big/{i}.jpg", (120, 120), [(30, 30, 60, 60)])
        rows.append(row(f"Big/{i}.jpg", "Big", box=(30, 30, 60, 60)))
    scores = write_scores(tmp_path / "s.parquet", rows)
    html = build_report(scores, tmp_path / "r.html", photos=photos, max_faces=3,
                        max_review=0).path.read_text()
    assert len(images(html)) == 3 and "4 more faces not shown" in html
    assert 'title="Big/group.jpg · face 0"' in html and "group.jpg · face 1" not in html
    assert "1 more not shown" in html  # the group photo, left out of the review list


def test_crop_follows_exif_orientation(run):
    photos, _ = run
    decoded, why = read_photo(photos, "Beta/rotated.jpg")
    assert why == "" and decoded.image.shape[:2] == (240, 160)  # upright, as scored
    crop = crop_face(decoded.image, (40, 60, 80, 100), size=64)
    centre = crop[24:40, 24:40].reshape(-1, 3).mean(axis=0)
    assert np.abs(centre - FACE_BGR).max() < 25, centre


def test_broken_and_missing_photos_give_reasons(run):
    photos, _ = run
    assert read_photo(photos, "Beta/broken.jpg") == (None, "unreadable")
    assert read_photo(photos, "Gamma/huge.png") == (None, "too large")
    assert read_photo(photos, "Gamma/gone.jpg") == (None, "photo not found")


def test_text_from_the_data_is_escaped(tmp_path):
    rows = [row("x/a.jpg", "<script>alert(1)</script>", status="unreadable",
                error="<img src=x onerror=alert(2)>")]
    html = build_report(write_scores(tmp_path / "s.parquet", rows), tmp_path / "r.html")
    text = html.path.read_text()
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)" in text
    assert "<img src=x" not in text


def test_without_companies_table_scores_are_recomputed(run, tmp_path):
    _, scores = run
    html = build_report(scores, tmp_path / "r.html").path.read_text()
    cells = re.findall(r'<td class="n">([^<]*)</td>', html.split('<span class="name">Acme')[1])
    # Acme: 2 photos, 0 videos, 3 faces, 0 failed; means over main faces (ceo happy, board
    # neutral)
    assert "<td>Acm</td>" in html  # the ticker, constant within the company, passes through
    assert cells[:6] == ["2", "0", "3", "0", "0.050", "0.050"]
    assert cells[7:11] == ["0.375", "0.050", "0.050", "0.375"]


def test_not_a_scores_file_is_refused(tmp_path):
    other = tmp_path / "other.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(other)
    with pytest.raises(ReportError, match="not a facevalue scores file"):
        build_report(other, tmp_path / "r.html")
    (tmp_path / "junk.parquet").write_text("nope")
    with pytest.raises(ReportError, match="cannot read scores"):
        build_report(tmp_path / "junk.parquet", tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_cli_report(run, tmp_path):
    photos, scores = run
    out = tmp_path / "cli.html"
    args = ["report", str(scores), "--photos", str(photos), "--out", str(out), "--max-faces", "1"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert out.is_file() and "8 photos" in result.output
    bad = CliRunner().invoke(cli, ["report", str(photos / "Beta/broken.jpg"), "--out", str(out)])
    assert bad.exit_code == 1 and "cannot read scores" in bad.output


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IMAGE_CHECK = """<script>window.addEventListener("load", () => {
  const imgs = [...document.images];
  document.body.dataset.check = imgs.length + "/" + imgs.filter(i => i.naturalWidth > 0).length;
});</script></body>"""


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium the way CI can: no sandbox, no GPU, no network, a fresh profile."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(run, tmp_path):
    photos, scores = run
    report = build_report(scores, tmp_path / "report.html", photos=photos).path
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,2000", report.as_uri())
    pixels = cv2.imread(str(shot))
    assert pixels.shape[:2] == (2000, 1200) and pixels.std() > 20  # not a blank page
    # The page itself has no script; a copy with a checker reports which images decoded.
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", IMAGE_CHECK))
    dom = chromium("--dump-dom", "--virtual-time-budget=5000", probe.as_uri()).stdout
    total, loaded = re.search(r'data-check="(\d+)/(\d+)"', dom).groups()
    assert int(total) == 7 and loaded == total  # 6 thumbnails and the plot


def test_report_from_scored_sample_data(tiny_model, tmp_path):
    from facevalue import score_folder

    photos = Path(__file__).resolve().parents[1] / "sample_data" / "photos"
    scores = tmp_path / "s.parquet"
    score_folder(photos, scores, manifest=photos.parent / "manifest.csv", model=tiny_model,
                 device="cpu")
    html = build_report(scores, tmp_path / "r.html", photos=photos).path.read_text()
    assert '<span class="name">navy</span>' in html and '<span class="name">nasa</span>' in html
    assert "<td>009901</td>" in html and "tiny.onnx" in html  # ids and model from the run
    assert ('<span class="status no_face">no_face</span> <span class="path">nasa/landscape.jpg'
            in html)
    assert pq.read_schema(scores).metadata[b"facevalue.model_sha256"].decode() in html
    assert len(images(html)) == 3  # the two portraits' faces and the landscape


def test_a_companies_table_from_another_run_is_refused(run, tmp_path):
    _, scores = run
    table = pq.read_table(scores)
    faces, stale = tmp_path / "faces.parquet", tmp_path / "faces.companies.parquet"
    pq.write_table(table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"facevalue.run_id": b"a" * 32}), faces)
    pq.write_table(pa.table({"company": ["Acme"]}).replace_schema_metadata(
        {b"facevalue.run_id": b"0" * 32}), stale)
    with pytest.raises(ReportError, match="comes from another run"):
        build_report(faces, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_a_geometry_run_shows_fwhr_and_its_lines(tmp_path):
    from images import SAMPLE_PHOTOS

    from facevalue import score_folder

    out = tmp_path / "g.parquet"
    faces, _ = score_folder(SAMPLE_PHOTOS, out, device="cpu", geometry=True)
    html = build_report(out, tmp_path / "r.html", photos=SAMPLE_PHOTOS).path.read_text()
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", html)
    fwhr = faces.dropna(subset=["fwhr"]).set_index("path")["fwhr"]
    assert sorted(captions) == sorted(
        f"{faces.set_index('path').loc[p, 'emotion']} "
        f"{faces.set_index('path').loc[p, faces.set_index('path').loc[p, 'emotion']]:.0%}"
        f" · fWHR {v:.2f}" for p, v in fwhr.items())
    plain_out = tmp_path / "p.parquet"
    score_folder(SAMPLE_PHOTOS, plain_out, device="cpu")
    plain = build_report(plain_out, tmp_path / "p.html", photos=SAMPLE_PHOTOS).path.read_text()

    def red_pixels(page: str) -> list[int]:
        uris = re.findall(r'<img class="face" src="data:image/webp;base64,([^"]+)"', page)
        tiles = [cv2.imdecode(np.frombuffer(base64.b64decode(u), np.uint8), cv2.IMREAD_COLOR)
                 for u in uris]
        return [int(((t[..., 2] > 160) & (t[..., 1] < 100) & (t[..., 0] < 100)).sum())
                for t in tiles]

    # the width and height lines add red pixels to each thumbnail
    assert all(g > p + 30 for g, p in zip(red_pixels(html), red_pixels(plain), strict=True))


@pytest.mark.parametrize("target", ["scores", "companies", "not html"])
def test_out_that_is_an_input_or_not_html_is_refused_and_inputs_kept(run, tmp_path, target):
    _, scores = run
    companies = scores.with_name("scores.companies.parquet")
    pq.write_table(pa.table({"company": ["Acme"]}), companies)
    out = {"scores": scores, "companies": companies, "not html": tmp_path / "r.txt"}[target]
    before = scores.read_bytes(), companies.read_bytes()
    result = CliRunner().invoke(cli, ["report", str(scores), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert len(result.output.splitlines()) == 1 and "--out" in result.output
    assert (scores.read_bytes(), companies.read_bytes()) == before
    assert not (tmp_path / "r.txt").exists()


def test_out_in_a_read_only_folder_is_one_line(run, tmp_path, monkeypatch):
    # root may write anywhere, so the folder's refusal is what mkstemp raises there
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked"))

    _, scores = run
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    result = CliRunner().invoke(cli, ["report", str(scores), "--out",
                                      str(tmp_path / "locked" / "r.html")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.startswith("Error: cannot write") and len(result.output.splitlines()) == 1


@pytest.fixture
def talk_run(tiny_model, tmp_path):
    """The talk (Grace speaks 3 s, the astronaut 2 s, Grace 3 s; lossless) beside its two
    people as photos, scored at one frame a second."""
    from videos import talk

    from facevalue import score_folder

    photos = tmp_path / "photos"
    talk(photos / "acme")
    scores = tmp_path / "s.parquet"
    score_folder(photos, scores, model=tiny_model, device="cpu")
    return photos, scores


def video_section(html: str) -> str:
    return html.split('<details class="video"', 1)[1].split("</details>", 1)[0]


def test_a_video_shows_its_main_track_over_time_and_its_face_at_six_times(talk_run, tmp_path):
    photos, scores = talk_run
    result = build_report(scores, tmp_path / "r.html", photos=photos)
    html = result.path.read_text()
    assert (result.photos, result.videos) == (2, 1)
    assert '<b>1</b><span>videos</span>' in html and "<h2>Videos (1)</h2>" in html
    assert '<span class="counts">2 photos · 1 video · 2 faces</span>' in html  # acme
    section = video_section(html)
    assert '<span class="name">acme/talk.mkv</span>' in section
    assert "8 frames · main track in 75%" in section
    # the line plot: seconds 3 and 4 (the astronaut) are a gap in Grace's lines
    (plot,) = images(section, "png")
    assert cv2.imdecode(np.frombuffer(base64.b64decode(plot), np.uint8), cv2.IMREAD_COLOR
                        ).shape[1] > 600
    # six crops of the main track at evenly spaced times of its six seconds: all of them
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", section)
    assert [c.split(" · ")[0] for c in captions] == ["0:00", "0:01", "0:02", "0:05", "0:06",
                                                     "0:07"]
    # each cut from the frame at that time: the lossless frames are grace.png, so each crop
    # is the photo's own crop, byte for byte
    grace = re.search(r'src="data:image/webp;base64,([^"]+)" alt="acme/grace.png', html)
    assert grace is not None
    assert images(section) == [grace.group(1)] * 6
    # the video's rows are not photos: no crop in the company strip, no review card
    assert "acme/talk.mkv" not in html.split("<h2>Videos")[0]
    assert "acme/talk.mkv" not in html.split("<h2>For review</h2>")[1]


def test_a_video_without_photos_folder_or_its_table_or_over_the_cap(talk_run, tmp_path):
    photos, scores = talk_run
    plain = build_report(scores, tmp_path / "plain.html").path.read_text()
    section = video_section(plain)
    assert len(images(section, "png")) == 1 and images(section) == []  # no --photos: no crops
    moved = tmp_path / "moved"
    shutil.copytree(photos, moved)
    (moved / "acme/talk.mkv").unlink()
    gone = video_section(build_report(scores, tmp_path / "gone.html", photos=moved)
                         .path.read_text())
    assert gone.count("video not found") == 6  # placeholders, not a crash
    table = Path(str(scores).replace(".parquet", ".videos.parquet"))
    kept = pd.read_parquet(table)
    table.unlink()  # recomputed from the frames' rows: the same means
    again = video_section(build_report(scores, tmp_path / "again.html").path.read_text())
    assert "8 frames · main track in 75%" in again
    assert f"{kept.loc[0, 'happiness']:.3f}" in again
    moved_table = tmp_path / "elsewhere.parquet"
    kept.to_parquet(moved_table)  # no run id: taken as given
    result = CliRunner().invoke(cli, ["report", str(scores), "--out", str(tmp_path / "v.html"),
                                      "--videos", str(moved_table)], catch_exceptions=False)
    assert result.exit_code == 0 and "1 video, " in result.output
    assert "no s.videos.parquet" not in result.output
    with pytest.raises(ReportError, match="videos table .* does not exist"):
        build_report(scores, tmp_path / "x.html", videos=tmp_path / "absent.parquet")
    capped = build_report(scores, tmp_path / "capped.html", max_videos=0).path.read_text()
    assert '<details class="video"' not in capped and "1 more videos not shown" in capped


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_a_video_report_renders_in_headless_chromium(talk_run, tmp_path):
    photos, scores = talk_run
    report = build_report(scores, tmp_path / "report.html", photos=photos).path
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", IMAGE_CHECK))
    dom = chromium("--dump-dom", "--virtual-time-budget=5000", probe.as_uri()).stdout
    total, loaded = re.search(r'data-check="(\d+)/(\d+)"', dom).groups()
    # two photo crops, the company plot, the video's line plot and its six crops
    assert int(total) == 10 and loaded == total


def test_a_video_that_could_not_be_sampled_shows_its_status_and_error(tiny_model, tmp_path):
    from facevalue import score_folder

    photos = tmp_path / "photos"
    (photos / "acme").mkdir(parents=True)
    (photos / "acme" / "empty.mp4").write_bytes(b"")
    (photos / "acme" / "notes.mov").write_bytes(b"not a video at all" * 10)
    scores = tmp_path / "s.parquet"
    score_folder(photos, scores, model=tiny_model, device="cpu")
    html = build_report(scores, tmp_path / "r.html", photos=photos).path.read_text()
    assert "<h2>Videos (2)</h2>" in html
    assert '<span class="name">acme</span>' in html  # a company of videos only
    assert '<span class="counts">0 photos · 2 videos · 0 faces</span>' in html
    sections = [part.split("</details>")[0] for part in html.split('<details class="video"')[1:]]
    assert '<span class="bad">empty</span>' in sections[0] and "file is empty" in sections[0]
    assert '<span class="bad">unreadable</span>' in sections[1]
    assert not images("".join(sections), "png")  # no main track: no plot, no crops
    assert "acme/empty.mp4" not in html.split("<h2>For review</h2>")[1]
