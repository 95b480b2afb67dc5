"""A run's data: the token cache (built once, or checked), the packed fixed-length blocks the
Trainer reads, and where in the training stream each step reads, whatever the world size.

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

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from ..core import LondonLMError, RunLayout
from ..corpus import split_sizes
from ..tokens import (cached_split_tokens, ensure_cache, era_tokens_of, load_checked_tokens, refuse_unfinished_build,
                      split_token_ceiling)
from .dist import TrainingError, is_main_process, log, rank0_first
from .job import DataOptions


# --------------------------------------------------------------------------- blocks

class PackedBlocks(Dataset):
    """Map-style dataset of non-overlapping ``block_size`` windows of the memmapped token
    stream (documents separated by <|endoftext|>). Indexing is one slice of the memmap:
    cheap, and any block can be fetched without reading the ones before it, so resuming
    never re-reads skipped data."""

    def __init__(self, tokens: np.ndarray, block_size: int, indices: np.ndarray | None = None):
        self.tokens = tokens
        self.block_size = block_size
        self.n_blocks = len(tokens) // block_size
        self.indices = indices

    @classmethod
    def from_cache(cls, cache_dir: Path, split: str, block_size: int) -> "PackedBlocks":
        return cls(load_checked_tokens(cache_dir, split), block_size)  # each chunk CRC-checked on first read

    def subset_evenly(self, n: int) -> "PackedBlocks":
        """At most ``n`` blocks spread evenly over the split (bounded evaluation cost)."""
        if n <= 0 or n >= self.n_blocks:
            return self
        idx = np.linspace(0, self.n_blocks - 1, n).round().astype(np.int64)
        return PackedBlocks(self.tokens, self.block_size, np.unique(idx))

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else self.n_blocks

    def __getitem__(self, i: int) -> dict:
        if self.indices is not None:
            i = int(self.indices[i])
        start = i * self.block_size
        x = torch.from_numpy(np.asarray(self.tokens[start:start + self.block_size], dtype=np.int64))
        return {"input_ids": x, "labels": x}


# --------------------------------------------------------------------------- the stream

def epoch_permutation(n_blocks: int, seed: int, epoch: int) -> np.ndarray:
    """Stream epoch ``epoch``'s block order: a function of (seed, epoch) only. ``uint32`` while
    the blocks fit: the same order as ``Generator.permutation`` (a shuffle of ``arange``, which
    moves the same elements whatever their type) at half its 8 bytes a block."""
    perm = np.arange(n_blocks, dtype=np.uint32 if n_blocks < 1 << 32 else np.int64)
    np.random.default_rng([int(seed), int(epoch)]).shuffle(perm)
    return perm


def stream_blocks(n_blocks: int, seed: int, begin: int, end: int) -> np.ndarray:
    """Block indices at stream positions ``[begin, end)``."""
    out, p = [], begin
    while p < end:
        epoch, offset = divmod(p, n_blocks)
        take = min(end - p, n_blocks - offset)
        out.append(epoch_permutation(n_blocks, seed, epoch)[offset:offset + take])
        p += take
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


_YIELD_SLICE = 1 << 16


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
        p, end = begin, begin + self.length
        while p < end:  # one stream epoch's permutation at a time, handed out in slices: a whole
            epoch, offset = divmod(p, self.n_blocks)  # epoch as a Python list was 36 bytes a block
            take = min(end - p, self.n_blocks - offset)
            perm = epoch_permutation(self.n_blocks, self.seed, epoch)
            for i in range(offset, offset + take, _YIELD_SLICE):
                yield from perm[i:min(i + _YIELD_SLICE, offset + take)].tolist()
            p += take


@dataclass
class Position:
    """Blocks consumed at a step of this invocation: ``start`` at ``start_step`` plus
    ``samples_per_step`` per step since."""
    start: int
    start_step: int
    samples_per_step: int

    def consumed(self, global_step: int) -> int:
        return self.start + (global_step - self.start_step) * self.samples_per_step

    def step_reading(self, blocks: int) -> int:
        """The first global step by which ``blocks`` blocks were read in all (this invocation's
        start when they already were)."""
        return self.start_step + max(0, -(-(blocks - self.start) // self.samples_per_step))


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


# Past about this many passes over the same text, a pass is worth less than new text and a
# model large for its data starts to overfit it (Muennighoff et al. 2023, "Scaling
# Data-Constrained Language Models": up to ~4 epochs repeated tokens are nearly as good as new
# ones, then fall off). GPT-2 Small's validation loss in the H200 race was lowest near 7
# passes and rose by a quarter by 20 (BENCHMARKS.md).
REPEAT_PASSES = 4


class RepetitionNote(TrainerCallback):
    """Says, once the run's step count is known, how many times its steps read the training
    blocks over, and, past :data:`REPEAT_PASSES`, that the model may overfit them. A run without
    a time budget knows its steps at the start; a budgeted one when its fitter has measured
    the pace (it calls :meth:`note`)."""

    def __init__(self, position: Position, n_blocks: int, budgeted: bool,
                 log: Callable[[str], None] = log):
        self.position, self.n_blocks, self.budgeted, self.log = position, n_blocks, budgeted, log
        self.passes: float | None = None

    def on_train_begin(self, args, state, control, **kw):
        if not self.budgeted:
            self.note(state.max_steps)

    def note(self, total_steps: int) -> None:
        if self.passes is not None or self.n_blocks <= 0:
            return
        self.passes = self.position.consumed(total_steps) / self.n_blocks
        line = (f"data: {total_steps:,} steps read the {self.n_blocks:,} training blocks "
                f"{self.passes:.1f} times over")
        if self.passes > REPEAT_PASSES:
            fewer = self.position.step_reading(REPEAT_PASSES * self.n_blocks)
            line += (f"; past ~{REPEAT_PASSES} passes repeated text is worth less than new text and "
                     f"the model may overfit it: watch eval_loss, add text or train fewer passes "
                     f"(--num_train_epochs {REPEAT_PASSES}: {fewer:,} steps)")
        self.log(line)


# --------------------------------------------------------------------------- the cache and the splits

@dataclass
class TrainData:
    train: PackedBlocks
    eval: PackedBlocks
    meta: dict          # the cache's metadata.json (token counts, manifest sha256)
    era_tokens: bool


def load_blocks(cache_dir: Path, split: str, meta: dict, context_length: int) -> PackedBlocks:
    """One split's blocks; an error when it holds less than one block."""
    blocks = PackedBlocks.from_cache(cache_dir, split, context_length)
    if not meta["splits"][split].get("documents", 1):
        raise TrainingError(f"the corpus has no {split} document (documents go to a split by a hash of "
                            f"their id); add texts, or for a cutoff view choose a later cutoff")
    if len(blocks) == 0:
        raise TrainingError(f"the {split} split has {meta['splits'][split]['tokens']} tokens, "
                            f"fewer than one block of {context_length}; add text or lower "
                            f"--max_length")
    return blocks


