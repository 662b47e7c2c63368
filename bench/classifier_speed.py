"""Classifier speed on one thread, and multiply-adds per face (issue 19's speed target).

Issue 19 asks the default classifier for 3x the faces/s of the float ``fvnet`` on one
onnxruntime thread, flip averaging included where a model's graph does it, measured in the
same run. Every model gets the same crops (random uint8 faces at its input size: the cost of
a convolution network does not depend on the pixels) through ``Classifier.predict``, the
path ``facevalue score`` takes (input scaling included), in alternating rounds so a busy
core slows every model alike; the table gives the median round and the slowest/fastest.

Multiply-adds per face are counted from the ONNX graph itself (every Conv, Gemm and MatMul
at a batch of one, with shapes inferred by onnx), so a graph that runs the network twice for
flip averaging counts twice.

    python bench/classifier_speed.py --models fvnet fvnet-photo-fp32 exports/fvlite-s2.onnx \
        --readme bench/README.md

``--widths 16-40-96-224 16-32-96-288`` also times untrained fvnet-family networks with those
four stages' filters (built and exported with the [train] extra, no flips): what a wider
student would cost before hours are spent training it. Their speed does not depend on the
weights, so untrained graphs give the trained ones' faces/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference
from run import HERE, machine, update_readme
from video_speed import pause_training

from facevalue.classify import Classifier, load_classifier


def macs_per_face(path: Path) -> int:
    """Multiply-adds of one face through the graph (Conv, Gemm, MatMul).

    Shapes come from onnx's inference; the batch axis is left out (tf2onnx's reshapes leave
    it unknown), so each operator counts per face."""
    model = shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    total = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        out = shapes.get(node.output[0], [0])[1:]
        weight = next((numpy_helper.to_array(t).shape for t in model.graph.initializer
                       if t.name == node.input[1]), None)
        if weight is None or not out or 0 in out:
            raise RuntimeError(f"{path}: no inferred shape for {node.name} ({node.op_type})")
        # Conv: (input channels / groups) x kernel area per output element; Gemm/MatMul: the
        # inner dimension (an exported Dense is x @ W with W stored (inner, outer))
        transposed = any(a.name == "transB" and a.i for a in node.attribute)
        inner = int(np.prod(weight[1:])) if node.op_type == "Conv" else weight[
            1 if transposed else 0]
        total += int(np.prod(out)) * int(inner)
    return total


def untrained(widths: str, folder: Path) -> Path:
    """An untrained fvnet-family network with stages ``a-b-c-d`` as a contract-carrying
    ONNX file, exported as ``train export`` exports (softmax in the graph, no flips)."""
    import onnx.helper

    from train.archs import fvnet
    from train.export import CONTRACT, convert, serving_function

    network = fvnet(widths=[int(w) for w in widths.split("-")], dropout_scale=0.5)
    proto = convert(serving_function([network], 1.0, "none"))
    onnx.helper.set_model_props(proto, CONTRACT.to_metadata())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"untrained-{widths}.onnx"
    onnx.save(proto, str(path))
    return path


def measure(models: list[str], faces: int, rounds: int, batch: int) -> dict[str, dict]:
    """faces/s of each model per round (one thread), alternating models within each round."""
    classifiers: dict[str, Classifier] = {}
    for name in models:
        classifier = load_classifier(name, "cpu", threads=1)
        classifiers[classifier.path.stem] = classifier
    rng = np.random.default_rng(19)
    crops = {}
    for stem, classifier in classifiers.items():
        height, width = classifier.contract.input_size
        channels = 3 if classifier.contract.color_mode == "rgb" else 1
        crops[stem] = rng.integers(0, 256, (faces, height, width, channels), dtype=np.uint8)
        classifier.predict(crops[stem][:batch], batch)  # warm up onnxruntime's buffers
    rates: dict[str, list[float]] = {stem: [] for stem in classifiers}
    for _ in range(rounds):
        for stem, classifier in classifiers.items():
            started = time.perf_counter()
            classifier.predict(crops[stem], batch)
            rates[stem].append(faces / (time.perf_counter() - started))
    return {stem: {"faces_s": statistics.median(rates[stem]), "min": min(rates[stem]),
                   "max": max(rates[stem]), "macs": macs_per_face(classifier.path),
                   "tta": classifier.contract.extra.get("facevalue.tta", "none"),
                   "sha256": classifier.sha256[:12]}
            for stem, classifier in classifiers.items()}


def table(results: dict[str, dict], info: dict, args: argparse.Namespace) -> str:
    base = results[next(iter(results))]
    training = {"none": "no training run"}.get(info["training"], f"training run {info['training']}")
    lines = [f"Measured {info['date']} on {info['cpu']} ({info['flags']}), one onnxruntime "
             f"thread, {args.faces} faces per round in batches of {args.batch}, {args.rounds} "
             f"alternating rounds ({training}): median faces/s (slowest-fastest round). "
             "The ratio divides by the first row's median.", "",
             "`python bench/classifier_speed.py --models "
             f"{' '.join(args.models)}"
             + (f" --widths {' '.join(args.widths)}" if args.widths else "")
             + " --readme bench/README.md`", "",
             "| model | sha256 | flips in graph | MACs per face | faces/s | ratio |",
             "|---|---|---|---:|---:|---:|"]
    for stem, row in results.items():
        lines.append(f"| {stem} | `{row['sha256']}` | {row['tta']} | {row['macs'] / 1e6:.1f} M "
                     f"| {row['faces_s']:.0f} ({row['min']:.0f}-{row['max']:.0f}) "
                     f"| {row['faces_s'] / base['faces_s']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fvnet", "fvnet-photo-fp32"],
                        help="shipped model names or ONNX files; the first is the baseline")
    parser.add_argument("--widths", nargs="+", default=[], metavar="A-B-C-D",
                        help="also time untrained fvnet-family networks with these stages")
    parser.add_argument("--faces", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "classifier_speed.json")
    parser.add_argument("--readme", type=Path)
    args = parser.parse_args()
    models = [*args.models, *(str(untrained(w, args.out.parent / "widths"))
                              for w in args.widths)]
    resume = pause_training()
    try:
        results = measure(models, args.faces, args.rounds, args.batch)
        info = machine()  # while the training run is still paused, so it says so
    finally:
        resume()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    text = table(results, info, args)
    print(text)
    if args.readme:
        update_readme(args.readme, text, "classifier-speed")


if __name__ == "__main__":
    main()
