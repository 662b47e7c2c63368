"""The model contract: what an ONNX classifier must say about itself in ``metadata_props``.

Training writes these keys at export; the scorer reads them and refuses a model that lacks
them, so labels, input size, colour mode and normalisation are never guessed or hard-coded
in two places.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from facevalue.errors import FacevalueError

# FER2013's label order; the output columns of every facevalue table use these names.
LABELS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")

CONTRACT_VERSION = "1"
REQUIRED_KEYS = (
    "facevalue.contract",
    "facevalue.labels",
    "facevalue.input_size",
    "facevalue.color_mode",
    "facevalue.layout",
    "facevalue.normalization",
    "facevalue.output",
)


class ContractError(FacevalueError, ValueError):
    """Raised when a model file does not carry a usable facevalue contract."""


@dataclass(frozen=True)
class Contract:
    """What a scorer needs to feed a model and read its output.

    ``scale`` and ``offset`` map uint8 pixels to the model input as ``x * scale + offset``.
    ``output`` is ``probabilities`` (rows sum to 1) for every model facevalue ships.
    """

    labels: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)
    color_mode: str  # "grayscale" or "rgb"
    layout: str  # "NHWC" or "NCHW"
    scale: float
    offset: float
    output: str
    extra: dict[str, str]

    def to_metadata(self) -> dict[str, str]:
        """The contract as ONNX ``metadata_props`` key/value strings."""
        meta = {
            "facevalue.contract": CONTRACT_VERSION,
            "facevalue.labels": json.dumps(list(self.labels)),
            "facevalue.input_size": json.dumps(list(self.input_size)),
            "facevalue.color_mode": self.color_mode,
            "facevalue.layout": self.layout,
            "facevalue.normalization": json.dumps({"scale": self.scale, "offset": self.offset}),
            "facevalue.output": self.output,
        }
        meta.update(self.extra)
        return meta


def from_metadata(meta: dict[str, str], source: str = "model") -> Contract:
    """Parse ``metadata_props``; raise ContractError naming what is missing or wrong."""
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ContractError(
            f"{source} lacks the facevalue contract (missing metadata: {', '.join(missing)}); "
            "export models with `python -m train export`"
        )
    if meta["facevalue.contract"] != CONTRACT_VERSION:
        raise ContractError(f"{source}: contract version {meta['facevalue.contract']!r}, "
                            f"this facevalue reads version {CONTRACT_VERSION}")
    try:
        labels = tuple(json.loads(meta["facevalue.labels"]))
        height, width = (int(v) for v in json.loads(meta["facevalue.input_size"]))
        norm = json.loads(meta["facevalue.normalization"])
        scale, offset = float(norm["scale"]), float(norm["offset"])
    except (ValueError, TypeError, KeyError) as e:
        raise ContractError(f"{source}: malformed facevalue metadata ({e})") from e
    if labels != LABELS:
        raise ContractError(f"{source}: labels {labels} differ from facevalue's {LABELS}")
    if meta["facevalue.color_mode"] not in ("grayscale", "rgb"):
        raise ContractError(f"{source}: unknown color_mode {meta['facevalue.color_mode']!r}")
    if meta["facevalue.layout"] not in ("NHWC", "NCHW"):
        raise ContractError(f"{source}: unknown layout {meta['facevalue.layout']!r}")
    if meta["facevalue.output"] != "probabilities":
        raise ContractError(f"{source}: output {meta['facevalue.output']!r} is not probabilities")
    extra = {k: v for k, v in meta.items() if k not in REQUIRED_KEYS}
    return Contract(labels, (height, width), meta["facevalue.color_mode"],
                    meta["facevalue.layout"], scale, offset, meta["facevalue.output"], extra)
