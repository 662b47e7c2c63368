"""Sample a video's frames at a fixed rate, each upright with its time from the container.

Why PyAV and not OpenCV's FFmpeg reader: OpenCV decodes every frame to hand out one a
second (``grab``) or seeks slowly, while PyAV exposes the demuxer and the decoder, so packets
of a group of pictures that holds no sampled time are dropped undecoded and unreferenced
frames before a sampled time are skipped (``bench/README.md``, "Sampling videos": 1.2-3.0x
OpenCV's ``grab`` at ``fps`` 1 on 720p and 1080p H.264). It also gives
each frame's own timestamp (variable frame rate, edit lists), the display matrix, and reads
any file object, so a video in a bucket streams through ``pyarrow.fs`` like a photo.

A frame is sampled at each time ``k / fps`` seconds after the first frame: the first frame
shown at or after it, reported with that frame's own time. A damaged video yields what it
can; one that yields nothing raises ``VideoError`` with the row's status, never a crash.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

import av
import av.error
import numpy as np

from facevalue.columns import EMPTY, TOO_LARGE, UNREADABLE, PhotoError
from facevalue.defaults import DEFAULT_FPS, DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)

# Packets held undecoded while waiting for the next sampled time: the group of pictures they
# belong to may end before it, and then they are dropped without decoding. A stream with
# rare keyframes (screen recordings) would hold them all, so past this many the held packets
# are decoded and the reader goes on frame by frame: memory stays flat on any video.
MAX_HELD_PACKETS = 600
# FFmpeg's demuxers for still images: a photo named .mp4 opens as a one-frame "video".
IMAGE_FORMATS = ("image2", "_pipe")

Source = str | os.PathLike[str] | BinaryIO


class VideoError(PhotoError):
    """A video (or one of its frames) that cannot be sampled; ``status`` is its row's."""


@dataclass(frozen=True)
class Frame:
    """A sampled frame: its time in seconds from the video's first frame, and its upright
    uint8 BGR image, or None with ``error`` saying why it was refused (``too_large``)."""

    time: float
    image: np.ndarray | None
    error: VideoError | None = None


def sample_frames(source: Source, fps: float = DEFAULT_FPS,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Frame]:
    """Yield a frame every ``1 / fps`` seconds of the video, in order.

    Raises VideoError (status ``empty``, ``unreadable`` or ``too_large``) when the video
    cannot be opened or yields no frame at all. The file is read once, front to back.
    """
    if not fps > 0 or math.isinf(fps):
        raise ValueError(f"fps must be a positive number, not {fps}")
    with _open(source) as container:
        stream = _video_stream(container, max_pixels)
        yielded = False
        for time, frame in _sampled(container, stream, Fraction(fps).limit_denominator(10**6)):
            yielded = True
            yield _upright(time, frame, max_pixels)
        if not yielded:
            raise VideoError(UNREADABLE, "no frame could be decoded (truncated or corrupt)")


def frames_at(source: Source, times: Sequence[float],
              max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Frame]:
    """Yield the frames ``sample_frames`` gave at ``times`` (seconds from the first frame),
    in the order given: a few frames of a long video for the report's strips.

    Each costs a seek to the keyframe before it and decoding from there, not a pass over
    the whole video. A time the video no longer holds (changed or truncated since it was
    scored) gives a frame with no image and an ``unreadable`` error.
    """
    with _open(source) as container:
        stream = _video_stream(container, None)
        base = Fraction(stream.time_base or 1)
        origin = stream.start_time
        if origin is None:  # as the sampler: the first packet's time
            origin = next((p.pts for p in container.demux(stream) if p.pts is not None), 0)
        for time in times:
            target = origin + round(Fraction(time) / base)
            frame = _frame_from(container, stream, target)
            if frame is None or frame.pts is None:
                yield Frame(time, None, VideoError(UNREADABLE, f"no frame at {time:.3f} s"))
            else:
                yield _upright(float((frame.pts - origin) * base), frame, max_pixels)


