"""The `facevalue` command: a thin Click layer over the library; it parses and reports.

Heavy modules are imported inside each command so `facevalue --help` and `--version` answer
at once.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from facevalue import __version__
from facevalue.console import outputs_complete
from facevalue.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_FPS,
    DEFAULT_MAX_PIXELS,
    DEVICES,
    FACES_MODES,
)
from facevalue.errors import FacevalueError

if TYPE_CHECKING:
    from facevalue.engine import Engine
    from facevalue.pipeline import Summary


class Commands(click.Group):
    """The command group, and the one place a user's error becomes a one-line message
    (``python -m train``'s group too)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FacevalueError as e:  # every error a user can cause and fix (errors.py)
            raise click.ClickException(str(e)) from e


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="facevalue")
def cli() -> None:
    """Emotion scores from photos of company executives, ready for a regression."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")


# --- score and info (issue 2) ---
model_option = click.option(
    "--model", type=click.Path(dir_okay=False),
    help="ONNX classifier carrying the facevalue contract, or a shipped model's name: "
         "fvlite (the default), fvlite-photo, fvnet-photo-fp32, fvnet, fvc2017, fvnet64.")
device_option = click.option(
    "--device", type=click.Choice(DEVICES), default="auto", show_default=True,
    help="auto uses CUDA when onnxruntime-gpu can, else CPU; cuda fails if it cannot.")


def _photos_location(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """PHOTOS: an existing folder, or a URI pyarrow opens (s3://, gs://, file://)."""
    if "://" in value:
        return value
    return str(click.Path(exists=True, file_okay=False).convert(value, param, ctx))


@cli.command()
@click.argument("photos", callback=_photos_location)
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Per-face Parquet file to write.")
@click.option("--companies", type=click.Path(dir_okay=False),
              help="Per-company Parquet file [default: <stem>.companies.parquet beside --out].")
@click.option("--videos", type=click.Path(dir_okay=False),
              help="Per-video Parquet file, written when PHOTOS holds videos "
                   "[default: <stem>.videos.parquet beside --out].")
@click.option("--people", type=click.Path(dir_okay=False),
              help="Per-person Parquet file, written when the manifest has a person column "
                   "[default: <stem>.people.parquet beside --out].")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False),
              help="CSV with path (relative to PHOTOS), company, and ids to copy through.")
@model_option
@device_option
@click.option("--faces", type=click.Choice(FACES_MODES), default=FACES_MODES[0], show_default=True,
              help="main: each photo's largest face, each video's main track (the person "
                   "seen most); all: every face found, in videos with its track.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True, max=1000), default=DEFAULT_FPS,
              show_default=True,
              help="Video frames sampled a second (0.2: one every 5 s); more is slower.")
@click.option("--geometry", is_flag=True,
              help="Also measure each face's fWHR, head pose and quality (face mesh).")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE,
              show_default=True,
              help="Faces per classifier call.")
@click.option("--max-pixels", type=click.FloatRange(min=0.01),
              default=DEFAULT_MAX_PIXELS / 1e6, show_default=True,
              help="Refuse images larger than this many megapixels (status too_large).")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads per onnxruntime session [default: cores / (workers + 1), "
                   "at least 1].")
@click.option("--workers", type=click.IntRange(min=1),
              help="Threads that read, decode and detect [default: all cores]; the output "
                   "is the same for any number.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, summary or info messages.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: Ray Data on a local Ray or a cluster (pip install '.[ray]' in the clone); "
                   "--threads is then per actor. Either engine takes URIs (s3://, gs://) for "
                   "PHOTOS and the outputs.")
@click.option("--ray-address", metavar="ADDR",
              help="Ray cluster to join with --engine ray (host:port, auto) "
                   "[default: $RAY_ADDRESS, else start a local Ray].")
