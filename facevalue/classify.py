"""Run the emotion classifier: one onnxruntime session per run, fed face crops in batches.

Everything the scorer needs to know about a model (labels, input size, colour mode,
normalisation) comes from the contract in its ONNX metadata; a model without one is refused.
The model's sha256 is computed from the very bytes the session is built from, so the hash
written into every output table names exactly the model that produced it.
"""

from __future__ import annotations

import hashlib
import logging
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from facevalue.contract import LABELS, Contract, ContractError, from_metadata
from facevalue.defaults import DEFAULT_BATCH_SIZE

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")
# The first of these found in the shipped models folder is the default classifier:
# fvnet-int8 (fvnet quantised to int8, three times as fast with the same accuracy) corrected
# for real photos (models/fvnet-photo.md, train/adapt.py).
DEFAULT_MODELS = ("fvnet-photo.onnx", "fvnet-int8.onnx", "fvnet.onnx", "fvc2017.onnx",
                  "fvnet64.onnx")
SUMS_FILE = "SHA256SUMS"
# 64 runs as fast as 256 with fvnet and holds half the onnxruntime buffers (bench/README.md).
# onnxruntime's errors share no base class beyond Exception; these are the load failures.
ORT_ERRORS = tuple(getattr(ort_state, name) for name in (
    "Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph",
    "RuntimeException", "NotImplemented", "EPFail") if hasattr(ort_state, name))


class ModelError(ValueError):
    """A model file that is missing, corrupt, modified, or lacks the facevalue contract."""


class DeviceError(RuntimeError):
    """The requested device cannot run the model."""


def resolve_providers(device: str, available: list[str] | None = None) -> list[str]:
    """onnxruntime providers for ``--device auto|cpu|cuda``, best first.

    ``cuda`` raises DeviceError when onnxruntime offers no CUDA provider (the plain
    ``onnxruntime`` wheel never does); ``auto`` takes CUDA when offered, with CPU behind it.
    """
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    available = ort.get_available_providers() if available is None else available
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise DeviceError(f"--device cuda: onnxruntime offers no CUDA provider (it offers "
                          f"{', '.join(available)}); `pip install onnxruntime-gpu`, which "
                          "replaces `onnxruntime`, on a machine with CUDA and cuDNN")
    return [CPU]


def check_providers(used: list[str], device: str) -> None:
    """Check the providers a session really got; onnxruntime may drop CUDA without failing."""
    if device == "cuda" and CUDA not in used:
        raise DeviceError("--device cuda: onnxruntime could not start CUDA (missing CUDA or "
                          f"cuDNN libraries?) and would run on {', '.join(used)}")
    if device == "auto":
        log.info("device auto: running on %s", "CUDA" if CUDA in used else "CPU")


def models_folders() -> list[Path]:
    """Where shipped models live: inside the installed package, then the source checkout."""
    return [Path(str(resources.files("facevalue") / "models")),
            Path(__file__).resolve().parents[1] / "models"]


def shipped_file(name: str) -> Path:
    """A shipped model file by name: the first of ``models_folders`` that holds it."""
    folders = models_folders()
    return next((f / name for f in folders if (f / name).is_file()), folders[-1] / name)


