"""Score photos on Ray Data (``facevalue score --engine ray``): the same steps, on a cluster.

The driver discovers the photos, checks the models and ships their bytes through Ray's object
store, so a worker needs facevalue installed but neither the model files nor the driver's
disk. Workers run the very functions the local engine runs (``find_faces``,
``classify_chunk``) inside Ray Data actors that build their onnxruntime sessions once, and
the per-face rows stream back to the driver in discovery order, where the two tables are
built and written exactly as ``score_folder`` builds them. Photos and outputs may be local
paths or any URI pyarrow's filesystems understand (``s3://``, ``gs://``, ``file://``).

Two plans: on CPUs one actor per core decodes, detects, crops and classifies, so crops never
leave the process; with GPUs, CPU actors decode, detect and crop, and GPU actors classify the
crops of many photos in large batches. Ray is imported only here, and only when called.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from facevalue import aggregate, decode, discover, write
from facevalue.classify import (
    DEFAULT_BATCH_SIZE,
    Classifier,
    DeviceError,
    load_classifier,
    resolve_providers,
)
from facevalue.contract import Contract
from facevalue.detect import FaceDetector
from facevalue.discover import Photo
from facevalue.geometry import FaceMesh
from facevalue.pipeline import Options, PhotoFaces, Scores, classify_chunk, find_faces

log = logging.getLogger(__name__)

INSTALL_HINT = ("the Ray engine needs Ray: pip install '.[ray]' in a clone of the "
                "repository (or pip install 'ray[data]')")
# Blocks per actor at least, so a slow block (huge photos) does not leave the others idle.
BLOCKS_PER_ACTOR = 4


class EngineError(RuntimeError):
    """Ray is missing or unreachable, or the photo location cannot be listed."""


@dataclass(frozen=True)
class RayOptions:
    """Where the Ray job runs and how work is placed on it."""

    address: str | None = None  # a cluster to join (or $RAY_ADDRESS); None starts a local Ray
    num_cpus: int | None = None  # CPUs of a local Ray [default: all]
    split: bool | None = None  # classify on separate actors [default: when the cluster has GPUs]
    gpu_share: float = 1.0  # GPU per classifier actor; 0.25 packs four actors on one GPU
    quiet: bool = False  # silence Ray's own log lines and worker output (facevalue --quiet)

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


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to score its share; pickled into each actor once."""

    photos: str  # URI or absolute path of the photo folder, opened again on each worker
    ids: tuple[str, ...]
    options: Options
    contract: Contract
    device: str
    threads: int
    classifier: ShippedModel
    detector: ShippedModel
    mesh: ShippedModel | None = None  # the face mesh, when geometry is measured


def score_folder_ray(photos: str | Path, out: str | Path | None = None, *,
                     companies: str | Path | None = None, manifest: str | Path | None = None,
                     model: str | Path | None = None, device: str = "auto", faces: str = "main",
                     batch_size: int = DEFAULT_BATCH_SIZE,
                     max_pixels: int = decode.DEFAULT_MAX_PIXELS, threads: int | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     arguments: Mapping[str, Any] | None = None,
                     ray_options: RayOptions = RayOptions(), geometry: bool = False) -> Scores:
    """``score_folder`` on Ray Data: same arguments, same tables; paths may be URIs.

    ``threads`` is per actor (default 1: Ray runs one actor per core). Ray starts locally
    unless ``ray_options.address`` or ``$RAY_ADDRESS`` names a cluster; a Ray already
    initialised in this process is used as it is.
    """
    options = Options(faces, max_pixels, batch_size, geometry=geometry)
    if out is not None:
        write.check_outputs(out, companies or write.default_companies_path(out))
    root = location(photos)
    found = discover_photos(root, manifest)
    # The driver only checks the models and hashes them; it needs no GPU.
    classifier = load_classifier(model, "cpu", threads=1)
    detector = FaceDetector(threads=1)
    mesh = FaceMesh(threads=1) if geometry else None
    if arguments is None:
        arguments = {"photos": photos, "manifest": manifest, "model": model, "device": device,
                     "faces": faces, "batch_size": batch_size, "max_pixels": max_pixels,
                     "geometry": geometry, "engine": "ray", "ray_address": ray_options.address}
    meta = write.table_metadata(classifier.name, classifier.sha256, detector.name, arguments,
                                mesh.name if mesh else None)
    ids = discover.id_columns(found)
    schema = write.face_schema(ids, meta, geometry=geometry)
    with ray_session(ray_options) as ray:
        job = Job(root, tuple(ids), options, classifier.contract, device, threads or 1,
                  ship(ray, classifier.path), ship(ray, detector.path),
                  ship(ray, mesh.path) if mesh else None)
        table = run(ray, job, found, ray_options, schema, progress)
    face_frame = table.to_pandas()
    company_frame = aggregate.companies(face_frame, ids)
    write_outputs(table, company_frame, meta, out, companies)
    face_frame.attrs.update(meta)
    company_frame.attrs.update(meta)
    return Scores(face_frame, company_frame)


