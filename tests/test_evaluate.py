"""`facevalue evaluate`: metrics by hand, both data layouts, JSON and PNG output, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from fer_faces import fer_rows, write_fer_csv, write_fer_folder

from facevalue import evaluate as ev
from facevalue.classify import Classifier, default_model
from facevalue.cli import cli
from facevalue.contract import LABELS


@pytest.fixture(scope="module")
def fer_data(tmp_path_factory):
    """The same 21 Training and 35 PublicTest faces as a CSV and as an image-folder tree."""
    root = tmp_path_factory.mktemp("fer")
    rows = fer_rows(21, 35, seed=3)
    return rows, write_fer_csv(root / "fer.csv.gz", *rows), write_fer_folder(root / "tree", *rows)


def test_ece_by_hand():
    # 4 faces at confidence 0.9 (3 right) and 4 at 0.6 (2 right): |0.75-0.9|/2 + |0.5-0.6|/2
    probs = np.full((8, 7), 0.0)
    probs[:4, 0], probs[:4, 1] = 0.9, 0.1
    probs[4:, 0], probs[4:, 1] = 0.6, 0.4
    labels = np.array([0, 0, 0, 1, 0, 0, 1, 1])
    assert ev.expected_calibration_error(probs, labels) == pytest.approx(0.125)
    assert ev.expected_calibration_error(np.eye(7), np.arange(7)) == 0.0


def test_confusion_and_class_metrics_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 0, 2])
    matrix = ev.confusion_matrix(labels, predicted)
    assert matrix[0].tolist()[:3] == [2, 1, 0] and matrix[1].tolist()[:3] == [1, 1, 0]
    anger, disgust, fear, happiness = ev.class_metrics(matrix)[:4]
    assert (anger.precision, anger.recall, anger.support) == (2 / 3, 2 / 3, 3)
    assert disgust.precision == 0.5 and disgust.recall == 0.5
    assert disgust.f1 == pytest.approx(0.5)
    assert fear.f1 == 1.0
    assert (happiness.precision, happiness.recall, happiness.f1, happiness.support) == (0, 0, 0, 0)


def test_evaluate_matches_the_classifier(fer_data, tiny_model):
    (images, labels, usage), csv, _ = fer_data
    result = ev.evaluate(csv, "PublicTest", tiny_model, batch_size=8)
    probs = Classifier(tiny_model, "cpu").predict(images[usage == "PublicTest"][..., None])
    truth = labels[usage == "PublicTest"]
    assert result.n == 35
    assert result.accuracy == pytest.approx(np.mean(probs.argmax(axis=1) == truth))
    assert result.ece == pytest.approx(ev.expected_calibration_error(probs, truth), abs=1e-6)
    assert sum(map(sum, result.confusion)) == 35
    low, high = result.accuracy_ci
    assert low <= result.accuracy <= high and high - low > 0.05  # 35 faces: a wide interval
    chance = sum(np.mean(truth == k) * np.mean(probs.argmax(axis=1) == k) for k in range(7))
    assert result.kappa == pytest.approx((result.accuracy - chance) / (1 - chance))
    assert [c.support for c in result.per_class] == np.bincount(truth, minlength=7).tolist()
    assert ev.evaluate(csv, "Training", tiny_model).n == 21


def test_cli_json_and_plot_in_both_layouts(fer_data, tiny_model, tmp_path):
    _, csv, tree = fer_data
    outputs = []
    for data in (csv, tree):
        png = tmp_path / f"{data.name}.png"
        result = CliRunner().invoke(cli, ["evaluate", str(data), "--model", str(tiny_model),
                                          "--json", "--plot", str(png)],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.stdout.strip().splitlines()[-1]))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from_csv, from_tree = outputs
    assert from_csv["n"] == from_tree["n"] == 35
    # PNG is lossless, so both layouts hold the same pixels and give the same figures.
    assert from_csv["accuracy"] == from_tree["accuracy"]
    assert from_csv["per_class"] == from_tree["per_class"]
    assert from_csv["confusion"] == from_tree["confusion"]
    assert set(from_csv["per_class"]) == set(LABELS)
    assert set(from_csv["per_class"]["happiness"]) == {"precision", "recall", "f1", "support"}
    assert {"accuracy_ci", "kappa", "macro_f1", "ece"} <= from_csv.keys()


def test_cli_text_report(fer_data, tiny_model):
    _, csv, _ = fer_data
    result = CliRunner().invoke(cli, ["evaluate", str(csv), "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert "on PublicTest: 35 faces" in result.stdout
    assert "ECE (15 bins)" in result.stdout and "neutral" in result.stdout


def test_cli_errors_are_clear(fer_data, tiny_model, tmp_path):
    _, csv, _ = fer_data
    result = CliRunner().invoke(cli, ["evaluate", str(csv), "--model", str(tiny_model),
                                      "--split", "PrivateTest"])
    assert result.exit_code == 1
    assert "no PrivateTest rows (splits present: PublicTest, Training)" in result.output
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    result = CliRunner().invoke(cli, ["evaluate", str(csv), "--model", str(junk)])
    assert result.exit_code == 1 and "junk.onnx" in result.output


def test_default_model_is_the_shipped_one(fer_data):
    _, csv, _ = fer_data
    assert ev.evaluate(csv).model == str(default_model())


def test_evaluate_does_not_import_tensorflow():
    code = ("import sys, facevalue.evaluate, facevalue.cli; "
            "sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- labelled photos (facevalue evaluate PHOTOS --labels CSV) ---
@pytest.fixture()
def labelled(tmp_path):
    """Three portraits, a landscape (no face), a corrupt file and a listed missing photo."""
    from images import ASTRONAUT, GRACE, LANDSCAPE

    photos = tmp_path / "photos"
    (photos / "a").mkdir(parents=True)
    for name, source in (("a/grace.jpg", GRACE), ("a/astro.jpg", ASTRONAUT),
                         ("grace2.jpg", GRACE), ("scenery.jpg", LANDSCAPE)):
        (photos / name).write_bytes(source.read_bytes())
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (photos / "unlabelled.jpg").write_bytes(GRACE.read_bytes())
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\na/grace.jpg,happy\na/astro.jpg,Surprised\n"
                      "grace2.jpg,neutral\nscenery.jpg,sad\nbroken.jpg,angry\n"
                      "gone.jpg,fear\n")
    return photos, labels


def test_photo_metrics_by_hand():
    faces = pd.DataFrame({"path": ["p1", "p2", "p3", "p4", "p4"], "face": [0, 0, None, 0, 1],
                          "status": ["ok", "ok", "no_face", "ok", "ok"],
                          "emotion": ["happiness", "anger", None, "neutral", "anger"]})
    top = {"p1": 0.9, "p2": 0.6, "p4": 0.5}  # the main faces' top probability
    for label in ev.LABELS:
        faces[label] = [top[p] if e == label else (1 - top[p]) / 6 if p in top else np.nan
                        for p, e in zip(faces["path"], faces["emotion"], strict=True)]
    truth = {"p1": "happiness", "p2": "neutral", "p3": "neutral", "p4": "neutral"}
    result = ev.score_photos(faces, truth)
    # three scored photos (p3 has no face): right at 0.9 and 0.5, wrong at 0.6, one bin each
    assert result.ece == pytest.approx((0.1 + 0.6 + 0.5) / 3)
    assert result.n == 4 and result.accuracy == 0.5 and result.no_face == 1
    # rows happiness: 1 right; neutral: 1 right, 1 read as anger, 1 without a face
    assert result.confusion[3][3] == 1 and result.confusion[6] == (1, 0, 0, 0, 0, 0, 1, 1)
    by = {c.label: c for c in result.per_class}
    assert by["neutral"].recall == pytest.approx(1 / 3) and by["neutral"].precision == 1.0
    assert by["anger"].support == 0 and by["anger"].precision == 0.0
    # kappa: observed 0.5; chance = (1/4 * 1/4) + (3/4 * 1/4) = 0.25 -> (0.5-0.25)/0.75
    assert result.kappa == pytest.approx(1 / 3)
    low, high = result.accuracy_ci
    assert 0 <= low < 0.5 < high <= 1
    assert set(result.to_dict()["per_class"]) == {"happiness", "neutral"}
    assert ev.score_photos(faces[faces["path"] == "p3"], {"p3": "neutral"}).ece is None


def test_bootstrap_interval_narrows_with_photos():
    wide = ev.bootstrap_interval(np.arange(40) % 2 == 0)
    narrow = ev.bootstrap_interval(np.arange(4000) % 2 == 0)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]
    assert narrow[1] - narrow[0] == pytest.approx(2 * 1.96 * 0.5 / np.sqrt(4000), rel=0.15)


def test_read_labels_accepts_spellings_and_refuses_bad_rows(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("path,label\nx/a.jpg,Happy\nb.jpg,surprised\nc.jpg,anger\n")
    assert ev.read_labels(good) == {"x/a.jpg": "happiness", "b.jpg": "surprise",
                                    "c.jpg": "anger"}
    for text, message in (("path,label\na.jpg,contempt\n", "row 2: label 'contempt'"),
                          ("name,label\na.jpg,happy\n", r"needs a path \(or file\) column"),
                          ("path,label\na.jpg,happy\na.jpg,sad\n", "labelled twice"),
                          ("path,label\n", "no labelled photos"),
                          ("path,label\n/data/a.jpg,happy\n", "row 2: '/data/a.jpg' is absolute"),
                          ("path,label\n../a.jpg,happy\n", "relative to PHOTOS"),
                          ("path,label\na.jpg,happy\n./a.jpg,sad\n", "labelled twice")):
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(ev.fer2013.DataError, match=message):
            ev.read_labels(bad)


def test_photo_accuracy_equals_score_and_merge(labelled, tiny_model, tmp_path):
    """The README's recipe (score, merge, compare main faces) gives the very same accuracy."""
    photos, labels = labelled
    result = CliRunner().invoke(cli, ["evaluate", str(photos), "--labels", str(labels),
                                      "--model", str(tiny_model), "--json",
                                      "--plot", str(tmp_path / "c.png")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"accuracy", "accuracy_ci", "macro_f1", "kappa", "ece", "per_class", "confusion",
            "n", "no_face"} <= set(report)
    assert 0 <= report["ece"] <= 1
    assert report["n"] == 6 and report["no_face"] == 1
    assert report["statuses"] == {"ok": 3, "no_face": 1, "unreadable": 1, "missing": 1}
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"

    out = tmp_path / "scores.parquet"
    scored = CliRunner().invoke(cli, ["score", str(photos), "--out", str(out), "--model",
                                      str(tiny_model), "--quiet"], catch_exceptions=False)
    assert scored.exit_code == 0, scored.output
    names = {"happy": "happiness", "surprised": "surprise", "sad": "sadness",
             "angry": "anger"}
    truth = pd.read_csv(labels).rename(columns={"file": "path"})
    truth["label"] = truth["label"].str.lower().replace(names)
    faces = pd.read_parquet(out)
    merged = truth.merge(faces[faces["face"].fillna(0) == 0], on="path", how="left")
    accuracy = ((merged["status"] == "ok") & (merged["emotion"] == merged["label"])).mean()
    assert report["accuracy"] == pytest.approx(accuracy)
    assert sum(map(sum, report["confusion"])) == 6


def test_photo_evaluation_errors_are_one_line(labelled, tiny_model, tmp_path):
    photos, labels = labelled
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na/grace.jpg,smug\n")
    video = tmp_path / "video.csv"
    video.write_text("path,label\na/grace.jpg,happy\nceo/talk.MP4,happy\n")
    for args, message in (([str(photos), "--labels", str(bad)], "label 'smug'"),
                          ([str(labels), "--labels", str(labels)], "folder of labelled photos"),
                          ([str(photos), "--labels", str(video)],
                           "ceo/talk.MP4 is a video; facevalue evaluate scores labelled photos")):
        result = CliRunner().invoke(cli, ["evaluate", *args, "--model", str(tiny_model)])
        assert result.exit_code != 0 and message in result.output
        assert "Traceback" not in result.output


def test_labels_are_matched_the_way_a_manifest_matches_paths(labelled, tiny_model, tmp_path,
                                                             caplog):
    """Issue 20, defect 2: ``./a/grace.jpg`` or ``a\\grace.jpg`` is the photo a/grace.jpg,
    so the accuracy does not depend on how the paths are spelled."""
    photos, labels = labelled
    assert ev.read_labels(labels) == ev.read_labels(_respelled(labels, tmp_path, "./"))
    plain = ev.evaluate_photos(photos, labels, model=tiny_model, device="cpu")
    dotted = ev.evaluate_photos(photos, _respelled(labels, tmp_path, "./"), model=tiny_model,
                                device="cpu")
    assert dotted.to_dict() == plain.to_dict()
    assert plain.statuses == {"ok": 3, "no_face": 1, "unreadable": 1, "missing": 1}
    assert "1 of 6 labelled photos are not under" in caplog.text  # gone.jpg, said aloud


def test_labels_that_name_no_photo_at_all_are_an_error(labelled, tiny_model, tmp_path):
    photos, _ = labelled
    labels = tmp_path / "elsewhere.csv"
    labels.write_text("path,label\nother/a.jpg,happy\nother/b.jpg,sad\n")
    with pytest.raises(ev.fer2013.DataError, match="none of the 2 labelled photos is under"):
        ev.evaluate_photos(photos, labels, model=tiny_model, device="cpu")


def _respelled(labels, folder, prefix):
    """The labels CSV with every path written with ``prefix`` (and backslashes)."""
    frame = pd.read_csv(labels, dtype=str)
    frame["file"] = prefix + frame["file"].str.replace("/", "\\")
    frame.to_csv(folder / "respelled.csv", index=False)
    return folder / "respelled.csv"
