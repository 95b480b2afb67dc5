"""Step 1 of a run, the plan: tokenizer, resume decision, parent weights and model shape.

Everything here only reads, so whatever is wrong with the request (a missing tokenizer, an
unknown checkpoint, a parent that does not fit, a bad shape) fails in seconds, before the
token cache is built or read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core import checkpoint_step
from .base import TrainingError, is_main_process, log, world_size
from .checkpoints import move_run_aside, resolve_resume
from .init_from import (InitSource, parent_record, resolve_init_source, same_tokenizer,
                        tokenizer_fingerprint, tokenizer_identity)
from .modeling import ModelShape, padded_vocab
from .options import RunOptions
from .ranks import same_on_all_ranks
from .sampler import recorded_position
from .time_lock import time_lock


@dataclass
class TrainingPlan:
    tokenizer: object
    resume: Path | None          # checkpoint the Trainer resumes from
    init: InitSource | None      # --init_from parent weights (a new run, step 0)
    parent: dict | None          # run_info.json "parent" (from init, or kept when resuming one)
    previous_info: dict          # run_info.json of the interrupted run being resumed ({} if none)
    shape: ModelShape
    tokens_per_step: int
    world: int
    data_position: dict | None = None  # what the resumed checkpoint recorded (sampler.DataPosition)
    corpus_time: dict = field(default_factory=dict)  # cutoff and years (run_info.json "corpus_time")

    @property
    def resumes_continued_run(self) -> bool:
        """Resuming a run that was itself started with --init_from: its checkpoint holds the
        weights (and the shape), not the preset."""
        return self.resume is not None and bool(self.previous_info.get("parent"))


def load_tokenizer(tok_dir: Path, vocab_size: int | None = None):
    """The trained tokenizer, or an error naming the command that makes it."""
    from transformers import AutoTokenizer

    if not (Path(tok_dir) / "tokenizer.json").exists():
        raise TrainingError(f"no tokenizer at {tok_dir}: run "
                            f"`python 03_tokenizer/train_historical_tokenizer.py` first")
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    if vocab_size and vocab_size != len(tokenizer):
        raise TrainingError(f"--vocab_size {vocab_size} differs from the tokenizer's "
                            f"{len(tokenizer)}; retrain the tokenizer with --vocab_size "
                            f"{vocab_size} or drop the flag")
    return tokenizer


def _check_init_against_resume(opts: RunOptions, init: InitSource, resume: Path | None,
                               resumed_parent: dict | None) -> None:
    """--init_from on a run with checkpoints: only the same command resuming the same run."""
    if resume is None:
        return
    if not resumed_parent or Path(resumed_parent.get("path", "")) != init.path.resolve():
        raise TrainingError(
            f"--init_from starts a new run but {opts.run.dir} already has checkpoints "
            f"({resume.name})" + (f" of a run continued from {resumed_parent['path']}"
                                  if resumed_parent else "")
            + "; pass --fresh or a new --run_name")
    log(f"resuming the run continued from {init.path}; its weights are in {resume.name}")


def check_resume_tokenizer(resume: Path, tok_dir: Path, previous_info: dict) -> None:
    """Resuming with a tokenizer that numbers tokens differently from the one the checkpoint
    was trained with would silently continue the old weights on renumbered tokens."""
    theirs, mine = tokenizer_identity(resume), tokenizer_identity(tok_dir)
    if theirs is not None and mine is not None:
        differs = not same_tokenizer(theirs, mine)
    else:  # a checkpoint without its tokenizer: the run's record of the tokenizer file
        recorded = previous_info.get("tokenizer_sha256")
        differs = bool(recorded) and recorded != tokenizer_fingerprint(tok_dir)
    if differs:
        raise TrainingError(
            f"{resume} was trained with a different tokenizer than {tok_dir} (token ids would "
            f"change meaning). Pass --fresh to start this run over with the new tokenizer, or "
            f"continue these weights under it in a new run: --init_from {resume} "
            f"--resize_embeddings --run_name NEW. To resume, restore the old tokenizer"
            + (f" ({previous_info['tokenizer_dir']})" if previous_info.get("tokenizer_dir") else ""))


def _shape_from_parent(opts: RunOptions, init: InitSource, tokenizer) -> ModelShape:
    """A continued run's shape is its parent's; shape flags that disagree are refused."""
    cfg = init.config
    parent_shape = {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd}
    clash = {k: v for k, v in (opts.shape_overrides or {}).items()
             if k in parent_shape and v != parent_shape[k]}
    if clash:
        raise TrainingError(
            f"--init_from {init.path}: the shape comes from the parent weights "
            f"({', '.join(f'{k}={v}' for k, v in parent_shape.items())}); drop "
            f"{', '.join(f'--{k} {v}' for k, v in clash.items())}")
    if init.tokenizer_problem and not opts.resize_embeddings:
        raise TrainingError(
            f"--init_from {init.path}: {init.tokenizer_problem}. Or pass --resize_embeddings "
            f"to resize the embeddings to this tokenizer (rows of re-numbered tokens start "
            f"out meaningless)")
    rows = padded_vocab(len(tokenizer)) if init.tokenizer_problem else cfg.vocab_size
    return ModelShape(cfg.n_layer, cfg.n_head, cfg.n_embd, opts.context_length, rows)


def validated(shape: ModelShape) -> ModelShape:
    try:
        shape.validate()
    except ValueError as e:
        raise TrainingError(str(e)) from None
    return shape


def _log_plan(plan: TrainingPlan, opts: RunOptions) -> None:
    s = plan.shape
    log(f"model: {s.n_layer} layers x {s.n_embd} wide, {s.n_head} heads, context "
        f"{opts.context_length}, vocab {len(plan.tokenizer)} (embedding rows {s.vocab_size}): "
        f"{s.n_params / 1e6:.2f}M parameters" + (f"; weights from {plan.init.path}" if plan.init else ""))
    if plan.init and plan.init.note:
        log(f"warning: --init_from {plan.init.path}: {plan.init.note}")


def plan_run(opts: RunOptions, args) -> TrainingPlan:
    """Tokenizer, resume, parent and shape for ``opts`` and the Trainer ``args``."""
    tokenizer = load_tokenizer(opts.tokenizer_dir, opts.vocab_size)
    resume = resolve_resume(opts.run, args.resume_from_checkpoint, opts.fresh, log=log)
    _ = args.device  # joins the process group under torchrun: the ranks must agree from here
    same_on_all_ranks(checkpoint_step(resume) if resume else -1, "the checkpoint to resume from")
    previous = opts.run.read_run_info() if resume is not None else {}
    if resume is not None:
        check_resume_tokenizer(resume, opts.tokenizer_dir, previous)
    resumed_parent = previous.get("parent")  # resuming a continued run: shape is the checkpoint's
    init = parent = None
    if opts.init_from:
        init = resolve_init_source(opts.init_from, opts.run, opts.layout, tokenizer,
                                   opts.tokenizer_dir, opts.context_length)
        _check_init_against_resume(opts, init, resume, resumed_parent)
        shape = _shape_from_parent(opts, init, tokenizer)
        parent = resumed_parent or parent_record(init)
    else:
        shape = ModelShape(opts.n_layer, opts.n_head, opts.n_embd, opts.context_length,
                           padded_vocab(len(tokenizer)))
        parent = resumed_parent
    corpus_time = time_lock(opts, tokenizer, resume, previous, init.path if init else None)
    world = world_size()
    tokens_per_step = (args.per_device_train_batch_size * args.gradient_accumulation_steps
                       * world * opts.context_length)
    plan = TrainingPlan(tokenizer, resume, init, parent, previous, validated(shape),
                        tokens_per_step, world, recorded_position(resume) if resume else None,
                        corpus_time)
    _log_plan(plan, opts)
    return plan


def start_fresh(opts: RunOptions, plan: TrainingPlan) -> None:
    """--fresh: move the old run aside (rank 0), following a parent that lived inside it."""
    if not (opts.fresh and is_main_process()):
        return
    moved = move_run_aside(opts.run)
    if moved:
        log(f"--fresh: previous run moved to {moved}")
        if plan.init is not None:
            plan.init.follow(opts.run.dir, moved)