def open_model(path: Path, providers: list[str], threads: int | None,
               error: type[Exception], what: str) -> tuple[ort.InferenceSession, bytes]:
    """Read a model file and open a session on it; ``error`` says what failed, for ``what``."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise error(f"cannot read the {what} {path}: {e}") from e
    try:
        return new_session(data, providers, threads), data
    except Exception as e:  # onnxruntime raises several private exception types
        raise error(f"{path} is not a usable ONNX model: {e}") from e


def default_model() -> Path:
    """The shipped default classifier, its sha256 checked against ``models/SHA256SUMS``."""
    for folder in models_folders():
        for name in DEFAULT_MODELS:
            if (folder / name).is_file():
                return folder / name
    raise ModelError(f"no shipped model ({' or '.join(DEFAULT_MODELS)}) in "
                     f"{' or '.join(map(str, models_folders()))}; pass --model PATH")


def shipped_models() -> dict[str, Path]:
    """The shipped classifiers by name (``fvc2017``: ``.../models/fvc2017.onnx``)."""
    found: dict[str, Path] = {}
    for folder in reversed(models_folders()):  # the installed package wins over a checkout
        for name in DEFAULT_MODELS:
            if (folder / name).is_file():
                found[name.removesuffix(".onnx")] = folder / name
    return found


def verify_checksum(path: Path, digest: str) -> None:
    """Raise ModelError unless ``SHA256SUMS`` beside ``path`` lists it with ``digest``."""
    sums = path.parent / SUMS_FILE
    try:
        lines = sums.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ModelError(f"{sums}: cannot read the model checksums ({e})") from e
    # sha256sum's format: "<hex>  <name>", or "<hex> *<name>" for binary mode.
    listed = {name.strip().lstrip("*"): hexdigest for hexdigest, _, name in
              (line.strip().partition(" ") for line in lines) if name}
    expected = listed.get(path.name)
    if expected is None:
        raise ModelError(f"{path.name} is not listed in {sums}; add its sha256")
    if expected.lower() != digest:
        raise ModelError(f"{path}: sha256 {digest} does not match {expected} in {sums}; "
                         "the file is corrupt or was replaced, reinstall facevalue")


class Classifier:
    """An ONNX emotion classifier with its contract, its sha256 and one session.

    Picklable (for process pools and Ray): the session is rebuilt from the file on unpickling,
    and the file must still have the same sha256.
    """

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 checksum: bool = False) -> None:
        self.path = Path(path)
        self.device = device
        self.threads = threads
        self.checksum = checksum
        self._load()

    def _load(self) -> None:
        data = _read_model(self.path)
        self.sha256 = hashlib.sha256(data).hexdigest()
        if self.checksum:
            verify_checksum(self.path, self.sha256)
        self.session = _session(data, self.path, self.device, self.threads)
        self.providers: list[str] = self.session.get_providers()
        check_providers(self.providers, self.device)
        self.contract = _contract(self.session, self.path)
        self.input_name, self.output_name = _check_io(self.session, self.contract, self.path)
        self._probe()

    def _probe(self) -> None:
        """Refuse a model whose outputs are not probabilities, before it scores a photo.

        A model exported without its softmax (logits) or broken into NaNs would otherwise
        fill the tables with numbers that look like scores. Crops of a mid-grey ramp and
        noise stand in for faces: any model honouring the contract gives rows of finite
        values in [0, 1] summing to 1.
        """
        height, width = self.contract.input_size
        channels = 1 if self.contract.color_mode == "grayscale" else 3
        rng = np.random.default_rng(0)
        crops = rng.integers(0, 256, (PROBE_FACES, height, width, channels), dtype=np.uint8)
        crops[0] = 128
        try:
            probs = self.predict(crops)
        except (*ORT_ERRORS, ValueError) as e:
            raise ModelError(f"{self.path}: fails on a probe batch ({_short(e)})") from e
        if not (np.isfinite(probs).all() and (probs >= -PROBE_TOLERANCE).all()
                and (probs <= 1 + PROBE_TOLERANCE).all()
                and np.allclose(probs.sum(axis=1), 1, atol=PROBE_TOLERANCE)):
            raise ModelError(f"{self.path}: its outputs are not probabilities (finite, 0-1, "
                             f"summing to 1; a probe row gave {np.round(probs[0], 3).tolist()});"
                             " export it with the softmax in the graph")

    @property
    def name(self) -> str:
        """The model's file name, as written into output metadata."""
        return self.path.name

    def predict(self, faces: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Probabilities float32 (n, 7) for uint8 crops (n, h, w, c) in the contract's format."""
        if len(faces) == 0:
            return np.zeros((0, len(LABELS)), np.float32)
        inputs = to_input(faces, self.contract)
        run = self.session.run
        parts = [run([self.output_name], {self.input_name: inputs[i:i + batch_size]})[0]
                 for i in range(0, len(inputs), batch_size)]
        probs = np.concatenate(parts).astype(np.float32, copy=False)
        if probs.shape != (len(faces), len(LABELS)):
            raise ModelError(f"{self.path}: output shape {probs.shape}, expected "
                             f"({len(faces)}, {len(LABELS)})")
        return probs

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "device": self.device, "threads": self.threads,
                "checksum": self.checksum, "sha256": self.sha256}

    def __setstate__(self, state: dict[str, Any]) -> None:
        pickled = state.pop("sha256")
        self.__dict__.update(state)
        self._load()
        if self.sha256 != pickled:
            raise ModelError(f"{self.path} changed since the classifier was pickled")


