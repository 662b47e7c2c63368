"""Quantise an exported classifier to int8: about three times faster on a CPU, same accuracy.

Static quantisation with onnxruntime's own tool (QDQ format, int8 weights per channel,
uint8 activations), calibrated on Training faces. The classifier is a third of the scoring
time, so this is the cheapest large speed-up of ``facevalue score``. The result is kept only
if it still says what the float model says: it is written when PublicTest accuracy drops by
at most ``MAX_ACCURACY_DROP`` and the top emotion agrees with the float model's on at least
``MIN_AGREEMENT`` of the faces. Needs onnxruntime, onnx and sympy (for onnxruntime's shape
inference), no TensorFlow.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from facevalue import fer2013
from facevalue.classify import Classifier, to_input
from facevalue.errors import FacevalueError
from facevalue.evaluate import Evaluation, score, to_crops
from train.card import Card
from train.modelfile import check_target, derived_metadata, write_model

MAX_ACCURACY_DROP = 0.005
MIN_AGREEMENT = 0.98
CALIBRATION_FACES = 1024
METHOD = ("int8 static (onnxruntime QDQ, per-channel int8 weights, uint8 activations, min-max; "
          "the logits layer, temperature and softmax stay float32)")


class QuantizeError(FacevalueError, RuntimeError):
    """Raised when a model cannot be quantised faithfully; nothing is written."""


@dataclass(frozen=True)
class Quantized:
    """What a quantisation measured and wrote."""

    path: Path
    source: Path
    float_eval: Evaluation  # the source model on PublicTest
    int8_eval: Evaluation  # the written model on PublicTest
    agreement: float  # share of faces whose top emotion is the same in both
    max_abs_diff: float  # largest probability difference on any face and emotion
    mean_abs_diff: float  # and on average
    faces_per_s: dict[str, float]  # one thread, 64 faces a batch: "float" and "int8"


def quantize(model: str | Path, out: str | Path, data: str | Path, seed: int = 0,
             max_drop: float = MAX_ACCURACY_DROP,
             min_agreement: float = MIN_AGREEMENT, force: bool = False) -> Quantized:
    """Write an int8 copy of ``model`` to ``out`` if it passes the checks; see the module doc.
    ``force`` replaces a shipped model (``train.modelfile.write_model``)."""
    check_target(out, force)
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    model, out = Path(model), Path(out)
    source = Classifier(model, "cpu", threads=1)
    contract = source.contract
    faces = fer2013.load(data)
    trained_on = contract.extra.get("facevalue.train_data_sha256")
    if trained_on != fer2013.fingerprint(faces):
        raise QuantizeError(f"{data} is not the data set {model.name} was trained on; "
                            "calibrate and check on that one")
    train, val = faces.split("Training"), faces.split("PublicTest")
    if len(train) == 0 or len(val) == 0:
        raise fer2013.DataError(f"{data}: needs both Training and PublicTest rows")
    pick = np.random.default_rng(seed).permutation(len(train))[:CALIBRATION_FACES]
    calibration = to_input(to_crops(train.images[pick], contract), contract)

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration[i:i + 64] for i in range(0, len(calibration), 64))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {source.input_name: batch}

    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(model), str(prepared))
        quantize_static(str(prepared), str(quantized), Batches(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=_head(prepared))
        proto = onnx.load(quantized)
        onnx.helper.set_model_props(proto, derived_metadata(contract))  # figures below
        candidate = Path(tmp) / out.name
        onnx.save(proto, candidate)
        int8 = Classifier(candidate, "cpu", threads=1)
        crops = to_crops(val.images, contract)
        float_probs, int8_probs = source.predict(crops, 64), int8.predict(crops, 64)
        speed = _faces_per_s({"float": source, "int8": int8}, crops[:2048])
    float_eval = score(float_probs, val.labels, model=str(model), split="PublicTest")
    int8_eval = score(int8_probs, val.labels, model=str(out), split="PublicTest")
    agreement = float((float_probs.argmax(1) == int8_probs.argmax(1)).mean())
    diff = np.abs(float_probs - int8_probs)
    if float_eval.accuracy - int8_eval.accuracy > max_drop or agreement < min_agreement:
        raise QuantizeError(
            f"int8 copy of {model.name}: PublicTest accuracy {int8_eval.accuracy:.4f} against "
            f"{float_eval.accuracy:.4f}, top emotion agrees on {agreement:.2%} of faces "
            f"(limits: a drop of {max_drop}, {min_agreement:.0%}); nothing written")
    meta = {**derived_metadata(contract),
            "facevalue.public_test_accuracy": f"{int8_eval.accuracy:.4f}",
            "facevalue.ece_after": f"{int8_eval.ece:.4f}",
            "facevalue.quantized": METHOD,
            "facevalue.quantized_from": f"{model.name}@{source.sha256}",
            "facevalue.float_public_test_accuracy": f"{float_eval.accuracy:.4f}",
            "facevalue.int8_top1_agreement": f"{agreement:.4f}",
            "facevalue.int8_max_abs_diff": f"{diff.max():.4f}",
            "facevalue.int8_mean_abs_diff": f"{diff.mean():.5f}"}
    onnx.helper.set_model_props(proto, meta)
    write_model(proto, out, force)
    return Quantized(out, model, float_eval, int8_eval, agreement, float(diff.max()),
                     float(diff.mean()), speed)


def _head(model: Path) -> list[str]:
    """The logits layer and what follows it (temperature, softmax): kept in float32.

    Quantising them would round the probabilities to steps of 1/255 and stop rows summing
    to 1; in float they cost nothing and keep the scores smooth.
    """
    nodes = onnx.load(model).graph.node
    last = max(i for i, node in enumerate(nodes) if node.op_type in ("Gemm", "MatMul"))
    return [node.name for node in nodes[last:]]


def _faces_per_s(classifiers: dict[str, Classifier], crops: np.ndarray,
                 rounds: int = 3) -> dict[str, float]:
    """Median faces/s of each classifier on one thread, rounds interleaved (same conditions)."""
    rates: dict[str, list[float]] = {name: [] for name in classifiers}
    for _ in range(rounds):
        for name, classifier in classifiers.items():
            started = time.perf_counter()
            classifier.predict(crops, 64)
            rates[name].append(len(crops) / (time.perf_counter() - started))
    return {name: float(np.median(r)) for name, r in rates.items()}


def int8_card(result: Quantized) -> Card:
    """The int8 copy's card: how it was made and how it compares with its float source."""
    source = result.source
    f, q = result.float_eval, result.int8_eval
    speed = result.faces_per_s
    return Card(
        f"{source.stem}, quantised to int8",
        f" is [`{source.name}`]({source.with_suffix('.md').name}) quantised with onnxruntime's "
        f"static quantisation: {METHOD}, calibrated on {CALIBRATION_FACES:,} Training faces. "
        "Same input, output, labels and temperature; everything about data, training and "
        "architecture is in the source's card.",
        (["| PublicTest (onnxruntime) | float | int8 |", "|---|---:|---:|",
          f"| accuracy | {f.accuracy:.2%} | {q.accuracy:.2%} |",
          f"| macro F1 | {f.macro_f1:.3f} | {q.macro_f1:.3f} |",
          f"| ECE | {f.ece:.4f} | {q.ece:.4f} |",
          f"| faces/s, 1 thread, batch 64 | {speed['float']:,.0f} | {speed['int8']:,.0f} |"],
         [f"The top emotion is the same as the float model's for {result.agreement:.2%} of the "
          f"{q.n:,} faces; the probabilities differ by {result.mean_abs_diff:.4f} on average "
          f"and by {result.max_abs_diff:.3f} at most. A copy is written only if accuracy "
          f"drops by at most {MAX_ACCURACY_DROP * 100:.1f} points and the top emotion agrees "
          f"on at least {MIN_AGREEMENT:.0%} of faces. Speeds were measured one after the other "
          "in the same process (the ratio is the figure to read). Use the float model where "
          "agreement with the Keras network to 1e-5 matters more than speed."]),
        f"python -m train quantize models/{source.name} --out models/{result.path.name} "
        "--data fer2013.csv.gz --force")
