"""What one process owes the others: a hold on a file that says who holds it, and worker
processes that end with the process that started them.

- :func:`hold`: an ``flock`` on a lock file, taken without waiting. The exclusive holder writes
  its PID into the file, so the process that is refused can name it; the kernel releases the
  lock when the holder ends, however it ends (``kill -9`` included), so a stale file never
  blocks anyone.
- :func:`folder_lock`: an ``flock`` on a folder itself (no file is made in it) while one process
  writes there; the refused process names the holder from ``/proc/locks``
  (:func:`flock_holder`). A run folder, a GGUF export's folder, a chat dataset's; a cutoff view's,
  which its readers hold shared and its maker exclusively once it rebuilds (:func:`make_exclusive`).
- :func:`die_with_parent`: called first thing in a worker. A pool's workers outlived a parent
  killed with SIGKILL (``kill -9``, the OOM killer): re-parented to init, they kept working,
  kept the parent's open files (an ``flock`` is shared with them through fork) and raced the
  user's rerun. On Linux the kernel now kills a worker when its parent dies (``prctl
  PR_SET_PDEATHSIG``); everywhere, a thread checks the parent once a second and ends the worker
  when it has gone (it died before the ``prctl``, or there is no ``prctl``).
- :func:`run_to_log`: a command run in a session of its own with its output in a log file;
  past its time limit the whole session (torchrun's ranks, data-loader workers) is stopped,
  SIGTERM first (a training run saves a checkpoint), SIGKILL after a grace period.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable, Iterator

from .artifacts import naming

_PR_SET_PDEATHSIG = 1         # linux/prctl.h
ORPHAN_EXIT = 128 + signal.SIGKILL  # what a worker killed with its parent reports


class Hold:
    """An ``flock`` held on an open lock file until :meth:`release` (or the ``with`` block's end,
    or the process's end, however it ends)."""

    def __init__(self, f: IO[str], exclusive: bool):
        self._f, self.exclusive = f, exclusive

    def release(self) -> None:
        """Give up the hold; an exclusive holder wipes its PID first, so the file names no one."""
        if self._f is None:
            return
        try:
            if self.exclusive:
                self._f.seek(0)
                self._f.truncate()
        except OSError:  # a full or read-only disk: the lock goes with the close all the same
            pass
        finally:
            self._f.close()
            self._f = None

    def __enter__(self) -> "Hold":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def hold(path: str | Path, shared: bool = False) -> Hold | None:
    """An ``flock`` on the lock file at ``path`` (created with its folder), taken without
    waiting; None when another process holds it in a conflicting way. An exclusive holder
    writes its PID into the file (:func:`holder_pid` reads it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+", encoding="ascii")   # "a+": opening must not erase the holder's PID
    try:
        fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    if not shared:
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
    return Hold(f, exclusive=not shared)


def holder_pid(path: str | Path) -> int | None:
    """The PID written in a lock file when that process is still alive, else None."""
    try:
        pid = int(Path(path).read_text(encoding="ascii").strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return pid


def flock_holder(path: str | Path) -> str:
    """Who holds a flock on ``path``: ``process PID N`` from /proc/locks, else ``another process``."""
    try:
        inode = os.stat(path).st_ino
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return "another process"
    for line in lines:
        parts = line.split()
        if "FLOCK" not in parts or "->" in parts:  # "->": a waiter, not the holder
            continue
        for i, token in enumerate(parts[1:], 1):
            dev_inode = token.split(":")
            if len(dev_inode) == 3 and dev_inode[2].isdigit() and int(dev_inode[2]) == inode:
                return f"process PID {parts[i - 1]}"
    return "another process"


def lock_folder(folder: str | Path, shared: bool = False) -> int | None:
    """``folder`` (which must exist) open with an exclusive ``flock`` on it (``shared``: a shared
    one, which only an exclusive holder refuses), as a descriptor: closing it releases the lock,
    and so does the process's end however it ends (``kill -9`` too), so a stale lock never
    blocks a rerun. None when another process holds it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def make_exclusive(fd: int) -> bool:
    """The shared ``flock`` on ``fd`` made exclusive, without waiting; False while another process
    holds one. (Linux gives up the shared hold before it tries, so after False none is held.)"""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def folder_lock(folder: str | Path, busy: Callable[[str], Exception],
                named: str | Path | None = None, shared: bool = False) -> Iterator[int]:
    """``folder`` made (a failure named as ``named``, else the folder: :func:`~.artifacts.naming`)
    and :func:`lock_folder` held for the block (its descriptor yielded, for :func:`make_exclusive`);
    ``busy(holder)`` (holder: :func:`flock_holder`'s words) is raised when another process holds it."""
    with naming(named if named is not None else folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
    fd = lock_folder(folder, shared)
    if fd is None:
        raise busy(flock_holder(folder))
    try:
        yield fd
    finally:
        os.close(fd)

def die_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """End this process when ``parent_pid`` is no longer its parent (see the module's doc)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no libc to call: the watching thread still ends it
            pass
    if os.getppid() != parent_pid:  # the parent died before the prctl took effect
        os._exit(ORPHAN_EXIT)
    threading.Thread(target=_watch_parent, args=(parent_pid, interval), name="die-with-parent",
                     daemon=True).start()


def _watch_parent(parent_pid: int, interval: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(interval)
    os._exit(ORPHAN_EXIT)


def run_to_log(cmd: list[str], log: str | Path, timeout: float, *, env: dict | None = None,
               cwd: str | Path | None = None, prompt: str = "", grace: float = 30.0) -> int | None:
    """Run ``cmd`` with stdout and stderr in ``log`` (created with its folder; its first line
    the command after ``prompt``); returns its exit code, or None when ``timeout`` seconds
    passed and its session was stopped."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write(prompt + shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return None


__all__ = ["Hold", "ORPHAN_EXIT", "die_with_parent", "hold", "holder_pid", "make_exclusive", "run_to_log"]
