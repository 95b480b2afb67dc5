"""Test hooks for the multi-process tests, set by environment variables and inert when unset.
They make one rank misbehave, or record what each rank trained on, in a real torchrun job.

``LONDONLM_TEST_CLOCK_SKEW=RANK:SECONDS``  that rank's clocks (stop, time budget) jump SECONDS ahead
``LONDONLM_TEST_KILL=RANK:STEP``           that rank SIGKILLs itself once STEP is finished
``LONDONLM_TEST_BLOCK_LOG=DIR``            each rank appends, per micro-batch, the training
                                           block indices it trains on to DIR/blocks-rank<R>.txt
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from .ranks import rank

CLOCK_SKEW = "LONDONLM_TEST_CLOCK_SKEW"
KILL = "LONDONLM_TEST_KILL"
BLOCK_LOG = "LONDONLM_TEST_BLOCK_LOG"
BLOCK_KEY = "block_index"


def _for_this_rank(var: str) -> float | None:
    """The value of ``RANK:VALUE`` when RANK is this process's rank."""
    spec = os.environ.get(var, "")
    if ":" not in spec:
        return None
    who, value = spec.split(":", 1)
    return float(value) if int(who) == rank() else None


def stop_clock():
    """The clock a stop decision reads (--stop_after_seconds, --time_budget). On the rank the
    test names it jumps SECONDS ahead once training has begun (its first reading, the start, is
    true)."""
    skew = _for_this_rank(CLOCK_SKEW)
    if not skew:
        return time.monotonic
    readings = []

    def skewed() -> float:
        readings.append(None)
        return time.monotonic() + (skew if len(readings) > 1 else 0.0)
    return skewed


def step_hook():
    """Called after every step (before the ranks agree on stopping); None when unused."""
    kill_at = _for_this_rank(KILL)
    if kill_at is None:
        return None

    def maybe_kill(step: int) -> None:
        if step >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return maybe_kill


class IndexedBlocks:
    """A dataset's items with their block index added under ``BLOCK_KEY``."""

    def __init__(self, blocks):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        return {**self.blocks[i], BLOCK_KEY: int(i)}


def training_blocks(train, args):
    """The training dataset, indexed when the block log is on (the Trainer then keeps the
    extra key in batches: :func:`batch_hook` removes it before the forward pass)."""
    if not os.environ.get(BLOCK_LOG):
        return train
    args.remove_unused_columns = False
    return IndexedBlocks(train)


def batch_hook():
    """``RunTrainer.on_batch``: pops the block indices out of a micro-batch and logs them."""
    folder = os.environ.get(BLOCK_LOG)
    if not folder:
        return None
    path = Path(folder) / f"blocks-rank{rank()}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)

    def log_blocks(trainer, inputs: dict) -> None:
        idx = inputs.pop(BLOCK_KEY).tolist()
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{trainer.state.global_step + 1} {' '.join(map(str, idx))}\n")
    return log_blocks
