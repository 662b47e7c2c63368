"""The watcher that stops a local Ray's processes when the driver is killed (Linux /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from facevalue import reaper

# A stand-in driver: starts the watcher, then three children as a local Ray would leave
# them: one titled like Ray's agents, one running a script from "Ray's folder", and one
# that is not Ray's. With "stop" it says its Ray session ended cleanly before it is killed,
# with "fail" that the session ended by an exception.
DRIVER = textwrap.dedent("""
    import subprocess, sys, time
    from facevalue import reaper
    folder = sys.argv[1]
    earlier = subprocess.Popen(["bash", "-c", "exec -a ray::EarlierRay sleep 60"])
    time.sleep(0.1)  # a Ray this driver had before the session: not the watcher's to stop
    watcher = reaper.start(folder)
    children = [subprocess.Popen(["bash", "-c", "exec -a ray::FakeAgent sleep 60"]),
                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                  folder + "/agent.py"]),
                subprocess.Popen(["sleep", "60"])]
    if sys.argv[2] in ("stop", "fail"):
        time.sleep(1.5)
        watcher.stop(clean=sys.argv[2] == "stop")
    print(*[c.pid for c in [*children, earlier]], flush=True)
    time.sleep(60)
""")


def alive(pid: int) -> bool:
    return reaper.start_time(pid) is not None  # None: gone, or a zombie


def kill_driver(tmp_path: Path, how: str) -> list[int]:
    """Run the stand-in driver, kill -9 it once its children are noted; their pids."""
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path / "ray"), how],
                              stdout=subprocess.PIPE)
    assert driver.stdout is not None
    pids = [int(p) for p in driver.stdout.readline().split()]
    time.sleep(2.0)  # the watcher looks every 0.2 s; its own start may be slow on a busy CPU
    driver.kill()
    driver.wait()
    return pids


@pytest.mark.parametrize("how", ["run", "fail"])
def test_killed_or_failed_driver_leaves_no_ray_process(tmp_path: Path, how: str) -> None:
    agent, script, other, earlier = kill_driver(tmp_path, how)
    try:
        deadline = time.monotonic() + 10
        while (alive(agent) or alive(script)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(agent) and not alive(script)
        assert alive(other) and alive(earlier)  # not Ray's, or not this session's
    finally:
        for pid in (agent, script, other, earlier):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_driver_that_stopped_ray_itself_leaves_its_children_alone(tmp_path: Path) -> None:
    pids = kill_driver(tmp_path, "stop")
    try:
        time.sleep(1.0)
        assert all(alive(pid) for pid in pids)
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
