"""PublicTest accuracy of every committee of the given classifiers: can averaging the shipped
FER2013 models reach issue 19's most-accurate target (73%) without a stronger network?

Each committee averages its members' probabilities (and, second figure, their log
probabilities); inference only, a minute on 2 cores.

    python bench/ensembles.py fer2013.csv.gz models/fvnet64.onnx models/fvnet.onnx \\
        models/fvc2017.onnx models/fvnet-photo-fp32.onnx
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from facevalue import fer2013
from facevalue.classify import Classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fer", type=Path)
    parser.add_argument("models", nargs="+", type=Path)
    args = parser.parse_args()
    faces = fer2013.load(args.fer).split("PublicTest")
    probs = {path.stem: Classifier(path, device="cpu").predict(faces.images[..., None], 256)
             for path in args.models}
    print("| committee | mean of probabilities | mean of log probabilities |\n|---|---:|---:|")
    for size in range(1, len(probs) + 1):
        for members in itertools.combinations(probs, size):
            mean = sum(probs[m] for m in members).argmax(axis=1)
            log = sum(np.log(probs[m] + 1e-9) for m in members).argmax(axis=1)
            print(f"| {' + '.join(members)} | {(mean == faces.labels).mean():.1%} | "
                  f"{(log == faces.labels).mean():.1%} |")


if __name__ == "__main__":
    main()
