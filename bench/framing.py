"""Crop framing on real photos: end-to-end accuracy on faces-dev for a grid of crop settings.

Each photo is decoded and its main face found once, the way ``facevalue score`` does it;
then the face is cut with every (scale, shift, eye-line alignment) of the grid by
``detect.crop_faces``, the function the pipeline calls, and classified. The table gives the
accuracy and the recall of each labelled class per setting, for each model asked for.

    python bench/framing.py /work/shared/data/faces-dev --readme bench/README.md

faces-dev is also where the shipped defaults are then measured, so the chosen setting's
figure is optimistic by the selection; the held-back photo sets judge it.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from run import update_readme

from facevalue import decode, detect, storage
from facevalue.classify import load_classifier, shipped_models
from facevalue.contract import LABELS
from facevalue.defaults import DEFAULT_MAX_PIXELS
from facevalue.evaluate import read_labels
from facevalue.faces import DETECT_SIDE

SCALES = (1.0, 1.1, 1.2, 1.3, 1.4)
SHIFTS = (-0.15, -0.1, -0.05, 0.0)


def main_faces(images: Path, files: list[str]) -> dict[str, tuple[np.ndarray, detect.Box]]:
    """file -> (the image faces are cut from, its main box) for photos with a face."""
    detector = detect.FaceDetector(threads=1)
    found = {}
    for name in files:
        image = decode.decode(storage.read_local(images / name), DEFAULT_MAX_PIXELS,
                              DETECT_SIDE).image
        boxes = detector.detect(image)
        if boxes:
            found[name] = (image, boxes[0])
    return found


def sweep(faces: dict[str, tuple[np.ndarray, detect.Box]], truth: dict[str, str],
          model: Path) -> pd.DataFrame:
    """One row per setting: accuracy over all labelled photos and recall per class."""
    classifier = load_classifier(model, device="cpu", threads=1)
    labels = np.array([truth[name] for name in truth])
    rows = []
    for scale, shift, align in itertools.product(SCALES, SHIFTS, (False, True)):
        crops = np.concatenate([
            detect.crop_faces(image, [box], classifier.contract.input_size,
                              classifier.contract.color_mode, scale, shift, align)
            for image, box in faces.values()])
        top = np.array(LABELS)[classifier.predict(crops).argmax(axis=1)]
        predicted = dict(zip(faces, top, strict=True))
        right = np.array([predicted.get(name) == truth[name] for name in truth])
        row = {"scale": scale, "shift": shift, "align": align, "accuracy": right.mean()}
        row |= {label: right[labels == label].mean() for label in LABELS
                if (labels == label).any()}
        rows.append(row)
    return pd.DataFrame(rows)


def table(results: dict[str, pd.DataFrame], n: int, top: int = 8) -> str:
    """Markdown: each model's best settings, and the shipped default's row."""
    lines = [f"{n} faces-dev photos; main face cut with each setting and classified "
             "(`python bench/framing.py`). Best settings by accuracy, then the defaults "
             f"(scale {detect.CROP_SCALE}, shift {detect.CROP_SHIFT}, align "
             f"{detect.ALIGN}).", ""]
    for name, frame in results.items():
        classes = [c for c in LABELS if c in frame.columns]
        default = ((frame["scale"] == detect.CROP_SCALE) & (frame["shift"] == detect.CROP_SHIFT)
                   & (frame["align"] == detect.ALIGN))
        shown = pd.concat([frame.sort_values("accuracy", ascending=False).head(top),
                           frame[default]]).drop_duplicates()
        lines += [f"**{name}**", "",
                  "| scale | shift | aligned | accuracy | " + " | ".join(classes) + " |",
                  "|---:|---:|---|---:|" + "---:|" * len(classes)]
        for _, row in shown.iterrows():
            mark = " (default)" if default[row.name] else ""
            lines.append(f"| {row['scale']} | {row['shift']} | {'yes' if row['align'] else 'no'}"
                         f"{mark} | {row['accuracy']:.1%} | "
                         + " | ".join(f"{row[c]:.1%}" for c in classes) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("faces_dev", type=Path, help="the faces-dev folder (images/, labels.csv)")
    parser.add_argument("--models", nargs="+", default=["fvnet"],
                        help="shipped model names or ONNX paths")
    parser.add_argument("--readme", type=Path, help="write the table into this README")
    args = parser.parse_args()
    truth = read_labels(args.faces_dev / "labels.csv")
    faces = main_faces(args.faces_dev / "images", list(truth))
    shipped = shipped_models()
    results = {name: sweep(faces, truth, shipped.get(name, Path(name))) for name in args.models}
    text = table(results, len(truth))
    print(text)
    if args.readme:
        update_readme(args.readme, text, "framing")


if __name__ == "__main__":
    main()
