"""Sampling a video at --fps 1 (issue 21): OpenCV's FFmpeg reader beside PyAV, in one run.

    python bench/video_speed.py --pause-training --readme bench/README.md

Makes 30-second H.264 videos at 720p and 1080p, 30 frames/s (PyAV's libx264, veryfast, a
panning portrait over moving grain), with x264's default group of pictures (a keyframe every
250 frames, 8.3 s) and with a 2-second one (what streaming sites and many cameras write),
then times, per file: plain decoding of every frame with each library (the reference), and
taking one frame a second by OpenCV ``grab`` (decodes every frame, converts the sampled
ones), OpenCV seeking (``CAP_PROP_POS_MSEC``), PyAV seeking, and ``facevalue.video``
(PyAV, packets of groups of pictures without a sampled time skipped undecoded). Each is
timed ``--repeat`` times and the fastest kept. ``--pause-training`` stops the CPU training
run for the measurements (SIGSTOP) and always continues it (SIGCONT), also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from run import HERE, machine, update_readme

from facevalue.video import sample_frames

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
GOPS = {"x264 default (250)": None, "2 s (60)": 60}
RATE = 30
SECONDS = 30
PAUSE_LIMIT = 280  # seconds the training run may stay stopped
PORTRAIT = HERE.parent / "sample_data" / "photos" / "navy" / "grace_hopper.jpg"


def make_video(path: Path, size: tuple[int, int], gop: int | None) -> None:
    """A panning portrait over moving grain, so the encoder has real work (and the decoder)."""
    width, height = size
    face = cv2.resize(cv2.imread(str(PORTRAIT)), (height * 512 // 600, height))
    grain = np.random.default_rng(0).integers(0, 24, (height, width + RATE * 4, 3), np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=RATE, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        for i in range(RATE * SECONDS):
            canvas = grain[:, i % (RATE * 4):][:, :width].copy()
            x = (width - face.shape[1]) * (i % (RATE * 10)) // (RATE * 10)
            canvas[:, x:x + face.shape[1]] = face
            frame = av.VideoFrame.from_ndarray(canvas, format="bgr24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def opencv_read(path: Path, fps: float) -> Iterator[float]:
    """Plain decoding: every frame decoded and converted (OpenCV's ``read``)."""
    capture = cv2.VideoCapture(str(path))
    while capture.grab():
        capture.retrieve()
        yield capture.get(cv2.CAP_PROP_POS_MSEC) / 1000


def opencv_grab(path: Path, fps: float) -> Iterator[float]:
    """Every frame decoded (``grab``), the first at or after each sampled time converted."""
    capture, due = cv2.VideoCapture(str(path)), 0.0
    while capture.grab():
        t = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
        if t >= due - 1e-6:
            capture.retrieve()
            due = (int(t * fps + 1e-6) + 1) / fps
            yield t


def opencv_seek(path: Path, fps: float) -> Iterator[float]:
    """A seek to each sampled time (``CAP_PROP_POS_MSEC``), then one ``read``."""
    capture, k = cv2.VideoCapture(str(path)), 0
    while capture.set(cv2.CAP_PROP_POS_MSEC, 1000 * k / fps) and capture.grab():
        capture.retrieve()
        yield capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
        k += 1


def pyav_decode(path: Path, fps: float) -> Iterator[float]:
    """Plain decoding with PyAV (frame threads): every frame decoded and converted to BGR."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        for frame in container.decode(stream):
            frame.to_ndarray(format="bgr24")
            yield float(frame.time)


def pyav_seek(path: Path, fps: float) -> Iterator[float]:
    """A seek to the keyframe before each sampled time, then decoding up to that time."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        base, k = Fraction(stream.time_base), 0
        while True:
            target = round(Fraction(k) / Fraction(fps) / base)
            container.seek(target, stream=stream)
            frame = next((f for f in container.decode(stream) if f.pts >= target), None)
            if frame is None:
                return
            frame.to_ndarray(format="bgr24")
            yield float(frame.time)
            k = int(frame.pts * base * Fraction(fps)) + 1


def facevalue_video(path: Path, fps: float) -> Iterator[float]:
    """What facevalue uses: ``facevalue.video.sample_frames``."""
    return (frame.time for frame in sample_frames(path, fps))


METHODS: dict[str, Callable[[Path, float], Iterator[float]]] = {
    "OpenCV read, every frame": opencv_read, "PyAV decode, every frame": pyav_decode,
    "OpenCV grab": opencv_grab, "OpenCV seek": opencv_seek, "PyAV seek": pyav_seek,
    "facevalue.video (PyAV)": facevalue_video}


def measure(path: Path, fps: float, repeat: int) -> dict[str, dict[str, float]]:
    """Seconds (the fastest of ``repeat``), frames and their times for each method."""
    results = {}
    for name, method in METHODS.items():
        best, times = float("inf"), []
        for _ in range(repeat):
            start = time.perf_counter()
            times = list(method(path, fps))
            best = min(best, time.perf_counter() - start)
        results[name] = {"seconds": best, "frames": len(times),
                         "first_times": [round(t, 3) for t in times[:4]]}
    return results


def pause_training() -> Callable[[], None]:
    """SIGSTOP the training run; returns the function that continues it (also on signals)."""
    pids = [int(p) for p in subprocess.run(["pgrep", "-f", "train fit"], capture_output=True,
                                           text=True).stdout.split()]
    pids = [p for p in pids if p != os.getpid()]

    def resume(*_: object) -> None:
        signal.alarm(0)  # continued: the limit no longer applies
        for pid in pids:
            os.kill(pid, signal.SIGCONT)

    def resume_and_exit(signum: int, _: object) -> None:
        resume()
        sys.exit(128 + signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(signum, resume_and_exit)
    signal.alarm(PAUSE_LIMIT)  # a pause never outlasts this, whatever the files cost
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return resume


def table(results: dict[str, dict[str, dict[str, float]]], info: dict[str, object],
          fps: float) -> str:
    """The README section: per file, frames/s and video-seconds/s for each method."""
    lines = [f"Measured {info['date']} on {info['cpu']}, {info['cores']} cores (training run "
             f"{'paused' if info['paused'] else 'going'}), OpenCV {cv2.__version__}, "
             f"PyAV {av.__version__}; {SECONDS} s H.264 files, {RATE} frames/s, --fps {fps:g}, "
             "the fastest of the repeats.", "",
             "| file | group of pictures | method | frames | frames/s | video-s/s | "
             "x plain OpenCV |", "|---|---|---|---:|---:|---:|---:|"]
    for key, methods in results.items():
        size, gop = key.split(" | ")
        plain = methods["OpenCV read, every frame"]["seconds"]
        for name, r in methods.items():
            lines.append(f"| {size} | {gop} | {name} | {r['frames']} | "
                         f"{r['frames'] / r['seconds']:.0f} | {SECONDS / r['seconds']:.1f} | "
                         f"{plain / r['seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--pause-training", action="store_true",
                        help="SIGSTOP the 'train fit' run while timing (always resumed)")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "video_speed.json")
    parser.add_argument("--readme", type=Path, default=None)
    args = parser.parse_args()
    folder = HERE / "out" / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for size, gop in ((s, g) for s in SIZES for g in GOPS):
        path = folder / f"{size}_gop{GOPS[gop] or 'default'}.mp4"
        if not path.exists():
            make_video(path, SIZES[size], GOPS[gop])
        files[f"{size} | {gop}"] = path
    resume = pause_training() if args.pause_training else None
    info = {**machine(), "paused": resume is not None}
    try:
        results = {key: measure(path, args.fps, args.repeat) for key, path in files.items()}
    finally:
        if resume is not None:
            resume()
    args.out.write_text(json.dumps({"machine": info, "results": results}, indent=1))
    text = table(results, info, args.fps)
    print(text)
    if args.readme is not None:
        update_readme(args.readme, text, "video_speed")


if __name__ == "__main__":
    main()
