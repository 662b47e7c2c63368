"""Facial geometry (facevalue.geometry, score --geometry) on the real sample portraits.

fWHR must not depend on how a photo was taken or stored: the mirror image, half and double
the size, and turns of up to 15 degrees give the same ratio within 3%.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from images import ASTRONAUT, GRACE, LANDSCAPE

from facevalue import geometry, score_folder
from facevalue.columns import GEOMETRY
from facevalue.detect import FaceDetector


@pytest.fixture(scope="module")
def measure():
    detector, mesh = FaceDetector(threads=1), geometry.FaceMesh(threads=1)

    def run(image: np.ndarray) -> dict[str, float]:
        (box,) = detector.detect(image)[:1]
        crop, matrix = geometry.mesh_crop(image, box)
        (face,) = mesh.measure(crop[None], matrix[None])
        return {name: getattr(face, name) for name in GEOMETRY}
    return run


def _variants(image: np.ndarray) -> dict[str, np.ndarray]:
    height, width = image.shape[:2]
    out = {"mirror": cv2.flip(image, 1),
           "half": cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
           "double": cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)}
    for degrees in (-15, -10, 10, 15):
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
        out[f"turned {degrees}"] = cv2.warpAffine(image, matrix, (width, height),
                                                  borderMode=cv2.BORDER_REFLECT)
    return out


@pytest.mark.parametrize("photo", [GRACE, ASTRONAUT], ids=lambda p: p.stem)
def test_fwhr_is_the_same_for_the_mirror_scaled_and_turned_photo(measure, photo: Path):
    image = cv2.imread(str(photo))
    original = measure(image)
    assert 1.6 < original["fwhr"] < 2.3  # adult faces: about 1.7-2.1 in the literature
    for name, variant in _variants(image).items():
        assert measure(variant)["fwhr"] == pytest.approx(original["fwhr"], rel=0.03), name


def test_pose_follows_mirror_and_turns(measure):
    image = cv2.imread(str(GRACE))
    original = measure(image)
    assert abs(original["yaw"]) < 10 and abs(original["pitch"]) < 15
    mirrored = measure(cv2.flip(image, 1))
    assert mirrored["roll"] == pytest.approx(-original["roll"], abs=2)
    assert mirrored["yaw"] == pytest.approx(-original["yaw"], abs=3)
    for degrees in (-15, 15):  # an anticlockwise turn is a negative (anticlockwise) roll
        turned = measure(_variants(image)[f"turned {degrees}"])
        assert turned["roll"] == pytest.approx(original["roll"] - degrees, abs=4)
        assert turned["yaw"] == pytest.approx(original["yaw"], abs=4)
    half = measure(_variants(image)["half"])
    assert half["eye_distance"] == pytest.approx(original["eye_distance"] / 2, rel=0.05)


def test_roll_is_removed_before_measuring():
    # a level face and the same face turned: same width and height, so the same ratio
    rng = np.random.default_rng(0)
    points = rng.normal(0, 1, (geometry.POINTS, 3))
    points[list(geometry.WIDTH_POINTS)] = [[-70, 0, 0], [70, 0, 0]]
    points[list(geometry.AXIS_POINTS)] = [[0, -90, 0], [0, 90, 0]]
    points[geometry.LIP_POINT] = [0, 40, 0]
    points[list(geometry.BROW_POINTS)] = [[-10, -35, 0], [10, -35, 0]]
    level = geometry.measure_face(points, 1.0, 100.0)
    assert level.fwhr == pytest.approx(140 / 75) and level.roll == pytest.approx(0, abs=1e-9)
    turned = points.copy()
    turned[:, :2] = geometry.rotate(points[:, :2], 20)
    again = geometry.measure_face(turned, 1.0, 100.0)
    assert again.fwhr == pytest.approx(level.fwhr) and again.roll == pytest.approx(20)


def test_geometry_ok_needs_a_frontal_large_sharp_face():
    points = np.zeros((geometry.POINTS, 3))
    points[list(geometry.WIDTH_POINTS)] = [[-70, 0, 0], [70, 0, 0]]
    points[list(geometry.AXIS_POINTS)] = [[0, -90, 0], [0, 90, 0]]
    points[geometry.LIP_POINT] = [0, 40, 0]
    points[list(geometry.BROW_POINTS)] = [[-10, -35, 0], [10, -35, 0]]
    for pair, x in zip(geometry.EYE_POINTS, (-30, 30), strict=True):
        points[list(pair)] = [x, -20, 0]
    assert geometry.measure_face(points, 1.0, 100.0).geometry_ok
    assert not geometry.measure_face(points, 1.0, 5.0).geometry_ok  # blurred
    assert not geometry.measure_face(points, 0.2, 100.0).geometry_ok  # not surely a face
    small = points.copy()
    small[:, :2] /= 4  # eyes 15 px apart
    assert not geometry.measure_face(small, 1.0, 100.0).geometry_ok
    profile = points.copy()
    profile[geometry.WIDTH_POINTS[1], 2] = 70 * math.tan(math.radians(40))
    assert not geometry.measure_face(profile, 1.0, 100.0).geometry_ok


def test_score_with_geometry_measures_both_portraits_and_not_the_landscape(
        tmp_path: Path, tiny_model: Path):
    photos = tmp_path / "photos"
    for company, source in (("a", GRACE), ("a", LANDSCAPE), ("b", ASTRONAUT)):
        (photos / company).mkdir(parents=True, exist_ok=True)
        (photos / company / source.name).write_bytes(source.read_bytes())
    out = tmp_path / "g.parquet"
    faces, companies = score_folder(photos, out, model=tiny_model, device="cpu", geometry=True)
    rows = faces.set_index("path")
    assert rows.loc[["a/grace_hopper.jpg", "b/astronaut.jpg"], "fwhr"].between(1.6, 2.3).all()
    assert rows.loc[["a/grace_hopper.jpg", "b/astronaut.jpg"], "geometry_ok"].all()
    assert pd.isna(rows.loc["a/landscape.jpg", "fwhr"])
    assert companies.set_index("company")["geometry_faces"].to_dict() == {"a": 1, "b": 1}
    assert companies.set_index("company").loc["a", "fwhr"] == pytest.approx(
        rows.loc["a/grace_hopper.jpg", "fwhr"], rel=1e-6)
    assert faces.attrs["facevalue.landmarks"].startswith("face-mesh@")
    again, _ = score_folder(photos, out, model=tiny_model, device="cpu", geometry=True)
    pd.testing.assert_frame_equal(again, faces)  # saved results, geometry columns included
    plain, plain_companies = score_folder(photos, out, model=tiny_model, device="cpu")
    assert "fwhr" not in plain.columns and "fwhr" not in plain_companies.columns
    np.testing.assert_allclose(plain["happiness"], faces["happiness"], equal_nan=True)


def test_a_wrong_landmark_model_is_refused(tiny_model: Path, tmp_path: Path):
    with pytest.raises(geometry.LandmarkError, match="is not the face mesh"):
        geometry.FaceMesh(tiny_model)
    with pytest.raises(geometry.LandmarkError, match="cannot read"):
        geometry.FaceMesh(tmp_path / "absent.onnx")
