"""Rebuild ``models/blazeface-short-range.onnx`` from MediaPipe's published wheel.

Why a script: the face detector facevalue ships must be reproducible from the repository.
MediaPipe's BlazeFace short-range model (Apache-2.0) is only published as a ``.tflite`` inside
the ``mediapipe`` wheel on PyPI; this script downloads that exact wheel (``pip download``, no
install), checks the ``.tflite`` against a pinned sha256, converts it with tf2onnx, renames the
tensors tf2onnx names in a run-dependent order (so two builds give identical bytes), stamps the
provenance into the ONNX ``metadata_props`` and writes the file into ``models/``.

    python tools/build_detector.py            # rebuild models/blazeface-short-range.onnx
    python tools/build_detector.py --check    # rebuild in a temp dir, compare with the shipped file

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
from pathlib import Path

import onnx

log = logging.getLogger("build_detector")

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "models" / "blazeface-short-range.onnx"
WHEEL_REQUIREMENT = "mediapipe==0.10.21"
# Pin one platform's wheel so every machine downloads the same file; the model inside is the
# same in all of them, and the tflite hash below is what is really checked.
WHEEL_PLATFORM = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                  "--implementation", "cp", "--only-binary=:all:")
TFLITE_MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
TFLITE_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
OPSET = 17


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


def extract_tflite(wheel: Path, folder: Path) -> Path:
    """Extract the short-range BlazeFace model and check it is the one this script pins."""
    out = folder / Path(TFLITE_MEMBER).name
    with zipfile.ZipFile(wheel) as z:
        out.write_bytes(z.read(TFLITE_MEMBER))
    digest = sha256_of(out)
    if digest != TFLITE_SHA256:
        raise RuntimeError(f"{TFLITE_MEMBER} in {wheel.name} has sha256 {digest}, "
                           f"expected {TFLITE_SHA256}")
    return out


def convert(tflite: Path, onnx_path: Path) -> None:
    """Convert with tf2onnx's command line, the documented route for tflite models."""
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tflite),
           "--output", str(onnx_path), "--opset", str(OPSET)]
    subprocess.run(cmd, check=True, capture_output=True)


def canonical_names(model: onnx.ModelProto) -> None:
    """Rename internal tensors and nodes by graph position, in place.

    tf2onnx numbers folded constants in an order that changes from run to run, so the same
    conversion gives different bytes; naming by position makes the build byte-reproducible.
    """
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in keep and name not in names:
                names[name] = f"t{len(names)}"
        node.name = f"{node.op_type.lower()}_{i}"
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.setdefault(n, f"t{len(names)}") if n not in keep else n
                          for n in node.output]
    for init in graph.initializer:
        init.name = names[init.name]
    inits = sorted(graph.initializer, key=lambda t: int(t.name[1:]))
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.value_info[:]
    graph.doc_string = f"converted from {TFLITE_MEMBER}"  # tf2onnx writes the temp path here


def provenance(wheel: Path) -> dict[str, str]:
    """Where the model came from, stored in the ONNX file itself."""
    import tf2onnx

    return {
        "facevalue.detector": "blazeface-short-range",
        "facevalue.detector.source": f"{wheel.name} (sha256 {sha256_of(wheel)})",
        "facevalue.detector.member": TFLITE_MEMBER,
        "facevalue.detector.tflite_sha256": TFLITE_SHA256,
        "facevalue.detector.converter": f"tf2onnx {tf2onnx.__version__}, opset {OPSET}",
        "facevalue.detector.license": "Apache-2.0, Copyright The MediaPipe Authors; "
                                      "format conversion only (see models/NOTICE-blazeface.md)",
    }


def build(out: Path, work: Path) -> Path:
    """Download, extract, convert, canonicalise and stamp; write the ONNX file to ``out``."""
    wheel = download_wheel(work)
    tflite = extract_tflite(wheel, work)
    raw = work / "raw.onnx"
    convert(tflite, raw)
    model = onnx.load(raw)
    canonical_names(model)
    model.producer_name, model.producer_version = "facevalue tools/build_detector.py", ""
    onnx.helper.set_model_props(model, provenance(wheel))
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.SerializeToString(deterministic=True))
    log.info("wrote %s (sha256 %s) from %s", out, sha256_of(out), wheel.name)
    return out


def main(argv: list[str] | None = None) -> int:
    """Build into ``models/``, or with ``--check`` build aside and compare with the shipped file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="rebuild in a temp dir and compare with the shipped file")
    parser.add_argument("--out", type=Path, default=TARGET, help="where to write the ONNX file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="fv-detector-") as tmp:
        work = Path(tmp)
        if not args.check:
            build(args.out, work)
            return 0
        rebuilt = build(work / TARGET.name, work)
        same = rebuilt.read_bytes() == args.out.read_bytes()
        log.info("%s (sha256 %s): %s", args.out, sha256_of(args.out),
                 "identical to a fresh build" if same else "DIFFERS from a fresh build")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
