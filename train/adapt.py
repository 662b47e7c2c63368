"""Adapt an exported classifier to real photos with a small labelled set of them.

FER2013 faces are small web crops; executive portraits are sharp press photos. Models trained
on FER2013 read resting and surprised real faces as angry or afraid (faces-dev: 70 of 300
neutral photos as anger, 29 of 151 surprised ones as fear), and no augmentation, framing or
contrast change we tried closed that gap. What does is a small supervised correction learned
from labelled photos: ``train.correction`` says what it fits and why it cannot silence the
classes the labels lack. This module edits the ONNX side: it reads the penultimate features
the correction needs from the graph (``probe``), folds the fitted correction into a copy of
the graph (``adapted_graph``), checks that copy against the numpy correction and writes it.

The cross-validated figures go into the file's metadata and card with the chosen penalty; the
file's own score on the photos it was fitted on is in-sample and says so. FER2013 PublicTest
is measured, never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from facevalue import fer2013
from facevalue.classify import Classifier, to_input
from facevalue.contract import LABELS, Contract
from facevalue.errors import FacevalueError
from facevalue.evaluate import Evaluation, read_labels, score, to_crops
from facevalue.runtime import new_session
from train import calibrate
from train.card import Card
from train.correction import (
    ANCHOR_WEIGHT,
    FOLDS,
    Anchor,
    Correction,
    choose_penalty,
    cross_validate,
    figures,
    fit,
)
from train.modelfile import check_target, derived_metadata, write_model
from train.photos import main_face_crops

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
ANCHOR_FACES = 2048  # Training faces (seeded sample) the correction must leave alone
HEAD_OPS = ("MatMul", "Gemm")


class AdaptError(FacevalueError, RuntimeError):
    """Raised when a model cannot be adapted faithfully; nothing is written."""


@dataclass(frozen=True)
class Adapted:
    """What an adaptation measured and wrote."""

    path: Path
    photos: int  # labelled photos with a face (the rest count as wrong in the figures)
    labelled: int
    before: dict  # the source model on the labelled photos
    crossval: dict  # out-of-fold figures of the correction
    in_sample: dict  # the written model on the photos it was fitted on
    penalty: float
    parity_max_abs: float
    public: tuple[Evaluation, Evaluation]  # source and written model on PublicTest (measured)
    sha256: str
    metadata: dict[str, str]


def head_inputs(proto: onnx.ModelProto) -> tuple[onnx.NodeProto, list[str]]:
    """The graph's final Softmax, and the feature tensors its last MatMul/Gemm nodes read.

    Walking back from the softmax through everything but matrix products finds each view's
    and member's logits layer (the flipped view's, the members' of an ensemble); their first
    inputs are the penultimate features.
    """
    graph = proto.graph
    output = graph.output[0].name
    producer = {out: node for node in graph.node for out in node.output}
    final = producer.get(output)
    if final is None or final.op_type != "Softmax":
        raise AdaptError(f"the graph's output {output!r} is not made by a Softmax")
    features: list[str] = []
    stack, seen = [final.input[0]], set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.output[0] in seen:  # names may be empty; outputs are unique
            continue
        seen.add(node.output[0])
        if node.op_type in HEAD_OPS:
            features.append(node.input[0])
        else:
            stack.extend(node.input)
    if not features:
        raise AdaptError("found no MatMul/Gemm layer before the softmax")
    return final, sorted(set(features))


def probe(model: Path, crops: np.ndarray, contract: Contract) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features (mean over the head's inputs) and softmax-input logits of crops."""
    proto = onnx.load(model)
    final, names = head_inputs(proto)
    for name in [*names, final.input[0]]:
        proto.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = new_session(proto.SerializeToString(), ["CPUExecutionProvider"], None)
    x = to_input(crops, contract)
    runs = [session.run([*names, final.input[0]], {proto.graph.input[0].name: x[i:i + 256]})
            for i in range(0, len(x), 256)]
    widths = {runs[0][k].shape[1] for k in range(len(names))}
    if len(widths) != 1:
        raise AdaptError(f"the logits layers read features of different widths {widths}")
    features = np.concatenate([np.mean(r[:-1], axis=0) for r in runs]).astype(np.float64)
    logits = np.concatenate([r[-1] for r in runs]).astype(np.float64)
    return features, logits


