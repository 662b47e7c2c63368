"""Softness as a photo cue: how sharp the 48 px faces of each set are, and what softening
FER2013's PublicTest faces does to each classifier.

Faces cut from real photos (facevalue's own crop, as training and scoring make them) are much
softer than FER2013's faces. A network trained on real photos that are all neutral or happy
(faces-train) can learn "soft face: neutral"; this measures both halves of that:

- the median variance of the Laplacian of every set's faces (lower: softer);
- each classifier on PublicTest as is and blurred (Gaussian, sigma 1.0 and 1.4 px): accuracy,
  and the share of the anger, fear and sadness faces it reads as neutral.

    python bench/softness.py --fer fer2013.csv.gz --photos faces-train/images \\
        faces-train/labels.csv --photos faces-dev/images faces-dev/labels.csv \\
        --models models/fvnet64.onnx exports/fvlite-s3.onnx --readme bench/README.md

Inference only, a minute or two on 2 cores. The photo crops are cached by ``train.photos``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # train/, beside bench/
from run import update_readme  # noqa: E402

from facevalue import fer2013  # noqa: E402
from facevalue.classify import Classifier  # noqa: E402
from facevalue.contract import LABELS  # noqa: E402
from train.photos import load_photos  # noqa: E402

SIGMAS = (0.0, 1.0, 1.4)
TOWARDS_NEUTRAL = ("anger", "fear", "sadness")


def sharpness(faces: np.ndarray) -> float:
    """Median over the faces of the variance of their Laplacian (uint8 faces, float maths)."""
    return float(np.median([cv2.Laplacian(face.astype(np.float32), cv2.CV_32F).var()
                            for face in faces]))


def soften(faces: np.ndarray, sigma: float) -> np.ndarray:
    return faces if sigma == 0 else np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in faces])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fer", type=Path, required=True)
    parser.add_argument("--photos", nargs=2, type=Path, action="append", default=[],
                        metavar=("FOLDER", "LABELS"))
    parser.add_argument("--models", nargs="+", type=Path, required=True)
    parser.add_argument("--readme", type=Path)
    args = parser.parse_args()

    faces = fer2013.load(args.fer)
    sets = {"FER2013 Training": faces.images[faces.usage == "Training"]}
    contract = Classifier(args.models[0], device="cpu").contract
    for folder, labels in args.photos:
        sets[f"{folder.parent.name or folder.name} crops"] = load_photos(
            folder, labels, contract)[0].images
    public = faces.usage == "PublicTest"
    images, truth = faces.images[public], faces.labels[public]
    neutral = LABELS.index("neutral")
    moved = np.isin(truth, [LABELS.index(name) for name in TOWARDS_NEUTRAL])

    lines = ["| faces | n | median Laplacian variance |", "|---|---:|---:|"]
    lines += [f"| {name} | {len(x)} | {sharpness(x):.0f} |" for name, x in sets.items()]
    lines += ["", f"| model | PublicTest blur sigma (px) | median Laplacian variance | accuracy "
              f"| {', '.join(TOWARDS_NEUTRAL)} read as neutral |", "|---|---:|---:|---:|---:|"]
    views = {sigma: soften(images, sigma) for sigma in SIGMAS}  # the same for every model
    detail = {sigma: sharpness(view) for sigma, view in views.items()}
    for path in args.models:
        classifier = Classifier(path, device="cpu")
        for sigma, view in views.items():
            top = classifier.predict(view[..., None], 256).argmax(axis=1)
            lines.append(f"| {path.stem} | {sigma:g} | {detail[sigma]:.0f} | "
                         f"{(top == truth).mean():.1%} | {(top[moved] == neutral).mean():.1%} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.readme:
        update_readme(args.readme, table, "softness")


if __name__ == "__main__":
    main()
