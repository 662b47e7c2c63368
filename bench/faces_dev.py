"""End-to-end accuracy on real photos: each shipped classifier on the faces-dev portraits.

FER2013 accuracy says how a classifier does on FER2013's own 48x48 crops; this says how the
whole tool does on photos: ``facevalue score`` (detector, crop, classifier) on 838
crowd-labelled one-person portraits, top emotion against the label.

    python bench/faces_dev.py /work/shared/data/faces-dev --readme bench/README.md

The labels are noisy and the set has no disgust or fear photos (see its README): read the
figures as a comparison between models, not as an accuracy to quote on its own. A model
corrected on these very photos (``python -m train adapt``) is marked in-sample, and its
cross-validated figures, recorded in its metadata, get their own row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
from pathlib import Path

import pandas as pd
from run import update_readme

from facevalue import evaluate, score_folder
from facevalue.classify import Classifier, shipped_models

LABELS = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
          "sad": "sadness", "surprise": "surprise", "neutral": "neutral"}


def score_models(images: Path, labels: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each shipped model's main-face rows joined with the labels, by model name.

    The accuracy is ``facevalue evaluate --labels``'s (``evaluate.score_photos``).
    """
    results = {}
    truth = dict(zip(labels["file"], labels["truth"], strict=True))
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in shipped_models().items():
            faces, _ = score_folder(images, Path(tmp) / f"{name}.parquet", model=model,
                                    device="cpu")
            scored = evaluate.score_photos(faces, truth)
            faces = faces.assign(file=faces["path"].map(lambda p: Path(p).name))
            rows = labels.merge(faces, on="file", how="left", validate="one_to_one")
            rows.attrs["evaluation"] = scored
            rows.attrs["metadata"] = Classifier(model, "cpu").contract.extra
            results[name] = rows
    return results


def table(results: dict[str, pd.DataFrame], labels_sha256: str) -> str:
    """Markdown: accuracy overall and per label."""
    first = next(iter(results.values()))
    classes = [c for c in LABELS.values() if (first["truth"] == c).any()]
    lines = [f"{len(first)} faces-dev photos, `facevalue score` with each shipped model "
             "(main face; top emotion against the crowd label).", "",
             "| model | photos scored | accuracy (95% CI) | kappa | "
             + " | ".join(f"{c} ({(first['truth'] == c).sum()})" for c in classes) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(classes)]
    for name, rows in results.items():
        ok = rows["status"] == "ok"
        right = ok & (rows["emotion"] == rows["truth"])
        per_class = " | ".join(f"{right[rows['truth'] == c].mean():.1%}" for c in classes)
        scored = rows.attrs["evaluation"]
        low, high = scored.accuracy_ci
        fitted = json.loads(rows.attrs["metadata"].get("facevalue.photo_correction", "{}"))
        here = fitted.get("labels_sha256") == labels_sha256
        lines.append(f"| {name}{', in-sample (corrected on these photos)' if here else ''} "
                     f"| {ok.sum()} | {scored.accuracy:.1%} ({low:.1%}-{high:.1%}) | "
                     f"{scored.kappa:.2f} | {per_class} |")
        if here:
            cv = json.loads(rows.attrs["metadata"]["facevalue.photo_accuracy_crossval"])
            low, high = cv["accuracy_ci"]
            recall = " | ".join(f"{cv['recall'][c]:.1%}" for c in classes)
            lines.append(f"| **{name}, cross-validated** (the figure to report; "
                         f"{cv['folds']} folds, from its metadata) | {ok.sum()} | "
                         f"{cv['accuracy']:.1%} ({low:.1%}-{high:.1%}) | | {recall} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("faces_dev", type=Path, help="the faces-dev folder (images/, labels.csv)")
    parser.add_argument("--readme", type=Path, help="write the table into this README")
    args = parser.parse_args()
    logging.getLogger("facevalue").setLevel(logging.ERROR)  # faces-dev has no company folders
    labels = pd.read_csv(args.faces_dev / "labels.csv")
    labels = labels.assign(truth=labels["label"].map(LABELS))
    digest = hashlib.sha256((args.faces_dev / "labels.csv").read_bytes()).hexdigest()
    text = table(score_models(args.faces_dev / "images", labels), digest)
    print(text)
    if args.readme:
        update_readme(args.readme, text, "faces-dev")


if __name__ == "__main__":
    main()
