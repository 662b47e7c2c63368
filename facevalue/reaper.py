"""Stop the local Ray a run started when its driver is killed (``kill -9``, the OOM killer).

Ray ties its head processes (GCS, raylet, workers) to the driver's life, but its two
per-node agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) notice their raylet's
death and then spend a minute or more telling the dead GCS about it before they exit
(Ray 2.60: ``publish_error`` with a 60 s timeout each; 60-150 s measured here). A
``--engine ray`` run that starts a local Ray therefore starts this watcher first: a small
stdlib-only process in a session of its own (Ctrl-C does not reach it) that notes, a few
times a second, the Ray processes descended from the driver since it started (those whose
command line is a ``ray::`` title or names a file in Ray's package folder). When the pipe
from the driver closes without the word ``done`` (the driver died, or its Ray session ended
by an exception), it kills the ones still alive; pid reuse is ruled out by each process's
start time.

Linux only (it reads ``/proc``); elsewhere ``start`` returns None and Ray's own clean-up is
all there is.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

PROC = Path("/proc")
DONE = b"done\n"
INTERVAL = 0.2  # seconds between looks at the process tree (a look: ~2 ms for 125 processes)


class Reaper:
    """The driver's end of the watcher: ``stop()`` once Ray has been shut down."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def stop(self, clean: bool = True) -> None:
        """Let the watcher exit: leaving Ray's processes to finish by themselves when the
        session ended cleanly, killing them first when it ended by an exception (Ctrl-C,
        SIGTERM, an error): the driver is about to exit while ``ray.shutdown``'s graceful
        stop is under way, and the agents of a raylet cut short linger for a minute."""
        pipe: IO[bytes] | None = self.process.stdin
        if pipe is not None:
            try:
                if clean:
                    pipe.write(DONE)
                pipe.close()
            except OSError:  # the watcher is gone already: nothing to tell
                pass
        self.process.wait()


def start(ray_folder: str) -> Reaper | None:
    """Start the watcher for this process and Ray's package folder ``ray_folder`` (its
    binaries and scripts live there), or None where there is no ``/proc``."""
    if not (PROC / str(os.getpid()) / "stat").is_file():
        return None
    # start_new_session: the terminal's Ctrl-C and the driver's process group are not its
    process = subprocess.Popen([sys.executable, "-m", "facevalue.reaper", str(os.getpid()),
                                ray_folder],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               start_new_session=True)
    return Reaper(process)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), or
    None when it is gone or a zombie."""
    try:
        stat = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()  # the name in parentheses may hold spaces
    return None if fields[0] == b"Z" else int(fields[19])


def children_of() -> dict[int, list[int]]:
    """Each live process's children, from every ``/proc/PID/stat``."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue  # exited while the folder was listed
        parent = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def is_ray(pid: int, ray_folder: bytes) -> bool:
    """Whether the process is one of Ray's: a ``ray::`` title (workers, agents) or a
    binary or script in Ray's package folder (GCS, raylet, monitors, starting workers)."""
    try:
        command = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    return command.startswith(b"ray::") or ray_folder in command


def note_descendants(driver: int, ray_folder: bytes, since: int, seen: dict[int, int]) -> None:
    """Add the Ray processes now descended from the driver, started at ``since`` or later,
    to ``seen`` (pid -> start time). ``since`` is the watcher's own start: a Ray the driver
    had started before this session (a test's, a notebook's) is not this session's to stop."""
    children = children_of()
    todo = list(children.get(driver, []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        if pid != os.getpid() and pid not in seen and is_ray(pid, ray_folder):
            started = start_time(pid)
            if started is not None and started >= since:
                seen[pid] = started


def kill(seen: dict[int, int]) -> None:
    """SIGKILL every noted process that is still the same process."""
    for pid, started in seen.items():
        if start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:  # exited in between, or not ours to signal
                pass


def watch(driver: int, ray_folder: bytes, pipe: IO[bytes]) -> None:
    """Note the driver's Ray processes until the pipe closes; kill them unless told ``done``."""
    seen: dict[int, int] = {}
    since = start_time(os.getpid()) or 0
    said = b""
    while True:
        note_descendants(driver, ray_folder, since, seen)
        ready, _, _ = select.select([pipe], [], [], INTERVAL)
        if ready:
            data = os.read(pipe.fileno(), 64)
            if not data:
                break
            said += data
    if said != DONE:
        kill(seen)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(int(sys.argv[1]), os.fsencode(os.path.join(sys.argv[2], "")), sys.stdin.buffer)
