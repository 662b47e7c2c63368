"""What an engine is given and what it gives back: photos in, results out.

The job (``facevalue.pipeline``) owns everything that is the same for every engine: the
options, the models, the metadata, the saved results (photos with one never reach an
engine), the rows and the tables. An engine is a stream: the photos (and videos) still to
score in, one ``PhotoResult`` per photo and one ``VideoResult`` per video out, in their
order; ``facevalue.local`` with threads on this machine, ``facevalue.ray_engine`` on Ray
Data. Both split the stream into the same ``units`` of work and score each unit with the
same functions, so they classify the same batches.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from facevalue.classify import Classifier, load_classifier
from facevalue.contract import Contract
from facevalue.detect import FaceDetector
from facevalue.discover import Photo
from facevalue.errors import FacevalueError
from facevalue.faces import Options, PhotoFaces, find_faces
from facevalue.geometry import FaceMesh
from facevalue.records import PhotoResult, VideoResult
from facevalue.storage import Location, is_video
from facevalue.video_faces import score_video

STAGES = ("read", "decode", "detect", "crop", "classify", "write", "state")


class EngineError(FacevalueError, RuntimeError):
    """An engine that cannot run: Ray missing or unreachable."""


@dataclass(frozen=True)
class Models:
    """The checked models of a run; their names and hashes go into the tables."""

    classifier: Classifier
    detector: FaceDetector
    mesh: FaceMesh | None = None  # the face mesh, when geometry is measured


@dataclass(frozen=True)
class Work:
    """What every chunk of a run is scored with."""

    location: Location
    models: Models
    options: Options
    device: str  # as asked for: auto, cpu or cuda
    threads: int  # per onnxruntime session


class RunStats:
    """Counts and stage timings, added up in the calling thread as chunks finish."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.statuses: Counter[str] = Counter()
        self.faces = 0
        self.videos = 0
        self.frames = 0  # video frames sampled
        self.scored = 0
        self.reused = 0
        self.workers = 0  # set by the engine: threads locally, actors on Ray (0: not started)
        # Set by the job: an engine that holds a video's result behind an earlier one still
        # being scored hands it here first, in the job's thread, so the job can save it.
        self.early: Callable[[Photo, VideoResult], None] | None = None
        # Video frames sampled so far, counted by the engine as it samples them (from any
        # thread) and by the job for saved videos; ``tick`` (set by the job) shows them.
        self.sampled = 0
        self.tick: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def sample(self, frames: int = 1) -> None:
        """Count sampled video frames (thread-safe: workers call it)."""
        with self._lock:
            self.sampled += frames

    def charge(self, stage: str, since: float) -> None:
        """Add the time since ``since`` (a ``time.perf_counter()``) to a stage."""
        self.seconds[stage] += time.perf_counter() - since

    def count(self, results: Iterable[PhotoResult | VideoResult]) -> None:
        """Count finished photos and videos by status, and their faces (and frames)."""
        for result in results:
            self.statuses[result.status] += 1
            if isinstance(result, VideoResult):
                self.videos += 1
                self.frames += len(result.frames)
                self.faces += sum(len(frame.faces) for frame in result.frames)
            else:
                self.faces += len(result.faces)


class Engine(Protocol):
    """Turns photos into their results; the job does the rest."""

    def load(self, model: str | Path | None, device: str, threads: int | None,
             geometry: bool) -> tuple[Models, int]:
        """The run's models, checked, and the onnxruntime threads per session."""

    def arguments(self) -> Mapping[str, Any]:
        """What the engine adds to the tables' ``facevalue.arguments``."""

    def score(self, photos: Iterable[Photo], work: Work,
              stats: RunStats) -> Generator[PhotoResult | VideoResult, None, None]:
        """One result per photo or video, in their order, taking photos as it needs them.

        Sets ``stats.workers`` and adds its stages' seconds to ``stats``. The job closes the
        stream once it has every result, so an engine's cleanup (Ray's shutdown) runs then.
        """


def units(photos: Iterable[Photo], chunk_size: int) -> Iterator[list[Photo]]:
    """The photos in units of work, in order: up to ``chunk_size`` photos, whose faces are
    classified together (``rows.classify_results``; the Ray engine asks for smaller units
    for a small job), or one video, scored whole
    (so a finished video is saved while the next is scored, and videos spread over the
    workers)."""
    chunk: list[Photo] = []
    for photo in photos:
        if is_video(photo.path):
            if chunk:
                yield chunk
                chunk = []
            yield [photo]
            continue
        chunk.append(photo)
        if len(chunk) == chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# What scores a video's faces, asked for only when a video comes: (classifier, face mesh).
VideoModels = Callable[[], tuple[Classifier, FaceMesh | None]]


def find(photo: Photo, location: Location, detector: FaceDetector, contract: Contract,
         options: Options, video_models: VideoModels,
         on_frame: Callable[[], None] | None = None) -> PhotoFaces | VideoResult:
    """A photo's faces, to be classified with its unit's, or a video's result, scored whole
    (``video_faces``) with the classifier and face mesh ``video_models()`` gives (asked for
    only when there is a video: Ray's finding actors make one then)."""
    if is_video(photo.path):
        classifier, mesh = video_models()
        return score_video(photo, location, detector, classifier, options, mesh, on_frame)
    return find_faces(photo, location, detector, contract, options)


def load_models(model: str | Path | None, device: str, threads: int,
                geometry: bool) -> Models:
    """The classifier, the detector and (with geometry) the face mesh, on ``device``."""
    classifier = load_classifier(model, device, threads)
    detector = FaceDetector(device=device, threads=threads)
    mesh = FaceMesh(device=device, threads=threads) if geometry else None
    return Models(classifier, detector, mesh)


def default_workers() -> int:
    """The cores this process may use (its CPU affinity where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
