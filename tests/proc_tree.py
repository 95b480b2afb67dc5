"""A process's children and whether one still runs, read from /proc: tests that kill one worker
of a pool, then ask that none outlived its run."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def started_children(proc, count: int, ready=lambda: True, within: float = 60.0) -> list[int]:
    """The children of ``proc`` (a ``Popen``) once it has ``count`` of them and ``ready()``, or
    what it has when it ends or ``within`` seconds pass."""
    found: list[int] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and proc.poll() is None and not (len(found) >= count and ready()):
        time.sleep(0.05)
        found = children(proc.pid)
    return found


def kill_all(proc, pids: list[int]) -> None:
    """``proc`` and ``pids`` SIGKILLed (those already gone skipped), ``proc`` reaped: nothing a
    test started is left running, whatever it found."""
    for pid in [proc.pid, *pids]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()
