"""facevalue.track on boxes: overlap and position link faces, the main track is the speaker's."""

from __future__ import annotations

from facevalue.detect import Box
from facevalue.track import iou, likeness, link_tracks, main_track, rank_tracks


def box(x: int, y: int, side: int = 100) -> Box:
    return Box(x, y, side, side, 0.9)


def test_iou() -> None:
    assert iou(box(0, 0), box(0, 0)) == 1.0
    assert iou(box(0, 0), box(50, 0)) == 5000 / 15000
    assert iou(box(0, 0), box(100, 0)) == 0.0
    assert iou(box(0, 0), Box(0, 0, 0, 0, 0.9)) == 0.0


def test_likeness_overlap_then_position_then_nothing() -> None:
    assert likeness(box(0, 0), box(10, 0)) == iou(box(0, 0), box(10, 0))
    moved = likeness(box(0, 0), box(40, 0))  # IoU 0.43 is enough
    turned = likeness(box(0, 0, 100), box(55, 10, 70))  # IoU 0.27, but near and alike
    assert moved > 0.3 > turned > 0
    assert likeness(box(0, 0), box(60, 0)) == 0.0  # IoU 0.25 and centres 0.6 sides apart
    assert likeness(box(0, 0, 100), box(0, 0, 40)) == 0.0  # same place, another size
    # a close-up nesting the last box (IoU 0.31): another person, not a head moving
    assert iou(box(276, 102, 98), box(212, 34, 176)) > 0.3
    assert likeness(box(276, 102, 98), box(212, 34, 176)) == 0.0
    assert likeness(Box(0, 0, 0, 0, 0.9), box(0, 0)) == 0.0


def test_two_people_who_swap_nothing() -> None:
    """A speaker on the left, a second person on the right, both moving a little; faces come
    in either order within a frame (the detector sorts them by size)."""
    times = [0.0, 1.0, 2.0, 3.0]
    faces = [[box(100, 100), box(600, 100, 80)],
             [box(610, 105, 80), box(120, 95)],
             [box(130, 100)],
             [box(590, 110, 80), box(140, 100)]]
    assert link_tracks(times, faces) == [(0, 1), (1, 0), (0,), (1, 0)]


def test_a_face_that_comes_back_after_a_cutaway() -> None:
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 20.0]
    faces = [[box(100, 100)], [box(105, 100)], [], [box(400, 300, 50)], [box(100, 102)],
             [box(100, 100)]]
    assert link_tracks(times, faces, max_gap=10) == [(0,), (0,), (), (1,), (0,), (2,)]


def test_greedy_matching_takes_the_best_pair_first() -> None:
    """Two tracks both near one face: the closer one takes it, the other starts anew."""
    times = [0.0, 1.0]
    faces = [[box(0, 0), box(300, 0)], [box(280, 0)]]
    assert link_tracks(times, faces) == [(0, 1), (1,)]


def test_main_track_is_seen_most_then_larger() -> None:
    faces = [[box(0, 0, 50), box(300, 0)], [box(0, 0, 50)], [box(300, 0)]]
    tracks = [(0, 1), (0,), (1,)]
    assert main_track(faces, tracks) == 1  # two frames each: the larger face wins
    assert main_track(faces + [[box(0, 0, 50)]], [*tracks, (0,)]) == 0  # seen most
    assert main_track([[], []], [(), ()]) is None


def test_rank_tracks_numbers_the_main_track_zero() -> None:
    faces = [[box(0, 0, 50), box(300, 0)], [box(0, 0, 50)], [box(0, 0, 50)], [box(300, 0)],
             [box(600, 0)]]
    tracks = [(0, 1), (0,), (0,), (1,), (2,)]
    assert rank_tracks(faces, tracks) == [(0, 1), (0,), (0,), (1,), (2,)]
    swapped = [(1, 0), (1,), (1,), (0,), (2,)]
    assert rank_tracks(faces, swapped) == [(0, 1), (0,), (0,), (1,), (2,)]
