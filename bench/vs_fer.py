"""facevalue beside fer, the nearest peer, on the same photos in the same run (issue 4).

    python bench/vs_fer.py --n 120 --out bench/out/vs_fer.json --readme bench/README.md

Installs fer into its own virtual environment (``bench/out/fer-venv``, once: ``pip install
fer 'setuptools<81'``, which pulls TensorFlow; fer imports ``pkg_resources``, which
setuptools 81 dropped), takes the jpeg corpus of run.py (portraits 512, 1024 and 2048 px
wide, one face each), and times, one after the other:

- fer as its README shows it: ``FER().detect_emotions(cv2.imread(path))`` on every photo,
  in one process (default Haar detector and TensorFlow Lite classifier; the model is loaded
  and warmed up before the clock starts);
- facevalue end to end with its default model (``write_scores`` in a child process, clock
  from start to both files written), with 1 worker and with one per core.

It reports photos/s, the ratio, and the faces each found: a portrait holds exactly one.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import venv
from pathlib import Path
from typing import Any

import corpus
import pyarrow.parquet as pq
from run import HERE, machine, score_in_child, update_readme

from facevalue.classify import default_model
from facevalue.engine import default_workers
from facevalue.storage import open_location

log = logging.getLogger("vs_fer")

# Runs inside the fer venv: prints one JSON line.
FER_SCRIPT = """
import json, sys, time
import cv2
try:
    from fer import FER
except ImportError:  # fer 25.10 no longer exports FER from the package
    from fer.fer import FER

paths = sys.argv[1:]
detector = FER()
detector.detect_emotions(cv2.imread(paths[0]))  # load and warm up the model
started = time.perf_counter()
faces = [len(detector.detect_emotions(cv2.imread(path))) for path in paths]
seconds = time.perf_counter() - started
print(json.dumps({"photos": len(paths), "seconds": seconds, "faces": sum(faces),
                  "photos_with_faces": sum(f > 0 for f in faces),
                  "photos_with_several": sum(f > 1 for f in faces)}))
"""


def fer_python(folder: Path) -> Path:
    """The fer venv's python, creating the venv and installing fer on first use."""
    python = folder / "bin" / "python"
    if not python.exists():
        log.info("installing fer into %s (pulls TensorFlow; takes minutes)", folder)
        venv.create(folder, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "fer",
                        "setuptools<81"], check=True)
    return python


def time_fer(python: Path, photos: Path) -> dict[str, Any]:
    paths = [str(photos / p) for p in open_location(photos).list_photos()]
    done = subprocess.run([str(python), "-c", FER_SCRIPT, *paths], capture_output=True,
                          text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["photos_s"] = result["photos"] / result["seconds"]
    return result


def time_facevalue(photos: Path, out: Path, workers: int) -> dict[str, Any]:
    result = score_in_child(photos, out, workers, default_model())
    found = pq.read_table(out, columns=["faces_in_photo"]).column(0).to_pylist()
    counts = [n or 0 for n in found]
    result.update(faces_found=sum(counts), photos_with_faces=sum(n > 0 for n in counts),
                  photos_with_several=sum(n > 1 for n in counts))
    return result


def table(results: dict[str, Any]) -> str:
    m, fer = results["machine"], results["fer"]
    lines = [f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores (load average "
             f"{m['load_average'][0]:.1f} at the start; training run: "
             f"{m.get('training', 'going' if m['training_running'] else 'none')}); {results['n']} "
             "one-person portraits, 512-2048 px JPEG.", "",
             "| tool | photos/s | vs fer | faces found | photos with a face | with several |",
             "|---|---:|---:|---:|---:|---:|",
             f"| fer {results['fer_version']} (Haar + CNN, one process) | {fer['photos_s']:.1f} "
             f"| 1 | {fer['faces']} | {fer['photos_with_faces']} "
             f"| {fer['photos_with_several']} |"]
    for name, run in results["facevalue"].items():
        lines.append(f"| facevalue {name} ({run['model']}) | {run['photos_s']:.0f} "
                     f"| {run['photos_s'] / fer['photos_s']:.0f}x | {run['faces_found']} "
                     f"| {run['photos_with_faces']} | {run['photos_with_several']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=120, help="photos (jpeg mix)")
    parser.add_argument("--work", type=Path, default=HERE / "out")
    parser.add_argument("--venv", type=Path, default=HERE / "out" / "fer-venv")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "vs_fer.json")
    parser.add_argument("--readme", type=Path, help="write the table into this README")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    python = fer_python(args.venv)
    photos = corpus.build(args.work / "corpus", args.n, "jpeg").photos
    version = subprocess.run([str(python), "-m", "pip", "show", "fer"], capture_output=True,
                             text=True, check=True).stdout.split("Version:")[1].split()[0]
    results: dict[str, Any] = {"machine": machine(), "n": args.n, "fer_version": version,
                               "fer": time_fer(python, photos), "facevalue": {}}
    for workers in sorted({1, default_workers()}):
        out = args.work / f"vs_fer_w{workers}" / "s.parquet"
        results["facevalue"][f"--workers {workers}"] = time_facevalue(photos, out, workers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    text = table(results)
    print(text)
    if args.readme:
        update_readme(args.readme, text, "fer")


if __name__ == "__main__":
    main()
