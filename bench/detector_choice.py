"""Measure face detectors and FER2013-like crops on real portraits (issue 2, items 4 and 5).

Two studies, both re-runnable; results go to stdout as Markdown (pasted into
``bench/detector_choice.md``) and, with ``--json``, to a file.

``detect``: each candidate detector on every faces-dev photo (one person each) resized so the
longer side is 256 ... 3000 px, as given ("tight": the face fills the frame) and pasted into a
frame three times as wide ("framed": a portrait with background, closer to executive photos);
plus the sample portraits. Counts photos with no face (misses), with more than one face (false
faces), with the largest box off the face (centre outside the middle half of the face photo),
and the detector's median milliseconds per photo (decoding excluded; one thread each).

``crop``: crops faces-dev faces with facevalue.detect at several (scale, shift) settings,
saves a PNG grid next to FER2013 training faces, and scores end-to-end accuracy with a
classifier (.keras, LOGITS, pixels/255; or a facevalue .onnx).

    python bench/detector_choice.py detect /work/shared/data/faces-dev --samples DIR
    python bench/detector_choice.py crop /work/shared/data/faces-dev \
        --fer /work/shared/data/fer2013/fer2013.csv.gz --model runs/fvc2017/best.keras

Haar needs ``cv2.CascadeClassifier`` (opencv-contrib-python-headless) and MTCNN the ``mtcnn``
package; run in a venv that has them (see the .md), otherwise those candidates are skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facevalue.detect import Box, FaceDetector, crop_faces

log = logging.getLogger("detector_choice")

SIZES = (256, 350, 1024, 2048, 3000)
FRAME = 3  # "framed" photos are this many face-photo widths wide
# The faces in the sample portraits (x, y, w, h in original pixels), checked by eye.
SAMPLE_FACES = {"grace_hopper": (166, 143, 200, 200), "astronaut": (178, 81, 94, 94)}
WORKING_SIDE = 640  # Haar and MTCNN run on a copy at most this large (as one would use them)
Detect = Callable[[np.ndarray], list[Box]]
LABEL_MAP = {"angry": "anger", "happy": "happiness", "neutral": "neutral", "sad": "sadness",
             "surprise": "surprise", "disgust": "disgust", "fear": "fear"}


@dataclass(frozen=True)
class Row:
    """One candidate on one set of photos at one size."""

    detector: str
    photos: str
    size: int
    n: int
    misses: int
    false_faces: int
    off_face: int
    ms_per_photo: float


def resize_long(image: np.ndarray, side: int) -> np.ndarray:
    """Resize so the longer side is ``side`` px (area down, cubic up)."""
    scale = side / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def framed(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Paste a face photo into a grey 3-wide, 3.75-tall frame, upper middle; return its rect."""
    h, w = image.shape[:2]
    canvas = np.full((int(h * FRAME * 1.25), w * FRAME) + image.shape[2:], 128, np.uint8)
    x, y = w * (FRAME - 1) // 2, h // 2
    canvas[y:y + h, x:x + w] = image
    return canvas, (x, y, w, h)


def on_face(box: Box, rect: tuple[int, int, int, int]) -> bool:
    """Whether the box centre lies in the middle half of the face photo's rectangle."""
    x, y, w, h = rect
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    return abs(cx - (x + w / 2)) <= w / 4 and abs(cy - (y + h / 2)) <= h / 4


def downscaled(detect: Detect) -> Detect:
    """Run a slow detector on a copy at most WORKING_SIDE px, boxes mapped back."""
    def run(image: np.ndarray) -> list[Box]:
        factor = min(1.0, WORKING_SIDE / max(image.shape[:2]))
        small = image if factor == 1 else resize_long(image, WORKING_SIDE)
        return [b.scaled(1 / factor) for b in detect(small)]
    return run


def haar(xml: Path | None) -> Detect | None:
    """OpenCV's frontal-face Haar cascade, the baseline.

    OpenCV 5 wheels ship neither the cascade files nor, in the non-contrib wheel, the
    CascadeClassifier; use the contrib wheel and the XML from an OpenCV 4 wheel (see the .md).
    """
    if not hasattr(cv2, "CascadeClassifier"):
        log.warning("skipping haar: this cv2 has no CascadeClassifier (use the contrib wheel)")
        return None
    cascade = cv2.CascadeClassifier(str(xml)) if xml else cv2.CascadeClassifier()
    if cascade.empty():
        log.warning("skipping haar: no cascade loaded (give --haar-xml)")
        return None

    def detect(image: np.ndarray) -> list[Box]:
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
        return [Box(int(x), int(y), int(w), int(h), 1.0) for x, y, w, h in found]
    return downscaled(detect)


