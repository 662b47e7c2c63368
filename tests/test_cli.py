"""The command line: score and info through CliRunner, help everywhere, light imports."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner
from images import SAMPLE_PHOTOS

import facevalue
from facevalue.cli import _Progress, cli
from facevalue.write import read_metadata

MANIFEST = SAMPLE_PHOTOS.parent / "manifest.csv"


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_score_writes_both_tables(tmp_path: Path, tiny_model: Path) -> None:
    out = tmp_path / "s.parquet"
    result = run("score", str(SAMPLE_PHOTOS), "--out", str(out), "--model", str(tiny_model),
                 "--manifest", str(MANIFEST), "--device", "cpu", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "3 photos (2 ok, 1 no_face), 2 faces scored" in result.output
    faces = pd.read_parquet(out)
    companies = pd.read_parquet(tmp_path / "s.companies.parquet")
    assert faces["status"].tolist() == ["ok", "no_face", "ok"]
    assert companies["company"].tolist() == ["nasa", "navy"]
    arguments = json.loads(read_metadata(out)["facevalue.arguments"])
    assert arguments["batch_size"] == 2 and arguments["device"] == "cpu"


def test_score_options(tmp_path: Path, tiny_model: Path) -> None:
    companies = tmp_path / "elsewhere" / "firms.parquet"
    result = run("score", str(SAMPLE_PHOTOS), "--out", str(tmp_path / "s.parquet"), "--quiet",
                 "--model", str(tiny_model), "--companies", str(companies), "--faces", "all",
                 "--max-pixels", "0.3", "--threads", "1")
    assert result.exit_code == 0 and result.output == ""
    faces = pd.read_parquet(tmp_path / "s.parquet")
    # 512 x 600 Grace Hopper is over 0.3 megapixels; the others are not.
    assert faces.set_index("path")["status"].to_dict() == {
        "nasa/astronaut.jpg": "ok", "nasa/landscape.jpg": "no_face",
        "navy/grace_hopper.jpg": "too_large"}
    assert pd.read_parquet(companies)["failed"].tolist() == [0, 1]


def test_info_refuses_a_model_that_is_not_onnx(tmp_path: Path) -> None:
    # `score`'s refusals are in test_contract.py
    (tmp_path / "corrupt.onnx").write_bytes(b"\x00" * 100)
    result = CliRunner().invoke(cli, ["info", "--model", str(tmp_path / "corrupt.onnx")])
    assert result.exit_code == 1 and "not a usable ONNX model" in result.output


def test_info_shows_model_card_and_versions(tiny_model: Path) -> None:
    result = run("info", "--model", str(tiny_model), "--device", "cpu")
    assert result.exit_code == 0
    assert f"facevalue: {facevalue.__version__}" in result.output
    assert "available providers: " in result.output and "onnxruntime: " in result.output
    assert "session providers: CPUExecutionProvider" in result.output
    assert "input: 48x48 grayscale NHWC" in result.output
    assert "facevalue.architecture: tiny-test" in result.output


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("terminal", "quiet", "shown"), [
    (True, False, True), (True, True, False), (False, False, False)])
def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch, terminal: bool,
                                         quiet: bool, shown: bool) -> None:
    stream = FakeTerminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with _Progress(enabled=not quiet) as progress:
        progress(2, 4)
        progress(4, 4)
    assert ("scoring" in stream.getvalue() and "100%" in stream.getvalue()) == shown
    assert stream.getvalue() == "" or shown


def test_every_command_has_help() -> None:
    assert run("--help").exit_code == 0
    assert {"score", "info"} <= set(cli.commands)
    for name, command in cli.commands.items():
        result = run(name, "--help")
        summary = " ".join((command.help or "").split("\n\n")[0].split())
        assert result.exit_code == 0 and summary, name
        assert summary in " ".join(result.output.split()), name


def test_version() -> None:
    result = run("--version")
    assert result.output.strip() == f"facevalue, version {facevalue.__version__}"


def test_module_entry_point_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "facevalue", "--version"], capture_output=True,
                          text=True, check=True)
    assert facevalue.__version__ in done.stdout


def imported_after(code: str) -> set[str]:
    """Top-level modules imported by ``code`` in a fresh interpreter."""
    script = f"import sys\n{code}\nprint(' '.join({{m.split('.')[0] for m in sys.modules}}))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    return set(done.stdout.split())


def test_import_facevalue_stays_light() -> None:
    modules = imported_after("import facevalue, facevalue.cli")
    assert not modules & {"tensorflow", "onnxruntime", "cv2", "pandas", "pyarrow", "keras"}


def test_scoring_never_imports_tensorflow() -> None:
    modules = imported_after("from facevalue import score_folder\n"
                             "import facevalue.pipeline, facevalue.classify, facevalue.detect")
    assert "onnxruntime" in modules and "cv2" in modules
    assert not modules & {"tensorflow", "keras", "tf2onnx"}


def test_public_names_import() -> None:
    for name in facevalue.__all__:
        assert getattr(facevalue, name) is not None, name
    with pytest.raises(AttributeError):
        facevalue.no_such_name  # noqa: B018


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"),
                                                   (signal.SIGTERM, 143, "terminated")])
def test_signals_end_a_run_with_their_exit_code_and_no_temp_file(
        tmp_path: Path, tiny_model: Path, sig: int, code: int, word: str) -> None:
    from images import GRACE

    photos = tmp_path / "photos" / "acme"
    photos.mkdir(parents=True)
    for i in range(3000):  # enough for the run to be mid-way when the signal comes
        os.link(GRACE, photos / f"p{i:04d}.jpg")
    out = tmp_path / "out" / "s.parquet"
    process = subprocess.Popen(
        [sys.executable, "-m", "facevalue", "score", str(tmp_path / "photos"), "--out", str(out),
         "--model", str(tiny_model), "--workers", "1"], stderr=subprocess.PIPE, text=True,
        # a shell's background jobs (CI) start with SIGINT ignored, which Python keeps
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state = out.parent / ".s.facevalue-state"
    deadline = time.monotonic() + 60
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert process.poll() is None, "the run ended before the signal"
    process.send_signal(sig)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()  # a run that hung must not outlive the test (no effect once it ended)
    assert process.returncode == code, stderr
    assert word in stderr and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("facevalue: ")
    assert sorted(p.name for p in out.parent.iterdir()) == [".s.facevalue-state"]


@pytest.fixture
def entry_point_signals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run ``facevalue.console.main`` in this process and give the test runner its handlers
    back (and never ``os._exit`` the test runner, whichever test imported Ray before)."""
    from facevalue import console as module

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(module, "_leave", lambda code, at_once=False: sys.exit(code))
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        module._received.clear()


