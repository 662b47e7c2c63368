"""Score photos on Ray Data (``facevalue score --engine ray``): the same job, on a cluster.

``RayEngine`` is an engine for ``pipeline.write_scores``: the job (models checked on the
driver, metadata, saved results, rows, both tables) is the local engine's, and only the
photos still to score go to Ray. The driver ships the model files' bytes through Ray's
object store, so a worker needs facevalue installed but neither the model files nor the
driver's disk. Workers run the very functions the local engine runs (``find_faces``,
``classify_results``) inside Ray Data actors that build their onnxruntime sessions once,
read photos through ``facevalue.storage`` (a local folder or a bucket), and send each
photo's result back to the driver as soon as it is done, with its place in discovery order;
the driver puts the results back in that order (``in_order``). The dataset's rows are the local
engine's units of work (``engine.units``): up to ``chunk_size`` photos classified in one
batch, or one video scored whole, so videos spread over the actors one at a time.

Two plans: on CPUs one actor per core decodes, detects, crops and classifies, so crops never
leave the process; with GPUs, CPU actors decode, detect and crop, and GPU actors classify the
crops of many photos in large batches (videos are scored whole on the CPU actors, with a
CPU classifier of their own). Ray is imported only here, and only when called.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
import signal
import socket
import tempfile
import threading
import uuid
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from facevalue import reaper, storage
from facevalue.classify import Classifier
from facevalue.contract import Contract
from facevalue.detect import FaceDetector
from facevalue.discover import Photo
from facevalue.engine import EngineError, Models, RunStats, Work, find, load_models, units
from facevalue.faces import Options, PhotoFaces
from facevalue.geometry import FaceMesh
from facevalue.records import PhotoResult, VideoResult
from facevalue.rows import finish_chunk
from facevalue.runtime import DeviceError
from facevalue.storage import Location

log = logging.getLogger(__name__)

INSTALL_HINT = ("the Ray engine needs Ray: pip install '.[ray]' in a clone of the "
                "repository (or pip install 'ray[data]')")
# Blocks per actor at least, so a slow block (huge photos) does not leave the others idle.
BLOCKS_PER_ACTOR = 4


@dataclass(frozen=True)
class RayOptions:
    """Where the Ray job runs and how work is placed on it."""

    address: str | None = None  # a cluster to join (or $RAY_ADDRESS); None starts a local Ray
    num_cpus: int | None = None  # CPUs of a local Ray [default: all]
    split: bool | None = None  # classify on separate actors [default: when the cluster has GPUs]
    gpu_share: float = 1.0  # GPU per classifier actor; 0.25 packs four actors on one GPU
    quiet: bool = False  # silence the workers' output too (facevalue --quiet)

    def __post_init__(self) -> None:
        if not 0 < self.gpu_share <= 1:
            raise ValueError("gpu_share must be in (0, 1]")


@dataclass(frozen=True)
class ShippedModel:
    """A model file's bytes in Ray's object store, with its name and sha256."""

    ref: Any  # ray.ObjectRef to the file's bytes
    name: str
    sha256: str

    def local_file(self) -> Path:
        """The model as a file on this worker (onnxruntime and the classes open paths).

        Kept under the temp folder by sha256, so the actors of a node, and later runs, fetch
        and write it once.
        """
        import ray

        path = Path(tempfile.gettempdir(), "facevalue-models", self.sha256, self.name)
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == self.sha256:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{self.name}.{uuid.uuid4().hex[:12]}.tmp")
        temp.write_bytes(ray.get(self.ref))
        os.replace(temp, path)  # atomic: actors on one node may race here
        return path


@dataclass
class RayEngine:
    """Ray Data as an engine for ``pipeline.write_scores``.

    ``threads`` (``write_scores``'s) is per actor, default 1: Ray runs one actor per core.
    Ray starts locally unless ``options.address`` or ``$RAY_ADDRESS`` names a cluster; a Ray
    already initialised in this process is used as it is. Photos whose results are saved
    never reach Ray, and a run with nothing left to score does not start it.
    """

    options: RayOptions = field(default_factory=RayOptions)

    def load(self, model: str | Path | None, device: str, threads: int | None,
             geometry: bool) -> tuple[Models, int]:
        # The driver only checks the models and hashes them; it needs no GPU.
        return load_models(model, "cpu", 1, geometry), threads or 1

    def arguments(self) -> Mapping[str, Any]:
        return {"engine": "ray", "ray_address": self.options.address}

    def score(self, photos: Iterable[Photo], work: Work,
              stats: RunStats) -> Generator[PhotoResult | VideoResult, None, None]:
        todo = list(photos)  # Ray Data plans the whole dataset at once
        if not todo:
            return
        with ray_session(self.options) as ray:
            models = work.models
            job = Job(work.location, work.options, models.classifier.contract, work.device,
                      work.threads, ship(ray, models.classifier.path),
                      ship(ray, models.detector.path),
                      ship(ray, models.mesh.path) if models.mesh else None)
            # closed before Ray shuts down: an open Ray Data iterator, collected later,
            # printed "Ray is not initialized" tracebacks after every run
            with closing(run(ray, job, todo, self.options, stats)) as results:
                yield from results


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to score its share; pickled into each actor once."""

    location: Location  # the photo folder, opened again on each worker
    options: Options
    contract: Contract
    device: str
    threads: int
    classifier: ShippedModel
    detector: ShippedModel
    mesh: ShippedModel | None = None  # the face mesh, when geometry is measured


# --- the Ray side: session, shipping, actors, plan ---

def import_ray() -> Any:
    """The ``ray`` module with Ray Data loaded, or EngineError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 (loads the submodule)
    except ImportError as e:
        raise EngineError(INSTALL_HINT) from e
    return ray


@contextmanager
def ray_session(ray_options: RayOptions) -> Iterator[Any]:
    """Join the cluster or start a local Ray for the run (and stop only what it started)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = ray_options.address or os.environ.get("RAY_ADDRESS")
    # Ray's own warnings are about Ray's setup (token authentication, the progress bars the
    # job turns off), not the user's photos: a run shows only Ray's errors. import_ray loaded
    # ray.data, which configures its own loggers on import: set them now.
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    quiet = {"logging_level": logging.ERROR, "log_to_driver": not ray_options.quiet}
    if address:
        check_reachable(address)  # its EngineError says it all: not wrapped again below
    # a local Ray's agents outlive a killed driver by a minute or more: a watcher stops them
    local = address in (None, "", "local")
    watcher = reaper.start(os.path.dirname(ray.__file__)) if local else None
    clean = False
    try:
        with _started(ray, address, ray_options.num_cpus, quiet):
            yield ray
        clean = True
    finally:
        if watcher is not None:
            watcher.stop(clean)  # after an exception, it kills what shutdown left running


@contextmanager
def _started(ray: Any, address: str | None, num_cpus: int | None,
             quiet: Mapping[str, Any]) -> Iterator[None]:
    """``ray.init`` (joining ``address`` or starting a local Ray) until ``ray.shutdown``."""
    terminate = signal.getsignal(signal.SIGTERM)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"join the Ray cluster at {address}" if address else "start a local Ray"
        raise EngineError(f"cannot {where}: {e}") from e
    if terminate is not None and threading.current_thread() is threading.main_thread():
        # ray.init sets a SIGTERM handler that exits 15 mid-write; the CLI's exits 143
        # after the temporary files are gone
        signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        ray.shutdown()


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a cluster address nothing answers at: ``ray.init`` would retry for minutes.

    ``auto`` and ``local`` are Ray's own lookups and are left to it.
    """
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"Ray address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise EngineError(f"cannot join the Ray cluster at {address}: nothing answers there "
                          f"({e.strerror or e})") from e


def ship(ray: Any, path: Path) -> ShippedModel:
    """Put a model file's bytes in the object store once; every worker fetches them from there."""
    data = path.read_bytes()
    return ShippedModel(ray.put(data), path.name, hashlib.sha256(data).hexdigest())


def to_records(work: list[list[Photo]]) -> list[dict[str, Any]]:
    """Units of work as rows for ``ray.data.from_items``: what ``find`` needs of each photo,
    and the place of the unit's first photo in the run's order (``in_order``).

    Paths travel as bytes: a non-UTF-8 file name is not a string Arrow can hold.
    """
    records: list[dict[str, Any]] = []
    first = 0
    for unit in work:
        records.append({"first": first, "paths": [os.fsencode(p.path) for p in unit],
                        "statuses": [p.status for p in unit]})
        first += len(unit)
    return records


def from_records(batch: pa.Table) -> tuple[list[int], list[Photo]]:
    """The places in the run's order and the Photo records of a batch of rows made by
    ``to_records`` (company and ids are the driver's business)."""
    # a plain dict for ids: the shared empty default (a mappingproxy) cannot be pickled,
    # and these Photos travel inside PhotoFaces to the classifier actors
    rows = batch.to_pylist()
    return ([row["first"] + i for row in rows for i in range(len(row["paths"]))],
            [Photo(os.fsdecode(path), "", {}, status) for row in rows
             for path, status in zip(row["paths"], row["statuses"], strict=True)])


class FindFaces:
    """Ray Data actor: units of work -> decoded, detected and cropped photos, and scored
    videos (pickled)."""

    def __init__(self, job: Job, device: str = "cpu",
                 classify: ClassifyFaces | None = None) -> None:
        self.job = job
        self.detector = FaceDetector(job.detector.local_file(), device=device,
                                     threads=job.threads)
        self.classify = classify  # for videos; made on the CPU at the first one without it

    def find(self, batch: pa.Table) -> tuple[list[int], list[PhotoFaces | VideoResult]]:
        """Read each photo (or video) through the job's location and find its faces; their
        places in the run's order."""
        places, photos = from_records(batch)
        return places, [find(photo, self.job.location, self.detector, self.job.contract,
                             self.job.options, self._video_models) for photo in photos]

    def _video_models(self) -> tuple[Classifier, FaceMesh | None]:
        if self.classify is None:
            self.classify = ClassifyFaces(self.job, "cpu")
        return self.classify.classifier, self.classify.mesh

    def __call__(self, batch: pa.Table) -> pa.Table:
        # Pickle keeps each PhotoFaces whole (boxes, uint8 crops) for the classifier actors.
        places, items = self.find(batch)
        return pa.table({"place": pa.array(places, pa.int64()),
                         "item": pa.array([pickle.dumps(item) for item in items], pa.binary())})


class ClassifyFaces:
    """Ray Data actor: found faces -> one result per photo, classified in batches."""

    def __init__(self, job: Job, device: str | None = None) -> None:
        self.job = job
        device = device or job.device
        self.classifier = Classifier(job.classifier.local_file(), device, job.threads)
        self.mesh = None if job.mesh is None else FaceMesh(
            job.mesh.local_file(), device, job.threads)

    def results(self, places: list[int], items: list[PhotoFaces | VideoResult]) -> pa.Table:
        """The photos' and videos' results (pickled), made as the local engine makes them,
        beside their places in the run's order."""
        results = finish_chunk(items, self.classifier, self.job.options.batch_size, self.mesh)
        return pa.table({"place": pa.array(places, pa.int64()),
                         "result": pa.array([pickle.dumps(r) for r in results], pa.binary())})

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.results(batch.column("place").to_pylist(),
                            [pickle.loads(item) for item in batch.column("item").to_pylist()])


class ScorePhotos:
    """Ray Data actor for CPU clusters: finds and classifies in one process, no crops shipped."""

    def __init__(self, job: Job) -> None:
        self.classify = ClassifyFaces(job)
        self.find = FindFaces(job, job.device, self.classify)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.classify.results(*self.find.find(batch))


def run(ray: Any, job: Job, photos: list[Photo], options: RayOptions,
        stats: RunStats) -> Generator[PhotoResult | VideoResult, None, None]:
    """Score the units of work on Ray; their results one by one, in the photos' order.

    Ray Data hands each result over as soon as it is done, not in order (``preserve_order``
    held a video finished behind a long one back, unsaved, until the long one was done: a
    kill -9 lost both); ``in_order`` restores the order. Progress is the job's, not Ray's
    own bars.
    """
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    context.execution_options.preserve_order, context.enable_progress_bars = False, False
    try:
        dataset, stats.workers = plan(ray, job, photos, options)
        yield from in_order(arrivals(dataset), photos, stats)
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved


def arrivals(dataset: Any) -> Iterator[tuple[int, bytes]]:
    """The dataset's results as Ray hands them over: each photo's place in the run's order
    and its result, pickled."""
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        yield from zip(batch.column("place").to_pylist(), batch.column("result").to_pylist(),
                       strict=True)


def in_order(arrived: Iterable[tuple[int, bytes]], photos: list[Photo],
             stats: RunStats) -> Iterator[PhotoResult | VideoResult]:
    """Results that arrive in any order (``arrivals``), in the order of ``photos``.

    Only a result that came before its turn waits, pickled, so the driver holds no more
    than what Ray finished ahead of the oldest unit still being scored. A video that arrives
    ahead of its turn is handed to ``stats.early`` at once (the job saves it then, as it does
    for the local engine); every video's frames are counted as it arrives. Should Ray end the
    stream with a result missing, the run stops with an ``EngineError`` rather than write
    tables that silently lack a photo.
    """
    ahead: dict[int, bytes] = {}
    turn = 0
    for place, item in arrived:
        if storage.is_video(photos[place].path):
            video = pickle.loads(item)
            if isinstance(video, VideoResult):
                stats.sample(len(video.frames))
                if place != turn and stats.early is not None:
                    stats.early(photos[place], video)
        ahead[place] = item
        while turn in ahead:
            yield pickle.loads(ahead.pop(turn))
            turn += 1
    if turn < len(photos):
        raise EngineError(f"Ray returned no result for {photos[turn].path} ({len(photos) - turn}"
                          f" of {len(photos)} files unanswered); rerun the same command to "
                          "score them")


def plan(ray: Any, job: Job, photos: list[Photo], options: RayOptions) -> tuple[Any, int]:
    """The Ray Data pipeline and its number of actors: fused CPU actors, or CPU finders
    feeding GPU classifiers. Each unit of work (``engine.units``) is a batch of its own."""
    resources = ray.cluster_resources()
    cpus, gpus = max(1, int(resources.get("CPU", 1))), resources.get("GPU", 0)
    if job.device == "cuda" and not gpus:
        raise DeviceError("--device cuda: the Ray cluster has no GPUs")
    split = options.split if options.split is not None else (job.device != "cpu" and gpus > 0)
    classifiers = max(1, math.floor(gpus / options.gpu_share)) if split and gpus else 1
    actors = max(1, cpus - classifiers) if split else cpus
    # units smaller than a chunk where there are few photos, so every actor has some
    size = min(job.options.chunk_size, math.ceil(len(photos) / (BLOCKS_PER_ACTOR * actors)))
    work = list(units(photos, max(1, size)))
    dataset = ray.data.from_items(to_records(work), override_num_blocks=len(work))
    step = {"batch_size": 1, "batch_format": "pyarrow", "fn_constructor_args": (job,),
            "num_cpus": 1}
    pool = ray.data.ActorPoolStrategy
    if not split:
        return dataset.map_batches(ScorePhotos, compute=pool(size=actors), **step), actors
    log.info("Ray plan: %d CPU actors find faces, %d actors classify (%s GPU each)",
             actors, classifiers, options.gpu_share if gpus else 0)
    found = dataset.map_batches(FindFaces, compute=pool(size=actors), **step)
    classified = found.map_batches(ClassifyFaces, compute=pool(size=classifiers),
                                   num_gpus=options.gpu_share if gpus else 0,
                                   **step | {"batch_size": job.options.chunk_size})
    return classified, actors + classifiers
