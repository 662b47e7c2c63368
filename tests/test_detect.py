"""Face detection and FER2013-like cropping (facevalue.detect) on the real sample portraits."""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from images import portrait

from facevalue.detect import (
    Box,
    DetectorError,
    FaceDetector,
    crop_faces,
    default_model_path,
    ssd_anchors,
    tile_starts,
    tiles,
)

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "sample_data" / "photos"
# The face in each sample portrait (x, y, w, h), checked by eye.
FACES = {"navy/grace_hopper.jpg": (166, 143, 200, 200), "nasa/astronaut.jpg": (178, 81, 94, 94)}


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(threads=1)


def read(name: str) -> np.ndarray:
    image = cv2.imread(str(PHOTOS / name))
    if image is None:
        raise FileNotFoundError(PHOTOS / name)
    return image


def iou(box: Box, rect: tuple[int, int, int, int]) -> float:
    x, y, w, h = rect
    ix = max(0, min(box.x + box.w, x + w) - max(box.x, x))
    iy = max(0, min(box.y + box.h, y + h) - max(box.y, y))
    inter = ix * iy
    return inter / (box.area + w * h - inter)


@pytest.mark.parametrize("name", FACES)
def test_sample_portrait_gives_one_plausible_face(detector: FaceDetector, name: str) -> None:
    image = read(name)
    for photo in (image, cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)):
        faces = detector.detect(photo)
        assert len(faces) == 1
        assert iou(faces[0], FACES[name]) > 0.7
        assert 0.7 < faces[0].score <= 1.0


def test_faceless_images_give_no_face(detector: FaceDetector) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
              rng.integers(0, 256, (100, 100), dtype=np.uint8),
              np.zeros((300, 200), np.uint8), np.full((64, 900, 3), 255, np.uint8),
              read("nasa/landscape.jpg")]
    for image in images:
        assert detector.detect(image) == []