def _frame_from(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                target: int) -> av.VideoFrame | None:
    """The first frame shown at or after ``target`` (stream time units), or None."""
    try:
        container.seek(target, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is not None and frame.pts >= target:
                return frame
    except av.error.FFmpegError as e:
        log.debug("no frame at %d: %s", target, e)
    return None


def duration(source: Source) -> float | None:
    """The video's length in seconds from its container header, None when it gives none.

    A header can be wrong (a truncated download keeps its original length); the last
    sampled frame's time is the length actually scored.
    """
    with _open(source) as container:
        stream = _video_stream(container, None)
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
        return None


def _open(source: Source) -> av.container.InputContainer:
    """Open for reading, turning every way of failing into a VideoError with a status."""
    if isinstance(source, (str, os.PathLike)) and os.path.getsize(source) == 0:
        raise VideoError(EMPTY, "file is empty (0 bytes)")
    try:
        container = av.open(source, mode="r")
    except av.error.FFmpegError as e:
        if isinstance(e, av.error.EOFError):
            raise VideoError(EMPTY, "file is empty (0 bytes)") from e
        raise VideoError(UNREADABLE, f"not a video FFmpeg can read: {e.strerror}") from e
    name = container.format.name
    if name == IMAGE_FORMATS[0] or name.endswith(IMAGE_FORMATS[1]):
        container.close()
        raise VideoError(UNREADABLE, f"a still image ({name}), not a video")
    return container


def _video_stream(container: av.container.InputContainer,
                  max_pixels: int | None) -> av.video.stream.VideoStream:
    """The first video stream, its decoder checked and its header size within the limit."""
    if not container.streams.video:
        kinds: list[str] = sorted({s.type for s in container.streams}) or ["no"]
        container.close()
        raise VideoError(UNREADABLE, f"no video stream ({' and '.join(kinds)} streams only)")
    stream = container.streams.video[0]
    if stream.codec_context is None or stream.codec_context.codec is None:
        container.close()
        raise VideoError(UNREADABLE, "its video codec is not one FFmpeg decodes")
    if stream.time_base is None:
        container.close()
        raise VideoError(UNREADABLE, "its video stream has no time base")
    width, height = stream.codec_context.width, stream.codec_context.height
    if max_pixels is not None and width * height > max_pixels:
        container.close()
        raise VideoError(TOO_LARGE, _too_large(width, height, max_pixels))
    stream.codec_context.thread_type = "AUTO"  # frame threads: decoding is the cost
    return stream


def _sampled(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
             fps: Fraction) -> Iterator[tuple[float, av.VideoFrame]]:
    """(time, frame) at or after each sampled time, decoding only the packets that need it.

    Packets are held undecoded until one is due (its time reaches the next sampled time);
    a keyframe before that time makes the held ones useless, and they are dropped. The
    decoder lags a few packets behind (frame threads, B-frames), so packets stay due until
    the sampled frame has come out.
    """
    sampler = _Sampler(stream, fps)
    held: list[av.Packet] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the empty packet that ends the stream
                break
            due = sampler.due(packet)
            if packet.is_keyframe and not due:
                held.clear()
            held.append(packet)
            if due or len(held) > MAX_HELD_PACKETS:
                for i, waiting in enumerate(held):
                    # A frame shown before the sampled time is needed only as a reference:
                    # the decoder skips those no other frame refers to (most B-frames).
                    wanted = due and i == len(held) - 1
                    stream.codec_context.skip_frame = "DEFAULT" if wanted else "NONREF"
                    yield from sampler.take(_decode(stream, waiting))
                held.clear()
    except av.error.FFmpegError as e:  # a demuxer giving up on a damaged file
        log.warning("video ends early: %s", e)
    yield from sampler.take(_decode(stream, None))


class _Sampler:
    """The next sampled time, in the stream's time units, and which frames meet it."""

    def __init__(self, stream: av.video.stream.VideoStream, fps: Fraction) -> None:
        self.base = Fraction(stream.time_base or 1)  # seconds per time unit (never None:
        # _video_stream refuses a stream without one)
        self.origin: int | None = stream.start_time
        self.step = 1 / (fps * self.base)  # time units between samples
        self.count = 0  # sampled times passed

    def due(self, packet: av.Packet) -> bool:
        """Whether a packet may hold the next sampled frame (its time has reached it)."""
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is None:
            return True  # no time to tell by: decode it
        if self.origin is None:
            self.origin = pts
        return bool(pts >= self.origin + self.count * self.step)

    def take(self, frames: list[av.VideoFrame]) -> Iterator[tuple[float, av.VideoFrame]]:
        """The frames that meet the next sampled time, with their times in seconds."""
        for frame in frames:
            if frame.pts is None or self.origin is None:
                continue
            if frame.pts >= self.origin + self.count * self.step:
                # Pass every sampled time up to this frame's at once: a gap of hours in
                # broken timestamps costs one step, not one per missed sample.
                self.count = math.floor((frame.pts - self.origin) / self.step) + 1
                yield float((frame.pts - self.origin) * self.base), frame


def _decode(stream: av.video.stream.VideoStream,
            packet: av.Packet | None) -> list[av.VideoFrame]:
    """Decode one packet (None flushes the decoder); a damaged packet gives no frame."""
    try:
        return list(stream.decode(packet))
    except av.error.FFmpegError as e:
        log.debug("packet skipped: %s", e)
        return []


def _upright(time: float, frame: av.VideoFrame, max_pixels: int) -> Frame:
    """BGR pixels turned as the display matrix says, or a refusal when the frame is too large."""
    if frame.width * frame.height > max_pixels:
        error = VideoError(TOO_LARGE, _too_large(frame.width, frame.height, max_pixels))
        return Frame(time, None, error)
    image: np.ndarray = frame.to_ndarray(format="bgr24")
    turns = round((frame.rotation or 0) / 90) % 4  # counter-clockwise quarter turns
    if turns:
        image = np.ascontiguousarray(np.rot90(image, turns))
    return Frame(time, image)


def _too_large(width: int, height: int, max_pixels: int) -> str:
    return (f"{width} x {height} pixels a frame exceeds the limit of {max_pixels:,} pixels "
            f"(see --max-pixels)")
