"""Export a training run (or an ensemble of runs) to a contract-carrying ONNX classifier.

The exported graph is ``softmax(mean(logits(x), logits(flip(x))) / T)``: the architectures
output logits, so flip averaging (kept only when it helps) and the fitted temperature are
folded in here, and the scorer needs no TensorFlow and no post-processing. Given several
runs (the snapshots of successive cosine cycles), the logits are averaged over them too:
one file, one graph, its members named in the metadata. Flips and T are
chosen on the run's validation slice of Training (``train.fit.load_splits``), the data its
epoch was selected on, so PublicTest is only measured; runs made before the slice existed
selected on PublicTest, and their metadata says so. A file is written only when onnxruntime
reproduces the TensorFlow function on real PublicTest faces within ``PARITY_TOLERANCE``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import onnx
import tensorflow as tf

import facevalue
from facevalue import fer2013
from facevalue.classify import to_input
from facevalue.contract import LABELS, Contract
from facevalue.errors import FacevalueError
from facevalue.evaluate import Evaluation, score
from train import calibrate
from train.modelfile import check_target, write_model

log = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-5
TTA_CHOICES = ("auto", "hflip", "none")
# What every exported graph takes and returns (see serving_function and train.data.to_inputs).
CONTRACT = Contract(LABELS, (48, 48), "grayscale", "NHWC", 1 / 255, 0.0, "probabilities", {})


class ExportError(FacevalueError, RuntimeError):
    """Raised when a run cannot be exported faithfully; nothing is written."""


@dataclass(frozen=True)
class Exported:
    """What an export measured and wrote."""

    path: Path
    evaluation: Evaluation  # the written ONNX model on PublicTest
    network: keras.Model  # the float32 Keras model it was exported from (the last member)
    accuracy_by_tta: dict[str, float]  # Keras logits, without and with flip averaging
    tta: str
    calibration: calibrate.Calibration
    parity_max_abs: float
    metadata: dict[str, str]


def _float32_policies(node):
    """A Keras config with every layer's dtype policy (e.g. mixed_bfloat16) set to float32."""
    if isinstance(node, dict):
        if node.get("class_name") == "DTypePolicy":
            return {**node, "config": {**node["config"], "name": "float32"}}
        return {key: _float32_policies(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_float32_policies(value) for value in node]
    return node


def load_float32(run: Path, epoch: str = "best") -> tuple[keras.Model, dict]:
    """The run's ``epoch`` checkpoint (``best`` or ``last``) rebuilt in float32, and the
    run's config.

    Runs may train in mixed bf16; the weights are float32 either way, so rebuilding the
    checkpoint's own architecture (not today's code in archs.py, which may have moved on)
    under float32 policies and copying the weights gives a full-precision graph.
    """
    from train.fit import CHECKPOINT_WEIGHTS, saved_network

    weights = CHECKPOINT_WEIGHTS[epoch]
    config_path, whole = run / "config.json", run / f"{epoch}.keras"
    if not config_path.is_file() or not (whole.is_file() or (run / weights).is_file()):
        raise ExportError(f"{run}: no {epoch} checkpoint (needs config.json and {whole.name} "
                          f"or {weights})")
    config = json.loads(config_path.read_text())
    if not whole.is_file():  # a committed run folder: today's code for its architecture
        return saved_network(run, "fp32", epoch), config
    trained = keras.models.load_model(whole, compile=False)
    model = type(trained).from_config(_float32_policies(trained.get_config()))
    model.set_weights(trained.get_weights())
    return model, config


def load_members(runs: list[Path], epoch: str = "best") -> tuple[list[keras.Model], dict]:
    """Each run's float32 network at ``epoch``, and the last run's config; the runs must share
    their data and validation slice, or their average would be selected on faces some member
    saw."""
    members = [load_float32(run, epoch) for run in runs]
    first = members[0][1]
    for run, (_, config) in zip(runs, members, strict=True):
        for key in ("data_sha256", "val_fraction"):
            if config.get(key) != first.get(key):
                raise ExportError(f"{run}: its {key} differs from {runs[0]}'s; an ensemble's "
                                  "runs must share the data and the validation slice")
    return [model for model, _ in members], members[-1][1]


def selection_and_test(data: str | Path, config: dict
                       ) -> tuple[fer2013.FaceSet, fer2013.FaceSet]:
    """The faces the run selects on and its PublicTest faces, refusing other data."""
    from train.fit import load_splits

    faces = fer2013.load(data)
    if fer2013.fingerprint(faces) != config["data_sha256"]:
        raise ExportError(f"{data} is not the data set the run was trained on "
                          f"(sha256 differs from config.json's {config['data_sha256'][:12]}...)")
    public = faces.split("PublicTest")
    if len(public) == 0:
        raise ExportError(f"{data}: no PublicTest rows to check on")
    _, selection, _ = load_splits(data, config.get("val_fraction", 0.0))
    return selection, public


def serving_function(models: list[keras.Model], temperature: float, tta: str):
    """The graph to export: image (N,48,48,1) float32 -> probabilities (N,7)."""
    spec = tf.TensorSpec((None, 48, 48, 1), tf.float32, name="image")

    @tf.function(input_signature=[spec])
    def serve(image):
        views = [image, tf.reverse(image, axis=[2])] if tta == "hflip" else [image]
        logits = tf.add_n([m(v, training=False) for m in models for v in views])
        logits = logits / float(len(models) * len(views))
        return {"probabilities": tf.nn.softmax(logits / temperature, axis=-1)}

    return serve


def choose_tta(models: list[keras.Model], x: np.ndarray, labels: np.ndarray,
               tta: str) -> tuple[str, np.ndarray, dict[str, float]]:
    """Measure accuracy on the selection faces with and without flip averaging (of the
    members' mean logits); keep flips if they help."""
    plain = np.mean([m.predict(x, batch_size=512, verbose=0) for m in models], axis=0)
    flipped = np.mean([m.predict(x[:, :, ::-1], batch_size=512, verbose=0) for m in models],
                      axis=0)
    logits = {"none": plain, "hflip": (plain + flipped) / 2.0}
    accuracy = {k: float(np.mean(v.argmax(axis=1) == labels)) for k, v in logits.items()}
    if tta == "auto":
        tta = "hflip" if accuracy["hflip"] > accuracy["none"] else "none"
    log.info("selection accuracy without flips %.4f, with flips %.4f: using %s",
             accuracy["none"], accuracy["hflip"], tta)
    return tta, logits[tta], accuracy


def convert(serve) -> onnx.ModelProto:
    """tf2onnx at opset 17; the batch dimension is named ``N``."""
    import tf2onnx

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                             opset=OPSET)
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    if [i.name for i in proto.graph.input] != ["image"] or \
            [o.name for o in proto.graph.output] != ["probabilities"]:
        raise ExportError("tf2onnx did not keep the input/output names image/probabilities")
    return proto


