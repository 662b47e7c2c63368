"""The benchmark suite (issue 4): one command builds the corpus, times facevalue against the
decode-only bound on the same files, and writes the JSON and the table in bench/README.md.

    python bench/run.py --n 1000 --large 100000 --out bench/out/results.json \\
        --readme bench/README.md

Everything is measured in the same run, so each ratio compares numbers taken minutes apart
on the same machine (the JSON records the machine, its load and whether a training run was
going):

- decode-only bound: read and decode every photo on all cores (threads), once with plain
  ``cv2.imdecode`` at full size and once as facevalue decodes for detection (JPEGs at
  reduced scale);
- facevalue end to end (``write_scores`` into a fresh output, in a child process so the peak
  RSS is the run's own) with the default model, 1 worker and one per core, on the ``jpeg``
  mix (portraits 512, 1024 and 2048 px wide) and the ``full`` mix (plus ~3000 px, PNG,
  face-less and broken files), and with every other shipped classifier (the previous
  default among them): photos/s, faces/s, seconds per stage summed over threads, CPU
  seconds, peak RSS;
- the same command again on the same output (nothing new: every result reused);
- each classifier (``Classifier.predict``) against onnxruntime alone on the same crops;
- ``--large`` photos (hard links, see corpus.py) for the peak RSS growth from ``--n``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import corpus
import cv2
import numpy as np

from facevalue import decode
from facevalue.classify import DEFAULT_MODELS, Classifier, default_model, to_input
from facevalue.detect import FaceDetector
from facevalue.discover import Photo
from facevalue.engine import default_workers
from facevalue.faces import DETECT_SIDE, find_faces
from facevalue.pipeline import versions
from facevalue.storage import open_location

log = logging.getLogger("bench")

HERE = Path(__file__).resolve().parent
# Every shipped classifier (the previous default among them: the speed rule of issue 10
# compares against it), each timed in the same run as the default.
SHIPPED_MODELS = tuple(HERE.parent / "models" / name for name in DEFAULT_MODELS)
CLASSIFY_FACES = 2048


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and how busy it was."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                  if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo
                  if line.startswith("flags")), [])
    # the vector extensions that decide onnxruntime's kernels here
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
    return {"cpu": model, "flags": ", ".join(f.upper() for f in wanted if f in flags) or "no AVX2",
            "cores": default_workers(), "load_average": os.getloadavg(),
            "training_running": training_state() != "none", "training": training_state(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **versions()}


def training_state() -> str:
    """"going", "paused" (stopped with SIGSTOP for a timing) or "none": a training run
    beside a benchmark takes a core, a paused one does not."""
    found = subprocess.run(["pgrep", "-f", "train fit"], capture_output=True, text=True)
    states = []
    for pid in found.stdout.split():
        with contextlib.suppress(OSError):  # gone since pgrep
            # the state follows the parenthesised command name in /proc/<pid>/stat
            states.append(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0])
    return "none" if not states else "paused" if all(s == "T" for s in states) else "going"


def decode_bound(photos: Path, threads: int) -> dict[str, float]:
    """Photos/s to read and decode every photo: full size, and as facevalue does."""
    paths = [photos / p for p in open_location(photos).list_photos()]

    def full(path: Path) -> None:
        try:
            cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:
            pass  # the empty file

    def reduced(path: Path) -> None:
        try:
            decode.decode(path.read_bytes(), min_side=DETECT_SIDE)
        except decode.DecodeError:
            pass  # broken files cost what they cost; the bound counts them as done

    rates = {}
    for name, work in (("full", full), ("reduced", reduced)):
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, paths))
        rates[f"decode_{name}_photos_s"] = len(paths) / (time.perf_counter() - started)
    return rates


def score_in_child(photos: Path, out: Path, workers: int, model: Path,
                   fresh: bool = True) -> dict[str, Any]:
    """Run ``write_scores`` in a child process; its summary, CPU time and peak RSS."""
    if fresh:
        shutil.rmtree(out.parent, ignore_errors=True)
    done = subprocess.run([sys.executable, __file__, "child", str(photos), str(out),
                           "--workers", str(workers), "--model", str(model)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(photos: str, out: str, workers: int, model: str) -> None:
    """The measured run: prints one JSON line."""
    from facevalue.pipeline import write_scores
    from facevalue.write import read_metadata

    summary = write_scores(photos, out, model=model, device="cpu", workers=workers)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    sha256 = read_metadata(out)["facevalue.model_sha256"]
    print(json.dumps({"model": Path(model).stem, "model_sha256": sha256,
        "photos": summary.photos, "faces": summary.faces, "statuses": summary.statuses,
        "scored": summary.scored, "reused": summary.reused, "workers": summary.workers,
        "seconds": summary.seconds, "photos_s": summary.photos / summary.seconds,
        "faces_s": summary.faces / summary.seconds, "stages": summary.stages,
        "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over from the
    parent through fork and exec, so a child of a large parent reports the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


def classifier_check(photos: Path, model: Path) -> dict[str, float]:
    """faces/s of Classifier.predict and of onnxruntime alone on the same crops, 1 thread."""
    classifier = Classifier(model, "cpu", threads=1)
    detector = FaceDetector(threads=1)
    crops = []
    for path in open_location(photos).list_photos()[:64]:
        item = find_faces(Photo(path, ""), photos, detector, classifier.contract)
        if item.crops is not None:
            crops.append(item.crops)
    faces = np.resize(np.concatenate(crops), (CLASSIFY_FACES, *crops[0].shape[1:]))
    inputs = to_input(faces, classifier.contract)
    run = classifier.session.run
    rates = {}
    for name, work in (("onnxruntime_faces_s", lambda: [
            run([classifier.output_name], {classifier.input_name: inputs[i:i + 256]})
            for i in range(0, len(inputs), 256)]),
            ("classifier_faces_s", lambda: classifier.predict(faces, 256))):
        work()  # warm up: the first run allocates onnxruntime's buffers
        started = time.perf_counter()
        work()
        rates[name] = CLASSIFY_FACES / (time.perf_counter() - started)
    rates["classifier_share"] = rates["classifier_faces_s"] / rates["onnxruntime_faces_s"]
    return rates


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """All measurements of one run; each small one ``--repeat`` times, interleaved, and the
    median kept (a shared virtual machine's second core comes and goes)."""
    cores, work, n = default_workers(), args.work, args.n
    shipped = [m for m in SHIPPED_MODELS if args.models is None or m.stem in args.models]
    models = {model.stem: model for model in (*shipped, args.model)}
    results: dict[str, Any] = {"machine": machine(), "n": n, "large": args.large,
                               "repeat": args.repeat, "model": args.model.name, "runs": {},
                               "classifier": {}}
    samples: dict[str, list[dict[str, Any]]] = {}
    # --quick: the jpeg mix at one worker per core only (fits a short pause of a training run)
    bounds: dict[str, list[dict[str, float]]] = {"jpeg": []} if args.quick else {
        "jpeg": [], "full": []}

    def score(mix: str, count: int, workers: int, model: Path, rerun: bool = False) -> None:
        photos = corpus.build(work / "corpus", count, mix).photos
        name = f"{mix}_{count}_w{workers}_{model.stem}"
        run = score_in_child(photos, work / name / "s.parquet", workers, model, not rerun)
        samples.setdefault(name + ("_rerun" if rerun else ""), []).append(run)
        log.info("%s%s: %.0f photos/s", name, " again" if rerun else "", run["photos_s"])

    for _ in range(args.repeat):
        for mix in bounds:
            bounds[mix].append(decode_bound(corpus.build(work / "corpus", n, mix).photos, cores))
        for workers in sorted({cores} if args.quick else {1, cores}):
            score("jpeg", n, workers, args.model)
        if not args.quick:
            score("jpeg", n, cores, args.model, rerun=True)  # on the output just written
        for name, model in models.items():
            if name != args.model.stem:
                score("jpeg", n, cores, model)
        if not args.quick:
            score("full", n, cores, args.model)
    jpeg = corpus.build(work / "corpus", n, "jpeg").photos
    for name, model in models.items():
        if not args.quick:
            results["classifier"][name] = classifier_check(jpeg, model)
    if args.large:
        score("jpeg", args.large, cores, args.model)
    for mix, taken in bounds.items():
        results[f"bound_{mix}"] = {key: median([b[key] for b in taken]) for key in taken[0]}
    for name, taken in samples.items():
        results["runs"][name] = {**median_run(taken),
                                 "photos_s_all": [run["photos_s"] for run in taken]}
        if len({run["model_sha256"] for run in taken}) > 1:
            log.warning("%s: the model file changed during the benchmark; run it again", name)
    if args.large:
        stem = args.model.stem
        base = results["runs"][f"jpeg_{n}_w{cores}_{stem}"]["peak_rss_mb"]
        peak = results["runs"][f"jpeg_{args.large}_w{cores}_{stem}"]["peak_rss_mb"]
        results["rss_growth"] = peak / base - 1
    return results


def median(values: list[float]) -> float:
    return float(np.median(values))


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median photos/s (the lower middle one for an even count)."""
    return sorted(runs, key=lambda run: run["photos_s"])[(len(runs) - 1) // 2]


def table(results: dict[str, Any]) -> str:
    """The Markdown tables for bench/README.md."""
    m, runs, n = results["machine"], results["runs"], results["n"]
    lines = [f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB "
             f"(load average {m['load_average'][0]:.1f} at the start; training run: "
             f"{m.get('training', 'going' if m['training_running'] else 'none')}), facevalue "
             f"{m['facevalue']}, onnxruntime {m['onnxruntime']}, OpenCV {m['opencv']}; models "
             + ", ".join(sorted({f"{r['model']} (sha256 {r['model_sha256'][:12]})"
                                 for r in runs.values()})) + ".", "",
             f"Photos/s: the median of {results['repeat']} runs (lowest-highest); the decode "
             "bounds are medians too. The last two columns divide by the decode bounds.", "",
             "| corpus | what | photos/s | faces/s | of full decode | of reduced decode "
             "| peak RSS MB |", "|---|---|---:|---:|---:|---:|---:|"]
    for mix in corpus.MIXES:
        if f"bound_{mix}" not in results:
            continue
        bound = results[f"bound_{mix}"]
        lines += [f"| {mix} {n} | decode only: OpenCV, full size | "
                  f"{bound['decode_full_photos_s']:.0f} | | 1.00 | | |",
                  f"| {mix} {n} | decode only: facevalue's reduced decode | "
                  f"{bound['decode_reduced_photos_s']:.0f} | | | 1.00 | |"]
        for name, run in runs.items():
            if not name.startswith(f"{mix}_"):
                continue
            count = name.split("_")[1]
            what = (f"facevalue --workers {run['workers']}, {run['model']}"
                    + (", again (nothing new)" if name.endswith("rerun") else ""))
            spread = "-".join(f"{r:.0f}" for r in (min(run["photos_s_all"]),
                                                   max(run["photos_s_all"])))
            lines.append(f"| {mix} {count} | {what} | {run['photos_s']:.0f} ({spread}) "
                         f"| {run['faces_s']:.0f} "
                         f"| {run['photos_s'] / bound['decode_full_photos_s']:.2f} "
                         f"| {run['photos_s'] / bound['decode_reduced_photos_s']:.2f} "
                         f"| {run['peak_rss_mb']:.0f} |")
    lines += ["", "Seconds per stage, summed over threads (the calling thread classifies, "
              "writes and keeps the state; workers read, decode, detect and crop):", "",
              "| run | read | decode | detect | crop | classify | write | state | wall "
              "| CPU |", "|---|" + "---:|" * 9]
    for name, run in runs.items():
        stages = " | ".join(f"{run['stages'][s]:.2f}" for s in
                            ("read", "decode", "detect", "crop", "classify", "write", "state"))
        lines.append(f"| {name} | {stages} | {run['seconds']:.2f} | {run['cpu_seconds']:.2f} |")
    lines.append("")
    for name, c in results["classifier"].items():
        lines.append(f"Classifier {name} on 1 thread: `Classifier.predict` "
                     f"{c['classifier_faces_s']:.0f} faces/s, onnxruntime alone on the same "
                     f"crops {c['onnxruntime_faces_s']:.0f} faces/s "
                     f"({c['classifier_share']:.0%}).")
    if results.get("large"):
        stem, cores = Path(results["model"]).stem, m["cores"]
        big = runs[f"jpeg_{results['large']}_w{cores}_{stem}"]
        small = runs[f"jpeg_{n}_w{cores}_{stem}"]
        lines.append(f"Peak RSS: {small['peak_rss_mb']:.0f} MB for {n:,} photos, "
                     f"{big['peak_rss_mb']:.0f} MB for {results['large']:,} "
                     f"({results['rss_growth']:+.1%}).")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, text: str, section: str = "results") -> None:
    """Replace the block between ``<!-- SECTION:start -->`` and ``<!-- SECTION:end -->``.

    Every bench script writes its table into bench/README.md this way, each in its section.
    """
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    head, _, rest = readme.read_text().partition(start)
    readme.write_text(f"{head}{start}\n{text}{end}{rest.partition(end)[2]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("child", help="one measured scoring run (used by the suite)")
    run.add_argument("photos")
    run.add_argument("out")
    run.add_argument("--workers", type=int, required=True)
    run.add_argument("--model", required=True)
    parser.add_argument("--n", type=int, default=1000, help="photos per corpus")
    parser.add_argument("--repeat", type=int, default=3,
                        help="times each --n measurement is taken (the median is kept)")
    parser.add_argument("--large", type=int, default=0,
                        help="also score this many photos for the memory growth (0: skip)")
    parser.add_argument("--model", type=Path, default=None,
                        help="classifier [default: the shipped default model]; every "
                             "other shipped classifier is also timed")
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="time only these other shipped classifiers (names such as "
                             "fvnet) beside --model [default: every one]")
    parser.add_argument("--quick", action="store_true",
                        help="only the jpeg mix, one worker per core, no rerun and no "
                             "classifier check: a run that fits a short pause of other work")
    parser.add_argument("--work", type=Path, default=HERE / "out",
                        help="corpora and outputs go here")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "results.json")
    parser.add_argument("--readme", type=Path, help="write the table into this README")
    args = parser.parse_args()
    if args.command == "child":
        child(args.photos, args.out, args.workers, args.model)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.model = args.model or default_model()
    results = measure(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    text = table(results)
    print(text)
    if args.readme:
        update_readme(args.readme, text)


if __name__ == "__main__":
    main()
