"""Scoring videos end to end (issue 21): how --fps trades speed for detail, and flat memory.

    python bench/video_score.py --pause-training --readme bench/README.md

Speed: on the 30-second 720p and 1080p H.264 files of ``video_speed.py`` (x264's default
group of pictures), per ``--fps``, the time of ``facevalue.video.sample_frames`` alone (the
decoding bound) and of ``facevalue score`` on a folder holding only that file (sample, detect,
crop, classify, track, write the three tables; 2 workers, nothing saved from before), in the
same run, each the fastest of ``--repeat``. Memory: ``facevalue score --fps 1`` on a 360p,
10 frames/s H.264 talk of 5 and of 60 minutes, each in a child process, its peak resident
memory (VmHWM) compared. ``--pause-training`` stops the CPU training run for the timings
(SIGSTOP, at most 280 s) and always continues it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
from run import HERE, machine, update_readme
from video_speed import GOPS, SECONDS, SIZES, make_video, pause_training

from facevalue.pipeline import write_scores
from facevalue.video import sample_frames

RATES = (0.2, 1.0, 5.0)
PORTRAIT = HERE.parent / "sample_data" / "photos" / "navy" / "grace_hopper.jpg"
LONG = {"5 min": 300, "60 min": 3600}  # seconds of the talks for the memory runs
# A child scores one video and prints its peak resident memory (what the kernel kept as the
# high-water mark of this process alone) and its summary.
CHILD = """
import json, sys
from facevalue.pipeline import write_scores
s = write_scores(sys.argv[1], sys.argv[2], fps=1.0)
peak = next(int(line.split()[1]) for line in open("/proc/self/status")
            if line.startswith("VmHWM"))
print(json.dumps({"peak_mb": peak / 1024, "frames": s.frames, "faces": s.faces,
                  "seconds": s.seconds}))
"""


def make_talk(path: Path, seconds: int) -> None:
    """A 640 x 360, 10 frames/s talk: the portrait nodding over a still background."""
    face = cv2.resize(cv2.imread(str(PORTRAIT)), (256, 300))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for i in range(10 * seconds):
            canvas = np.full((360, 640, 3), 90, np.uint8)
            y = 30 + int(10 * np.sin(i / 7))
            canvas[y:y + 300, 192:448] = face
            out.mux(stream.encode(av.VideoFrame.from_ndarray(canvas, format="bgr24")))
        out.mux(stream.encode(None))


def speed(path: Path, fps: float, repeat: int) -> dict[str, float]:
    """Seconds to sample the file alone and to score it, the fastest of ``repeat`` each."""
    decode = score = float("inf")
    frames = 0
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch, "videos")
        (folder / "company").mkdir(parents=True)
        (folder / "company" / path.name).symlink_to(path)
        for i in range(repeat):
            start = time.perf_counter()
            frames = sum(1 for _ in sample_frames(path, fps))
            decode = min(decode, time.perf_counter() - start)
            start = time.perf_counter()
            write_scores(folder, Path(scratch, f"s{i}.parquet"), fps=fps, workers=2)
            score = min(score, time.perf_counter() - start)
    return {"frames": frames, "decode": decode, "score": score}


def memory(path: Path) -> dict[str, float]:
    """Peak memory of a child process scoring the one video at --fps 1."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch, "videos")
        (folder / "company").mkdir(parents=True)
        (folder / "company" / path.name).symlink_to(path)
        done = subprocess.run([sys.executable, "-c", CHILD, str(folder),
                               str(Path(scratch, "s.parquet"))], capture_output=True,
                              text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(timings: dict[str, dict[str, float]], peaks: dict[str, dict[str, float]],
           info: dict[str, object]) -> str:
    training = "paused" if info["paused"] else "going" if info["training_running"] else "none"
    lines = [f"Measured {info['date']} on {info['cpu']}, {info['cores']} cores (training run: "
             f"{training}; load average {info['load_average'][0]:.1f} before the timings), the "
             f"default model, 2 workers; {SECONDS} s H.264 files at 30 frames/s (x264's default "
             "group of pictures), the fastest of the repeats.", "",
             "| file | --fps | frames | sampling alone, video-s/s | facevalue score, "
             "video-s/s | frames/s | x sampling alone |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, r in timings.items():
        size, fps = key.split(" | ")
        lines.append(f"| {size} | {fps} | {r['frames']:.0f} | {SECONDS / r['decode']:.1f} | "
                     f"{SECONDS / r['score']:.1f} | {r['frames'] / r['score']:.1f} | "
                     f"{r['decode'] / r['score']:.2f} |")
    lines += ["", "| 360p talk, --fps 1 | frames | faces | seconds | peak memory, MB |",
              "|---|---:|---:|---:|---:|"]
    for name, p in peaks.items():
        lines.append(f"| {name} | {p['frames']:.0f} | {p['faces']:.0f} | {p['seconds']:.0f} | "
                     f"{p['peak_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--pause-training", action="store_true",
                        help="SIGSTOP the 'train fit' run while timing (always resumed)")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "video_score.json")
    parser.add_argument("--readme", type=Path, default=None)
    args = parser.parse_args()
    folder = HERE / "out" / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for size in SIZES:
        path = folder / f"{size}_gopdefault.mp4"
        if not path.exists():
            make_video(path, SIZES[size], GOPS["x264 default (250)"])
        files[size] = path
    talks = {}
    for name, seconds in LONG.items():
        talks[name] = folder / f"talk_{seconds}s.mp4"
        if not talks[name].exists():
            make_talk(talks[name], seconds)
    peaks = {name: memory(path) for name, path in talks.items()}  # not timed: no pause
    info = machine()
    resume = pause_training() if args.pause_training else None
    try:
        timings = {f"{size} | {fps:g}": speed(path, fps, args.repeat)
                   for size, path in files.items() for fps in RATES}
    finally:
        if resume is not None:
            resume()
    info["paused"] = resume is not None
    args.out.write_text(json.dumps({"machine": info, "speed": timings, "memory": peaks},
                                   indent=1, default=str))
    text = report(timings, peaks, info)
    print(text)
    if args.readme:
        update_readme(args.readme, text, "video_score")


if __name__ == "__main__":
    main()
