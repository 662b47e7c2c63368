"""`facevalue evaluate`: metrics by hand, both data layouts, JSON and PNG output, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
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
