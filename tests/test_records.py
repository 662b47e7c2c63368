"""The typed records (facevalue.records): what the tables' columns are read from, by name."""

from __future__ import annotations

from dataclasses import fields

from facevalue.columns import GEOMETRY
from facevalue.contract import LABELS
from facevalue.detect import Box
from facevalue.records import Geometry, PhotoResult, ScoredFace


def test_geometry_fields_are_the_geometry_columns() -> None:
    # rows and the saved results read a face's geometry by these names, in this order
    assert tuple(field.name for field in fields(Geometry)) == GEOMETRY


def test_emotion_is_the_first_most_probable_label() -> None:
    tie = (0.1, 0.3, 0.0, 0.3, 0.1, 0.1, 0.1)
    face = ScoredFace(Box(0, 0, 1, 1, 0.9), tie)
    assert len(tie) == len(LABELS) and face.emotion == LABELS[1]


def test_a_result_without_faces_has_none() -> None:
    assert PhotoResult("no_face", faces_in_photo=0).faces == ()
