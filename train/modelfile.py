"""Writing model files: atomically, and listed in ``SHA256SUMS`` (facevalue refuses others)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import onnx

from facevalue.classify import SUMS_FILE
from facevalue.contract import Contract

# What a model's own measurements say about its graph: a model derived from it (an int8 copy, a
# photo correction) has another graph, so it drops these, measures its own figures and names
# its source by file and sha256, where the source's figures stay.
SOURCE_FIGURES = ("facevalue.public_test_accuracy_by_tta", "facevalue.selection_accuracy_by_tta",
                  "facevalue.ece_before", "facevalue.ece_after_crossfit",
                  "facevalue.parity_max_abs", "facevalue.float_public_test_accuracy",
                  "facevalue.int8_top1_agreement", "facevalue.int8_max_abs_diff",
                  "facevalue.int8_mean_abs_diff")


def derived_metadata(source: Contract) -> dict[str, str]:
    """The source model's contract and provenance, without the figures it measured on itself."""
    return {k: v for k, v in source.to_metadata().items() if k not in SOURCE_FIGURES}


def write_atomic(proto: onnx.ModelProto, out: Path) -> str:
    """Write next to ``out`` and rename, so a reader never sees half a model; return sha256."""
    out.parent.mkdir(parents=True, exist_ok=True)
    data = proto.SerializeToString()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return hashlib.sha256(data).hexdigest()


def record_checksum(out: Path, digest: str) -> None:
    """Put ``out``'s sha256 into ``SHA256SUMS`` beside it: facevalue refuses unlisted models."""
    sums = out.parent / SUMS_FILE
    lines = sums.read_text().splitlines() if sums.exists() else []
    kept = [line for line in lines if line.split()[-1:] != [out.name]]
    sums.write_text("\n".join(sorted([*kept, f"{digest}  {out.name}"])) + "\n")