def write_outputs(faces: pa.Table, companies_frame: pd.DataFrame, meta: Mapping[str, str],
                  out: str | Path | None, companies: str | Path | None) -> None:
    """Write the per-face table to ``out`` and the per-company one to ``companies``.

    As locally: ``companies`` defaults to ``<stem>.companies.parquet`` beside ``out``, and
    ``companies`` alone writes only the per-company table.
    """
    if companies is None and out is not None:
        companies = write.default_companies_path(out)
    if out is not None:
        write_table(faces, str(out))
    if companies is not None:
        schema = write.company_schema(companies_frame.columns, meta)
        write_table(pa.Table.from_pandas(companies_frame[schema.names], schema,
                                         preserve_index=False), str(companies))


# --- where things are: local paths and pyarrow filesystem URIs ---

def location(path: str | Path) -> str:
    """A URI as given, a local path made absolute (workers open it again by this name)."""
    text = str(path)
    return text if "://" in text else os.path.abspath(text)


def open_location(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path within it (``s3://b/p`` -> S3, ``b/p``)."""
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, OSError) as e:
        raise EngineError(f"{uri}: not a location pyarrow can open ({e})") from e
    return fs, path.rstrip("/") or "/"


def list_photos(uri: str) -> list[str]:
    """Image files under ``uri`` as sorted posix paths relative to it, like ``find_photos``.

    Hidden files and anything in a hidden folder are skipped, as ``find_photos`` skips them.
    """
    fs, root = open_location(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except OSError as e:
        raise EngineError(f"{uri}: cannot list the photo folder ({e})") from e
    found = []
    for info in infos:
        relative = PurePosixPath(info.path).relative_to(root)
        hidden = any(part.startswith(".") for part in relative.parts)
        if (info.type == pafs.FileType.File and not hidden
                and relative.suffix.lower() in discover.SUFFIXES):
            found.append(relative.as_posix())
    return sorted(found)


def is_local(uri: str) -> bool:
    """Whether a location is this machine's file system (a path, or a file:// URI)."""
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    """The file-system path of a local location."""
    return uri.removeprefix("file://")


def discover_photos(uri: str, manifest: str | Path | None = None) -> list[Photo]:
    """``discover.discover`` for any location: the same Photo records.

    A local folder is listed by ``discover`` itself, so both engines agree on symlinks,
    loops, special files and odd names; a bucket (no links, no FIFOs) through pyarrow.
    """
    if is_local(uri):
        return discover.discover(local_path(uri), manifest)
    photos = discover.photos_from_paths(list_photos(uri), manifest, uri)
    if not photos:
        raise discover.NoPhotosError(f"{uri}: no photos found")
    return photos


def read_photo(fs: pafs.FileSystem, path: str) -> bytes:
    """A photo's bytes; unreadable and empty files raise DecodeError as ``decode.read_bytes``."""
    try:
        with fs.open_input_stream(path) as stream:
            data = stream.read()
    except OSError as e:
        # pyarrow's own text names the path; the errno's text matches the local engine's.
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise decode.DecodeError(decode.UNREADABLE, f"cannot read file: {reason}") from e
    if not data:
        raise decode.DecodeError(decode.EMPTY, "file is empty (0 bytes)")
    return data



def write_table(table: pa.Table, uri: str) -> None:
    """Write a Parquet file to a local path or URI under a temporary name, then move it.

    The move is a rename on a local disk and a copy on object stores; either way no
    half-written file ever carries the final name.
    """
    fs, path = open_location(location(uri))
    folder, name = path.rsplit("/", 1)
    temp = f"{folder}/.{name}.{uuid.uuid4().hex[:12]}.tmp"
    if isinstance(fs, pafs.LocalFileSystem):  # object stores have no folders to make
        fs.create_dir(folder or "/", recursive=True)
    try:
        pq.write_table(table, temp, filesystem=fs, compression="zstd")
        fs.move(temp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            fs.delete_file(temp)
        raise


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
    level = logging.ERROR if ray_options.quiet else logging.WARNING
    import ray.data  # configures its own loggers on import: set their level after that

    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(level)
    quiet = {"logging_level": level, "log_to_driver": not ray_options.quiet}
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=ray_options.num_cpus, include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"join the Ray cluster at {address}" if address else "start a local Ray"
        raise EngineError(f"cannot {where}: {e}") from e
    try:
        yield ray
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


def to_records(photos: list[Photo]) -> list[dict[str, Any]]:
    """Photo records as flat rows for ``ray.data.from_items`` (ids as columns).

    Paths travel as bytes: a non-UTF-8 file name is not a string Arrow can hold.
    """
    return [{"path": os.fsencode(p.path), "company": p.company, "status": p.status, **p.ids}
            for p in photos]


def from_records(batch: pa.Table, ids: tuple[str, ...]) -> list[Photo]:
    """The Photo records of a batch of rows made by ``to_records``."""
    return [Photo(os.fsdecode(row["path"]), row["company"], {k: row[k] for k in ids},
                  row["status"]) for row in batch.to_pylist()]


class FindFaces:
    """Ray Data actor: photo records -> decoded, detected and cropped photos (pickled)."""

    def __init__(self, job: Job, providers: list[str] | None = None) -> None:
        self.job = job
        self.fs, self.root = open_location(job.photos)
        self.detector = FaceDetector(job.detector.local_file(), providers=providers,
                                     threads=job.threads)

    def find(self, batch: pa.Table) -> list[PhotoFaces]:
        """Read each photo through the filesystem and run ``find_faces`` on its bytes."""
        return [self._find_one(photo) for photo in from_records(batch, self.job.ids)]

    def _find_one(self, photo: Photo) -> PhotoFaces:
        data = None
        if photo.status is None and is_local(self.job.photos):
            root = local_path(self.job.photos)
            return find_faces(photo, root, self.detector, self.job.contract, self.job.options)
        if photo.status is None:
            try:
                data = read_photo(self.fs, f"{self.root.rstrip('/')}/{photo.path}")
            except decode.DecodeError as e:
                return PhotoFaces(photo, e.status, str(e))
        return find_faces(photo, self.root, self.detector, self.job.contract,
                          self.job.options, data)

    def __call__(self, batch: pa.Table) -> pa.Table:
        # Pickle keeps each PhotoFaces whole (boxes, uint8 crops) for the classifier actors.
        return pa.table({"item": [pickle.dumps(item) for item in self.find(batch)]})


class ClassifyFaces:
    """Ray Data actor: found faces -> per-face rows, classified in batches by one session."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.schema = write.face_schema(job.ids, geometry=job.mesh is not None)
        self.classifier = Classifier(job.classifier.local_file(), job.device, job.threads)
        self.mesh = None if job.mesh is None else FaceMesh(
            job.mesh.local_file(), resolve_providers(job.device), job.threads)

    def rows(self, items: list[PhotoFaces]) -> pa.Table:
        """The per-face table of a batch of photos, built as the local engine builds it."""
        rows = classify_chunk(items, self.classifier, self.job.options.batch_size, self.mesh)
        return write.rows_to_table(rows, self.schema)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.rows([pickle.loads(item) for item in batch.column("item").to_pylist()])


class ScorePhotos:
    """Ray Data actor for CPU clusters: finds and classifies in one process, no crops shipped."""

    def __init__(self, job: Job) -> None:
        self.find = FindFaces(job, resolve_providers(job.device))
        self.classify = ClassifyFaces(job)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.classify.rows(self.find.find(batch))


def run(ray: Any, job: Job, photos: list[Photo], ray_options: RayOptions, schema: pa.Schema,
        progress: Callable[[int, int], None] | None) -> pa.Table:
    """Score the photos on Ray; return the per-face table in discovery order."""
    if not photos:
        return schema.empty_table()
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    # Discovery order, as locally; progress goes through ``progress``, not Ray's own bars.
    context.execution_options.preserve_order, context.enable_progress_bars = True, False
    try:
        tables, done = [], 0
        for batch in plan(ray, job, photos, ray_options).iter_batches(batch_format="pyarrow",
                                                                     batch_size=None):
            tables.append(batch.cast(schema))
            done += pc.count_distinct(batch.column("path")).as_py()
            if progress is not None:
                progress(done, len(photos))
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
    return pa.concat_tables(tables)


def plan(ray: Any, job: Job, photos: list[Photo], ray_options: RayOptions) -> Any:
    """The Ray Data pipeline: fused CPU actors, or CPU finders feeding GPU classifiers."""
    resources = ray.cluster_resources()
    cpus, gpus = max(1, int(resources.get("CPU", 1))), resources.get("GPU", 0)
    if job.device == "cuda" and not gpus:
        raise DeviceError("--device cuda: the Ray cluster has no GPUs")
    split = ray_options.split if ray_options.split is not None else (
        job.device != "cpu" and gpus > 0)
    classifiers = max(1, math.floor(gpus / ray_options.gpu_share)) if split and gpus else 1
    actors = max(1, cpus - classifiers) if split else cpus
    blocks = min(len(photos), max(math.ceil(len(photos) / job.options.chunk_size),
                                  BLOCKS_PER_ACTOR * actors))
    dataset = ray.data.from_items(to_records(photos), override_num_blocks=blocks)
    step = {"batch_size": job.options.chunk_size, "batch_format": "pyarrow",
            "fn_constructor_args": (job,), "num_cpus": 1}
    pool = ray.data.ActorPoolStrategy
    if not split:
        return dataset.map_batches(ScorePhotos, compute=pool(size=actors), **step)
    log.info("Ray plan: %d CPU actors find faces, %d actors classify (%s GPU each)",
             actors, classifiers, ray_options.gpu_share if gpus else 0)
    found = dataset.map_batches(FindFaces, compute=pool(size=actors), **step)
    return found.map_batches(ClassifyFaces, compute=pool(size=classifiers),
                             num_gpus=ray_options.gpu_share if gpus else 0, **step)
