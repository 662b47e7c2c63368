"""The FER2013 loader: both layouts, the splits, clear errors for malformed rows, the cleaning."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fer_faces import fer_rows, write_fer_csv, write_fer_folder

from facevalue import fer2013
from facevalue.fer2013 import DataError

PIXELS = " ".join(["7"] * 48 * 48)


@pytest.mark.parametrize("name", ["fer.csv", "fer.csv.gz"])
def test_csv_round_trip(tmp_path, name):
    images, labels, usage = fer_rows(14, 7)
    faces = fer2013.load(write_fer_csv(tmp_path / name, images, labels, usage))
    assert faces.images.dtype == np.uint8 and faces.images.shape == (21, 48, 48)
    np.testing.assert_array_equal(faces.images, images)
    np.testing.assert_array_equal(faces.labels, labels)
    test = faces.split("PublicTest")
    assert len(test) == 7 and (test.usage == "PublicTest").all()
    np.testing.assert_array_equal(test.images, images[14:])


def test_csv_without_usage_is_all_training(tmp_path):
    path = tmp_path / "fer.csv"
    path.write_text(f"emotion,pixels\n3,{PIXELS}\n5,{PIXELS}\n")
    faces = fer2013.load(path)
    assert list(faces.usage) == ["Training", "Training"]
    assert list(faces.labels) == [3, 5]


@pytest.mark.parametrize("row, message", [
    (f"3,{' '.join(['7'] * 2303)},Training", "row 3: 2303 pixels, expected 2304"),
    (f"9,{PIXELS},Training", "row 3: emotion '9' is not an integer 0-6"),
    (f"happy,{PIXELS},Training", "row 3: emotion 'happy'"),
    (f",{PIXELS},Training", "row 3: emotion"),
    (f"3,{PIXELS.replace('7', '300', 1)},Training", "row 3: pixel values outside 0-255"),
    (f"3,{PIXELS.replace('7', 'x', 1)},Training", "row 3: pixels are not space-separated"),
    (f"3,{PIXELS},Validation", "unknown Usage value(s) ['Validation']"),
], ids=["pixel-count", "label-range", "label-word", "label-empty", "pixel-range",
        "pixel-word", "usage"])
def test_malformed_csv_row_is_named(tmp_path, row, message):
    path = tmp_path / "bad.csv"
    path.write_text(f"emotion,pixels,Usage\n0,{PIXELS},Training\n{row}\n")
    with pytest.raises(DataError) as error:
        fer2013.load(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_csv_missing_column_and_missing_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("label,pixels\n0,1 2 3\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['emotion'\]"):
        fer2013.load(path)
    with pytest.raises(DataError, match="no such file or folder"):
        fer2013.load(tmp_path / "absent.csv")


def test_folder_layout_matches_csv(tmp_path):
    images, labels, usage = fer_rows(14, 7)
    usage[-2:] = "PrivateTest"  # Kaggle's test/ folder holds both test splits, by file name
    from_csv = fer2013.load(write_fer_csv(tmp_path / "fer.csv", images, labels, usage))
    from_folder = fer2013.load(write_fer_folder(tmp_path / "tree", images, labels, usage))
    for split in fer2013.SPLITS:
        a, b = from_csv.split(split), from_folder.split(split)
        order_a, order_b = np.lexsort((a.labels, a.images.sum(axis=(1, 2)))), \
            np.lexsort((b.labels, b.images.sum(axis=(1, 2))))
        np.testing.assert_array_equal(a.images[order_a], b.images[order_b])
        np.testing.assert_array_equal(a.labels[order_a], b.labels[order_b])
    assert len(from_folder.split("PrivateTest")) == 2


def test_folder_resizes_and_reports_bad_files(tmp_path):
    (tmp_path / "train" / "happy").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "train" / "happy" / "big.png"), np.full((96, 96), 200, np.uint8))
    (tmp_path / "train" / "happy" / "notes.txt").write_text("ignored")
    faces = fer2013.load(tmp_path)
    assert faces.images.shape == (1, 48, 48) and faces.labels[0] == 3
    (tmp_path / "train" / "happy" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg: not a readable image"):
        fer2013.load(tmp_path)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="expected train/ and/or test/"):
        fer2013.load(tmp_path)
    (tmp_path / "test" / "joy").mkdir(parents=True)
    with pytest.raises(DataError, match="joy: unknown emotion folder"):
        fer2013.load(tmp_path)
    (tmp_path / "test" / "joy").rmdir()
    (tmp_path / "test" / "sad").mkdir()
    with pytest.raises(DataError, match="no images found"):
        fer2013.load(tmp_path)


def test_fingerprint_names_pixels_and_labels():
    images, labels, usage = fer_rows(7, 0)
    faces = fer2013.FaceSet(images, labels, usage)
    same = fer2013.FaceSet(images.copy(), labels.copy(), usage)
    relabelled = fer2013.FaceSet(images, np.roll(labels, 1), usage)
    assert fer2013.fingerprint(faces) == fer2013.fingerprint(same)
    assert fer2013.fingerprint(faces) != fer2013.fingerprint(relabelled)


def test_clean_training_removes_warts():
    images, labels, _ = fer_rows(10, 0)
    train_images = np.concatenate([
        images[:6],
        images[6:7],                      # leaks into the test split
        np.full((1, 48, 48), 128, np.uint8),  # near-blank
        images[0:1],                      # duplicate of row 0, same label
        images[1:2],                      # duplicate of row 1 with another label
    ])
    train_labels = np.concatenate([labels[:6], labels[6:7], [0], labels[0:1],
                                   [(labels[1] + 1) % 7]])
    train = fer2013.FaceSet(train_images, train_labels, np.array(["Training"] * 10))
    held = fer2013.FaceSet(images[6:7], labels[6:7], np.array(["PublicTest"]))
    kept, report = fer2013.clean_training(train, held)
    assert report == {"leak_into_test": 1, "near_blank": 1, "duplicate_copies": 1,
                      "conflicting_label_rows": 2, "kept": 5}
    assert len(kept) == 5
    np.testing.assert_array_equal(kept.images, images[[0, 2, 3, 4, 5]])
