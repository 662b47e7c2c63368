"""The ``facevalue`` console script and ``python -m facevalue``: every way a command ends is
an exit code and at most one line: 1 (error), 2 (usage), 130 (Ctrl-C), 143 (SIGTERM).

Click's own handling turns Ctrl-C into "Aborted!" and exit code 1; shells and job schedulers
expect 128 + the signal's number. This module imports nothing but ``os``, ``signal`` and
``sys``: ``main`` sets the handlers first and only then imports the CLI (Click and the
package's defaults take ~60 ms), so a Ctrl-C at any moment after the interpreter has started
ends as one mid-run does, not with a KeyboardInterrupt traceback from an import.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C (temp files go)."""


# The signals main()'s handlers received: a signal during the import of a C extension
# (numpy, OpenCV, in the first ~0.6 s) surfaces as ImportError, not as KeyboardInterrupt.
_received: list[int] = []


def _on_signal(signum: int, frame: object) -> None:
    _received.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def outputs_complete() -> None:
    """Let a run whose tables are written finish with 0 whatever signal comes now.

    Only main()'s handlers are replaced (a CliRunner test keeps the test runner's). Ignoring
    is what survives interpreter shutdown, which restores the default action (death by the
    signal, with no message) for any Python handler.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, signal.SIG_IGN)


def _stopped(signum: int) -> NoReturn:
    """Say why the command stopped, and exit with 128 + the signal's number."""
    terminated = signum == signal.SIGTERM
    sys.stderr.write(f"facevalue: {'terminated' if terminated else 'interrupted'}; no output "
                     "file was left half-written (facevalue score keeps the photos it scored: "
                     "run it again to continue)\n")
    _leave(128 + signum, at_once=True)


def _leave(code: int, at_once: bool = False) -> NoReturn:
    """Exit with ``code``; at once (``os._exit``) after a signal or where Ray was loaded.

    After a signal, the local engine's worker threads are left running (a Ctrl-C inside
    ``concurrent.futures.wait`` can leave a lock held that a worker then waits on for ever,
    and Python joins them at exit). Ray's C++ exit handler destroys a driver's core worker
    while Ray's I/O thread may still be recording metrics of the tasks the signal cut short:
    2 of 8 Ctrl-C'd ``--engine ray`` runs ended in a segmentation fault (exit 139) after the
    message (Ray 2.60, ``TaskManager::RecordMetrics``). By now the unwinding has removed the
    temporary files, closed the saved results and shut Ray down, so nothing is lost by
    skipping the exit handlers.
    """
    if at_once or "ray._raylet" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main() -> NoReturn:
    """Run the command in ``sys.argv`` and exit with its code."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        code = _run()
    except KeyboardInterrupt:  # a signal before Click took over: while the CLI loaded
        _stopped(_received[-1] if _received else signal.SIGINT)
    except ImportError:
        if not _received:
            raise
        _stopped(_received[-1])
    _leave(code)


def _run() -> int:
    """The CLI's exit code, or KeyboardInterrupt for a signal."""
    import click

    from facevalue.cli import cli

    try:
        code = cli.main(standalone_mode=False)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort:  # Click's name for KeyboardInterrupt (and Terminated)
        raise KeyboardInterrupt from None
    return code if isinstance(code, int) else 0
