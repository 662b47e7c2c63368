"""Where one photo's milliseconds go (issue 22): each stage of the per-photo path at each
size on one thread, then whole runs with different worker and thread counts.

    python bench/profile.py --readme bench/README.md

Part 1, one thread (OpenCV and onnxruntime both held to one): for 40 photos of each width of
the speed corpus (``corpus.py``, jpeg mix), the median milliseconds of reading the file,
hashing it, decoding it as facevalue does (and, for reference, at full size), detection
split into its input (resize, colour, letterbox), the BlazeFace pass and the rest
(thresholds, NMS, boxes), the aligned crop, and the classifier per face in batches of 64.
``find_faces`` runs the same steps in one call; what it takes beyond the sum of its steps is
the Python between them. Part 2: ``write_scores`` end to end in a child process per setting
(workers x onnxruntime threads per session x OpenCV threads), which adds what one photo
does not show: the rows, the saved state, and threads competing for the cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import corpus
import cv2
import numpy as np
from run import HERE, machine, update_readme

from facevalue import decode
from facevalue.classify import load_classifier
from facevalue.detect import FaceDetector, crop_faces, letterbox
from facevalue.discover import Photo
from facevalue.faces import DETECT_SIDE, find_faces
from facevalue.storage import open_location

# (workers, onnxruntime threads per session, OpenCV threads; 0 = OpenCV's default)
SETTINGS = ((1, 1, 0), (2, 1, 0), (2, 1, 1), (2, 2, 0), (3, 1, 1))
WIDTHS = (512, 1024, 2048)
CLASSIFY_BATCH = 64


def ms(work: Callable[[Any], object], items: list[Any]) -> float:
    """Median milliseconds of ``work(item)`` over the items (each run once, after a warm-up)."""
    work(items[0])
    times = []
    for item in items:
        started = time.perf_counter()
        work(item)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def one_photo(folder: Path, width: int, count: int, models: list[str]) -> dict[str, float]:
    """Median ms per stage for ``count`` photos ``width`` px wide, all on one thread."""
    paths = sorted(folder.glob(f"*_{width}_*.jpg"))[:count]
    location = open_location(folder)
    datas = [location.read(p.name) for p in paths]
    detector = FaceDetector(device="cpu", threads=1)
    classifiers = {m: load_classifier(m, "cpu", 1) for m in models}
    contract = next(iter(classifiers.values())).contract
    images = [decode.decode(d, min_side=DETECT_SIDE).image for d in datas]
    tensors = [letterbox(im)[0] for im in images]
    boxes = [detector.detect(im)[:1] for im in images]
    run, name = detector.model.session.run, detector.model.session.get_inputs()[0].name
    stages = {
        "read": ms(lambda p: location.read(p.name), paths),
        "hash": ms(lambda d: hashlib.sha256(d).hexdigest(), datas),
        "decode": ms(lambda d: decode.decode(d, min_side=DETECT_SIDE), datas),
        "full decode": ms(lambda d: cv2.imdecode(np.frombuffer(d, np.uint8),
                                                 cv2.IMREAD_COLOR), datas),
        "detect input": ms(letterbox, images),
        "BlazeFace": ms(lambda t: run(None, {name: t}), tensors),
        "detect": ms(detector.detect, images),
        "crop": ms(lambda ib: crop_faces(ib[0], ib[1], contract.input_size, contract.color_mode),
                   list(zip(images, boxes, strict=True))),
        "find_faces": ms(lambda p: find_faces(Photo(p.name, ""), folder, detector, contract),
                         paths),
    }
    stages["detect rest"] = stages["detect"] - stages["detect input"] - stages["BlazeFace"]
    stages["python"] = stages["find_faces"] - sum(
        stages[s] for s in ("read", "hash", "decode", "detect", "crop"))
    stages["decoded side"] = float(np.median([max(im.shape[:2]) for im in images]))
    crops = np.concatenate([crop_faces(im, b, contract.input_size, contract.color_mode)
                            for im, b in zip(images, boxes, strict=True)])
    crops = np.resize(crops, (4 * CLASSIFY_BATCH, *crops.shape[1:]))
    for model, classifier in classifiers.items():
        batches = [crops[i:i + CLASSIFY_BATCH] for i in range(0, len(crops), CLASSIFY_BATCH)]
        stages[f"classify {Path(model).stem}"] = ms(classifier.predict, batches) / CLASSIFY_BATCH
    return stages


def whole_run(photos: Path, out: Path, workers: int, threads: int, cv_threads: int,
              model: str) -> dict[str, Any]:
    """``write_scores`` in a child process with these thread counts; its one JSON line."""
    done = subprocess.run([sys.executable, __file__, "child", str(photos), str(out),
                           str(workers), str(threads), str(cv_threads), model],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(photos: str, out: str, workers: int, threads: int, cv_threads: int,
          model: str) -> None:
    """One measured run: prints photos/s, stage seconds and CPU seconds as JSON."""
    from facevalue.pipeline import write_scores

    if cv_threads:
        cv2.setNumThreads(cv_threads)
    summary = write_scores(photos, out, model=model, device="cpu", workers=workers,
                           threads=threads)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"photos_s": summary.photos / summary.seconds, "stages": summary.stages,
                      "photos": summary.photos, "seconds": summary.seconds,
                      "cpu_seconds": usage.ru_utime + usage.ru_stime}))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    built = corpus.build(args.work / "corpus", args.n, "jpeg")
    distinct = args.work / "corpus" / "distinct-jpeg"
    cv2.setNumThreads(1)
    sizes = {w: one_photo(distinct, w, args.per_size, args.models) for w in WIDTHS}
    cv2.setNumThreads(0)
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.repeat):
        for workers, threads, cv_threads in SETTINGS:
            out = args.work / "profile" / f"w{workers}t{threads}c{cv_threads}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            runs.setdefault(out.name, []).append(whole_run(
                built.photos, out / "s.parquet", workers, threads, cv_threads, args.models[0]))
    return {"machine": machine(), "n": args.n, "models": args.models, "sizes": sizes,
            "runs": {name: sorted(taken, key=lambda r: r["photos_s"])[(len(taken) - 1) // 2]
                     | {"photos_s_all": [r["photos_s"] for r in taken]}
                     for name, taken in runs.items()}}


def table(results: dict[str, Any]) -> str:
    """The two Markdown tables for bench/README.md."""
    m, sizes = results["machine"], results["sizes"]
    names = list(next(iter(sizes.values())))
    lines = [f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores (load average "
             f"{m['load_average'][0]:.1f} at the start; training run: "
             f"{m.get('training', 'going' if m['training_running'] else 'none')}), OpenCV "
             f"{m['opencv']}, onnxruntime {m['onnxruntime']}.", "",
             "One photo on one thread, median ms (`decoded side`: the longer side of the "
             "detection copy, px; `classify`: per face, batches of 64):", "",
             "| stage | " + " | ".join(f"{w} px" for w in sizes) + " |",
             "|---|" + "---:|" * len(sizes)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(
            f"{sizes[w][name]:.{0 if name == 'decoded side' else 2}f}" for w in sizes) + " |")
    lines += ["", f"`write_scores` on {results['n']} photos of the jpeg mix with "
              f"{Path(results['models'][0]).stem}, median of the runs: seconds per stage "
              "summed over threads, per photo in ms.", "",
              "| workers x onnxruntime threads x OpenCV threads | photos/s | read | decode "
              "| detect | crop | classify | write | state | CPU ms/photo |",
              "|---|---:|" + "---:|" * 8]
    for name, run in results["runs"].items():
        per = {s: 1000 * v / run["photos"] for s, v in run["stages"].items()}
        workers, rest = name[1:].split("t")
        threads, cv_threads = rest.split("c")
        lines.append(f"| {workers} x {threads} x {cv_threads if cv_threads != '0' else 'default'}"
                     f" | {run['photos_s']:.0f} | " + " | ".join(
                         f"{per[s]:.2f}" for s in ("read", "decode", "detect", "crop",
                                                   "classify", "write", "state"))
                     + f" | {1000 * run['cpu_seconds'] / run['photos']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        photos, out, workers, threads, cv_threads, model = sys.argv[2:]
        child(photos, out, int(workers), int(threads), int(cv_threads), model)
        return
    parser.add_argument("--n", type=int, default=500, help="photos for the whole runs")
    parser.add_argument("--per-size", type=int, default=40, help="photos per width, part 1")
    parser.add_argument("--repeat", type=int, default=3, help="whole runs per setting")
    parser.add_argument("--models", nargs="+", default=["fvnet-photo-fp32", "fvnet"],
                        help="classifiers (shipped names or files) timed per face; the first "
                             "also in the whole runs")
    parser.add_argument("--work", type=Path, default=HERE / "out")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "profile.json")
    parser.add_argument("--readme", type=Path, help="write the tables into this README")
    args = parser.parse_args()
    results = measure(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    text = table(results)
    print(text)
    if args.readme:
        update_readme(args.readme, text, "profile")


if __name__ == "__main__":
    main()
