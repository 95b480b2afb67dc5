"""Training a model a job has already loaded on rows the job has already made: what chat
fine-tuning (and any later fine-tuning) runs through, with pre-training's machinery.

The job gives the model and tokenizer, its train/validation rows with their collator, its
configuration tree (:class:`~.job.TrainingConfig`, built from its own preset by
:func:`~.job.config_from_values`) and the checkpoint to resume from. This module picks the
precision and kernels (the one policy: ``--autotune``, explicit flags, a resumed run's own),
refuses a time budget that cannot hold the warm-up, generates the ``TrainingArguments`` from the
final tree, orders the rows with the stream sampler (exact resume at any world size), and trains
with the shared callbacks and Trainer, holding the run's lock. What a finished run writes
is the job's; :func:`.record.save_model_folder` writes a ``final/`` the way pre-training does.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

from transformers import PrinterCallback

from ..core import checkpoint_step
from .data import Position, StreamSampler
from .dist import TrainingError, log, same_on_all_ranks, world_size
from .defaults import strategy
from .job import TrainingConfig, training_arguments
from .length import fit_length
from .model import ModelShape, configure_torch, prepare_for_training
from .resume import Resumed, check_optimizer, checkpoint_step_of, recorded_position
from .runlock import run_lock
from .speed.choice import (SpeedPlan, check_time_budget, choose_speed, refuse_past_memory, refuse_step_past_memory,
                           speed_callbacks)
from .step.callbacks import step_callbacks
from .step.schedules import BudgetFitCallback
from .step.trainer import Outcome, build_trainer, train


@dataclass
class FineTuneData:
    """A job's rows: dicts the collator turns into batches."""

    train: Sequence[dict]
    eval: Sequence[dict]
    collator: Callable
    row_tokens: int                  # tokens per row at most (the context): throughput, MFU


@dataclass
class FineTuneJob:
    config: TrainingConfig
    resume: Resumed = field(default_factory=Resumed)  # the checkpoint to resume from, its run's record
    extra_callbacks: list = field(default_factory=list)
    # the caller holds the run's lock (run_lock) already: it chose the resume and wrote the run's
    # record under it (a second flock of the folder, from this process, would be refused)
    locked: bool = False


@dataclass
class FineTuneResult:
    trainer: object
    outcome: Outcome
    speed: SpeedPlan
    time_budget: dict | None


def model_shape(model, context: int) -> ModelShape:
    """The shape of a loaded GPT-2 (for the autotune probe, the budget check and MFU)."""
    cfg = model.config
    return ModelShape(cfg.n_layer, cfg.n_head, cfg.n_embd, context,
                      model.get_input_embeddings().weight.shape[0])


def stream_for(config: TrainingConfig, resume: Resumed, n_rows: int) -> tuple[StreamSampler, Position]:
    """The row sampler and where it starts: 0, or the rows the resumed checkpoint consumed."""
    per_step, checkpoint = config.sequences_per_step * world_size(), resume.checkpoint
    seed = config.trainer.get("seed", 42)
    seed = seed if config.trainer.get("data_seed") is None else config.trainer["data_seed"]
    position = Position(0, 0, per_step)
    if checkpoint is not None:
        step = checkpoint_step_of(checkpoint)
        rec = recorded_position(checkpoint) or {}
        position = Position(int(rec.get("consumed_samples", step * per_step)), step, per_step)
        log(f"data: resuming after {position.start:,} rows (epoch {position.start / n_rows:.2f})")
    return StreamSampler(n_rows, seed, position.start, per_step), position


def fine_tune(job: FineTuneJob, model, tokenizer, data: FineTuneData) -> FineTuneResult:
    """Train ``model`` on ``data`` under ``job``; returns the trainer and what happened."""
    if not len(data.train):
        raise TrainingError("no training rows")
    _ = training_arguments(job.config).device  # joins the process group under torchrun
    with contextlib.nullcontext() if job.locked else run_lock(job.config.run):
        return _fine_tune(job, model, tokenizer, data)


def without_evaluation(config: TrainingConfig) -> TrainingConfig:
    """The tree for data with no validation rows (a chat dataset whose validation split is empty,
    or holds only conversations longer than the context): no evaluations, and so no best
    checkpoint chosen by them. The Trainer refused its evaluations without an eval dataset, a
    ValueError traceback after the model had loaded."""
    if strategy(config.trainer, "eval_strategy") == "no":
        return config
    if config.control.decay_on_plateau or config.control.early_stopping_patience:
        raise TrainingError("--decay_on_plateau and --early_stopping_patience count evaluations, and the "
                            "data has no validation rows; rebuild it with some held out, or drop the flag")
    log("note: the data has no validation rows: training without evaluations (no validation loss, "
        "no best checkpoint)")
    return config.but(trainer={**config.trainer, "eval_strategy": "no", "load_best_model_at_end": False})


def _fine_tune(job: FineTuneJob, model, tokenizer, data: FineTuneData) -> FineTuneResult:
    checkpoint = job.resume.checkpoint
    same_on_all_ranks(checkpoint_step(checkpoint) if checkpoint else -1, "the checkpoint to resume from")
    configure_torch()
    check_optimizer(job.resume, job.config.optim.optimizer)
    shape = model_shape(model, data.row_tokens)
    # (rows of input_ids, labels and attention_mask)
    refuse_step_past_memory(job.config.sequences_per_step, data.row_tokens, 3, job.config.speed.grad_accum)
    config, speed = choose_speed(job.config, shape, world_size(), job.resume.speed)
    refuse_past_memory(shape, config.speed.micro_batch, speed.settings, config.optim.optimizer, config.model.dropout,
                       world_size() if config.trainer.get("fsdp") else 1, "cuda" if speed.cuda else "cpu")
    config = check_time_budget(config, shape, speed)
    stream, position = stream_for(config, job.resume, len(data.train))
    config = fit_length(config, position, len(data.train), job.resume.trained_warmup)
    config = config if len(data.eval) else without_evaluation(config)
    args = training_arguments(config)  # from the final tree; never changed
    prepare_for_training(model, speed.settings)
    callbacks, stopper = step_callbacks(
        config.control, flops_per_token=shape.flops_per_token(), tokens_per_step=position.samples_per_step
        * data.row_tokens, world=world_size(), position=position, stream=stream,
        tokens_per_sample=data.row_tokens, job=[*job.extra_callbacks, *speed_callbacks(speed)])
    trainer = build_trainer(model, args, config, train=data.train, eval_dataset=data.eval or None,
                            collator=data.collator, callbacks=callbacks, stream=stream,
                            processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # the job's log lines instead of raw dicts
    outcome = train(trainer, checkpoint, stopper, position, data.row_tokens)
    fit = next((c for c in callbacks if isinstance(c, BudgetFitCallback)), None)
    return FineTuneResult(trainer, outcome, speed, fit.report() if fit is not None else None)