def adapted_graph(proto: onnx.ModelProto, correction: Correction) -> onnx.ModelProto:
    """``proto`` with the correction added to its softmax's input."""
    final, names = head_inputs(proto)
    w = numpy_helper.from_array(correction.weights, "photo_correction/weights")
    b = numpy_helper.from_array(correction.bias, "photo_correction/bias")
    scale = numpy_helper.from_array(np.array(1.0 / len(names), np.float32),
                                    "photo_correction/views")
    inverse_t = numpy_helper.from_array(np.array(1.0 / correction.temperature, np.float32),
                                        "photo_correction/inverse_temperature")
    nodes = [
        helper.make_node("Sum", names, ["photo_correction/sum"], name="photo_correction/Sum"),
        helper.make_node("Mul", ["photo_correction/sum", scale.name],
                         ["photo_correction/features"], name="photo_correction/Mean"),
        helper.make_node("MatMul", ["photo_correction/features", w.name],
                         ["photo_correction/matmul"], name="photo_correction/MatMul"),
        helper.make_node("Add", ["photo_correction/matmul", b.name],
                         ["photo_correction/delta"], name="photo_correction/Bias"),
        helper.make_node("Add", [final.input[0], "photo_correction/delta"],
                         ["photo_correction/sum_logits"], name="photo_correction/Add"),
        helper.make_node("Mul", ["photo_correction/sum_logits", inverse_t.name],
                         ["photo_correction/logits"], name="photo_correction/Temperature"),
    ]
    adapted = onnx.ModelProto()
    adapted.CopyFrom(proto)
    graph = adapted.graph
    graph.initializer.extend([w, b, scale, inverse_t])
    at = [n.output[0] for n in graph.node].index(final.output[0])
    for offset, node in enumerate(nodes):
        graph.node.insert(at + offset, node)
    graph.node[at + len(nodes)].input[0] = "photo_correction/logits"
    onnx.checker.check_model(adapted)
    return adapted


def anchor_faces(data: str | Path, classifier: Classifier, seed: int,
                 weight: float = ANCHOR_WEIGHT) -> tuple[Anchor, fer2013.FaceSet]:
    """The anchor (a seeded sample of Training faces, probed, at total loss ``weight``) and
    the PublicTest faces."""
    faces = fer2013.load(data)
    if classifier.contract.extra.get("facevalue.train_data_sha256") != \
            fer2013.fingerprint(faces):
        raise AdaptError(f"{data} is not the data set {classifier.path.name} was trained on")
    train, public = faces.split("Training"), faces.split("PublicTest")
    if len(train) == 0 or len(public) == 0:
        raise fer2013.DataError(f"{data}: needs both Training and PublicTest rows")
    pick = np.random.default_rng(seed).permutation(len(train))[:ANCHOR_FACES]
    features, logits = probe(classifier.path, to_crops(train.images[pick], classifier.contract),
                             classifier.contract)
    return Anchor(features, logits, weight), public