def cached_tokens(run: RunLayout, data: DataOptions, context_length: int, tokenizer) -> tuple[dict, bool]:
    """Build or check the run's token cache; returns (metadata, era tokens on). Under
    torchrun rank 0 builds it and the others wait, then check and use it: built once, never
    once per rank (--no_pretokenized rebuilds on rank 0 only)."""
    era = data.era_tokens if data.era_tokens is not None else bool(era_tokens_of(tokenizer))
    mode = data.cache_mode
    if mode == "rebuild" and not is_main_process():
        mode = "auto"  # rank 0 has just rebuilt it
    with rank0_first("building the token cache"):
        meta = ensure_cache(run.cache_dir, Path(data.tokenizer_dir), Path(data.processed_dir),
                            context_length, era, mode=mode, progress=data.progress and is_main_process(),
                            verify_full=data.verify_cache, log=log)
    return meta, era


def eval_blocks(n_blocks: int, batch_size: int, max_blocks: int = 0, world: int = 1,
                whole_batches: bool = False) -> int:
    """How many validation blocks an evaluation reads: at most ``max_blocks`` (0: the whole
    split), the same at every world size and micro-batch. ``whole_batches`` (a compiled model):
    a multiple of every rank's batches of ``batch_size`` together, for no ragged last batch, a
    new shape it would recompile for at every evaluation; unless the split is smaller than that."""
    n = min(n_blocks, max_blocks) if max_blocks else n_blocks
    step = batch_size * world
    return n - n % step if whole_batches and n >= step else n


def prepare_data(run: RunLayout, data: DataOptions, context_length: int, tokenizer, eval_batch_size: int,
                 world: int = 1, compiled: bool = False) -> TrainData:
    """The token cache and the train/validation datasets (validation: at most
    ``data.eval_max_blocks`` blocks spread evenly over the split; whole batches when the
    model is ``compiled``)."""
    meta, era = cached_tokens(run, data, context_length, tokenizer)
    train = load_blocks(run.cache_dir, "train", meta, context_length)
    evals = load_blocks(run.cache_dir, "validation", meta, context_length)
    evals = evals.subset_evenly(eval_blocks(len(evals), eval_batch_size, data.eval_max_blocks, world,
                                            compiled))
    log(f"data: {len(train):,} train blocks, {len(evals):,} validation blocks of "
        f"{context_length} tokens (era tokens: {'on' if era else 'off'})")
    return TrainData(train, evals, meta, era)


def check_blocks_fit(run: RunLayout, data: DataOptions, context_length: int, tokenizer) -> None:
    """Each split must hold a block: refused before the speed probe spends minutes, reading
    only (no cache is built here, so the refusals that come before any data work still do):
    from a current token cache's counts, else from the most tokens the split's bytes can make
    (:func:`~..tokens.split_token_ceiling`); a split between the two, :func:`load_blocks`
    refuses once the cache is built."""
    era = data.era_tokens if data.era_tokens is not None else bool(era_tokens_of(tokenizer))
    counts = cached_split_tokens(run.cache_dir, data.tokenizer_dir, data.processed_dir, era)
    has = "has"
    if counts is None:
        counts, has = split_token_ceiling(data.processed_dir), "can hold at most"
    else:  # (counts of a cache for another context: the rebuild ahead is refused here, not after the probe)
        refuse_unfinished_build(run.cache_dir, data.tokenizer_dir, data.processed_dir, context_length, era,
                                data.cache_mode)
    for split, tokens in counts.items():
        if tokens < context_length:
            raise TrainingError(f"the {split} split {has} {tokens} tokens, fewer than one block of "
                                f"{context_length}; add text or lower --max_length")


def validation_bytes(processed_dir: Path) -> int | None:
    """UTF-8 bytes of the validation split (file sizes from the manifest), for bits per byte."""
    try:
        return split_sizes(processed_dir).get("validation", (0, 0))[0]
    except (OSError, LondonLMError):  # the estimate is optional
        return None
