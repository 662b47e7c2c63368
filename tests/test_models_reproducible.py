"""Every shipped model gives the same numbers on every CPU.

onnxruntime's optimised session picks fused kernels for the CPU it runs on; int8 ones
saturate on CPUs without VNNI, so a quantised model can give another emotion for one face in
ten there. The graph evaluated op by op (``ORT_DISABLE_ALL``) is what the model file says,
on any CPU: each shipped model must match it to 1e-4, with the same top emotion for every
face, on whatever CPU runs this test (CI's included).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from conftest import ROOT, SAMPLE_DATA, tiny_contract

from facevalue.classify import to_input
from facevalue.contract import ContractError, from_metadata
from facevalue.detect import FaceDetector
from facevalue.discover import discover
from facevalue.faces import find_faces
from facevalue.runtime import new_session

SHIPPED = sorted((ROOT / "models").glob("*.onnx"))
TOLERANCE = 1e-4
FACES = 512


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """512 uint8 (48, 48, 1) faces: the sample portraits' crops, each turned, zoomed, shifted,
    flipped, lit and noised at random (seeded), so real face statistics reach every layer."""
    photos = SAMPLE_DATA / "photos"
    detector, contract = FaceDetector(), tiny_contract()
    crops = []
    for photo in discover(photos):
        found = find_faces(photo, photos, detector, contract).crops
        crops += [] if found is None else list(found[..., 0])
    assert len(crops) >= 2
    rng = np.random.default_rng(19)
    out = np.empty((FACES, 48, 48, 1), np.uint8)
    for i in range(FACES):
        face = crops[i % len(crops)]
        turn = cv2.getRotationMatrix2D((23.5 + rng.uniform(-3, 3), 23.5 + rng.uniform(-3, 3)),
                                       rng.uniform(-15, 15), rng.uniform(0.85, 1.15))
        face = cv2.warpAffine(face, turn, (48, 48), borderMode=cv2.BORDER_REFLECT)
        face = face[:, ::-1] if rng.random() < 0.5 else face
        lit = face * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30) + rng.normal(0, 4, face.shape)
        out[i, ..., 0] = np.clip(lit, 0, 255).astype(np.uint8)
    return out


def feed(session: ort.InferenceSession, path: Path, faces: np.ndarray) -> list[dict]:
    """The model's inputs: the faces as its contract says for a classifier; for the detector
    and face mesh, 32 faces resized to their input, in [-1, 1], one batch or one at a time."""
    try:
        contract = from_metadata(session.get_modelmeta().custom_metadata_map, path.name)
    except ContractError:
        contract = None
    name = session.get_inputs()[0].name
    if contract is not None:
        x = to_input(faces, contract)
        return [{name: x[i:i + 128]} for i in range(0, len(x), 128)]
    batch, height, width, channels = session.get_inputs()[0].shape
    images = np.stack([cv2.cvtColor(cv2.resize(f, (width, height)), cv2.COLOR_GRAY2RGB)
                       for f in faces[:32]]).astype(np.float32) / 127.5 - 1.0
    step = batch if isinstance(batch, int) else len(images)
    return [{name: images[i:i + step]} for i in range(0, len(images), step)]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_optimised_session_matches_the_graph_op_by_op(path: Path, faces: np.ndarray) -> None:
    data = path.read_bytes()
    reference_options = ort.SessionOptions()
    reference_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference_options.intra_op_num_threads = 1
    reference = ort.InferenceSession(data, reference_options, providers=["CPUExecutionProvider"])
    session = new_session(data, ["CPUExecutionProvider"])  # as scoring opens it
    for inputs in feed(session, path, faces):
        got, want = session.run(None, inputs), reference.run(None, inputs)
        for g, w in zip(got, want, strict=True):  # probabilities: 1e-4 absolute
            difference = float(np.abs(g - w).max())
            assert difference <= TOLERANCE * max(1.0, float(np.abs(w).max())), difference
        if got[0].ndim == 2 and got[0].shape[1] == 7:  # a classifier: the same top emotion
            assert (got[0].argmax(1) == want[0].argmax(1)).all()


def test_every_shipped_model_is_checked() -> None:
    listed = {line.split()[1] for line in (ROOT / "models" / "SHA256SUMS").read_text()
              .splitlines() if line.strip()}
    assert listed == {p.name for p in SHIPPED}
