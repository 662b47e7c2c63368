"""Run the emotion classifier: one onnxruntime session per run, fed face crops in batches.

Everything the scorer needs to know about a model (labels, input size, colour mode,
normalisation) comes from the contract in its ONNX metadata; a model without one is refused.
The model's sha256 is computed from the very bytes the session is built from, so the hash
written into every output table names exactly the model that produced it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort

from facevalue.contract import LABELS, Contract, ContractError, from_metadata
from facevalue.defaults import DEFAULT_BATCH_SIZE
from facevalue.errors import FacevalueError
from facevalue.runtime import ORT_ERRORS, ModelSession, short

# The first of these found in the shipped models folder is the default classifier: fvlite, a
# small network distilled from fvnet64 on FER2013 and real press photos together
# (models/fvlite.md). Float, not int8: int8 kernels give other numbers on CPUs without VNNI
# (tests/test_models_reproducible). The older models stay so results made with them can be
# re-run. fvlite-photo comes last: fitted on faces-dev, it is never the default by fallback.
DEFAULT_MODELS = ("fvlite.onnx", "fvnet-photo-fp32.onnx", "fvnet.onnx", "fvc2017.onnx",
                  "fvnet64.onnx", "fvlite-photo.onnx")
SUMS_FILE = "SHA256SUMS"


class ModelError(FacevalueError, ValueError):
    """A model file that is missing, corrupt, modified, or lacks the facevalue contract."""


def models_folders() -> list[Path]:
    """Where shipped models live: inside the installed package, then the source checkout."""
    return [Path(str(resources.files("facevalue") / "models")),
            Path(__file__).resolve().parents[1] / "models"]


def shipped_file(name: str) -> Path:
    """A shipped model file by name: the first of ``models_folders`` that holds it."""
    folders = models_folders()
    return next((f / name for f in folders if (f / name).is_file()), folders[-1] / name)


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

    Picklable (for process pools and Ray): its ``ModelSession`` is opened again from the
    file on unpickling, and the file must still have the same sha256.
    """

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 checksum: bool = False) -> None:
        self.path = Path(path)
        self.device = device
        self.threads = threads
        self.checksum = checksum
        self.model = ModelSession(self.path, device, threads, ModelError, "model",
                                  verify_checksum if checksum else None)
        self.contract = _contract(self.session, self.path)
        self.input_name, self.output_name = _check_io(self.session, self.contract, self.path)
        # a model exported with a batch dimension fixed at 1 runs one face at a time
        self.most_faces = 1 if self.session.get_inputs()[0].shape[0] == 1 else None
        self._probe()

    @property
    def session(self) -> ort.InferenceSession:
        """The onnxruntime session (``run`` it on ``to_input``'s tensors)."""
        return self.model.session

    @property
    def sha256(self) -> str:
        """The sha256 of the model file the session was made from."""
        return self.model.sha256

    @property
    def providers(self) -> list[str]:
        """The providers the session really runs on."""
        return self.model.providers

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
            raise ModelError(f"{self.path}: fails on a probe batch ({short(e)})") from e
        if not (np.isfinite(probs).all() and (probs >= -PROBE_TOLERANCE).all()
                and (probs <= 1 + PROBE_TOLERANCE).all()
                and np.allclose(probs.sum(axis=1), 1, atol=PROBE_TOLERANCE)):
            raise ModelError(f"{self.path}: its outputs are not probabilities (finite, 0-1, "
                             f"summing to 1; a probe row gave {np.round(probs[0], 3).tolist()});"
                             " export it with the softmax in the graph")

    @property
    def name(self) -> str:
        """The model's file name, as written into output metadata; a model exported ad hoc
        (outside models/, ``train.modelfile.write_model``) says so, even under a shipped
        model's file name."""
        ad_hoc = self.contract.extra.get("facevalue.ad_hoc") == "true"
        return f"{self.path.name} (ad hoc export)" if ad_hoc else self.path.name

    def predict(self, faces: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Probabilities float32 (n, 7) for uint8 crops (n, h, w, c) in the contract's format."""
        if len(faces) == 0:
            return np.zeros((0, len(LABELS)), np.float32)
        inputs = to_input(faces, self.contract)
        run = self.session.run
        batch_size = min(batch_size, self.most_faces or batch_size)
        parts = [run([self.output_name], {self.input_name: inputs[i:i + batch_size]})[0]
                 for i in range(0, len(inputs), batch_size)]
        probs = np.concatenate(parts).astype(np.float32, copy=False)
        if probs.shape != (len(faces), len(LABELS)):
            raise ModelError(f"{self.path}: output shape {probs.shape}, expected "
                             f"({len(faces)}, {len(LABELS)})")
        return probs


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
    batch = inputs[0].shape[0]
    if isinstance(batch, int) and batch > 1:  # a photo may have any number of faces
        raise ModelError(f"{path}: its batch dimension is fixed at {batch}; export it with a "
                         "dynamic batch dimension (or 1, to classify one face at a time)")
    names = [o.name for o in outputs]
    return inputs[0].name, contract.output if contract.output in names else names[0]

