"""Step 2 of a run, the data: the run's token cache (built once, or checked), the packed
train/validation blocks the Trainer reads, and where in the training stream the run starts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import TrainingError, is_main_process, log
from .blocks import PackedBlocks
from .options import RunOptions
from .plan import TrainingPlan
from .sampler import Position, StreamSampler, checkpoint_step_of


@dataclass
class TrainData:
    train: PackedBlocks
    eval: PackedBlocks
    meta: dict          # the cache's metadata.json (token counts, manifest sha256)
    era_tokens: bool


def load_blocks(cache_dir: Path, split: str, meta: dict, context_length: int) -> PackedBlocks:
    """One split's blocks; an error when it holds less than one block."""
    blocks = PackedBlocks.from_cache(cache_dir, split, context_length)
    if len(blocks) == 0:
        raise TrainingError(f"the {split} split has {meta['splits'][split]['tokens']} tokens, "
                            f"fewer than one block of {context_length}; add text or lower "
                            f"--max_length")
    return blocks


def cached_tokens(opts: RunOptions, tokenizer, progress: bool | None = None) -> tuple[dict, bool]:
    """Build or check the run's token cache; returns (metadata, era tokens on). Under
    torchrun rank 0 builds it and the others wait, then check and use it: built once, never
    once per rank (--no_pretokenized rebuilds on rank 0 only)."""
    from ..tokens import ensure_cache, era_tokens_of
    from .ranks import rank0_first

    era = opts.era_tokens if opts.era_tokens is not None else bool(era_tokens_of(tokenizer))
    progress = (opts.progress and is_main_process()) if progress is None else progress
    mode = opts.cache_mode
    if mode == "rebuild" and not is_main_process():
        mode = "auto"  # rank 0 has just rebuilt it
    with rank0_first("building the token cache"):
        meta = ensure_cache(opts.run.cache_dir, Path(opts.tokenizer_dir), Path(opts.processed_dir),
                            opts.context_length, era, mode=mode, progress=progress,
                            verify_full=opts.verify_cache, log=log)
    return meta, era


def eval_blocks(n_blocks: int, batch_size: int, max_batches: int = 0, world: int = 1,
                whole_batches: bool = False) -> int:
    """How many validation blocks an evaluation reads: at most ``max_batches`` batches of
    ``batch_size`` (0: the whole split), the same at every world size. ``whole_batches`` (a
    compiled model): a multiple of every rank's batches together, for no ragged last batch, a
    new shape it would recompile for at every evaluation; unless the split is smaller than that."""
    n = min(n_blocks, max_batches * batch_size) if max_batches else n_blocks
    step = batch_size * world
    return n - n % step if whole_batches and n >= step else n


def prepare_data(opts: RunOptions, tokenizer, eval_batch_size: int, world: int = 1,
                 compiled: bool = False) -> TrainData:
    """The token cache and the train/validation datasets (validation: at most
    ``opts.eval_max_batches`` batches spread evenly over the split; whole batches when the
    model is ``compiled``)."""
    meta, era = cached_tokens(opts, tokenizer)
    cache = opts.run.cache_dir
    train = load_blocks(cache, "train", meta, opts.context_length)
    evals = load_blocks(cache, "validation", meta, opts.context_length)
    evals = evals.subset_evenly(eval_blocks(len(evals), eval_batch_size, opts.eval_max_batches, world,
                                            compiled))
    log(f"data: {len(train):,} train blocks, {len(evals):,} validation blocks of "
        f"{opts.context_length} tokens (era tokens: {'on' if era else 'off'})")
    return TrainData(train, evals, meta, era)


def data_stream(plan: TrainingPlan, train: PackedBlocks, context_length: int,
                seed: int) -> tuple[StreamSampler, Position]:
    """The training sampler and where it starts: 0, or the blocks the resumed checkpoint
    consumed (whatever world size consumed them)."""
    per_step = plan.tokens_per_step // context_length
    position = Position(0, 0, per_step)
    if plan.resume is not None:
        step = checkpoint_step_of(plan.resume)
        rec = plan.data_position
        if rec:
            position = Position(int(rec["consumed_samples"]), step, per_step)
            if rec.get("blocks") not in (None, len(train)):
                log(f"warning: the training data changed since {plan.resume.name} ({rec['blocks']:,} "
                    f"blocks then, {len(train):,} now): its data position no longer means the same")
        else:  # a checkpoint saved before positions were recorded: same world size assumed
            before = plan.previous_info.get("tokens_per_step", plan.tokens_per_step) // context_length
            position = Position(step * before, step, per_step)
            log(f"note: {plan.resume.name} records no data position; assuming {before} blocks per "
                f"step before it")
        log(f"data: resuming after {position.start:,} blocks (epoch "
            f"{position.start / len(train):.2f})")
    return StreamSampler(len(train), seed, position.start, per_step), position


def validation_bytes(processed_dir: Path) -> int | None:
    """UTF-8 bytes of the validation split (file sizes from the manifest), for bits per byte."""
    try:
        from ..corpus import read_manifest

        return sum((Path(processed_dir) / r["path"]).stat().st_size
                   for r in read_manifest(processed_dir) if r.get("split") == "validation")
    except Exception:  # the estimate is optional
        return None