def score(photos: str, out: str, companies: str | None, videos: str | None,
          people: str | None, manifest: str | None, model: str | None, device: str,
          faces: str, fps: float, geometry: bool, batch_size: int, max_pixels: float,
          threads: int | None, workers: int | None, quiet: bool, engine: str,
          ray_address: str | None) -> None:
    """Score the faces in every photo under PHOTOS into per-face and per-company Parquet.

    Videos (.mp4 .mov .m4v .mkv .avi .webm) are sampled at --fps: a row per face per
    sampled frame, with its time and track, and a per-video table; a manifest with a person
    column adds a per-person table. Results are saved beside
    --out as they are made: the same command run again after an interruption, or after
    photos were added, scores only the photos not yet scored.
    """
    if quiet:
        logging.getLogger("facevalue").setLevel(logging.WARNING)
    from facevalue.pipeline import write_scores

    arguments = click.get_current_context().params
    with _Progress(enabled=not quiet) as progress:
        summary = write_scores(photos, out, companies=companies, manifest=manifest,
                               model=model, device=device, faces=faces, geometry=geometry,
                               batch_size=batch_size, max_pixels=round(max_pixels * 1e6),
                               threads=threads, progress=progress, arguments=arguments,
                               engine=_engine(engine, ray_address, workers, quiet), fps=fps,
                               videos=videos, people=people)
    outputs_complete()
    if not quiet:
        _summarize(summary)


def _engine(engine: str, ray_address: str | None, workers: int | None, quiet: bool) -> Engine:
    """The engine --engine names, with its options."""
    if engine == "local":
        from facevalue.local import LocalEngine

        if ray_address:
            raise click.UsageError("--ray-address needs --engine ray")
        return LocalEngine(workers or 0)
    if workers is not None:
        raise click.UsageError("--workers is for --engine local (Ray runs an actor per core)")
    from facevalue.ray_engine import RayEngine, RayOptions

    return RayEngine(RayOptions(ray_address, quiet=quiet))


@cli.command()
@model_option
@device_option
def info(model: str | None, device: str) -> None:
    """Show the model card, the onnxruntime providers and the library versions."""
    from facevalue.classify import load_classifier, model_card
    from facevalue.pipeline import versions

    for name, version in versions().items():
        click.echo(f"{name}: {version}")
    card = model_card(load_classifier(model, device))
    for key, value in card.items():
        click.echo(f"{key}: {value}")