def check_parity(proto: onnx.ModelProto, serve, x: np.ndarray) -> tuple[float, np.ndarray]:
    """Max |onnxruntime - TensorFlow| over all inputs, and onnxruntime's probabilities."""
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    batches = range(0, len(x), 512)
    onnx_probs = np.concatenate([session.run(None, {"image": x[i:i + 512]})[0] for i in batches])
    tf_probs = np.concatenate([serve(tf.constant(x[i:i + 512]))["probabilities"].numpy()
                               for i in batches])
    return float(np.abs(onnx_probs - tf_probs).max()), onnx_probs


def metadata(runs: list[Path], config: dict, accuracy: float, tta: str,
             cal: calibrate.Calibration, parity: float,
             accuracy_by_tta: dict[str, float], epoch: str = "best") -> dict[str, str]:
    """The contract plus what a reader of a result table may want to know about the model."""
    run = runs[-1]
    with (run / "log.csv").open(newline="") as f:
        log = list(csv.DictReader(f))
    # the column fit chose the checkpoint on: with dev photos, ``select``
    chosen_on = [float(row.get("select") or row["val_accuracy"]) for row in log]
    best_epoch = 1 + int(np.argmax(chosen_on))
    extra = {
        "facevalue.architecture": config["arch"],
        "facevalue.train_data_sha256": config["data_sha256"],
        "facevalue.public_test_accuracy": f"{accuracy:.4f}",
        # the rule's epoch, flips and temperature were chosen on these faces, never on
        # PublicTest (unless this says PublicTest: runs made before 2026-12); an exported last
        # epoch (facevalue.checkpoint) was chosen by a person, on grounds the card's notes give
        "facevalue.selected_on": config.get("selected_on", "PublicTest"),
        "facevalue.selection_accuracy_by_tta": json.dumps(
            {k: round(v, 4) for k, v in accuracy_by_tta.items()}),
        "facevalue.temperature": f"{cal.temperature:.4f}",
        "facevalue.tta": tta,
        "facevalue.version": facevalue.__version__,
        "facevalue.trained_epochs": str(len(log)),
        "facevalue.best_epoch": str(best_epoch),
        # the checkpoint in this file: the best epoch, or the last (export --epoch last)
        "facevalue.checkpoint": epoch,
        "facevalue.exported_epoch": str(best_epoch if epoch == "best" else len(log)),
        "facevalue.train_precision": config.get("precision", "fp32"),
        "facevalue.ece_before": f"{cal.ece_before:.4f}",
        "facevalue.ece_after": f"{cal.ece_after:.4f}",
        "facevalue.ece_after_crossfit": f"{cal.ece_after_crossfit:.4f}",
        "facevalue.parity_max_abs": f"{parity:.2e}",
    }
    if config.get("init"):
        extra["facevalue.fine_tuned_from"] = Path(config["init"]).name
    if len(runs) > 1:  # the logits of these runs' networks are averaged
        extra["facevalue.ensemble"] = json.dumps([r.name for r in runs])
    return dataclasses.replace(CONTRACT, extra=extra).to_metadata()