def model_card(classifier: Classifier) -> dict[str, str]:
    """What ``facevalue info`` shows about a model: file, hash, providers and its contract."""
    contract = classifier.contract
    height, width = contract.input_size
    card = {
        "model": str(classifier.path),
        "sha256": classifier.sha256,
        "session providers": ", ".join(classifier.providers),
        "labels": ", ".join(contract.labels),
        "input": f"{height}x{width} {contract.color_mode} {contract.layout}, "
                 f"x * {contract.scale:.6g} + {contract.offset:g}",
    }
    card.update(sorted(contract.extra.items()))
    return card


def load_classifier(model: str | Path | None = None, device: str = "auto",
                    threads: int | None = None) -> Classifier:
    """The classifier at ``model`` (a file, or a shipped model's name such as ``fvc2017``).

    Shipped models, and the default when ``model`` is None, have their checksums verified.
    """
    if model is None:
        return Classifier(default_model(), device, threads, checksum=True)
    if not Path(model).exists():
        shipped = shipped_models()
        name = str(model).removesuffix(".onnx")
        if name not in shipped:
            raise ModelError(f"{model}: no such file, and not a shipped model "
                             f"({', '.join(shipped) or 'none installed'})")
        return Classifier(shipped[name], device, threads, checksum=True)
    return Classifier(model, device, threads)


def to_input(faces: np.ndarray, contract: Contract) -> np.ndarray:
    """uint8 crops (n, h, w, c) -> the float32 tensor the contract describes."""
    height, width = contract.input_size
    channels = 1 if contract.color_mode == "grayscale" else 3
    if faces.ndim != 4 or faces.shape[1:] != (height, width, channels):
        raise ValueError(f"crops of shape {faces.shape[1:]} do not match the model's input "
                         f"({height}, {width}, {channels})")
    inputs = faces.astype(np.float32) * np.float32(contract.scale) + np.float32(contract.offset)
    return inputs.transpose(0, 3, 1, 2) if contract.layout == "NCHW" else inputs


# The probe batch every classifier must turn into probabilities when it is loaded.
PROBE_FACES = 4
PROBE_TOLERANCE = 1e-3


def _read_model(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read the model ({e.strerror or e})") from e


def new_session(data: bytes, providers: list[str],
                threads: int | None = None) -> ort.InferenceSession:
    """The one place facevalue makes onnxruntime sessions (classifier, detector, face mesh).

    ``threads`` caps intra-op threads (one inter-op thread: the graphs are sequential).
    Raises onnxruntime's own errors; each caller words them for its model.
    """
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=providers)


def _session(data: bytes, path: Path, device: str,
             threads: int | None) -> ort.InferenceSession:
    providers = resolve_providers(device)
    try:
        return new_session(data, providers, threads)
    except UnicodeDecodeError as e:  # onnxruntime failed to decode its own error message
        raise ModelError(f"{path}: not a usable ONNX model (a damaged file?)") from e
    except ORT_ERRORS as e:
        if device == "auto" and providers != [CPU]:
            log.info("device auto: CUDA session failed (%s); trying CPU", _short(e))
            return _session(data, path, "cpu", threads)
        raise ModelError(f"{path}: not a usable ONNX model ({_short(e)})") from e


def _contract(session: ort.InferenceSession, path: Path) -> Contract:
    try:
        return from_metadata(session.get_modelmeta().custom_metadata_map, str(path))
    except ContractError as e:
        raise ModelError(str(e)) from e
    except UnicodeDecodeError as e:  # a damaged file whose metadata is no longer text
        raise ModelError(f"{path}: its metadata cannot be read (a damaged file?)") from e


def _check_io(session: ort.InferenceSession, contract: Contract, path: Path) -> tuple[str, str]:
    """Names of the image input and probability output, after checking the input's rank."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ModelError(f"{path}: expected one 4-d image input, found "
                         f"{[(i.name, i.shape) for i in inputs]}")
    names = [o.name for o in outputs]
    return inputs[0].name, contract.output if contract.output in names else names[0]


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:300] if str(error) else type(error).__name__