class _Progress:
    """A progress bar on stderr with photos/s and ETA, only on a terminal and not --quiet."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.bar: Any = None
        self.started = time.perf_counter()

    def __call__(self, finished: int, total: int, frames: int | None = None) -> None:
        """``frames``: the video frames sampled so far, when the run has videos."""
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label="scoring", file=sys.stderr,
                                         item_show_func=lambda rate: rate)
            self.bar.__enter__()
        seconds = max(time.perf_counter() - self.started, 1e-9)
        shown = f"{finished / seconds:,.0f} photos/s" if frames is None else \
            f"{frames:,} frames, {frames / seconds:,.1f} frames/s"
        self.bar.update(finished - self.bar.pos, shown)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def _summarize(summary: Summary) -> None:
    """One line on stderr: photos per status, faces, time, reused results, files written."""
    details = ", ".join(f"{n} {status}" for status, n in summary.statuses.items())
    seconds = summary.seconds
    reused = f", {summary.reused} reused from an earlier run" if summary.reused else ""
    files, unit = f"{summary.photos} photos", "photos"
    tables = f"{summary.out}, {summary.companies}"
    if summary.videos:
        clips = (f"{summary.videos} video{'s' * (summary.videos != 1)} "
                 f"({summary.frames:,} frames)")
        photos = summary.photos - summary.videos
        files = f"{photos} photo{'s' * (photos != 1)} and {clips}" if photos else clips
        unit = "files"
        tables += f", {summary.video_table}"
    if summary.people_table:
        tables += f", {summary.people_table}"
    click.echo(f"{files} ({details}), {summary.faces} faces scored in {seconds:.1f} s "
               f"({summary.photos / max(seconds, 1e-9):,.0f} {unit}/s{reused}) -> {tables}",
               err=True)
# --- end score and info ---


@cli.command()
@click.argument("scores", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The HTML file to write (self-contained; opens from disk).")
@click.option("--photos", type=click.Path(exists=True, file_okay=False),
              help="The folder that was scored; without it the report has no thumbnails.")
@click.option("--companies", type=click.Path(exists=True, dir_okay=False),
              help="Per-company table [default: <stem>.companies.parquet next to SCORES].")
@click.option("--videos", type=click.Path(exists=True, dir_okay=False),
              help="Per-video table [default: <stem>.videos.parquet next to SCORES].")
@click.option("--max-faces", type=click.IntRange(min=0), default=12, show_default=True,
              help="Face thumbnails shown per company.")
@click.option("--max-review", type=click.IntRange(min=0), default=200, show_default=True,
              help="Photos shown in each review list (failed, several faces).")
@click.option("--max-videos", type=click.IntRange(min=0), default=50, show_default=True,
              help="Videos shown with their emotions over time and face crops.")
def report(scores: str, out: str, photos: str | None, companies: str | None,
           videos: str | None, max_faces: int, max_review: int, max_videos: int) -> None:
    """Write an HTML page to check a scoring run by eye: counts, faces, failures, plots."""
    from facevalue.report import build_report

    made = build_report(scores, out, photos=photos, companies=companies,
                        max_faces=max_faces, max_review=max_review, max_videos=max_videos,
                        videos=videos)
    clips = f"{made.videos} video{'s' * (made.videos != 1)}, " if made.videos else ""
    click.echo(f"wrote {made.path} ({made.size / 1e6:.1f} MB): {made.photos} photos, "
               f"{clips}{made.faces} faces, {made.thumbnails} thumbnails")


@cli.command()
@click.argument("data", type=click.Path(exists=True))
@click.option("--labels", type=click.Path(exists=True, dir_okay=False),
              help="CSV of labelled photos under DATA (columns path or file, and label): "
                   "score them end to end instead of FER2013 crops.")
@click.option("--split", type=click.Choice(["Training", "PublicTest", "PrivateTest"]),
              default="PublicTest", show_default=True, help="FER2013 Usage split to score.")
@model_option
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Also write the confusion matrix to this PNG.")
def evaluate(data: str, labels: str | None, split: str, model: str | None, device: str,
             batch_size: int, as_json: bool, plot: str | None) -> None:
    """Score a classifier on labelled faces: FER2013 (CSV or image folders), or with --labels
    the photos under DATA through the whole scoring path. Accuracy, F1, calibration or kappa.
    """
    import json

    from facevalue import evaluate as ev
    from facevalue.contract import LABELS

    result: ev.Evaluation | ev.PhotoEvaluation
    if labels is None:
        result = ev.evaluate(data, split=split, model=model, batch_size=batch_size,
                             device=device)
    elif not Path(data).is_dir():
        raise click.UsageError("with --labels, DATA is the folder of labelled photos")
    else:
        with _Progress(enabled=not as_json) as progress:
            result = ev.evaluate_photos(data, labels, model=model, device=device,
                                        batch_size=batch_size, progress=progress)
    if plot:
        from facevalue.plots import plot_confusion

        where = split if labels is None else Path(data).name
        columns = None if labels is None else [*LABELS, ev.NO_PREDICTION]
        plot_confusion(result.confusion, LABELS, plot, columns=columns,
                       title=f"{where}: accuracy {result.accuracy:.1%}")
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        click.echo(ev.format_report(result) if isinstance(result, ev.Evaluation)
                   else ev.format_photo_report(result))


@cli.command(context_settings={"ignore_unknown_options": True,
                               "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train(args: tuple[str, ...]) -> None:
    """Fit, export or quantise a model: forwards ARGS to `python -m train` (`... train --help`).

    Needs TensorFlow: `pip install '.[train]'` in a source checkout (the train/
    package is not in the wheel).
    """
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("tensorflow") is None:
        raise click.ClickException(TRAIN_EXTRA)
    raise SystemExit(subprocess.call([sys.executable, "-m", "train", *args]))


TRAIN_EXTRA = ("training needs TensorFlow and tf2onnx: pip install '.[train]' in a clone of "
               "the repository")