def mtcnn() -> Detect | None:
    """MTCNN (the ``mtcnn`` package, weights in its wheel, runs on TensorFlow)."""
    try:
        from mtcnn import MTCNN
    except ImportError:
        log.warning("skipping mtcnn: package not installed")
        return None
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model = MTCNN(device="CPU:0")

    def detect(image: np.ndarray) -> list[Box]:
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB)
        return [Box(*(int(v) for v in f["box"]), float(f["confidence"]))
                for f in model.detect_faces(rgb)]
    return downscaled(detect)


def candidates(names: list[str], haar_xml: Path | None) -> dict[str, Detect]:
    """The detectors to compare, by name; unavailable ones are skipped with a warning."""
    makers: dict[str, Callable[[], Detect | None]] = {
        "blazeface": lambda: FaceDetector(threads=1).detect,
        "blazeface-one-look": lambda: FaceDetector(threads=1, zoom_out=0.0, tiles=False).detect,
        "blazeface-no-tiles": lambda: FaceDetector(threads=1, tiles=False).detect,
        "blazeface-0.6": lambda: FaceDetector(threads=1, min_score=0.6).detect,
        "haar": lambda: haar(haar_xml),
        "mtcnn": mtcnn,
    }
    made = {name: makers[name]() for name in names}
    return {name: detect for name, detect in made.items() if detect is not None}


@dataclass
class Tally:
    """Running counts of one detector on one photo set."""

    misses: int = 0
    false_faces: int = 0
    off_face: int = 0
    seconds: list[float] = field(default_factory=list)

    def add(self, boxes: list[Box], rect: tuple[int, int, int, int], seconds: float) -> None:
        """Count one photo's result."""
        self.misses += not boxes
        self.false_faces += len(boxes) > 1
        self.off_face += bool(boxes) and not on_face(max(boxes, key=lambda b: b.area), rect)
        self.seconds.append(seconds)


def measure(detectors: dict[str, Detect], label: str, size: int,
            photos: Iterator[tuple[np.ndarray, tuple[int, int, int, int]]]) -> list[Row]:
    """Run every detector on each photo in turn (one photo in memory; load hits all alike)."""
    tallies = {name: Tally() for name in detectors}
    for i, (image, rect) in enumerate(photos):
        for name, detect in detectors.items():
            if i == 0:
                detect(image)  # warm-up: first-call allocations are not per-photo cost
            start = time.perf_counter()
            boxes = detect(image)
            tallies[name].add(boxes, rect, time.perf_counter() - start)
    # median: the machine is shared, and spikes from other work are noise
    return [Row(name, label, size, len(t.seconds), t.misses, t.false_faces, t.off_face,
                round(1000 * float(np.median(t.seconds)), 2)) for name, t in tallies.items()]