def test_ctrl_c_while_a_library_loads_exits_130(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str],
                                                entry_point_signals: None) -> None:
    from facevalue import console

    def loading(**kwargs: object) -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:  # what Ctrl-C inside numpy's or OpenCV's import becomes
            raise ImportError("initialization failed") from None

    monkeypatch.setattr(cli, "main", loading)
    with pytest.raises(SystemExit) as done:
        console.main()
    assert done.value.code == 130
    assert capsys.readouterr().err.startswith("facevalue: interrupted")


# Ctrl-C at the moment the CLI's first import (Click) starts: the entry point has set its
# handlers by then, so no KeyboardInterrupt traceback from an import (the ~60 ms window before
# main() ran, when the console script imported facevalue.cli first).
EARLY_CTRL_C = """
import os, signal, sys
from facevalue import console
assert "click" not in sys.modules  # the entry point loads nothing before its handlers

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "click":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = ["facevalue", "--version"]
console.main()
"""


def test_ctrl_c_while_the_cli_loads_exits_130_with_one_line() -> None:
    done = subprocess.run([sys.executable, "-c", EARLY_CTRL_C], capture_output=True, text=True,
                          # a shell's background jobs (CI) start with SIGINT ignored
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 130, done.stderr
    assert done.stderr.startswith("facevalue: interrupted") and done.stderr.count("\n") == 1
    assert done.stdout == ""


def test_a_signal_after_both_tables_are_written_ends_with_0(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model: Path,
        capsys: pytest.CaptureFixture[str], entry_point_signals: None) -> None:
    from facevalue import cli as module
    from facevalue import console

    summarize = module._summarize

    def late_signal(summary: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # the handler, had one run, would have raised by now
        summarize(summary)  # type: ignore[arg-type]

    out = tmp_path / "s.parquet"
    monkeypatch.setattr(module, "_summarize", late_signal)
    monkeypatch.setattr(sys, "argv", ["facevalue", "score", str(SAMPLE_PHOTOS), "--out",
                                      str(out), "--model", str(tiny_model), "--device", "cpu"])
    with pytest.raises(SystemExit) as done:
        console.main()
    assert done.value.code == 0
    assert "faces scored" in capsys.readouterr().err
    assert out.exists() and out.with_name("s.companies.parquet").exists()
