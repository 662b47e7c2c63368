"""Video builders for the tests: short videos of the sample portraits, and every bad video a
folder of press conferences can hold, made with OpenCV and PyAV in a few kB each."""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from images import ASTRONAUT, GRACE

from facevalue.columns import EMPTY, NO_FACE, OK, TOO_LARGE, UNREADABLE


def write_opencv(path: Path, frames: list[np.ndarray], rate: float, fourcc: str = "mp4v") -> Path:
    """A constant-rate video written by OpenCV (mp4v in .mp4, MJPG in .avi)."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), rate, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def write_h264(path: Path, frames: list[np.ndarray], times_ms: list[int],
               rotation: int = 0, gop: int = 12) -> Path:
    """H.264 with B-frames at the given times (ms) and a display matrix, written by PyAV."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"bframes": "3"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)  # a stream time base garbles B-frames
        stream.codec_context.gop_size = gop
        if rotation:
            stream.set_display_rotation(rotation)
        _mux(out, stream, frames, times_ms)
    return path


def write_lossless(path: Path, frames: list[np.ndarray], times_ms: list[int]) -> Path:
    """FFV1 in Matroska: every sampled frame is the image written, to the bit, so its faces
    score exactly as the same image saved as a PNG photo."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        stream.codec_context.time_base = Fraction(1, 1000)
        _mux(out, stream, frames, times_ms)
    return path


def _mux(out: Any, stream: Any, frames: list[np.ndarray], times_ms: list[int]) -> None:
    """Encode each image at its time (ms) and flush the encoder."""
    for image, ms in zip(frames, times_ms, strict=True):
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = ms, Fraction(1, 1000)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def stills() -> dict[str, np.ndarray]:
    """Two people at 160 x 200, their faces in different places and sizes."""
    grace = cv2.resize(cv2.imread(str(GRACE)), (160, 200))
    astronaut = cv2.copyMakeBorder(cv2.resize(cv2.imread(str(ASTRONAUT)), (120, 120)),
                                   80, 0, 40, 0, cv2.BORDER_CONSTANT)
    return {"grace": grace, "astronaut": astronaut}


# The talk: Grace speaks for 3 s, the astronaut for 2 s, Grace again for 3 s; two frames a
# second, so --fps 1 samples each second's first frame.
TALK = ("grace",) * 6 + ("astronaut",) * 4 + ("grace",) * 6


def talk(folder: Path, name: str = "talk.mkv") -> Path:
    """The talk as a lossless video, and its two people as PNG photos beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    images = stills()
    for person, image in images.items():
        cv2.imwrite(str(folder / f"{person}.png"), image)
    return write_lossless(folder / name, [images[p] for p in TALK],
                          [500 * i for i in range(len(TALK))])


def bad_videos(folder: Path) -> dict[str, str]:
    """Every awkward video, named -> the status of its video (``ok`` when part of it scores)."""
    folder.mkdir(parents=True, exist_ok=True)
    grace = stills()["grace"]
    moving = [np.roll(grace, i, axis=1) for i in range(20)]
    clip = write_opencv(folder / "clip.mp4", moving, 10)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "truncated.mp4").write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    shutil.copy(clip, folder / "video.jpg")  # a video named as a photo: an unreadable photo
    shutil.copy(GRACE, folder / "photo.mp4")  # a photo named as a video
    with av.open(str(folder / "speech.m4v"), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp",
                                           layout="mono")
        sound.sample_rate = 16000
        out.mux(stream.encode(sound))
        out.mux(stream.encode(None))
    mjpg = write_opencv(folder / "mjpg.avi", moving, 10, "MJPG").read_bytes()
    (folder / "codec.avi").write_bytes(mjpg.replace(b"MJPG", b"QQQQ"))
    (folder / "cut.avi").write_bytes(mjpg[: len(mjpg) * 3 // 5])  # the first 1.2 s are there
    write_opencv(folder / "huge.mov", [cv2.resize(grace, (640, 800))] * 3, 1)
    times = [0, 100, 150, 900, 1000, 2500, 2600, 2650, 4100]
    write_h264(folder / "vfr.mp4", moving[: len(times)], times)
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), np.uint8)
    write_opencv(folder / "noise.webm", [noise] * 10, 5, "VP80")
    os.mkfifo(folder / "fifo.mov")  # opening it would block until someone writes to it
    return BAD_VIDEOS


BAD_VIDEOS = {"clip.mp4": OK, "empty.mp4": EMPTY, "truncated.mp4": UNREADABLE,
              "video.jpg": UNREADABLE, "photo.mp4": UNREADABLE, "speech.m4v": UNREADABLE,
              "mjpg.avi": OK, "codec.avi": UNREADABLE, "cut.avi": OK, "huge.mov": TOO_LARGE,
              "vfr.mp4": OK, "noise.webm": NO_FACE, "fifo.mov": UNREADABLE}


# huge.mov's frames are 640 x 800: over this limit, while the sample portraits are under it.
SMALL_LIMIT = 400_000
