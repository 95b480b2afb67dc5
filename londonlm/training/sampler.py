"""Where training is in the data, independent of how many processes read it.

The training blocks form one stream: stream epoch ``e`` is a permutation of all N blocks
drawn from ``(seed, e)`` alone, and epochs follow each other, so stream position ``p`` is block
``perm_{p // N}[p % N]``. Every optimizer step consumes the next ``samples_per_step`` positions
(batch x gradient accumulation x world size: accelerate deals the global batches out to the
ranks round-robin, so a step's micro-batches on all ranks together are consecutive positions).
A checkpoint records how many positions were consumed (:class:`DataPosition`, saved in
trainer_state.json); a resumed run, at any world size, starts reading there. Within a stream
epoch no block is seen twice and none is skipped, whatever the world size was before.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Sampler
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

TRAINER_STATE = "trainer_state.json"   # the Trainer's own file in every checkpoint


def epoch_permutation(n_blocks: int, seed: int, epoch: int) -> np.ndarray:
    """Stream epoch ``epoch``'s block order: a function of (seed, epoch) only."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n_blocks)


def stream_blocks(n_blocks: int, seed: int, begin: int, end: int) -> np.ndarray:
    """Block indices at stream positions ``[begin, end)``."""
    out, p = [], begin
    while p < end:
        epoch, offset = divmod(p, n_blocks)
        take = min(end - p, n_blocks - offset)
        out.append(epoch_permutation(n_blocks, seed, epoch)[offset:offset + take])
        p += take
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


class StreamSampler(Sampler[int]):
    """The Trainer's training sampler over the block stream. Each pass the Trainer makes over
    the data (its "epoch") reads the next :meth:`__len__` positions, a whole number of steps,
    so a pass never ends inside a step; the first pass starts at ``start`` (the positions a
    resumed checkpoint consumed)."""

    def __init__(self, n_blocks: int, seed: int, start: int, samples_per_step: int):
        if n_blocks <= 0 or samples_per_step <= 0:
            raise ValueError("a stream needs blocks and a positive step size")
        self.n_blocks, self.seed, self.start = n_blocks, seed, start
        self.length = max(1, n_blocks // samples_per_step) * samples_per_step
        self.passes = 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        begin = self.start + self.passes * self.length
        self.passes += 1
        for p in range(begin, begin + self.length, self.n_blocks):
            yield from stream_blocks(self.n_blocks, self.seed, p,
                                     min(p + self.n_blocks, begin + self.length)).tolist()


@dataclass
class Position:
    """Blocks consumed at a step of this invocation: ``start`` at ``start_step`` plus
    ``samples_per_step`` per step since."""
    start: int
    start_step: int
    samples_per_step: int

    def consumed(self, global_step: int) -> int:
        return self.start + (global_step - self.start_step) * self.samples_per_step


class DataPosition(TrainerCallback, ExportableState):
    """Saves the consumed block count in every checkpoint's trainer_state.json
    (``stateful_callbacks.DataPosition``): what a resume at any world size starts from."""

    def __init__(self, position: Position, world_size: int, n_blocks: int, seed: int):
        self.position, self.world_size, self.n_blocks, self.seed = position, world_size, n_blocks, seed
        self.global_step = position.start_step

    def state(self) -> dict:
        return {"args": {}, "attributes": {
            "consumed_samples": self.position.consumed(self.global_step),
            "global_step": self.global_step, "world_size": self.world_size,
            "samples_per_step": self.position.samples_per_step, "blocks": self.n_blocks,
            "seed": self.seed}}

    def on_train_begin(self, args, state, control, **kw):
        # a checkpoint from before this callback existed has no entry; the Trainer indexes it
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())

    def on_step_end(self, args, state, control, **kw):
        self.global_step = state.global_step
        # the Trainer counts epochs in its own passes, which restart at a resume; the stream's
        # epoch is what the run has read
        state.epoch = self.position.consumed(state.global_step) / self.n_blocks


def recorded_position(checkpoint: Path) -> dict | None:
    """The :class:`DataPosition` a checkpoint recorded (None for one saved before it existed)."""
    try:
        st = json.loads((Path(checkpoint) / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return None
    rec = (st.get("stateful_callbacks") or {}).get(DataPosition.__name__)
    if isinstance(rec, list):
        rec = rec[-1] if rec else None
    return (rec or {}).get("attributes")


def checkpoint_step_of(checkpoint: Path) -> int:
    st = json.loads((Path(checkpoint) / TRAINER_STATE).read_text())
    return int(st.get("global_step", 0))
