"""`python -m train adapt`: a correction for real photos, cross-validated, folded into ONNX."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import build_tiny_model, tiny_contract
from fer_faces import fer_rows, write_fer_csv
from images import ASTRONAUT, GRACE

from facevalue import fer2013
from facevalue.classify import Classifier
from facevalue.cli import cli as facevalue_cli
from facevalue.contract import LABELS
from train import adapt, correction
from train.__main__ import cli as train_cli
from train.card import write_card


@pytest.fixture(autouse=True, scope="module")
def quick():
    """Fewer steps and penalties: the fits are the same code, the test takes seconds."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(correction, "STEPS", 300)
        mp.setattr(correction, "PENALTIES", (1.0, 0.1))
        yield


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """FER2013-like data, a tiny model 'trained' on it, and 20 labelled photos of two people:
    Grace Hopper's variants labelled happy, the astronaut's labelled surprise."""
    root = tmp_path_factory.mktemp("adapt")
    data = write_fer_csv(root / "fer.csv", *fer_rows(40, 30, seed=5))
    sha = fer2013.fingerprint(fer2013.load(data))
    models = root / "models"
    models.mkdir()
    model = build_tiny_model(models / "tiny.onnx", seed=4, metadata=tiny_contract(**{
        "facevalue.train_data_sha256": sha, "facevalue.public_test_accuracy": "0.1",
        "facevalue.ece_before": "0.2", "facevalue.int8_top1_agreement": "0.99",
        "facevalue.temperature": "0.9"}).to_metadata())
    photos = root / "photos"
    photos.mkdir()
    rows = ["path,label"]
    for who, label, source in (("grace", "happy", GRACE), ("astro", "surprised", ASTRONAUT)):
        image = cv2.imread(str(source))
        for i in range(10):
            variant = cv2.convertScaleAbs(image, alpha=0.8 + 0.04 * i, beta=i - 5)
            variant = variant[:, ::-1] if i % 2 else variant
            cv2.imwrite(str(photos / f"{who}{i}.jpg"), variant)
            rows.append(f"{who}{i}.jpg,{label}")
    labels = root / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return model, photos, labels, data


@pytest.fixture(scope="module")
def adapted(setup):
    model, photos, labels, data = setup
    return adapt.adapt(model, photos, labels, data, model.parent / "tiny-photo.onnx")


