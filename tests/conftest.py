"""Shared fixtures: a tiny ONNX classifier with the real model's contract, and photo helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facevalue.contract import LABELS, Contract

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = ROOT / "sample_data"


def tiny_contract(**extra: str) -> Contract:
    """The shipped models' contract (48x48 grayscale, NHWC, pixels / 255, probabilities)."""
    meta = {"facevalue.architecture": "tiny-test", "facevalue.version": "test", **extra}
    return Contract(LABELS, (48, 48), "grayscale", "NHWC", 1 / 255, 0.0, "probabilities", meta)


def build_tiny_model(path: Path, seed: int = 0, metadata: dict[str, str] | None = None) -> Path:
    """Write a linear-softmax ONNX model: input ``image`` (N,48,48,1), output ``probabilities``.

    Its weights are random but fixed by ``seed``, so scores differ between faces and a test can
    tell crops apart; it takes milliseconds to build and run.
    """
    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.normal(0, 0.05, (48 * 48, 7)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(0, 0.1, 7).astype(np.float32), "b")
    shape = numpy_helper.from_array(np.array([-1, 48 * 48], np.int64), "flat_shape")
    nodes = [
        helper.make_node("Reshape", ["image", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 48, 48, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 7])],
        initializer=[weights, bias, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = tiny_contract().to_metadata() if metadata is None else metadata
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to the tiny contract-carrying ONNX classifier."""
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")