def prepared(images: list[np.ndarray], size: int, frame: bool,
             faces: list[tuple[int, int, int, int]] | None = None
             ) -> Iterator[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Photos resized to ``size`` (longer side), optionally framed, with the face rectangle.

    The face is the whole photo (faces-dev) unless ``faces`` gives it per photo. A generator:
    838 photos at 3000 px would take 16 GB at once.
    """
    for i, image in enumerate(images):
        rect = faces[i] if faces else (0, 0, image.shape[1], image.shape[0])
        if frame:
            image, (x, y, _, _) = framed(image)
            rect = (rect[0] + x, rect[1] + y, rect[2], rect[3])
        factor = size / max(image.shape[:2])
        yield resize_long(image, size), tuple(round(v * factor) for v in rect)


def find_sample(root: Path, stem: str) -> np.ndarray:
    """A sample portrait by file stem, anywhere under ``root`` (.jpg or .png), as BGR."""
    matches = sorted(root.rglob(f"{stem}.*"))
    if not matches:
        raise FileNotFoundError(f"no {stem}.* under {root}")
    return cv2.imread(str(matches[0]))


def load_dev(data: Path, every: int) -> list[np.ndarray]:
    """faces-dev photos (decoded as stored: 8-bit grey), every ``every``-th in name order."""
    files = sorted((data / "images").iterdir())[::every]
    return [cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files]


def run_detect(args: argparse.Namespace) -> list[Row]:
    """The detection study: every candidate, photo set and size."""
    detectors = candidates(args.candidates, args.haar_xml)
    dev = load_dev(args.data, args.every)
    samples = [find_sample(args.samples, s) for s in SAMPLE_FACES] if args.samples else []
    rows = []
    for size in args.sizes:
        sets = {"faces-dev tight": prepared(dev, size, False),
                "faces-dev framed": prepared(dev, size, True)}
        if samples:  # sample portraits already have background; no frame
            sets["sample portraits"] = prepared(samples, size, False, list(SAMPLE_FACES.values()))
        for label, photos in sets.items():
            rows += measure(detectors, label, size, photos)
            for row in rows[-len(detectors):]:
                log.info("%s", row)
    return rows


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    head = "| detector | photos | size px | n | misses | false faces | off face | median ms |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.detector} | {r.photos} | {r.size} | {r.n} | {r.misses} | {r.false_faces} "
              f"| {r.off_face} | {r.ms_per_photo} |" for r in rows]
    return "\n".join(lines)


def run_min_face(args: argparse.Namespace) -> list[dict[str, object]]:
    """Smallest face found: each sample portrait pasted into ever wider grey frames.

    Reports, per portrait and frame width, the face width as a share of the photo's longer side
    and whether the detector (and each other candidate) found it.
    """
    detectors = candidates(args.candidates, args.haar_xml)
    results = []
    for name, rect in SAMPLE_FACES.items():
        image = find_sample(args.samples, name)
        for width in args.widths:
            canvas = np.full((max(image.shape[0], width * 3 // 4), width, 3), 128, np.uint8)
            canvas[:image.shape[0], :image.shape[1]] = image
            photo = resize_long(canvas, 1024)
            found = {d: any(on_face(b.scaled(max(canvas.shape[:2]) / 1024), rect)
                            for b in detect(photo)) for d, detect in detectors.items()}
            share = round(rect[2] / max(canvas.shape[:2]), 3)
            results.append({"portrait": name, "face_share": share, **found})
            log.info("%s", results[-1])
    return results


def load_classifier(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 (n, 48, 48, 1) crops -> class scores, from a .keras (logits) or facevalue .onnx."""
    if path.suffix == ".keras":
        import keras

        model = keras.models.load_model(path)
        return lambda x: np.asarray(model.predict(x.astype(np.float32) / 255, verbose=0))
    import onnxruntime as ort

    from facevalue.contract import from_metadata

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    contract = from_metadata(session.get_modelmeta().custom_metadata_map, str(path))
    name = session.get_inputs()[0].name
    def run(x: np.ndarray) -> np.ndarray:
        scaled = (x * contract.scale + contract.offset).astype(np.float32)
        return session.run(None, {name: scaled})[0]
    return run


def crop_settings(scales: list[float], shifts: list[float]) -> list[tuple[float, float]]:
    """Every (scale, shift) pair to try."""
    return [(scale, shift) for scale in scales for shift in shifts]


def save_grid(path: Path, fer_faces: np.ndarray, rows: dict[str, np.ndarray]) -> None:
    """PNG: a row of FER2013 training faces, then one row of our crops per setting."""
    def strip(faces: np.ndarray, label: str) -> np.ndarray:
        tiles = [cv2.resize(f.reshape(48, 48), (96, 96), interpolation=cv2.INTER_NEAREST)
                 for f in faces]
        name = np.full((96, 150), 255, np.uint8)
        cv2.putText(name, label, (4, 52), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0, 1)
        return np.hstack([name, *tiles])
    strips = [strip(fer_faces, "FER2013 train")]
    strips += [strip(crops, label) for label, crops in rows.items()]
    cv2.imwrite(str(path), np.vstack(strips))


def run_crop(args: argparse.Namespace) -> list[dict[str, object]]:
    """The crop study: accuracy of the classifier on faces-dev per crop setting, and the grid."""
    with open(args.data / "labels.csv", newline="") as f:
        labelled = [(r["file"], LABEL_MAP[r["label"]]) for r in csv.DictReader(f)]
    from facevalue.contract import LABELS

    truth = np.array([LABELS.index(label) for _, label in labelled])
    images = [cv2.imread(str(args.data / "images" / name), cv2.IMREAD_UNCHANGED)
              for name, _ in labelled]
    detector = FaceDetector()
    boxes = [detector.detect(image)[:1] for image in images]
    found = np.array([bool(b) for b in boxes])
    classify = load_classifier(args.model)
    results, grid = [], {}
    shown = np.linspace(0, found.sum() - 1, 12).astype(int)  # indices into the crops
    for scale, shift in crop_settings(args.scales, args.shifts):
        crops = np.stack([crop_faces(image, b, (48, 48), "grayscale", scale, shift)[0]
                          for image, b in zip(images, boxes, strict=True) if b])
        predicted = np.full(len(images), -1)
        predicted[found] = classify(crops).argmax(axis=1)
        results.append(accuracy(scale, shift, truth, predicted))
        log.info("%s", results[-1])
        if (scale, shift) in args.grid_settings:
            grid[f"scale {scale} shift {shift}"] = crops[shown]
    if args.grid:
        from facevalue.fer2013 import load

        fer = load(args.fer).split("Training").images
        save_grid(args.grid, fer[np.linspace(0, len(fer) - 1, 12).astype(int)], grid)
    return results


def accuracy(scale: float, shift: float, truth: np.ndarray, predicted: np.ndarray
             ) -> dict[str, object]:
    """Accuracy (no face counts as wrong), mean recall over present classes, recall per class."""
    from facevalue.contract import LABELS

    recall = {LABELS[c]: round(float((predicted[truth == c] == c).mean()), 3)
              for c in np.unique(truth)}
    return {"scale": scale, "shift": shift,
            "accuracy": round(float((predicted == truth).mean()), 3),
            "mean_recall": round(float(np.mean(list(recall.values()))), 3), "recall": recall}


def crop_markdown(results: list[dict[str, object]]) -> str:
    """Crop results as a Markdown table."""
    classes = list(results[0]["recall"])
    lines = ["| scale | shift | accuracy | mean recall | " + " | ".join(classes) + " |",
             "|---:|---:|---:|---:|" + "---:|" * len(classes)]
    lines += [f"| {r['scale']} | {r['shift']} | {r['accuracy']} | {r['mean_recall']} | "
              + " | ".join(str(r["recall"][c]) for c in classes) + " |" for r in results]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of both studies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="study", required=True)
    det = sub.add_parser("detect", help="compare detectors")
    det.add_argument("data", type=Path, help="faces-dev folder (images/, labels.csv)")
    det.add_argument("--samples", type=Path, help="folder with the sample portraits")
    det.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    det.add_argument("--candidates", nargs="+", default=["blazeface", "haar"])
    det.add_argument("--every", type=int, default=1, help="use every N-th faces-dev photo")
    det.add_argument("--haar-xml", type=Path, help="haarcascade_frontalface_default.xml")
    crop = sub.add_parser("crop", help="compare crop settings")
    crop.add_argument("data", type=Path, help="faces-dev folder (images/, labels.csv)")
    crop.add_argument("--model", type=Path, required=True, help=".keras (logits) or .onnx")
    crop.add_argument("--fer", type=Path, help="FER2013 CSV, for the grid")
    crop.add_argument("--grid", type=Path, help="write the comparison PNG here")
    crop.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.1, 1.2, 1.3, 1.4, 1.6])
    crop.add_argument("--shifts", type=float, nargs="+", default=[-0.1, 0.0, 0.1])
    crop.add_argument("--grid-settings", type=float, nargs="+",
                      default=[1.0, 0.0, 1.2, 0.0, 1.4, 0.0], help="scale shift pairs in the grid")
    small = sub.add_parser("min-face", help="smallest face found (portraits in wide frames)")
    small.add_argument("--samples", type=Path, required=True)
    small.add_argument("--candidates", nargs="+", default=["blazeface"])
    small.add_argument("--haar-xml", type=Path)
    small.add_argument("--widths", type=int, nargs="+",
                       default=[512, 768, 1024, 1280, 1408, 1536, 1792, 2048, 2560])
    for p in (det, crop, small):
        p.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.study == "crop":
        pairs = args.grid_settings
        args.grid_settings = set(zip(pairs[::2], pairs[1::2], strict=True))
    return args


def main(argv: list[str] | None = None) -> None:
    """Run one study, print its Markdown table, optionally save JSON."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cv2.setNumThreads(1)  # every candidate on one core: comparable, and the machine is shared
    args = parse(argv)
    if args.study == "detect":
        rows = run_detect(args)
        table, data = markdown(rows), [asdict(r) for r in rows]
    elif args.study == "crop":
        results = run_crop(args)
        table, data = crop_markdown(results), results
    else:
        data = run_min_face(args)
        keys = list(data[0])
        table = "\n".join(["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
                          + ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in data])
    print(table)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
