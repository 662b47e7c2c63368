"""facevalue: emotion scores from photos of company executives.

``from facevalue import score_folder`` is the Python entry point. Public names are imported
on first use (PEP 562), so ``import facevalue`` and ``facevalue --help`` stay instant and
load neither onnxruntime, OpenCV nor pandas until something is scored.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (never a name equal to a submodule's, such as
# `discover`: importing the submodule would rebind the package attribute to the module)
_EXPORTS = {
    "score_folder": "facevalue.pipeline",
    "Scores": "facevalue.pipeline",
    "find_faces": "facevalue.faces",
    "classify_chunk": "facevalue.rows",
    "Photo": "facevalue.discover",
    "Classifier": "facevalue.classify",
    "load_classifier": "facevalue.classify",
    "FaceDetector": "facevalue.detect",
    "LABELS": "facevalue.contract",
}

__all__ = ["LABELS", "Classifier", "FaceDetector", "Photo", "Scores", "__version__",
           "classify_chunk", "find_faces", "load_classifier", "score_folder"]

if TYPE_CHECKING:
    from facevalue.classify import Classifier, load_classifier
    from facevalue.contract import LABELS
    from facevalue.detect import FaceDetector
    from facevalue.discover import Photo
    from facevalue.faces import find_faces
    from facevalue.pipeline import Scores, score_folder
    from facevalue.rows import classify_chunk


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'facevalue' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
