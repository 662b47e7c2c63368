"""Every refusal of ``facevalue score``: one line saying what to do, a distinct exit code, no
traceback, and nothing written that looks like an output. And every ``FacevalueError``
subclass, raised under any command, ends as one line with exit code 1.

Each case builds its own trap in ``tmp_path`` and returns the command's extra arguments; the
photos are the sample portraits unless the case says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import build_tiny_model
from images import SAMPLE_PHOTOS
from test_classify import _fixed_batch, _rewired, _Tensor

from facevalue.cli import cli
from facevalue.errors import FacevalueError
from facevalue.state import SavedResults, state_folder

Setup = Callable[[Path, Path, ExitStack], list[str]]


def out_args(tmp_path: Path) -> list[str]:
    return ["--out", str(tmp_path / "out" / "s.parquet")]


def manifest(text: str) -> Setup:
    def setup(tmp_path: Path, model: Path, stack: ExitStack) -> list[str]:
        (tmp_path / "m.csv").write_text(text)
        return [str(SAMPLE_PHOTOS), *out_args(tmp_path), "--manifest", str(tmp_path / "m.csv")]
    return setup


def model_file(make: Callable[[Path, Path], Path]) -> Setup:
    def setup(tmp_path: Path, model: Path, stack: ExitStack) -> list[str]:
        return [str(SAMPLE_PHOTOS), *out_args(tmp_path), "--model", str(make(tmp_path, model))]
    return setup


def empty_folder(tmp_path: Path, model: Path, stack: ExitStack) -> list[str]:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    return [str(tmp_path / "empty"), *out_args(tmp_path)]


def state_locked(tmp_path: Path, model: Path, stack: ExitStack) -> list[str]:
    stack.enter_context(SavedResults(state_folder(tmp_path / "out" / "s.parquet"), "other"))
    return [str(SAMPLE_PHOTOS), *out_args(tmp_path)]


def state_damaged(tmp_path: Path, model: Path, stack: ExitStack) -> list[str]:
    folder = state_folder(tmp_path / "out" / "s.parquet")
    folder.mkdir(parents=True)
    (folder / "results.sqlite").write_bytes(b"not a database, whatever it was" * 100)
    return [str(SAMPLE_PHOTOS), *out_args(tmp_path)]


def state_is_a_file(tmp_path: Path, model: Path, stack: ExitStack) -> list[str]:
    (tmp_path / "out").mkdir()
    state_folder(tmp_path / "out" / "s.parquet").write_text("a file where the state goes")
    return [str(SAMPLE_PHOTOS), *out_args(tmp_path)]


def out_under_a_file(tmp_path: Path, model: Path, stack: ExitStack) -> list[str]:
    (tmp_path / "out").write_text("a file where the output folder should be")
    return [str(SAMPLE_PHOTOS), *out_args(tmp_path)]


def ray_unreachable(tmp_path: Path, model: Path, stack: ExitStack) -> list[str]:
    # A Ray that other tests started in this process would be used as it is, address or not.
    from unittest import mock

    import ray

    stack.enter_context(mock.patch.object(ray, "is_initialized", return_value=False))
    return [str(SAMPLE_PHOTOS), *out_args(tmp_path), "--engine", "ray", "--ray-address",
            "127.0.0.1:9"]


def mesh_missing(tmp_path: Path, model: Path, stack: ExitStack) -> list[str]:
    from unittest import mock

    from facevalue import geometry

    stack.enter_context(mock.patch.object(geometry, "MODEL_FILE", "no-such-mesh.onnx"))
    return [str(SAMPLE_PHOTOS), *out_args(tmp_path), "--geometry"]


def args(*extra: str, photos: str = str(SAMPLE_PHOTOS)) -> Setup:
    def setup(tmp_path: Path, model: Path, stack: ExitStack) -> list[str]:
        filled = [a.replace("TMP", str(tmp_path)) for a in extra]
        return [photos, *(filled if "--out" in extra else [*out_args(tmp_path), *filled])]
    return setup


CASES: dict[str, tuple[Setup, int, str]] = {
    "out not parquet": (args("--out", "TMP/s.csv"), 1, "give a name ending in .parquet"),
    "companies is out": (args("--out", "TMP/s.parquet", "--companies", "TMP/s.parquet"), 1,
                         "needs a file of its own"),
    "no photos": (empty_folder, 1, "no photos found"),
    "photos missing": (args(photos="/no/such/folder"), 2, "does not exist"),
    "photos a URI nobody opens": (args(photos="nosuch://bucket/photos"), 1,
                                  "not a location pyarrow can open"),
    "manifest without company": (manifest("path\nnasa/astronaut.jpg\n"), 1,
                                 "missing column(s) ['company']"),
    "manifest repeats a photo": (manifest("path,company\na.jpg,x\n./a.jpg,y\n"), 1,
                                 "repeats 'a.jpg'"),
    "manifest overwrites a column": (manifest("path,company,emotion\na.jpg,x,y\n"), 1,
                                     "would overwrite output columns"),
    "manifest overwrites a geometry column": (manifest("path,company,fwhr\na.jpg,x,2\n"), 1,
                                              "['fwhr'] would overwrite output columns"),
    "model missing": (args("--model", "TMP/none.onnx"), 1, "none.onnx"),
    "model not ONNX": (model_file(lambda t, m: _write(t / "zero.onnx", b"\x00" * 100)), 1,
                       "not a usable ONNX model"),
    "model without contract": (model_file(lambda t, m: build_tiny_model(t / "bare.onnx",
                                                                        metadata={})), 1,
                               "lacks the facevalue contract"),
    "model gives logits": (model_file(lambda t, m: _rewired(m, t / "l.onnx", "Identity")), 1,
                           "not probabilities"),
    "model gives NaN": (model_file(lambda t, m: _rewired(
        m, t / "n.onnx", "Mul", [_Tensor("nan", np.array([np.nan], np.float32))])), 1,
                        "not probabilities"),
    "model is /dev/zero": (args("--model", "/dev/zero"), 1, "not a regular file"),
    "model with a fixed batch of 4": (model_file(lambda t, m: _fixed_batch(m, t / "b.onnx", 4)),
                                      1, "batch dimension is fixed at 4"),
    "face mesh cannot load": (mesh_missing, 1, "cannot read the face mesh"),
    "cuda without CUDA": (args("--device", "cuda"), 1, "onnxruntime offers no CUDA provider"),
    "state locked by another run": (state_locked, 1, "another facevalue run is writing"),
    "state damaged": (state_damaged, 1, "delete the folder"),
    "state is a file": (state_is_a_file, 1, "cannot make"),
    "output folder is a file": (out_under_a_file, 1, "Not a directory"),
    "ray address without ray": (args("--ray-address", "auto"), 2, "needs --engine ray"),
    "workers with ray": (args("--engine", "ray", "--workers", "2"), 2,
                         "--workers is for --engine local"),
    "ray address nobody answers": (ray_unreachable, 1, "nothing answers there"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_score_refuses_with_one_line(case: str, tmp_path: Path, tiny_model: Path) -> None:
    setup, code, message = CASES[case]
    with ExitStack() as stack:
        extra = setup(tmp_path, tiny_model, stack)
        if "--model" not in extra:
            extra += ["--model", str(tiny_model)]
        result = CliRunner().invoke(cli, ["score", *extra, "--device", "cpu"]
                                    if "--device" not in extra else ["score", *extra])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # nothing escaped but the exit
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    written = [p for p in tmp_path.rglob("*") if p.suffix in (".parquet", ".tmp")]
    assert written == [], written


def _import_every_module() -> None:
    """Import all of facevalue and train, so every error class they define is known.

    train's modules that build networks need TensorFlow (the train extra); without it their
    commands stop at the one-line TRAIN_EXTRA message before any of their errors can be
    raised, so their classes are left out.
    """
    import importlib
    import importlib.util
    import pkgutil

    import facevalue
    import train

    tensorflow = importlib.util.find_spec("tensorflow") is not None
    for package in (facevalue, train):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name.endswith("__main__"):  # facevalue's runs the command line
                continue
            try:
                importlib.import_module(info.name)
            except ModuleNotFoundError as e:
                if tensorflow or (e.name or "").split(".")[0] not in ("tensorflow", "keras"):
                    raise


def _subclasses(cls: type) -> set[type]:
    return {cls, *(c for sub in cls.__subclasses__() for c in _subclasses(sub))}


_import_every_module()
ERRORS = sorted(_subclasses(FacevalueError) - {FacevalueError},
                key=lambda c: f"{c.__module__}.{c.__qualname__}")
# each command, and the library call inside it that the test makes fail
COMMANDS = {
    "score": ("facevalue.pipeline.write_scores", ["score", "PHOTOS", "--out", "TMP/s.parquet"]),
    "report": ("facevalue.report.build_report", ["report", "FILE", "--out", "TMP/r.html"]),
    "evaluate": ("facevalue.evaluate.evaluate", ["evaluate", "FILE"]),
    "info": ("facevalue.classify.load_classifier", ["info"]),
}


def test_every_error_class_is_known() -> None:
    names = {c.__name__ for c in ERRORS}
    assert {"ModelError", "DeviceError", "LandmarkError", "PhotoError", "ReportError",
            "ModelFileError", "AdaptError", "QuantizeError"} <= names


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("error", ERRORS, ids=lambda c: c.__name__)
def test_every_user_error_is_one_line_and_exit_code_1(
        error: type[FacevalueError], command: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A new FacevalueError subclass, raised anywhere under any command, cannot leak as a
    traceback: the CLI catches the base once."""
    message = f"{error.__name__}: what went wrong, and what to do"

    def fail(*args: object, **kwargs: object) -> None:
        raised = error.__new__(error)
        Exception.__init__(raised, message)  # whatever the class's own arguments
        raise raised

    target, argv = COMMANDS[command]
    monkeypatch.setattr(target, fail)
    (tmp_path / "file").write_bytes(b"")
    filled = [a.replace("TMP", str(tmp_path)).replace("PHOTOS", str(SAMPLE_PHOTOS))
              .replace("FILE", str(tmp_path / "file")) for a in argv]
    result = CliRunner().invoke(cli, filled)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.output.splitlines()[-1] == f"Error: {message}"
    assert "Traceback" not in result.output


@pytest.mark.parametrize("error", ERRORS, ids=lambda c: c.__name__)
def test_every_user_error_is_one_line_under_python_m_train(
        error: type[FacevalueError], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m train``'s group is facevalue's, so the same holds for train's commands."""
    from train.__main__ import cli as train_cli

    message = f"{error.__name__}: what went wrong, and what to do"

    def fail(*args: object, **kwargs: object) -> None:
        raised = error.__new__(error)
        Exception.__init__(raised, message)
        raise raised

    monkeypatch.setattr("train.quantize.quantize", fail)
    (tmp_path / "m.onnx").write_bytes(b"")
    result = CliRunner().invoke(train_cli, ["quantize", str(tmp_path / "m.onnx"), "--out",
                                            str(tmp_path / "q.onnx"), "--data", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.output.splitlines()[-1] == f"Error: {message}"
