"""Rebuild the MediaPipe models facevalue ships (face detector, face mesh) from MediaPipe's wheel.

Why a script: the models facevalue ships must be reproducible from the repository.
MediaPipe's BlazeFace short-range detector and its face-mesh landmark model (both Apache-2.0)
are only published as ``.tflite`` files inside the ``mediapipe`` wheel on PyPI (none in wheels
from 0.10.30 on); this script downloads that exact wheel (``pip download``, no install),
checks each ``.tflite`` against a pinned sha256, converts it with tf2onnx, renames the tensors
tf2onnx names in a run-dependent order (so two builds give identical bytes), stamps the
provenance into the ONNX ``metadata_props`` and writes the files into ``models/``.

    python tools/build_models.py            # rebuild both models in models/
    python tools/build_models.py --check    # rebuild in a temp dir, compare with the shipped files

Needs ``pip``, ``tf2onnx`` and ``tensorflow`` (the ``train`` extra); the package itself never does.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

log = logging.getLogger("build_models")

ROOT = Path(__file__).resolve().parents[1]
WHEEL_REQUIREMENT = "mediapipe==0.10.21"
# Pin one platform's wheel so every machine downloads the same file; the model inside is the
# same in all of them, and the tflite hash below is what is really checked.
WHEEL_PLATFORM = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                  "--implementation", "cp", "--only-binary=:all:")
OPSET = 17


def batch_face_mesh(model: onnx.ModelProto) -> None:
    """Let the face mesh take a batch: a named first input dimension, and the output Reshapes'
    hard-coded batch of 1 set to -1 (one call then measures a chunk's faces)."""
    graph = model.graph
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    for output in graph.output:
        output.type.tensor_type.shape.dim[0].dim_param = "N"
    shapes = {n.input[1] for n in graph.node if n.op_type == "Reshape"}
    for init in graph.initializer:
        if init.name in shapes:
            value = numpy_helper.to_array(init).copy()
            value[0] = -1
            init.CopyFrom(numpy_helper.from_array(value.astype(np.int64), init.name))


@dataclass(frozen=True)
class Spec:
    """One model to build: where it is in the wheel, what it is called here, what it is."""

    name: str  # also the metadata key prefix: facevalue.<kind>
    kind: str
    member: str
    tflite_sha256: str
    outputs: dict[str, str]  # tf2onnx's output names -> the names facevalue reads
    notice: str
    fix: Callable[[onnx.ModelProto], None] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> Path:
        return ROOT / "models" / f"{self.name}.onnx"


SPECS = {
    "blazeface-short-range": Spec(
        "blazeface-short-range", "detector",
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8", {},
        "models/NOTICE-blazeface.md"),
    "face-mesh": Spec(
        "face-mesh", "landmarks", "mediapipe/modules/face_landmark/face_landmark.tflite",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
        {"conv2d_21": "landmarks", "conv2d_31": "presence"}, "models/NOTICE-face-mesh.md",
        batch_face_mesh,
        # What facevalue.geometry needs to know to feed it and read it.
        {"facevalue.landmarks.input": "192x192 RGB NHWC, pixels / 255",
         "facevalue.landmarks.output": "468 (x, y, z) in input pixels; presence logit"}),
}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download_wheel(folder: Path) -> Path:
    """``pip download`` the pinned mediapipe wheel into ``folder`` (nothing is installed)."""
    cmd = [sys.executable, "-m", "pip", "download", WHEEL_REQUIREMENT, "--no-deps",
           *WHEEL_PLATFORM, "--dest", str(folder), "--quiet"]
    subprocess.run(cmd, check=True)
    wheels = sorted(folder.glob("mediapipe-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one mediapipe wheel in {folder}, found {wheels}")
    return wheels[0]


def extract_tflite(wheel: Path, folder: Path, spec: Spec) -> Path:
    """Extract a model from the wheel and check it is the one this script pins."""
    out = folder / Path(spec.member).name
    with zipfile.ZipFile(wheel) as z:
        out.write_bytes(z.read(spec.member))
    digest = sha256_of(out)
    if digest != spec.tflite_sha256:
        raise RuntimeError(f"{spec.member} in {wheel.name} has sha256 {digest}, "
                           f"expected {spec.tflite_sha256}")
    return out


def convert(tflite: Path, onnx_path: Path) -> None:
    """Convert with tf2onnx's command line, the documented route for tflite models."""
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tflite),
           "--output", str(onnx_path), "--opset", str(OPSET)]
    subprocess.run(cmd, check=True, capture_output=True)