def test_the_correction_learns_the_photos_and_says_how(adapted, setup):
    model, photos, labels, _ = setup
    assert adapted.photos == adapted.labelled == 20
    assert set(adapted.crossval["recall"]) == {"happiness", "surprise"}
    # two people the random tiny model cannot tell apart; the correction can, out of fold too
    assert adapted.crossval["accuracy"] >= 0.9 > adapted.before["accuracy"]
    assert adapted.in_sample["accuracy"] >= adapted.crossval["accuracy"]
    assert adapted.parity_max_abs <= adapt.PARITY_TOLERANCE
    classifier = Classifier(adapted.path, "cpu", checksum=True)  # listed in SHA256SUMS
    assert classifier.contract.labels == LABELS
    meta = classifier.contract.extra
    fitted = json.loads(meta["facevalue.photo_correction"])
    assert fitted["classes"] == ["happiness", "surprise"]
    assert fitted["adapted_from"].startswith("tiny.onnx@")
    assert fitted["anchor"].endswith(f"weight {correction.ANCHOR_WEIGHT:g}")
    assert json.loads(meta["facevalue.photo_accuracy_crossval"]) == adapted.crossval
    assert float(meta["facevalue.public_test_accuracy"]) == pytest.approx(
        adapted.public[1].accuracy, abs=1e-4)
    # the source's own figures describe another graph; its provenance and folded T stay
    assert "facevalue.ece_before" not in meta and "facevalue.int8_top1_agreement" not in meta
    assert meta["facevalue.temperature"] == "0.9"
    # the full scoring path gives the in-sample figure the metadata records
    result = CliRunner().invoke(facevalue_cli, [
        "evaluate", str(photos), "--labels", str(labels), "--model", str(adapted.path),
        "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output[result.output.index("{"):])
    assert printed["accuracy"] == pytest.approx(adapted.in_sample["accuracy"])


def test_unlabelled_classes_get_no_term_and_the_labelled_ones_sum_to_zero():
    rng = np.random.default_rng(0)
    features, logits = rng.normal(size=(60, 9)), rng.normal(size=(60, 7))
    labels = np.repeat([0, 3, 6], 20)
    anchor = correction.Anchor(rng.normal(size=(30, 9)), rng.normal(size=(30, 7)))
    fitted = correction.fit(features, logits, labels, 0.1, anchor)
    delta = fitted.apply(rng.normal(size=(50, 9)), np.zeros((50, 7)))
    assert np.abs(delta[:, [1, 2, 4, 5]]).max() == 0.0
    assert np.abs(delta[:, [0, 3, 6]].sum(axis=1)).max() < 1e-4
    assert np.abs(delta).max() > 0.01  # it did learn something
    # a stronger penalty moves the logits less
    strong = correction.fit(features, logits, labels, 10.0, anchor)
    assert np.abs(strong.weights).sum() < np.abs(fitted.weights).sum()


def test_a_heavier_anchor_moves_the_anchor_faces_less():
    rng = np.random.default_rng(1)
    features, logits = rng.normal(size=(60, 9)), rng.normal(size=(60, 7))
    labels = np.repeat([0, 3, 6], 20)
    faces, anchor_logits = rng.normal(size=(40, 9)), rng.normal(size=(40, 7))

    def moved(weight: float) -> float:
        fitted = correction.fit(features, logits, labels, 0.1,
                                correction.Anchor(faces, anchor_logits, weight))
        return float(np.abs(fitted.apply(faces, anchor_logits) - anchor_logits).mean())

    assert moved(10.0) < 0.8 * moved(1.0)


def test_folds_are_stratified():
    labels = np.repeat([0, 1, 2], [10, 5, 23])
    fold = correction.folds_of(labels, 5, seed=1)
    for c in range(3):
        counts = np.bincount(fold[labels == c], minlength=5)
        assert counts.max() - counts.min() <= 1


def test_refusals_are_one_line_and_write_nothing(adapted, setup, tmp_path):
    model, photos, labels, data = setup
    out = tmp_path / "out.onnx"

    def refused(args: list[str], message: str, code: int = 1) -> None:
        result = CliRunner().invoke(train_cli, ["adapt", *args, "--out", str(out)])
        assert result.exit_code == code, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert len(errors) == 1 and message in errors[0], result.output
        assert "Traceback" not in result.output
        assert not out.exists() and not list(tmp_path.glob("*.tmp"))

    base = ["--photos", str(photos), "--labels", str(labels), "--data", str(data)]
    refused([str(adapted.path), *base], "already adapted")
    other = write_fer_csv(tmp_path / "other.csv", *fer_rows(12, 6, seed=9))
    refused([str(model), "--photos", str(photos), "--labels", str(labels), "--data",
             str(other)], "not the data set")
    one_class = tmp_path / "one.csv"
    one_class.write_text("path,label\n" + "".join(f"grace{i}.jpg,happy\n" for i in range(10)))
    refused([str(model), "--photos", str(photos), "--labels", str(one_class), "--data",
             str(data)], "at least two labelled classes")
    refused(["not-a-model.onnx", *base], "does not exist", code=2)  # click's usage error
    refused([str(model), *base, "--anchor-weight", "0"], "--anchor-weight", code=2)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    refused([str(tmp_path / "junk.onnx"), *base], "not a usable ONNX model")
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_text("path,label\nnot-there.jpg,happy\n")
    refused([str(model), "--photos", str(photos), "--labels", str(elsewhere), "--data",
             str(data)], "not under")


def test_the_anchor_weight_reaches_the_fit_the_metadata_and_the_card(setup, tmp_path,
                                                                      monkeypatch):
    model, photos, labels, data = setup
    weights = []
    fit = correction.fit

    def recording_fit(*args, **kwargs):
        weights.append(args[4].weight)
        return fit(*args, **kwargs)

    monkeypatch.setattr(adapt, "fit", recording_fit)
    out = tmp_path / "heavy.onnx"
    result = CliRunner().invoke(train_cli, [
        "adapt", str(model), "--photos", str(photos), "--labels", str(labels), "--data",
        str(data), "--out", str(out), "--anchor-weight", "3"])
    assert result.exit_code == 0, result.output
    assert weights and set(weights) == {3.0}
    fitted = json.loads(Classifier(out, "cpu").contract.extra["facevalue.photo_correction"])
    assert fitted["anchor"].endswith("weight 3")
    assert "--anchor-weight 3" in out.with_suffix(".md").read_text()


def test_an_unwritable_out_is_one_line(adapted, setup, tmp_path):
    model, photos, labels, data = setup
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(train_cli, [
        "adapt", str(model), "--photos", str(photos), "--labels", str(labels), "--data",
        str(data), "--out", str(tmp_path / "file" / "x.onnx")])
    assert result.exit_code == 1 and "cannot write" in result.output, result.output
    assert "Traceback" not in result.output


def test_the_card_gives_the_figures(adapted, setup):
    model = setup[0]
    made = adapt.adapted_card(adapted, model, "python -m train adapt ...")
    card = write_card(adapted.path, made).read_text()
    assert "cross-validated" in card and f"{adapted.crossval['accuracy']:.1%}" in card
    assert "python -m train adapt" in card