def adapt(model: str | Path, photos: str | Path, labels: str | Path, data: str | Path,
          out: str | Path, seed: int = 0, force: bool = False,
          anchor_weight: float = ANCHOR_WEIGHT) -> Adapted:
    """Fit the correction of ``train.correction`` on the labelled photos (anchored on the
    FER2013 ``data`` the model was trained on, at ``anchor_weight`` against the photos' 1: a
    heavier anchor keeps more of the model's FER2013 accuracy and corrects the photos less)
    and write ``model`` with it to ``out`` (``force``: even over a shipped model)."""
    if not 0 < anchor_weight < float("inf"):
        raise AdaptError(f"the anchor weight must be positive and finite (got {anchor_weight})")
    check_target(out, force)
    model, photos, out = Path(model), Path(photos), Path(out)
    classifier = Classifier(model, "cpu")
    if "facevalue.photo_correction" in classifier.contract.extra:
        raise AdaptError(f"{model.name} is already adapted; adapt the model it came from")
    truth = read_labels(labels)
    anchor, public = anchor_faces(data, classifier, seed, anchor_weight)
    crops, y, missed = main_face_crops(photos, truth, classifier.contract)
    counts = np.bincount(y)[np.unique(y)]
    if len(counts) < 2 or counts.min() < FOLDS:
        raise AdaptError(f"needs at least two labelled classes with {FOLDS} photos each "
                         f"(has {dict(zip(np.unique(y).tolist(), counts.tolist(), strict=True))})")
    log.info("%d of %d labelled photos have a face; fitting (a few hundred photos take "
             "about 10 minutes on 2 cores)", len(y), len(truth))
    features, logits = probe(model, crops, classifier.contract)
    before = figures(y, calibrate.softmax(logits), missed, seed)
    corrected, fold_penalties = cross_validate(features, logits, y, anchor, seed)
    # One temperature, fitted on the out-of-fold logits, makes the corrected probabilities
    # mean what they say on photos (ECE: fitted on one half of the photos, measured on the
    # other, and vice versa).
    cal = calibrate.calibrate(corrected, y)
    crossval = {**figures(y, calibrate.softmax(corrected, cal.temperature), missed, seed,
                          ece=cal.ece_after_crossfit),
                "folds": FOLDS, "fold_penalties": fold_penalties,
                "ece_without_temperature": round(cal.ece_before, 4)}
    penalty = choose_penalty(features, logits, y, anchor, seed + 1)
    correction = dataclasses.replace(fit(features, logits, y, penalty, anchor),
                                     temperature=cal.temperature)
    proto = adapted_graph(onnx.load(model), correction)
    session = new_session(proto.SerializeToString(), ["CPUExecutionProvider"], None)
    got = session.run(None, {proto.graph.input[0].name: to_input(crops, classifier.contract)})[0]
    parity = float(np.abs(got - calibrate.softmax(correction.apply(features, logits))).max())
    if not parity <= PARITY_TOLERANCE:
        raise AdaptError(f"the adapted graph differs from the fitted correction by "
                         f"{parity:.1e} (limit {PARITY_TOLERANCE:.0e}); nothing written")
    in_sample = figures(y, got, missed, seed)
    crops_public = to_crops(public.images, classifier.contract)
    x = to_input(crops_public, classifier.contract)
    public_probs = np.concatenate([session.run(None, {proto.graph.input[0].name: x[i:i + 512]})[0]
                                   for i in range(0, len(x), 512)])
    public_eval = score(public_probs, public.labels, model=str(out), split="PublicTest")
    source_eval = score(classifier.predict(crops_public, 512), public.labels, model=str(model),
                        split="PublicTest")
    meta = {**derived_metadata(classifier.contract),
            "facevalue.photo_correction": json.dumps({
                "adapted_from": f"{model.name}@{classifier.sha256}",
                "photos": f"{photos.resolve().parent.name}/{photos.name} ({len(y)} labelled "
                          "photos with a face)",
                "labels_sha256": hashlib.sha256(Path(labels).read_bytes()).hexdigest(),
                "penalty": penalty, "temperature": round(cal.temperature, 4),
                "classes": sorted({LABELS[c] for c in y}),
                "anchor": f"{ANCHOR_FACES} Training faces, weight {anchor_weight:g}"}),
            "facevalue.public_test_accuracy": f"{public_eval.accuracy:.4f}",
            "facevalue.public_test_accuracy_before_correction": f"{source_eval.accuracy:.4f}",
            "facevalue.ece_after": f"{public_eval.ece:.4f}",
            "facevalue.photo_accuracy_before": json.dumps(before),
            "facevalue.photo_accuracy_crossval": json.dumps(crossval),
            "facevalue.photo_accuracy_in_sample": json.dumps(in_sample)}
    onnx.helper.set_model_props(proto, meta)
    try:
        digest = write_model(proto, out, force)
    except OSError as e:  # a full disk, a parent that is a file: nothing half-written stays
        raise AdaptError(f"cannot write {out}: {e.strerror or e}") from e
    return Adapted(out, len(y), len(truth), before, crossval, in_sample, penalty, parity,
                   (source_eval, public_eval), digest, meta)