def export(run: str | Path | list[str | Path], out: str | Path, data: str | Path | None = None,
           tta: str = "auto", force: bool = False, epoch: str = "best") -> Exported:
    """Export the ``epoch`` checkpoint (``best`` by the run's selection rule, or ``last``)
    of ``run`` (or the ensemble of several runs) to ``out``; see the module docstring for
    the graph."""
    runs = [Path(r) for r in (run if isinstance(run, list) else [run])]
    out = Path(out)
    check_target(out, force)
    if tta not in TTA_CHOICES:
        raise ExportError(f"tta must be one of {TTA_CHOICES}, not {tta!r}")
    from train.fit import EPOCH_CHOICES

    if epoch not in EPOCH_CHOICES:
        raise ExportError(f"epoch must be one of {EPOCH_CHOICES}, not {epoch!r}")
    models, config = load_members(runs, epoch)
    selection, public = selection_and_test(data or config["data"], config)
    # The very tensor facevalue's scorer builds, so the accuracy below is the one it will see.
    x = to_input(public.images[..., None], CONTRACT)
    tta, logits, accuracy_by_tta = choose_tta(
        models, to_input(selection.images[..., None], CONTRACT), selection.labels, tta)
    cal = calibrate.calibrate(logits, selection.labels)
    log.info("temperature %.3f: ECE %.4f -> %.4f (cross-fitted %.4f)", cal.temperature,
             cal.ece_before, cal.ece_after, cal.ece_after_crossfit)
    serve = serving_function(models, cal.temperature, tta)
    proto = convert(serve)
    parity, probs = check_parity(proto, serve, x)
    if not parity <= PARITY_TOLERANCE:
        raise ExportError(f"onnxruntime differs from TensorFlow by {parity:.2e} on PublicTest "
                          f"(limit {PARITY_TOLERANCE:.0e}); nothing written")
    evaluation = score(probs, public.labels, model=str(out), split="PublicTest")
    meta = metadata(runs, config, evaluation.accuracy, tta, cal, parity, accuracy_by_tta,
                    epoch)
    onnx.helper.set_model_props(proto, meta)
    write_model(proto, out, force)
    log.info("wrote %s: PublicTest accuracy %.4f, parity %.1e", out, evaluation.accuracy, parity)
    return Exported(out, evaluation, models[-1], accuracy_by_tta, tta, cal, parity,
                    meta)
