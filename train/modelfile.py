"""Writing model files: atomically, and listed in ``SHA256SUMS`` (facevalue refuses others)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import onnx

from facevalue.classify import SUMS_FILE


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
