"""One live training per run folder. Two trainings of one run would overwrite each other's
checkpoints, ``final/`` and ``run_info.json``, and a second one would "resume" from the first's
live checkpoints. The process that trains a run holds an exclusive ``flock`` on the run folder
itself for as long as it trains: nothing is written for it, and the kernel releases it when the
process ends however it ends (``kill -9`` too), so a stale lock never blocks a rerun. A second
training or resume of the run gets one ``error:`` line naming the process that holds it (read
from ``/proc/locks`` where there is one). Under torchrun the global rank 0 holds it and every
rank learns the outcome. A run folder made only to be locked is removed again when the run
is refused before anything was written in it. A job that chooses its resume and writes its
record under the lock (chat fine-tuning) takes it itself and says so (``FineTuneJob.locked``).
"""
from __future__ import annotations

import contextlib
import os

from ..core import RunLayout, flock_holder, lock_folder
from .dist import TrainingError, agree, is_main_process


def _take(run: RunLayout) -> int:
    """The run folder, open and locked, or a TrainingError naming who holds it."""
    fd = lock_folder(run.dir)
    if fd is None:
        raise TrainingError(f"{run.dir} is being trained by {flock_holder(run.dir)}; wait for it to finish "
                            f"(or stop it), or train under another --run_name")
    return fd


@contextlib.contextmanager
def run_lock(run: RunLayout):
    """Hold the run's lock while the block trains; every rank fails together when it is held."""
    fd, problem, made = None, None, False
    if is_main_process():
        made = not run.dir.exists()
        run.dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = _take(run)
        except TrainingError as e:
            problem = e
    try:
        if agree([int(problem is not None)])[0]:
            raise problem or TrainingError(f"{run.dir} is being trained by another process")
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing it releases the lock
        if made:
            with contextlib.suppress(OSError):  # only when nothing was written in it
                run.dir.rmdir()