def adapted_card(result: Adapted, source: str | Path, rebuild: str) -> Card:
    """The adapted model's card: what was fitted, on what, and its figures (``source``: the
    model it was adapted from; ``rebuild``: the command that made it)."""
    def row(name: str, f: dict) -> str:
        low, high = f["accuracy_ci"]
        recall = " | ".join(f"{f['recall'][label]:.2f}" for label in labelled)
        return (f"| {name} | {f['accuracy']:.1%} ({low:.1%}-{high:.1%}) | {recall} | "
                f"{f['ece']:.3f} |")

    labelled = list(result.crossval["recall"])
    correction = json.loads(result.metadata["facevalue.photo_correction"])
    name, source = result.path.stem, Path(source)
    return Card(
        f"{source.stem} corrected for real photos",
        f" is [`{source.name}`]({source.stem}.md) with a linear correction of its logits "
        f"fitted on {correction['photos']}, labels sha256 `{correction['labels_sha256'][:12]}"
        "...`: `logits + features @ W + b`, where features are the network's penultimate "
        "activations (the mean over the graph's views). How it is fitted and why it cannot "
        "silence the classes the labels lack: `train/correction.py`. Class-balanced "
        f"cross-entropy on the photos, KL to the source's predictions on "
        f"{correction['anchor']}, L2 penalty {correction['penalty']:g} on W (chosen by "
        f"{FOLDS}-fold cross-validation of macro recall).",
        ([f"Labelled classes: {', '.join(correction['classes'])}. The other classes get no "
          "term of their own; they were not labelled, so the figures below say nothing about "
          "them."],
         [f"| on the {result.labelled} labelled photos | accuracy (95% CI) | "
          + " | ".join(f"recall {label}" for label in labelled) + " | ECE |",
          "|---|---:|" + "---:|" * (len(labelled) + 1),
          row(f"{source.stem} (before)", result.before),
          row(f"**{name}, cross-validated** (the figure to report)", result.crossval),
          row(f"{name}, in-sample (fitted on these photos)", result.in_sample)],
         [f"Cross-validated: each photo predicted by a correction fitted on the other "
          f"{FOLDS - 1} folds (stratified), its penalty chosen by an inner cross-validation "
          f"on those folds only (chosen: {result.crossval['fold_penalties']}). In-sample is "
          "what `facevalue evaluate` prints on these photos with this model; it is "
          "optimistic. Photos without a face count as wrong. Disjoint held-back photo sets "
          "judge the model."],
         ["FER2013 PublicTest, measured only (the correction never saw it; its anchor keeps "
          "the source's predictions on Training faces, so what moves here is the price of the "
          "photo gains on FER2013-like faces):"],
         ["| PublicTest | accuracy | ECE | " + " | ".join(f"recall {c}" for c in LABELS) + " |",
          "|---|---:|---:|" + "---:|" * len(LABELS),
          *(f"| {label} | {e.accuracy:.1%} | {e.ece:.3f} | "
            + " | ".join(f"{c.recall:.2f}" for c in e.per_class) + " |"
            for label, e in zip((source.stem, name), result.public, strict=True))]),
        rebuild)
