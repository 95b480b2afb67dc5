"""One live training per run folder. Two trainings of one run would overwrite each other's
checkpoints, ``final/`` and ``run_info.json``, and a second one would "resume" from the first's
live checkpoints. The process that trains a run holds an exclusive ``flock`` on the run's lock
file (:attr:`~londonlm.core.RunLayout.lock`) for as long as it trains; the kernel releases it
when the process ends however it ends (``kill -9`` too), so a stale lock never blocks a rerun.
A second training or resume of the run gets one ``error:`` line naming the process that holds it.
Under torchrun the global rank 0 holds it and every rank learns the outcome.
"""
from __future__ import annotations

import contextlib
import os
import time

from ..core import RunLayout
from .dist import TrainingError, agree, is_main_process


def _holder(path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "another process"
    return text or "another process"


def _take(run: RunLayout):
    """The open, locked lock file, or a TrainingError naming who holds it."""
    import fcntl

    run.dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TrainingError(f"{run.dir} is being trained by {_holder(run.lock)}; wait for it to finish "
                            f"(or stop it), or train under another --run_name") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"PID {os.getpid()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})".encode())
    return fd


@contextlib.contextmanager
def run_lock(run: RunLayout):
    """Hold the run's lock while the block trains; every rank fails together when it is held."""
    fd, problem = None, None
    if is_main_process():
        try:
            fd = _take(run)
        except TrainingError as e:
            problem = e
    if agree([int(problem is not None)])[0]:
        raise problem or TrainingError(f"{run.dir} is being trained by another process")
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing the file releases the lock
