"""The local engine: worker threads find faces while the calling thread classifies.

Worker threads read, decode, detect and crop the photos of the next chunks while the
calling thread classifies the current one, in batches as its photos are found (so the last
chunk's classifying overlaps its finding, not follows it); a worker scores a video whole
(``video_faces``), classifying its frames' faces itself. OpenCV's decoding and resizing,
FFmpeg's decoding and onnxruntime's inference release the GIL, so threads use every core
without copying photos between processes; the results do not depend on the number of workers.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facevalue.classify import Classifier
from facevalue.discover import Photo
from facevalue.engine import Models, RunStats, Work, default_workers, find, load_models, units
from facevalue.faces import PhotoFaces
from facevalue.geometry import FaceMesh
from facevalue.records import PhotoResult, VideoResult
from facevalue.rows import finish_chunk
from facevalue.storage import is_video

# Chunks handed to the workers beyond the one being classified, so they never wait for it.
AHEAD = 2
# Seconds between progress updates while waiting for a unit (a long video's frames).
TICK = 0.5


@dataclass
class LocalEngine:
    """Threads on this machine: ``workers`` find faces (default: every core)."""

    workers: int = 0

    def __post_init__(self) -> None:
        self.workers = self.workers or default_workers()

    def load(self, model: str | Path | None, device: str, threads: int | None,
             geometry: bool) -> tuple[Models, int]:
        # the calling thread classifies beside the workers; onnxruntime threads beyond the
        # free cores would only spin
        threads = threads or max(1, default_workers() // (self.workers + 1))
        return load_models(model, device, threads, geometry), threads

    def arguments(self) -> Mapping[str, Any]:
        return {}

    def score(self, photos: Iterable[Photo], work: Work,
              stats: RunStats) -> Generator[PhotoResult | VideoResult, None, None]:
        stats.workers = self.workers  # also when every photo's result is saved
        return self._stream(photos, work, stats)

    def _stream(self, photos: Iterable[Photo], work: Work,
                stats: RunStats) -> Generator[PhotoResult | VideoResult, None, None]:
        """Units of work (``engine.units``) to the workers, AHEAD of the one classified, and
        one more for each video in flight, up to one a worker: a video is one unit."""
        pending: deque[tuple[Photo | None, list[Future[PhotoFaces | VideoResult]]]] = deque()
        videos = 0  # units in ``pending`` that are a video (their Photo in ``pending``)
        handed: set[Future[PhotoFaces | VideoResult]] = set()  # videos given to stats.early
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="facevalue")
        models = work.models
        contract = models.classifier.contract

        def video_models() -> tuple[Classifier, FaceMesh | None]:
            return models.classifier, models.mesh  # onnxruntime sessions are thread-safe

        try:
            for unit in units(photos, work.options.chunk_size):
                video = unit[0] if is_video(unit[0].path) else None
                pending.append((video, [pool.submit(find, photo, work.location,
                                                    models.detector, contract, work.options,
                                                    video_models, stats.sample)
                                        for photo in unit]))
                videos += video is not None
                if len(pending) > AHEAD + min(videos, self.workers):
                    video, futures = pending.popleft()
                    videos -= video is not None
                    yield from _classify(futures, pending, handed, work, stats)
            while pending:
                futures = pending.popleft()[1]
                yield from _classify(futures, pending, handed, work, stats)
        except BaseException:
            # Neither join nor cancel: a Ctrl-C raised inside concurrent.futures.wait can
            # leave a future's lock held, and a worker finishing that future, or cancel(),
            # then waits for it for ever (1 in 6 interrupted runs hung). The workers only
            # read and decode; the CLI ends the process at once after a signal.
            pool.shutdown(wait=False)
            raise
        pool.shutdown(wait=True)


def _wait_for(head: Future[PhotoFaces | VideoResult],
              pending: deque[tuple[Photo | None, list[Future[PhotoFaces | VideoResult]]]],
              handed: set[Future[PhotoFaces | VideoResult]], stats: RunStats) -> None:
    """Until the photo or video at the head is done, hand each video finished behind it to
    ``stats.early`` (once: ``handed``), so a long video in front does not hold back the
    saving of the ones finished after it, and call ``stats.tick`` every TICK seconds."""
    behind = {futures[0]: photo for photo, futures in pending
              if photo is not None and futures[0] not in handed}
    while not head.done():
        # Only the head while it runs: wait() returns at once when any future it is given
        # is already done, and the loop would spin, holding the GIL the workers need.
        done, _ = wait([head, *behind], TICK, FIRST_COMPLETED)
        if stats.tick is not None:
            stats.tick()  # a long video's frames, as they are sampled
        for future in done & behind.keys():
            photo = behind.pop(future)
            result = future.result() if future.exception() is None else None
            if isinstance(result, VideoResult) and stats.early is not None:
                stats.early(photo, result)
                handed.add(future)


def _classify(futures: list[Future[PhotoFaces | VideoResult]],
              pending: deque[tuple[Photo | None, list[Future[PhotoFaces | VideoResult]]]],
              handed: set[Future[PhotoFaces | VideoResult]], work: Work,
              stats: RunStats) -> list[PhotoResult | VideoResult]:
    """A unit's results: its photos' faces classified in batches as the workers find them
    (``finish_chunk``), so the last unit's classifying overlaps its finding; a video comes
    scored. Waiting is not charged to the classify stage."""
    waited = 0.0

    def found() -> Iterator[PhotoFaces | VideoResult]:
        nonlocal waited
        for future in futures:
            since = time.perf_counter()
            handed.discard(future)  # at the head now: never behind again
            _wait_for(future, pending, handed, stats)
            item = future.result()
            waited += time.perf_counter() - since
            if isinstance(item, PhotoFaces):
                for stage, seconds in item.seconds.items():
                    stats.seconds[stage] += seconds
            yield item
    since = time.perf_counter()
    results = finish_chunk(found(), work.models.classifier, work.options.batch_size,
                           work.models.mesh)
    stats.seconds["classify"] += time.perf_counter() - since - waited
    return results
