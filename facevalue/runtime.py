"""Every onnxruntime session facevalue opens: the classifier's, the face detector's, the mesh's.

One function, ``open_session``, so each model gets the same policy: the file is checked to be
a regular file before it is read (``--model /dev/zero`` would otherwise be read until memory
runs out), ``--device auto|cpu|cuda`` picks the providers, the providers the session really
got are checked (onnxruntime can list CUDA and silently run on the CPU), and ``auto`` falls
back to the CPU when a CUDA session cannot be made. ``ModelSession`` keeps the session with
the file's sha256 and is picklable, for process pools and Ray.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from facevalue.defaults import DEVICES
from facevalue.errors import FacevalueError
from facevalue.storage import file_kind

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# onnxruntime's errors share no base class beyond Exception; these are the load failures.
ORT_ERRORS = tuple(getattr(ort_state, name) for name in (
    "Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph",
    "RuntimeException", "NotImplemented", "EPFail") if hasattr(ort_state, name))
# What ``auto`` said it runs on, so three sessions of a run say it once.
_announced: set[str] = set()


class DeviceError(FacevalueError, RuntimeError):
    """The requested device cannot run the model."""


def resolve_providers(device: str, available: list[str] | None = None) -> list[str]:
    """onnxruntime providers for ``--device auto|cpu|cuda``, best first.

    ``cuda`` raises DeviceError when onnxruntime offers no CUDA provider (the plain
    ``onnxruntime`` wheel never does); ``auto`` takes CUDA when offered, with CPU behind it.
    """
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    available = ort.get_available_providers() if available is None else available
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise DeviceError(f"--device cuda: onnxruntime offers no CUDA provider (it offers "
                          f"{', '.join(available)}); `pip install onnxruntime-gpu`, which "
                          "replaces `onnxruntime`, on a machine with CUDA and cuDNN")
    return [CPU]


def check_providers(used: list[str], device: str) -> None:
    """Check the providers a session really got; onnxruntime may drop CUDA without failing."""
    if device == "cuda" and CUDA not in used:
        raise DeviceError("--device cuda: onnxruntime could not start CUDA (missing CUDA or "
                          f"cuDNN libraries?) and would run on {', '.join(used)}")
    where = "CUDA" if CUDA in used else "CPU"
    if device == "auto" and where not in _announced:
        _announced.add(where)
        log.info("device auto: running on %s", where)


def new_session(data: bytes, providers: list[str],
                threads: int | None = None) -> ort.InferenceSession:
    """A session on a model's bytes: the one place facevalue calls ``InferenceSession``.

    ``threads`` caps intra-op threads (one inter-op thread: the graphs are sequential).
    Raises onnxruntime's own errors; ``open_session`` words them for its model.
    """
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=providers)


def read_model(path: Path, error: type[FacevalueError], what: str) -> bytes:
    """A model file's bytes, refusing anything but a regular file before reading it."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{path}: the {what} is not a regular file ({file_kind(mode)}); "
                        "give an ONNX model file")
        return path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror or e})") from e


def open_session(path: Path, device: str, threads: int | None, error: type[FacevalueError],
                 what: str, verify: Callable[[Path, str], None] | None = None
                 ) -> tuple[ort.InferenceSession, str]:
    """Read a model file and open a session on ``device``; return it and the file's sha256.

    ``error`` is the caller's error class and ``what`` names the model in its messages;
    ``verify(path, sha256)`` may refuse the file before a session is made from it.
    """
    data = read_model(path, error, what)
    sha256 = hashlib.sha256(data).hexdigest()
    if verify is not None:
        verify(path, sha256)
    return _session(data, path, device, threads, error, what), sha256


def _session(data: bytes, path: Path, device: str, threads: int | None,
             error: type[FacevalueError], what: str) -> ort.InferenceSession:
    providers = resolve_providers(device)
    try:
        session = new_session(data, providers, threads)
    except UnicodeDecodeError as e:  # onnxruntime failed to decode its own error message
        raise error(f"{path}: not a usable ONNX model (a damaged file?)") from e
    except ORT_ERRORS as e:
        if device == "auto" and providers != [CPU]:
            log.info("device auto: a CUDA session for the %s failed (%s); trying CPU",
                     what, short(e))
            return _session(data, path, "cpu", threads, error, what)
        raise error(f"{path}: not a usable ONNX model ({short(e)})") from e
    check_providers(session.get_providers(), device)
    return session


class ModelSession:
    """An onnxruntime session on a model file, with the file's sha256 and real providers.

    Picklable (for process pools and Ray): only the path, device and threads travel, and the
    session is opened again from the file, which must still have the same sha256. ``verify``
    (a module-level function, to stay picklable) checks the hash before the session is made.
    """

    def __init__(self, path: Path, device: str, threads: int | None,
                 error: type[FacevalueError], what: str,
                 verify: Callable[[Path, str], None] | None = None) -> None:
        self.path, self.device, self.threads = path, device, threads
        self.error, self.what, self.verify = error, what, verify
        self._open()

    def _open(self, pickled: str | None = None) -> None:
        def check(path: Path, sha256: str) -> None:
            if pickled is not None and sha256 != pickled:
                raise self.error(f"{path} changed since the {self.what} was pickled")
            if self.verify is not None:
                self.verify(path, sha256)

        self.session, self.sha256 = open_session(self.path, self.device, self.threads,
                                                 self.error, self.what, check)
        self.providers: list[str] = self.session.get_providers()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "device": self.device, "threads": self.threads,
                "error": self.error, "what": self.what, "verify": self.verify,
                "sha256": self.sha256}

    def __setstate__(self, state: dict[str, Any]) -> None:
        pickled = state.pop("sha256")
        self.__dict__.update(state)
        self._open(pickled)


def short(error: Exception) -> str:
    """An onnxruntime error's first line, capped: its messages run to many lines."""
    return str(error).splitlines()[0][:300] if str(error) else type(error).__name__

