"""facevalue.video on short videos the tests make: times, rotation, frame rates, bad files."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow.fs
import pytest
from videos import write_h264, write_opencv

from facevalue import decode, video
from facevalue.columns import EMPTY, TOO_LARGE, UNREADABLE
from facevalue.video import VideoError, duration, sample_frames

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "photos"


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """Grace Hopper at 160 x 200: small frames keep every video here a few kB."""
    return cv2.resize(cv2.imread(str(SAMPLE / "navy" / "grace_hopper.jpg")), (160, 200))


def moving(portrait: np.ndarray, n: int) -> list[np.ndarray]:
    """The portrait sliding sideways a pixel a frame, so every frame differs."""
    return [np.roll(portrait, i, axis=1) for i in range(n)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, portrait: np.ndarray) -> Path:
    """3.5 s at 10 frames/s, mp4v: frames at 0.0, 0.1, ... 3.4 s."""
    return write_opencv(tmp_path_factory.mktemp("v") / "clip.mp4", moving(portrait, 35), 10)


@pytest.mark.parametrize(("fps", "times"), [
    (1, [0.0, 1.0, 2.0, 3.0]),
    (0.2, [0.0]),
    (10, [round(0.1 * i, 1) for i in range(35)]),
    (3, [0.0, 0.4, 0.7, 1.0, 1.4, 1.7, 2.0, 2.4, 2.7, 3.0, 3.4]),  # first frame at or after k/3
])
def test_sampled_times(clip: Path, fps: float, times: list[float]) -> None:
    frames = list(sample_frames(clip, fps))
    assert [round(f.time, 6) for f in frames] == times
    assert all(f.image is not None and f.image.shape == (200, 160, 3) for f in frames)


def test_frames_are_the_decoded_frames_at_those_times(tmp_path: Path,
                                                      portrait: np.ndarray) -> None:
    """Packets skipped undecoded (other groups of pictures, unreferenced B-frames) change no
    sampled pixel: each equals the same frame from a plain decode of every frame."""
    path = write_h264(tmp_path / "b.mp4", moving(portrait, 100), [40 * i for i in range(100)])
    with av.open(str(path)) as container:
        every = {round(float(f.time), 3): f.to_ndarray(format="bgr24")
                 for f in container.decode(video=0)}
    for fps in (1, 3, 0.5):
        frames = list(sample_frames(path, fps))
        assert [f.time for f in frames] == pytest.approx(
            [k / fps for k in range(len(frames))], abs=0.04)
        for f in frames:
            assert np.array_equal(f.image, every[round(f.time, 3)])


def test_variable_frame_rate_times_come_from_the_container(tmp_path: Path,
                                                           portrait: np.ndarray) -> None:
    times = [0, 100, 150, 900, 1000, 2500, 2600, 2650, 4100, 9000]
    path = write_h264(tmp_path / "vfr.mp4", moving(portrait, len(times)), times)
    assert [f.time for f in sample_frames(path, 1)] == [0.0, 1.0, 2.5, 4.1, 9.0]
    assert [f.time for f in sample_frames(path, 10)] == [
        0.0, 0.1, 0.9, 1.0, 2.5, 2.6, 4.1, 9.0]


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_display_matrix_is_honoured(tmp_path: Path, portrait: np.ndarray,
                                    rotation: int) -> None:
    """Frames stored turned, with a display matrix that turns them back, come out upright
    (as OpenCV's reader, which also honours it, shows them)."""
    stored = np.ascontiguousarray(np.rot90(portrait, -rotation // 90))
    path = write_h264(tmp_path / "turned.mp4", [stored] * 3, [0, 500, 1000], rotation)
    frame = next(sample_frames(path))
    assert frame.image is not None and frame.image.shape == portrait.shape
    assert np.abs(frame.image.astype(int) - portrait).mean() < 6
    capture = cv2.VideoCapture(str(path))
    assert np.array_equal(capture.read()[1], frame.image)


def test_held_packets_are_bounded(tmp_path: Path, portrait: np.ndarray,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream with one keyframe is decoded as it comes once too many packets wait."""
    path = write_h264(tmp_path / "onekey.mp4", moving(portrait, 60),
                      [100 * i for i in range(60)], gop=1000)
    expected = [f.time for f in sample_frames(path, 0.5)]
    monkeypatch.setattr(video, "MAX_HELD_PACKETS", 3)
    assert [f.time for f in sample_frames(path, 0.5)] == expected == [0.0, 2.0, 4.0]


def test_reads_a_file_object(clip: Path) -> None:
    """A video in a bucket arrives as a pyarrow.fs input file, not a path."""
    with pyarrow.fs.LocalFileSystem().open_input_file(str(clip)) as f:
        assert [frame.time for frame in sample_frames(f)] == [0.0, 1.0, 2.0, 3.0]


def test_duration(clip: Path) -> None:
    assert duration(clip) == pytest.approx(3.5)


def status(path: Path, **kwargs: int) -> str:
    with pytest.raises(VideoError) as e:
        list(sample_frames(path, **kwargs))
    return e.value.status


def test_bad_files_get_a_status(tmp_path: Path, clip: Path, portrait: np.ndarray) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert status(empty) == EMPTY
    truncated = tmp_path / "truncated.mp4"  # mp4v writes its index last: cut, it is gone
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    assert status(truncated) == UNREADABLE
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    assert status(noise) == UNREADABLE
    photo = tmp_path / "photo.mp4"
    photo.write_bytes((SAMPLE / "navy" / "grace_hopper.jpg").read_bytes())
    assert status(photo) == UNREADABLE
    assert status(clip, max_pixels=100 * 100) == TOO_LARGE


def test_a_video_named_jpg_is_unreadable_as_a_photo(clip: Path) -> None:
    with pytest.raises(decode.DecodeError) as e:
        decode.decode(clip.read_bytes())
    assert e.value.status == UNREADABLE


def test_audio_only(tmp_path: Path) -> None:
    path = tmp_path / "speech.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = np.zeros((1, 16000), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(VideoError, match="no video stream") as e:
        list(sample_frames(path))
    assert e.value.status == UNREADABLE


def test_unsupported_codec(tmp_path: Path, portrait: np.ndarray) -> None:
    """An AVI whose codec tag no decoder knows (MJPG renamed in both headers)."""
    mjpg = write_opencv(tmp_path / "m.avi", moving(portrait, 5), 5, "MJPG").read_bytes()
    path = tmp_path / "odd.avi"
    path.write_bytes(mjpg.replace(b"MJPG", b"QQQQ"))
    with pytest.raises(VideoError, match="codec") as e:
        list(sample_frames(path))
    assert e.value.status == UNREADABLE


def test_truncated_stream_yields_what_it_holds(tmp_path: Path, portrait: np.ndarray) -> None:
    """An AVI cut in the middle (its index lost) still gives the frames before the cut."""
    whole = write_opencv(tmp_path / "w.avi", moving(portrait, 50), 10, "MJPG").read_bytes()
    path = tmp_path / "cut.avi"
    path.write_bytes(whole[: len(whole) // 2])
    times = [f.time for f in sample_frames(path, 1)]
    assert times[:2] == [0.0, 1.0] and times[-1] < 5


def test_huge_frames_are_refused_one_by_one(tmp_path: Path, portrait: np.ndarray) -> None:
    """A stream whose size grows midway (two MPEG-TS files end to end): the header passes
    the limit, the later, larger frames come back refused, with their times."""
    small, large = tmp_path / "small.ts", tmp_path / "large.ts"
    write_h264(small, moving(portrait[:100, :80].copy(), 20), [100 * i for i in range(20)])
    write_h264(large, moving(portrait, 20), [2000 + 100 * i for i in range(20)])
    path = tmp_path / "both.ts"
    path.write_bytes(small.read_bytes() + large.read_bytes())
    frames = list(sample_frames(path, 1, max_pixels=100 * 80))
    assert [f.image is None for f in frames] == [False, False, True, True]
    assert frames[-1].error is not None and frames[-1].error.status == TOO_LARGE


def test_fps_must_be_positive(clip: Path) -> None:
    for fps in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fps"):
            list(sample_frames(clip, fps))


def test_frames_at_gives_the_sampled_frames_by_seeking(tmp_path: Path,
                                                       portrait: np.ndarray) -> None:
    """The report's frames: asked for some sampled times, in any order, frames_at gives the
    frames sample_frames gave there, pixel for pixel (H.264 with B-frames and a keyframe
    every 12 frames: each time a seek and a decode from the keyframe before it)."""
    clip = write_h264(tmp_path / "b.mp4", moving(portrait, 60), [40 * i for i in range(60)])
    sampled = {f.time: f.image for f in sample_frames(clip, fps=2)}
    wanted = sorted(sampled)[::-2]  # backwards: every one a seek
    found = list(video.frames_at(clip, wanted))
    assert [f.time for f in found] == wanted
    for frame in found:
        assert frame.image is not None
        np.testing.assert_array_equal(frame.image, sampled[frame.time])
    late = list(video.frames_at(clip, [99.0]))
    assert late[0].image is None and late[0].error is not None
    assert late[0].error.status == UNREADABLE
