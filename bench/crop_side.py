"""Does a face cropped from a reduced decode lose accuracy (issue 22)? faces-dev scored with
the detection copy's side (``DETECT_SIDE``) and the smallest crop taken from it
(``MIN_CROP_SIDE``) set to each pair below.

    python bench/crop_side.py /work/shared/data/faces-dev --readme bench/README.md

The faces-dev photos are 350 px, so only a detection side under 175 px decodes them reduced:
at 128 px they are decoded at 1/2 (175 px) and every face still gives a crop of 96 px or
more; at 64 px at 1/4 (88 px), where faces give crops of about 64-96 px; at 40 px at 1/8
(44 px), where they give crops of about 32-53 px (a crop may reach past the photo's edge).
The rows of one detection side detect alike and differ only in where each crop comes from:
a second, larger decode (faces under the smallest crop) or the reduced copy itself, so 40 /
96 against 40 / 32 is every face cropped from a larger decode against every face cropped at
32-53 px from the 1/8 copy, a harsher test of small crops than the shipped 48 px floor.
Each row is one ``facevalue evaluate``-equivalent run (``evaluate_photos``); ``second
decodes`` counts photos decoded a second time, larger, for their crop.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

from run import HERE, update_readme

from facevalue import decode, faces
from facevalue.evaluate import evaluate_photos

# (detection side, smallest crop side); the first pair is the shipped one before issue 22
PAIRS = ((512, 96), (128, 96), (64, 96), (64, 64), (64, 48), (40, 96), (40, 48), (40, 32))


def one_setting(folder: Path, model: str, detect_side: int, min_crop: int) -> dict[str, Any]:
    """faces-dev's accuracy with these two settings, and how many photos were decoded twice."""
    counter = itertools.count()
    plain = decode.decode

    def counted(data: bytes, max_pixels: int = decode.DEFAULT_MAX_PIXELS,
                min_side: int = decode.DEFAULT_MIN_SIDE) -> decode.Decoded:
        if min_side != detect_side:
            next(counter)
        return plain(data, max_pixels, min_side)

    shipped = faces.DETECT_SIDE, faces.MIN_CROP_SIDE
    faces.DETECT_SIDE, faces.MIN_CROP_SIDE, decode.decode = detect_side, min_crop, counted
    try:
        result = evaluate_photos(folder / "images", folder / "labels.csv", model=model,
                                 device="cpu")
    finally:
        (faces.DETECT_SIDE, faces.MIN_CROP_SIDE), decode.decode = shipped, plain
    return {"model": model, "detect_side": detect_side, "min_crop": min_crop,
            "accuracy": result.accuracy, "ci": result.accuracy_ci, "kappa": result.kappa,
            "n": result.n, "second_decodes": next(counter)}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | detection side | smallest crop | accuracy (95% CI) | kappa "
             "| second decodes |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['detect_side']} | {r['min_crop']} | "
                     f"{r['accuracy']:.1%} ({r['ci'][0]:.1%}-{r['ci'][1]:.1%}) | "
                     f"{r['kappa']:.3f} | {r['second_decodes']} of {r['n']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("faces_dev", type=Path, help="folder with images/ and labels.csv")
    parser.add_argument("--models", nargs="+", default=["fvnet-photo-fp32", "fvnet"])
    parser.add_argument("--out", type=Path, default=HERE / "out" / "crop_side.json")
    parser.add_argument("--readme", type=Path, help="write the table into this README")
    args = parser.parse_args()
    rows = [one_setting(args.faces_dev, model, side, crop)
            for model in args.models for side, crop in PAIRS]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    text = table(rows)
    print(text)
    if args.readme:
        update_readme(args.readme, text, "crop-side")


if __name__ == "__main__":
    main()