def canonical_names(model: onnx.ModelProto, member: str,
                    outputs: dict[str, str] | None = None) -> None:
    """Rename internal tensors and nodes by graph position, in place.

    tf2onnx numbers folded constants in an order that changes from run to run, so the same
    conversion gives different bytes; naming by position makes the build byte-reproducible.
    """
    graph = model.graph
    outputs = outputs or {}
    for value in graph.output:
        value.name = outputs.get(value.name, value.name)
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = dict(outputs)
    for i, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in keep and name not in names:
                names[name] = f"t{len(names)}"
        node.name = f"{node.op_type.lower()}_{i}"
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [n if n in keep else names.setdefault(n, f"t{len(names)}")
                          for n in node.output]
    for init in graph.initializer:
        init.name = names[init.name]
    inits = sorted(graph.initializer, key=lambda t: int(t.name[1:]))
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.value_info[:]
    graph.doc_string = f"converted from {member}"  # tf2onnx writes the temp path here


def provenance(wheel: Path, spec: Spec) -> dict[str, str]:
    """Where the model came from, stored in the ONNX file itself."""
    import tf2onnx

    key = f"facevalue.{spec.kind}"
    return {
        key: spec.name,
        f"{key}.source": f"{wheel.name} (sha256 {sha256_of(wheel)})",
        f"{key}.member": spec.member,
        f"{key}.tflite_sha256": spec.tflite_sha256,
        f"{key}.converter": f"tf2onnx {tf2onnx.__version__}, opset {OPSET}",
        f"{key}.license": "Apache-2.0, Copyright The MediaPipe Authors; "
                          f"format conversion only (see {spec.notice})",
        **spec.extra,
    }


def build(spec: Spec, out: Path, wheel: Path, work: Path) -> Path:
    """Extract, convert, canonicalise and stamp one model; write the ONNX file to ``out``."""
    tflite = extract_tflite(wheel, work, spec)
    raw = work / f"{spec.name}.raw.onnx"
    convert(tflite, raw)
    model = onnx.load(raw)
    if spec.fix is not None:
        spec.fix(model)
    canonical_names(model, spec.member, spec.outputs)
    model.producer_name, model.producer_version = "facevalue tools/build_models.py", ""
    onnx.helper.set_model_props(model, provenance(wheel, spec))
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.SerializeToString(deterministic=True))
    log.info("wrote %s (sha256 %s) from %s", out, sha256_of(out), wheel.name)
    return out


def main(argv: list[str] | None = None) -> int:
    """Build into ``models/``, or with ``--check`` build aside and compare with the shipped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="rebuild in a temp dir and compare with the shipped files")
    parser.add_argument("--only", choices=sorted(SPECS), help="build one model only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    specs = [SPECS[args.only]] if args.only else list(SPECS.values())
    differs = 0
    with tempfile.TemporaryDirectory(prefix="fv-models-") as tmp:
        work = Path(tmp)
        wheel = download_wheel(work)
        for spec in specs:
            if not args.check:
                build(spec, spec.target, wheel, work)
                continue
            rebuilt = build(spec, work / spec.target.name, wheel, work)
            same = rebuilt.read_bytes() == spec.target.read_bytes()
            differs += not same
            log.info("%s (sha256 %s): %s", spec.target, sha256_of(spec.target),
                     "identical to a fresh build" if same else "DIFFERS from a fresh build")
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
