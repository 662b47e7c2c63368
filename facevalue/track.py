"""Link the faces of a video's sampled frames into tracks (one person each) and find the main one.

Frames are sampled a second or so apart, so a face is followed by where its box is, not by
how it looks: a box continues a track when it overlaps the track's last box enough, or,
when a head has moved or turned, when its centre is close and its size alike. Press
conferences cut to the audience and back, so a track waits ``max_gap`` seconds for its face
to return to the same place. The main track, the speaker's, is the one seen in the most
sampled frames (ties: the larger faces).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from facevalue.detect import Box

MIN_IOU = 0.3  # overlap that makes two boxes one face, whatever their centres
# Without that overlap: the centres at most this many box sides apart, the sides within this
# ratio of each other (a head turning or leaning between samples).
MAX_SHIFT = 0.5
MAX_SIZE_RATIO = 1.5
DEFAULT_MAX_GAP = 10.0  # seconds a track waits for its face to come back


@dataclass(frozen=True)
class _Track:
    last: Box
    time: float  # when it was last seen


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they do not touch)."""
    w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    h = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (a.area + b.area - inter)


def likeness(a: Box, b: Box) -> float:
    """How surely ``b`` is the face ``a`` a sample later: IoU when they overlap enough,
    else a score below ``MIN_IOU`` that falls with the centres' distance; 0 for no match.

    Sides more than MAX_SIZE_RATIO apart never match, however they overlap: a cut from the
    speaker to a close-up of a journalist at the same place nests one box in the other
    (IoU 0.31 for sides 98 and 176 px in the README's example), and is another person.
    """
    if min(a.w, b.w) <= 0 or max(a.w, b.w) > MAX_SIZE_RATIO * min(a.w, b.w):
        return 0.0
    overlap = iou(a, b)
    if overlap >= MIN_IOU:
        return overlap
    side = (a.area * b.area) ** 0.25  # the geometric mean of the two boxes' sides
    if side == 0:
        return 0.0
    shift = math.hypot(a.x + a.w / 2 - b.x - b.w / 2, a.y + a.h / 2 - b.y - b.h / 2) / side
    if shift > MAX_SHIFT:
        return 0.0
    return MIN_IOU * (1 - shift / MAX_SHIFT) + 1e-6


def link_tracks(times: Sequence[float], faces: Sequence[Sequence[Box]],
                max_gap: float = DEFAULT_MAX_GAP) -> list[tuple[int, ...]]:
    """A track number for every face of every sampled frame, in the same shape as ``faces``.

    Tracks are numbered 0, 1, ... in order of first appearance. In each frame the pairs
    (track, face) are taken best match first, each track and face once; a face matching no
    track waiting (seen within ``max_gap`` seconds) starts a new one.
    """
    tracks: list[_Track] = []
    linked: list[tuple[int, ...]] = []
    for time, boxes in zip(times, faces, strict=True):
        waiting = [n for n, t in enumerate(tracks) if time - t.time <= max_gap]
        pairs = sorted(((likeness(tracks[n].last, box), n, i) for n in waiting
                        for i, box in enumerate(boxes)), reverse=True)
        found: dict[int, int] = {}  # face -> track
        for score, n, i in pairs:
            if score > 0 and i not in found and n not in found.values():
                found[i] = n  # (a frame holds a handful of faces: the scan is cheap)
        for i, box in enumerate(boxes):
            if i not in found:
                found[i] = len(tracks)
                tracks.append(_Track(box, time))
            tracks[found[i]] = _Track(box, time)
        linked.append(tuple(found[i] for i in range(len(boxes))))
    return linked


def rank_tracks(faces: Sequence[Sequence[Box]],
                tracks: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """The same tracks renumbered by rank: 0 is the main track (like face 0 of a photo, its
    largest), then the others by frames seen, mean face area and first appearance."""
    order = {n: rank for rank, n in enumerate(_ranking(faces, tracks))}
    return [tuple(order[n] for n in numbers) for numbers in tracks]


def main_track(faces: Sequence[Sequence[Box]], tracks: Sequence[Sequence[int]]) -> int | None:
    """The track seen in the most sampled frames; of equals, the one with the larger mean
    face area, then the first seen. None when no frame has a face."""
    ranking = _ranking(faces, tracks)
    return ranking[0] if ranking else None


def _ranking(faces: Sequence[Sequence[Box]], tracks: Sequence[Sequence[int]]) -> list[int]:
    frames: dict[int, int] = {}
    area: dict[int, int] = {}
    for boxes, numbers in zip(faces, tracks, strict=True):
        for box, n in zip(boxes, numbers, strict=True):
            frames[n] = frames.get(n, 0) + 1
            area[n] = area.get(n, 0) + box.area
    return sorted(frames, key=lambda n: (-frames[n], -area[n] / frames[n], n))
