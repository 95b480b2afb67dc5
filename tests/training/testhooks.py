"""Test hooks for the multi-process tests, set by environment variables and inert when unset.
They make one rank misbehave, or record what each rank trained on, in a real torchrun job;
:func:`install` wires them into a built Trainer. They live with the tests: the training script
the tests run under torchrun for them is ``hooked_train.py`` beside this file, which wraps the
library's Trainer builder; the library knows nothing of them.

``LONDONLM_TEST_CLOCK_SKEW=RANK:SECONDS``  that rank's clocks (stop, time budget) jump SECONDS ahead
``LONDONLM_TEST_KILL=RANK:STEP``           that rank SIGKILLs itself once STEP is finished
``LONDONLM_TEST_BLOCK_LOG=DIR``            each rank appends, per micro-batch, the training
                                           block indices it trains on to DIR/blocks-rank<R>.txt
``LONDONLM_TEST_KILL_AT=CALL:NAME``        the process SIGKILLs itself at a write of its run folder:
                                           CALL is ``rename`` (before a rename of a folder named
                                           NAME), ``move`` (before ``shutil.move`` of NAME) or
                                           ``rmtree`` (one file into the delete of NAME);
                                           :func:`install_kill_points`, at import
"""
from __future__ import annotations

import os
import shutil
import signal
from collections import deque
from pathlib import Path

from transformers import TrainerCallback

from londonlm.training.dist import rank
from londonlm.training.step.callbacks import StopAndSaveCallback
from londonlm.training.step.schedules import BudgetFitCallback

CLOCK_SKEW = "LONDONLM_TEST_CLOCK_SKEW"
KILL = "LONDONLM_TEST_KILL"
KILL_AT = "LONDONLM_TEST_KILL_AT"
BLOCK_LOG = "LONDONLM_TEST_BLOCK_LOG"
BLOCK_KEY = "block_index"


def _for_this_rank(var: str) -> float | None:
    """The value of ``RANK:VALUE`` when RANK is this process's rank."""
    spec = os.environ.get(var, "")
    if ":" not in spec:
        return None
    who, value = spec.split(":", 1)
    return float(value) if int(who) == rank() else None


def skewed(clock, skew: float):
    """``clock``, but SECONDS ahead once training has begun (its first reading, the start, is true)."""
    readings = []

    def read() -> float:
        readings.append(None)
        return clock() + (skew if len(readings) > 1 else 0.0)
    return read


class KillAfter(TrainerCallback):
    """SIGKILL this rank once ``step`` is finished, before the ranks agree on stopping."""

    def __init__(self, step: float):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class IndexedBlocks:
    """A dataset's items with their block index added under ``BLOCK_KEY``."""

    def __init__(self, blocks):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        return {**self.blocks[i], BLOCK_KEY: int(i)}


class BlockLog(TrainerCallback):
    """The collator side pops each training micro-batch's block indices out of its items (the
    model must not see them) and queues them; the callback side writes one line per micro-batch
    actually trained (``on_substep_end`` for each accumulated one, ``on_step_end`` for the last):
    the DataLoader collates one batch ahead, and a batch collated when the run stops was never
    trained on."""

    def __init__(self, collate, path: Path):
        self.collate, self.path, self.queued = collate, path, deque()

    def __call__(self, features: list[dict]):
        if features and BLOCK_KEY in features[0]:
            self.queued.append([f.pop(BLOCK_KEY) for f in features])
        return self.collate(features)

    def _trained(self, state) -> None:
        if self.queued:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(f"{state.global_step} {' '.join(map(str, self.queued.popleft()))}\n")

    def on_substep_end(self, args, state, control, **kw):
        self._trained(state)

    def on_step_end(self, args, state, control, **kw):
        self._trained(state)


def install(trainer) -> None:
    """Wire the hooks the environment names into a built ``trainer``; nothing when none is set."""
    skew, kill_at, folder = _for_this_rank(CLOCK_SKEW), _for_this_rank(KILL), os.environ.get(BLOCK_LOG)
    callbacks = trainer.callback_handler.callbacks
    if skew:
        for cb in callbacks:
            if isinstance(cb, (StopAndSaveCallback, BudgetFitCallback)):
                cb.clock = skewed(cb.clock, skew)
    if kill_at is not None:  # before the stopper (last), as a rank dies between steps
        stopper = next(i for i, cb in enumerate(callbacks) if isinstance(cb, StopAndSaveCallback))
        callbacks.insert(stopper, KillAfter(kill_at))
    if folder:
        path = Path(folder) / f"blocks-rank{rank()}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        # the Trainer keeps the extra key for the collator, which runs in this process (its queue
        # is the callback's)
        trainer.args.remove_unused_columns, trainer.args.dataloader_num_workers = False, 0
        trainer.train_dataset = IndexedBlocks(trainer.train_dataset)
        trainer.data_collator = log = BlockLog(trainer.data_collator, path)
        callbacks.insert(0, log)


def install_kill_points() -> None:
    """``LONDONLM_TEST_KILL_AT=CALL:NAME``: SIGKILL at that exact point of a write (a real kill: no
    ``finally`` runs), the functions wrapped process-wide by the name of the path they act on."""
    call, _, name = os.environ.get(KILL_AT, "").partition(":")
    if not name:
        return

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if call == "rename":
        real_rename = Path.rename

        def rename(self, target):
            if self.name == name:
                die()
            return real_rename(self, target)
        Path.rename = rename
    elif call == "move":
        real_move = shutil.move

        def move(src, dst, *a, **kw):
            if Path(src).name == name:
                die()
            return real_move(src, dst, *a, **kw)
        shutil.move = move
    elif call == "rmtree":
        real_rmtree = shutil.rmtree

        def rmtree(path, *a, **kw):
            files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).name == name else []
            if files:
                files[0].unlink()  # the delete under way ...
                die()              # ... when the process dies
            return real_rmtree(path, *a, **kw)
        shutil.rmtree = rmtree
    else:
        raise ValueError(f"{KILL_AT}: CALL must be rename, move or rmtree, got {call!r}")
