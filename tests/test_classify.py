"""The classifier: contract, checksums, batching and pickling (sessions: test_runtime.py)."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import build_tiny_model, tiny_contract

from facevalue import classify
from facevalue.classify import (
    Classifier,
    ModelError,
    default_model,
    load_classifier,
    model_card,
    to_input,
    verify_checksum,
)
from facevalue.contract import LABELS
from facevalue.runtime import CPU


def faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48, 1), dtype=np.uint8)


def test_predicts_probabilities(tiny_model: Path) -> None:
    model = Classifier(tiny_model, device="cpu")
    probs = model.predict(faces(5))
    assert probs.shape == (5, len(LABELS)) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert model.predict(faces(0)).shape == (0, 7)
    assert model.sha256 == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert model.name == "tiny.onnx" and model.providers == [CPU]


def test_batches_give_the_same_answer(tiny_model: Path) -> None:
    model = Classifier(tiny_model, device="cpu")
    crops = faces(10)
    assert np.allclose(model.predict(crops, batch_size=3), model.predict(crops, batch_size=64),
                       atol=1e-6)


def test_input_follows_the_contract() -> None:
    crops = np.full((2, 48, 48, 1), 255, np.uint8)
    nhwc = to_input(crops, tiny_contract())
    assert nhwc.shape == (2, 48, 48, 1) and nhwc.dtype == np.float32
    assert np.allclose(nhwc, 1.0)
    contract = tiny_contract()
    nchw = to_input(crops, type(contract)(**{**contract.__dict__, "layout": "NCHW",
                                             "scale": 2 / 255, "offset": -1.0}))
    assert nchw.shape == (2, 1, 48, 48) and np.allclose(nchw, 1.0)
    with pytest.raises(ValueError, match="do not match the model's input"):
        to_input(np.zeros((2, 64, 64, 1), np.uint8), contract)


def test_model_without_contract_is_refused(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "bare.onnx", metadata={"author": "someone"})
    with pytest.raises(ModelError, match="lacks the facevalue contract"):
        Classifier(path, device="cpu")


def test_corrupt_and_missing_models(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="not a usable ONNX model"):
        Classifier(tmp_path / "junk.onnx", device="cpu")
    (tmp_path / "cut.onnx").write_bytes(tiny_model.read_bytes()[:500])
    with pytest.raises(ModelError, match="cut.onnx"):
        Classifier(tmp_path / "cut.onnx", device="cpu")
    with pytest.raises(ModelError, match="cannot read the model"):
        Classifier(tmp_path / "absent.onnx", device="cpu")


def test_checksums(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "fvnet.onnx")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    sums = tmp_path / "SHA256SUMS"
    with pytest.raises(ModelError, match="cannot read the model checksums"):
        verify_checksum(path, digest)
    sums.write_text(f"{'0' * 64}  other.onnx\n")
    with pytest.raises(ModelError, match="not listed"):
        verify_checksum(path, digest)
    sums.write_text(f"{'0' * 64}  fvnet.onnx\n")
    with pytest.raises(ModelError, match="does not match"):
        verify_checksum(path, digest)
    sums.write_text(f"{digest.upper()} *fvnet.onnx\n")  # sha256sum's binary-mode format
    verify_checksum(path, digest)


def test_default_model_follows_default_models_and_checks_its_hash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed, checkout = tmp_path / "installed", tmp_path / "checkout"
    installed.mkdir()
    checkout.mkdir()
    monkeypatch.setattr(classify, "models_folders", lambda: [installed, checkout])
    with pytest.raises(ModelError, match="no shipped model"):
        default_model()
    older = build_tiny_model(checkout / "fvc2017.onnx", seed=1)
    assert default_model() == older
    newer = build_tiny_model(checkout / "fvnet.onnx", seed=2)
    assert default_model() == newer
    with pytest.raises(ModelError, match="SHA256SUMS"):
        load_classifier(device="cpu")
    digest = hashlib.sha256(newer.read_bytes()).hexdigest()
    (checkout / "SHA256SUMS").write_text(f"{digest}  fvnet.onnx\n")
    assert load_classifier(device="cpu").sha256 == digest
    fvnet = build_tiny_model(installed / "fvnet.onnx", seed=3)
    assert default_model() == fvnet
    build_tiny_model(installed / "fvlite-photo.onnx", seed=5)
    assert default_model() == fvnet  # fitted on faces-dev: never the default by fallback
    lite = build_tiny_model(installed / "fvlite.onnx", seed=4)
    assert default_model() == lite  # the first of DEFAULT_MODELS in the first folder


def test_shipped_models_load_by_name_with_their_checksums(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed, checkout = tmp_path / "installed", tmp_path / "checkout"
    for folder in (installed, checkout):
        folder.mkdir()
    monkeypatch.setattr(classify, "models_folders", lambda: [installed, checkout])
    old = build_tiny_model(checkout / "fvc2017.onnx", seed=1)
    ours = build_tiny_model(installed / "fvc2017.onnx", seed=2)
    build_tiny_model(checkout / "fvnet.onnx", seed=3)
    assert classify.shipped_models() == {"fvc2017": ours, "fvnet": checkout / "fvnet.onnx"}
    with pytest.raises(ModelError, match="cannot read the model checksums"):
        load_classifier("fvc2017", device="cpu")  # shipped models must match SHA256SUMS
    digest = hashlib.sha256(ours.read_bytes()).hexdigest()
    (installed / "SHA256SUMS").write_text(f"{digest}  fvc2017.onnx\n")
    for name in ("fvc2017", "fvc2017.onnx"):
        assert load_classifier(name, device="cpu").path == ours
    assert old.exists()
    with pytest.raises(ModelError, match=r"fvnet-8: no such file, and not a shipped model "
                                         r"\(fvnet, fvc2017\)"):
        load_classifier("fvnet-8", device="cpu")
    monkeypatch.chdir(tmp_path)
    assert load_classifier("checkout/fvnet.onnx", device="cpu").path.name == "fvnet.onnx"


def test_shipped_model_folders_cover_wheel_and_checkout() -> None:
    folders = classify.models_folders()
    assert folders[0].parts[-2:] == ("facevalue", "models")
    assert folders[1] == Path(classify.__file__).resolve().parents[1] / "models"


def test_classifier_pickles(tiny_model: Path, tmp_path: Path) -> None:
    model = Classifier(tiny_model, device="cpu", threads=1)
    copy = pickle.loads(pickle.dumps(model))
    crops = faces(3)
    assert np.array_equal(copy.predict(crops), model.predict(crops))
    assert copy.contract == model.contract and copy.threads == 1
    moved = build_tiny_model(tmp_path / "m.onnx", seed=3)
    state = pickle.dumps(Classifier(moved, device="cpu"))
    build_tiny_model(moved, seed=4)
    with pytest.raises(ModelError, match="changed"):
        pickle.loads(state)


def test_model_card(tiny_model: Path) -> None:
    card = model_card(Classifier(tiny_model, device="cpu"))
    assert card["labels"] == ", ".join(LABELS)
    assert card["input"].startswith("48x48 grayscale NHWC")
    assert card["facevalue.architecture"] == "tiny-test"
    assert card["sha256"] == hashlib.sha256(tiny_model.read_bytes()).hexdigest()


def test_shipped_checksums_cover_every_shipped_model() -> None:
    """models/SHA256SUMS lists every ONNX file in models/ with its true hash."""
    folder = Path(classify.__file__).resolve().parents[1] / "models"
    listed = {}
    for line in (folder / classify.SUMS_FILE).read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.lstrip("*")] = digest
    shipped = {p.name for p in folder.glob("*.onnx")}
    assert shipped <= set(listed), f"add {sorted(shipped - set(listed))} to SHA256SUMS"
    for name in shipped:
        verify_checksum(folder / name, hashlib.sha256((folder / name).read_bytes()).hexdigest())


def _rewired(tiny_model: Path, path: Path, last: str, extra: list | None = None) -> Path:
    """The tiny model with its final Softmax replaced by ``last`` (same contract)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(tiny_model)
    nodes = [n for n in model.graph.node if n.op_type != "Softmax"]
    inputs = ["logits", *(t.name for t in extra or [])]
    nodes.append(helper.make_node(last, inputs, ["probabilities"]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(numpy_helper.from_array(t.array, t.name) for t in extra or [])
    onnx.save(model, path)
    return path


class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array


def test_models_whose_outputs_are_not_probabilities_are_refused(tmp_path: Path,
                                                               tiny_model: Path) -> None:
    logits = _rewired(tiny_model, tmp_path / "logits.onnx", "Identity")
    with pytest.raises(ModelError, match="not probabilities"):
        Classifier(logits, device="cpu")
    nan = _rewired(tiny_model, tmp_path / "nan.onnx", "Mul",
                   [_Tensor("nan", np.array([np.nan], np.float32))])
    with pytest.raises(ModelError, match="not probabilities"):
        Classifier(nan, device="cpu")


def test_a_model_with_flipped_bytes_is_refused_with_a_message(tmp_path: Path,
                                                              tiny_model: Path) -> None:
    data = bytearray(tiny_model.read_bytes())
    refused = 0
    for offset in range(0, 64):
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        path = tmp_path / f"flip{offset}.onnx"
        path.write_bytes(bytes(damaged))
        try:
            Classifier(path, device="cpu")
        except ModelError as e:
            assert path.name in str(e)
            refused += 1
    # every damaged copy either still works (a byte of weights) or is refused as ModelError
    assert refused > 0


def _fixed_batch(tiny_model: Path, path: Path, batch: int) -> Path:
    """The tiny model with its batch dimension fixed at ``batch`` (as some exporters do)."""
    import onnx

    model = onnx.load(tiny_model)
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    onnx.save(model, path)
    return path


def test_a_fixed_batch_dimension_is_refused_at_load_or_run_face_by_face(
        tmp_path: Path, tiny_model: Path) -> None:
    with pytest.raises(ModelError, match="batch dimension is fixed at 4"):
        Classifier(_fixed_batch(tiny_model, tmp_path / "b4.onnx", 4), device="cpu")
    one = Classifier(_fixed_batch(tiny_model, tmp_path / "b1.onnx", 1), device="cpu")
    crops = faces(5)
    assert np.allclose(one.predict(crops), Classifier(tiny_model, device="cpu").predict(crops),
                       atol=1e-6)
