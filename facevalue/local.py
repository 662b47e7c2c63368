"""The local engine: worker threads find faces while the calling thread classifies.

Worker threads read, decode, detect and crop the photos of the next chunks while the
calling thread classifies the current one in a single batch. OpenCV's decoding and
resizing and onnxruntime's inference release the GIL, so threads use every core without
copying photos between processes; the results do not depend on the number of workers.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Generator, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from facevalue.discover import Photo
from facevalue.engine import Models, RunStats, Work, default_workers, load_models
from facevalue.faces import PhotoFaces, find_faces
from facevalue.records import PhotoResult
from facevalue.rows import classify_results

# Chunks handed to the workers beyond the one being classified, so they never wait for it.
AHEAD = 2


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
              stats: RunStats) -> Generator[PhotoResult, None, None]:
        stats.workers = self.workers  # also when every photo's result is saved
        return self._stream(photos, work, stats)

    def _stream(self, photos: Iterable[Photo], work: Work,
                stats: RunStats) -> Generator[PhotoResult, None, None]:
        """Chunks of ``chunk_size`` photos to the workers, AHEAD of the one classified."""
        pending: deque[list[Future[PhotoFaces]]] = deque()
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="facevalue")
        contract = work.models.classifier.contract
        iterator = iter(photos)
        try:
            while chunk := list(islice(iterator, work.options.chunk_size)):
                pending.append([pool.submit(find_faces, photo, work.location,
                                            work.models.detector, contract, work.options)
                                for photo in chunk])
                if len(pending) > AHEAD:
                    yield from _classify(pending.popleft(), work, stats)
            while pending:
                yield from _classify(pending.popleft(), work, stats)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _classify(futures: list[Future[PhotoFaces]], work: Work,
              stats: RunStats) -> list[PhotoResult]:
    """Wait for a chunk's faces and classify them in one batch."""
    items = [future.result() for future in futures]
    for item in items:
        for stage, seconds in item.seconds.items():
            stats.seconds[stage] += seconds
    since = time.perf_counter()
    results = classify_results(items, work.models.classifier, work.options.batch_size,
                               work.models.mesh)
    stats.charge("classify", since)
    return results
