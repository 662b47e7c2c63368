"""onnxruntime sessions: providers per --device, the providers really got, fallback, files."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort
import pytest

from facevalue import runtime
from facevalue.classify import Classifier
from facevalue.runtime import CPU, CUDA, DeviceError, check_providers, resolve_providers


@pytest.fixture(autouse=True)
def _fresh_announcements(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees ``device auto`` announce itself afresh."""
    monkeypatch.setattr(runtime, "_announced", set())


@pytest.mark.parametrize(("device", "available", "expected"), [
    ("cpu", [CUDA, CPU], [CPU]),
    ("auto", [CUDA, CPU], [CUDA, CPU]),
    ("auto", ["AzureExecutionProvider", CPU], [CPU]),
    ("cuda", [CUDA, CPU], [CUDA, CPU]),
])
def test_resolve_providers(device: str, available: list[str], expected: list[str]) -> None:
    assert resolve_providers(device, available) == expected


def test_cuda_without_a_cuda_provider_fails_clearly() -> None:
    with pytest.raises(DeviceError, match="pip install onnxruntime-gpu"):
        resolve_providers("cuda", [CPU])
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_providers("tpu", [CPU])


def test_available_providers_are_asked_from_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    assert resolve_providers("auto") == [CUDA, CPU]
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    assert resolve_providers("auto") == [CPU]


def test_providers_really_used_are_checked(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DeviceError, match="could not start CUDA"):
        check_providers([CPU], "cuda")
    check_providers([CUDA, CPU], "cuda")
    with caplog.at_level(logging.INFO, logger="facevalue"):
        check_providers([CPU], "auto")
        check_providers([CUDA, CPU], "auto")
    assert "running on CPU" in caplog.text and "running on CUDA" in caplog.text


class SilentCpuSession(ort.InferenceSession):
    """A session that accepts CUDA in its providers but runs on the CPU, as onnxruntime does
    when CUDA libraries are missing; records what it was asked for."""

    requested: list[list[str]] = []

    def __init__(self, model: bytes, options: ort.SessionOptions, providers: list[str]) -> None:
        SilentCpuSession.requested.append(list(providers))
        super().__init__(model, options, providers=[CPU])


def test_silent_cpu_fallback_is_caught(monkeypatch: pytest.MonkeyPatch, tiny_model: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(runtime.ort, "InferenceSession", SilentCpuSession)
    SilentCpuSession.requested.clear()
    with pytest.raises(DeviceError, match="could not start CUDA"):
        Classifier(tiny_model, device="cuda")
    with caplog.at_level(logging.INFO, logger="facevalue"):
        model = Classifier(tiny_model, device="auto")
    assert model.providers == [CPU] and "running on CPU" in caplog.text
    assert SilentCpuSession.requested == [[CUDA, CPU], [CUDA, CPU]]


def test_thread_count_reaches_the_session(monkeypatch: pytest.MonkeyPatch,
                                          tiny_model: Path) -> None:
    seen = []

    class Recording(ort.InferenceSession):
        def __init__(self, model: bytes, options: ort.SessionOptions,
                     providers: list[str]) -> None:
            seen.append(options.intra_op_num_threads)
            super().__init__(model, options, providers=providers)

    monkeypatch.setattr(runtime.ort, "InferenceSession", Recording)
    Classifier(tiny_model, device="cpu", threads=1)
    Classifier(tiny_model, device="cpu")
    assert seen == [1, 0]  # 0: onnxruntime's default, all cores


def test_detector_and_mesh_get_the_same_provider_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from facevalue.detect import FaceDetector
    from facevalue.geometry import FaceMesh

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(runtime.ort, "InferenceSession", SilentCpuSession)
    for model in (FaceDetector, FaceMesh):
        with pytest.raises(DeviceError, match="could not start CUDA"):
            model(device="cuda")
        assert model(device="auto").model.providers == [CPU]


@pytest.mark.parametrize("special", ["/dev/zero", "folder", "fifo"])
def test_a_model_that_is_not_a_regular_file_is_refused_unread(special: str,
                                                              tmp_path: Path) -> None:
    import os

    from facevalue.classify import ModelError

    path = Path(special)
    if special == "folder":
        path = tmp_path
    elif special == "fifo":
        path = tmp_path / "model.onnx"
        os.mkfifo(path)  # reading it would block forever
    with pytest.raises(ModelError, match="not a regular file"):
        Classifier(path, device="cpu")


def test_model_session_pickles_and_notices_a_changed_file(tiny_model: Path,
                                                          tmp_path: Path) -> None:
    import pickle
    import shutil

    from facevalue.classify import ModelError

    copy = tmp_path / "m.onnx"
    shutil.copy(tiny_model, copy)
    session = runtime.ModelSession(copy, "cpu", 1, ModelError, "model")
    again = pickle.loads(pickle.dumps(session))
    assert again.sha256 == session.sha256 and again.providers == [CPU]
    state = pickle.dumps(session)
    copy.write_bytes(tiny_model.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="changed since the model was pickled"):
        pickle.loads(state)
