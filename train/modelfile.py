"""Writing model files: atomically, and listed in ``SHA256SUMS`` (facevalue refuses others)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import onnx

from facevalue.classify import SUMS_FILE
from facevalue.contract import Contract
from facevalue.errors import FacevalueError

# The shipped models: what `--model NAME` runs and what published results name by sha256.
SHIPPED = Path(__file__).resolve().parents[1] / "models"
# Stamped into every model written anywhere else, so its tables say it is not a shipped one
# even when its file name is (an export of runs/fvc2017 to exports/fvc2017.onnx, say).
AD_HOC = "facevalue.ad_hoc"


class ModelFileError(FacevalueError):
    """A model file that may not be written where asked (the message says why)."""

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


def write_model(proto: onnx.ModelProto, out: str | Path, force: bool = False) -> str:
    """Write ``proto`` to ``out`` atomically, list its sha256 in ``SHA256SUMS`` beside it,
    and return the sha256.

    A shipped model is replaced only with ``force``: its file, card and checksum line are
    what published results name. A model written outside ``models/`` is marked ad hoc in
    its metadata (``facevalue.ad_hoc``), which the scorer writes into its tables.
    """
    out = Path(out)
    check_target(out, force)
    if out.resolve().parent != SHIPPED:
        props = {p.key: p.value for p in proto.metadata_props}
        onnx.helper.set_model_props(proto, {**props, AD_HOC: "true"})
    digest = write_atomic(proto, out)
    record_checksum(out, digest)
    return digest


def check_target(out: str | Path, force: bool = False) -> None:
    """Refuse to replace a shipped model without ``force``: called before the work too, so a
    refusal costs nothing."""
    out = Path(out)
    if out.resolve().parent == SHIPPED and out.exists() and not force:
        raise ModelFileError(f"{out} is a shipped model; write elsewhere (e.g. exports/"
                             f"{out.name}) or pass --force to replace it")


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
