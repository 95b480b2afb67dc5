"""Training a model a job has already loaded on rows the job has already made: what chat
fine-tuning (and any later fine-tuning) runs through, with pre-training's machinery.

The job gives the model and tokenizer, its train/validation rows with their collator, the
``TrainingArguments`` (built by :func:`.options.make_training_arguments`), the speed request and
run control, and the checkpoint to resume from. This module picks the precision and kernels
(the one policy: ``--autotune``, explicit flags, a resumed run's own), refuses a time budget
that cannot hold the warm-up, orders the rows with the stream sampler (exact resume at any
world size), and trains with the shared callbacks and Trainer. What a finished run writes
is the job's; :func:`.record.save_model_folder` writes a ``final/`` the way pre-training does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from transformers import PrinterCallback

from ..core import RunLayout, checkpoint_step
from .data import Position, StreamSampler
from .dist import TrainingError, log, same_on_all_ranks, world_size
from .model import ModelShape, apply_speed, configure_torch
from .resume import Resumed, check_optimizer, checkpoint_step_of, recorded_position
from .speed.choice import SpeedPlan, check_time_budget, choose_speed
from .speed.settings import SpeedRequest
from .step.callbacks import RunControl, common_callbacks
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
    run: RunLayout
    args: object                     # transformers.TrainingArguments, output_dir = run.dir
    speed: SpeedRequest = field(default_factory=SpeedRequest)
    control: RunControl = field(default_factory=RunControl)
    resume: Resumed = field(default_factory=Resumed)  # the checkpoint to resume from, its run's record
    extra_callbacks: list = field(default_factory=list)


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


def stream_for(job: FineTuneJob, n_rows: int) -> tuple[StreamSampler, Position]:
    """The row sampler and where it starts: 0, or the rows the resumed checkpoint consumed."""
    a, checkpoint = job.args, job.resume.checkpoint
    per_step = a.per_device_train_batch_size * a.gradient_accumulation_steps * world_size()
    seed = a.seed if a.data_seed is None else a.data_seed
    position = Position(0, 0, per_step)
    if checkpoint is not None:
        step = checkpoint_step_of(checkpoint)
        rec = recorded_position(checkpoint) or {}
        position = Position(int(rec.get("consumed_samples", step * per_step)), step, per_step)
        log(f"data: resuming after {position.start:,} rows (epoch {position.start / n_rows:.2f})")
    return StreamSampler(n_rows, seed, position.start, per_step), position


def fine_tune(job: FineTuneJob, model, tokenizer, data: FineTuneData) -> FineTuneResult:
    """Train ``model`` on ``data`` under ``job``; returns the trainer and what happened."""
    args, checkpoint = job.args, job.resume.checkpoint
    if not len(data.train):
        raise TrainingError("no training rows")
    _ = args.device  # joins the process group under torchrun: the ranks must agree from here
    same_on_all_ranks(checkpoint_step(checkpoint) if checkpoint else -1, "the checkpoint to resume from")
    configure_torch()
    check_optimizer(job.resume, job.speed.optimizer)
    shape = model_shape(model, data.row_tokens)
    speed = choose_speed(job.speed, args, shape, world_size(), job.resume.speed)
    check_time_budget(job.control.time_budget, args, shape, speed)
    apply_speed(model, speed.settings)
    args.ignore_data_skip = True  # the stream sampler starts where the checkpoint says
    stream, position = stream_for(job, len(data.train))
    callbacks, stopper = common_callbacks(
        args, flops_per_token=shape.flops_per_token(), tokens_per_step=position.samples_per_step
        * data.row_tokens, world=world_size(), position=position, stream=stream,
        tokens_per_sample=data.row_tokens, control=job.control, extra=job.extra_callbacks)
    trainer = build_trainer(model, args, train=data.train, eval_dataset=data.eval or None,
                            collator=data.collator, callbacks=callbacks, stream=stream,
                            optimizer=job.speed.optimizer, time_budget=job.control.time_budget,
                            processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # the job's log lines instead of raw dicts
    outcome = train(trainer, checkpoint, stopper, position, data.row_tokens)
    fit = next((c for c in callbacks if isinstance(c, BudgetFitCallback)), None)
    return FineTuneResult(trainer, outcome, speed, fit.report() if fit is not None else None)