def test_two_portraits_side_by_side_give_two_faces_largest_first(detector: FaceDetector) -> None:
    grace = read("navy/grace_hopper.jpg")  # 600 x 512, face 200 px
    # the astronaut's head and shoulders at 1.6x: a 150 px face, 15% of the composite's width
    # (BlazeFace short range needs faces of at least ~1/10 of the photo's longer side)
    head = cv2.resize(read("nasa/astronaut.jpg")[0:300, 100:400], None, fx=1.6, fy=1.6)
    right = cv2.copyMakeBorder(head, 0, 120, 0, 0, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    faces = detector.detect(np.hstack([grace, right]))
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert iou(faces[0], FACES["navy/grace_hopper.jpg"]) > 0.7
    assert iou(faces[1], (512 + 125, 130, 150, 150)) > 0.6


@pytest.mark.parametrize("factor", [0.25, 6.0])
def test_boxes_of_a_resized_copy_scale_back(detector: FaceDetector, factor: float) -> None:
    image = read("navy/grace_hopper.jpg")
    full = detector.detect(image)[0]
    resized = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    (face,) = detector.detect(resized)
    back = face.scaled(1 / factor)
    tolerance = 0.06 * full.w
    for got, want in zip((back.x, back.y, back.w, back.h), (full.x, full.y, full.w, full.h),
                         strict=True):
        assert abs(got - want) <= tolerance


def test_face_filling_the_photo_is_found(detector: FaceDetector) -> None:
    x, y, w, h = FACES["navy/grace_hopper.jpg"]
    tight = read("navy/grace_hopper.jpg")[y - 10:y + h + 10, x - 10:x + w + 10]
    (face,) = detector.detect(tight)
    assert face.area > 0.5 * tight.shape[0] * tight.shape[1]


def test_small_face_in_a_wide_photo_is_found_on_tiles(detector: FaceDetector) -> None:
    grace = read("navy/grace_hopper.jpg")  # face 200 px: 8% of a 2560 px wide photo
    wide = np.full((1920, 2560, 3), 128, np.uint8)
    wide[1000:1600, 1800:2312] = grace
    (face,) = detector.detect(wide)
    x, y, w, h = FACES["navy/grace_hopper.jpg"]
    assert iou(face, (x + 1800, y + 1000, w, h)) > 0.6
    assert FaceDetector(threads=1, tiles=False).detect(wide) == []


def test_tiles_cover_the_photo_with_overlap() -> None:
    assert tile_starts(100, 100) == [0]
    assert tile_starts(1000, 500) == [0, 250, 500]
    assert tile_starts(750, 500) == [0, 250]
    image = np.zeros((750, 1000), np.uint8)
    views = list(tiles(image))
    assert len(views) == 6 and all(v.shape == (500, 500) for _, _, v in views)


def test_detector_name_pickle_and_repeatability(detector: FaceDetector) -> None:
    digest = hashlib.sha256(default_model_path().read_bytes()).hexdigest()
    assert detector.name == f"blazeface-short-range@{digest[:12]}"
    clone = pickle.loads(pickle.dumps(detector))
    image = read("nasa/astronaut.jpg")
    assert clone.name == detector.name
    assert clone.detect(image) == detector.detect(image)


def test_bad_images_are_refused(detector: FaceDetector) -> None:
    for image in (np.zeros((50, 50), np.float32), np.zeros((50, 50, 4), np.uint8),
                  np.zeros((0, 10), np.uint8)):
        with pytest.raises(ValueError):
            detector.detect(image)


def test_bad_model_files_are_refused(tmp_path: Path, tiny_model: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    for path in (tmp_path / "missing.onnx", text, tiny_model):
        with pytest.raises(DetectorError, match=path.name):
            FaceDetector(path)


def test_anchors_match_blazeface_short_range() -> None:
    anchors = ssd_anchors()
    assert anchors.shape == (896, 2)
    np.testing.assert_allclose(anchors[:2], [[1 / 32, 1 / 32]] * 2)
    np.testing.assert_allclose(anchors[-1], [15 / 16, 15 / 16])


@pytest.mark.parametrize(("mode", "channels"), [("grayscale", 1), ("rgb", 3)])
def test_crop_shapes_and_dtypes(mode: str, channels: int) -> None:
    image = read("navy/grace_hopper.jpg")
    boxes = [Box(166, 143, 200, 200, 0.9), Box(10, 10, 30, 40, 0.8)]
    crops = crop_faces(image, boxes, (48, 40), mode)
    assert crops.shape == (2, 48, 40, channels) and crops.dtype == np.uint8
    assert crop_faces(image, [], (48, 48), mode).shape == (0, 48, 48, channels)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert crop_faces(gray, boxes, (48, 48), mode).shape == (2, 48, 48, channels)


def test_crop_is_the_square_around_the_box_in_rgb_order() -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    image[50:150, 50:150] = (255, 0, 0)  # BGR blue square
    (crop,) = crop_faces(image, [Box(50, 50, 100, 100, 1.0)], (20, 20), "rgb", 1.0, 0.0)
    assert (crop[..., 2] == 255).all() and (crop[..., :2] == 0).all()


def test_crop_at_the_border_replicates_the_edge() -> None:
    image = np.full((100, 100), 50, np.uint8)
    image[:, 0] = 200  # a bright left edge
    (crop,) = crop_faces(image, [Box(0, 30, 40, 40, 1.0)], (80, 80), "grayscale", scale=2.0)
    # the square spans x = -20 .. 60: its left quarter lies outside and repeats the edge
    assert (crop[:, :18, 0] == 200).all()
    assert (crop[:, 30:, 0] == 50).all()


def test_crop_rejects_unknown_color_mode() -> None:
    with pytest.raises(ValueError, match="color_mode"):
        crop_faces(np.zeros((10, 10), np.uint8), [], (48, 48), "bgr")


def load_build_tool():
    spec = importlib.util.spec_from_file_location("build_models",
                                                  ROOT / "tools" / "build_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_shipped_detector_is_canonical_and_names_its_source() -> None:
    """Renaming tensors by position makes builds byte-reproducible (tools/build_models.py)."""
    tool = load_build_tool()
    spec = tool.SPECS["blazeface-short-range"]
    shipped = onnx.load(default_model_path())
    meta = {p.key: p.value for p in shipped.metadata_props}
    assert meta["facevalue.detector.tflite_sha256"] == spec.tflite_sha256
    assert "Apache-2.0" in meta["facevalue.detector.license"]
    shuffled = onnx.load(default_model_path())
    for i, init in enumerate(shuffled.graph.initializer):  # rename as another run would
        old, init.name = init.name, f"const_fold_opt__{900 - i}"
        for node in shuffled.graph.node:
            node.input[:] = [init.name if n == old else n for n in node.input]
    tool.canonical_names(shuffled, spec.member)
    assert shuffled.SerializeToString(deterministic=True) == default_model_path().read_bytes()


def _rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    """``image`` turned anticlockwise about its centre (edges reflected, no black corners)."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("degrees", [-20, 20])
def test_eye_line_gives_the_roll_and_aligned_crops_undo_it(detector, degrees):
    upright = portrait()
    (face,) = detector.detect(upright)[:1]
    assert face.eyes is not None and abs(face.roll) < 5
    turned = _rotated(upright, degrees)
    (tilted,) = detector.detect(turned)[:1]
    # an anticlockwise turn lowers the eye on the image's left: the roll is clockwise-positive
    assert tilted.roll == pytest.approx(-degrees, abs=6)
    def crop(image, box, align=True):
        return crop_faces(image, [box], (48, 48), "grayscale", align=align).ravel()

    reference = crop(upright, face)
    aligned = np.corrcoef(reference, crop(turned, tilted))[0, 1]
    plain = np.corrcoef(reference, crop(turned, tilted, align=False))[0, 1]
    assert aligned > 0.65 and aligned > plain + 0.15


def test_boxes_without_eyes_are_cut_upright():
    image = np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)
    box = Box(50, 50, 100, 100, 1.0)
    np.testing.assert_array_equal(crop_faces(image, [box], (48, 48), "grayscale"),
                                  crop_faces(image, [box], (48, 48), "grayscale", align=False))
    level = Box(50, 50, 100, 100, 1.0, (80.0, 90.0, 120.0, 90.0))
    assert level.roll == 0 and level.scaled(2).eyes == (160.0, 180.0, 240.0, 180.0)
