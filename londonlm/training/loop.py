"""What every training job shares, whatever it trains (pre-training, chat fine-tuning): the
one place that builds ``transformers.TrainingArguments``, the callbacks every run has, the
one place that builds the ``Trainer``, and the call that trains.

A job supplies only what differs: its model, its datasets and collator, and what it writes
when it ends. An architecture test keeps ``TrainingArguments`` and ``Trainer`` out of every
module outside this package.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from ..core import UsageError, require_usable_gpus
from . import testhooks
from .base import TrainingError
from .modeling import with_causal_lm_loss
from .sampler import DataPosition, Position, StreamSampler
from .speed import (SpeedOptions, attach_budget_fit, budget_callback, budget_schedule,
                    optimizer_factory)


def make_training_arguments(values: dict):
    """``TrainingArguments(**values)``: the only construction of it in the project.

    On a machine without CUDA ``use_cpu`` is set: ``TrainingArguments`` otherwise refuses
    ``bf16=True`` there ("Your setup doesn't support bf16/gpu"), though bf16 autocast runs on
    every x86 CPU (natively with avx512_bf16/AMX, emulated elsewhere). Unless ``use_cpu`` was
    asked for, a machine showing GPUs that this torch cannot use is refused (it would train on
    the CPU without a word). A bad value becomes a one-line usage error."""
    import torch
    from transformers import TrainingArguments

    values = dict(values)
    if not torch.cuda.is_available():
        if not values.get("use_cpu"):  # not on purpose: refused where GPUs go unused
            require_usable_gpus()
        values["use_cpu"] = True
    try:
        return TrainingArguments(**values)
    except ValueError as e:
        raise UsageError(str(e)) from None


@dataclass(frozen=True)
class RunControl:
    """When a run ends besides its schedule: a time budget that the schedule is fitted to, and
    a stop with a checkpoint after some seconds or at some step of this invocation."""

    time_budget: float = 0.0
    stop_after_seconds: float = 0.0
    stop_after_steps: int = 0
    profile_steps: int = 0            # --profile_steps: a torch.profiler window of this many steps
    profile_dir: object = None        # where its tables and trace go (the run's profile/)


def common_callbacks(args, *, flops_per_token: float, tokens_per_step: int, world: int,
                     position: Position, stream: StreamSampler, tokens_per_sample: int,
                     control: RunControl, extra: list = ()) -> tuple[list, object]:
    """Throughput/MFU, the eval-loss-only filter, the data position, ``extra`` (a job's own),
    the time-budget fitter and, last, the stopper: it agrees with the other ranks on what the
    callbacks before it decided. Returns (callbacks, the stopper, which knows why training
    stopped)."""
    from ..core import device_name, peak_flops
    from .callbacks import EvalLossOnlyCallback, StopAndSaveCallback, ThroughputCallback

    callbacks = [ThroughputCallback(tokens_per_step, flops_per_token, peak_flops(device_name()), world,
                                    tokens_at=lambda step: position.consumed(step) * tokens_per_sample),
                 EvalLossOnlyCallback(),
                 DataPosition(position, world, stream.n_blocks, stream.seed), *extra]
    if control.profile_steps:
        from .base import log
        from .profiling import ProfileCallback

        callbacks.append(ProfileCallback(control.profile_dir, control.profile_steps, log=log))
    fit = budget_callback(control.time_budget, clock=testhooks.stop_clock())
    if fit is not None:
        callbacks.append(fit)
    stopper = StopAndSaveCallback(control.stop_after_seconds, control.stop_after_steps,
                                  clock=testhooks.stop_clock(), on_step=testhooks.step_hook())
    return callbacks + [stopper], stopper


def build_trainer(model, args, *, train, eval_dataset, collator, callbacks: list,
                  stream: StreamSampler, speed: SpeedOptions, time_budget: float = 0.0,
                  processing_class=None, schedule: Callable[[int], float] | None = None):
    """The ``Trainer`` of every job: :class:`~.trainer.RunTrainer` (stream sampler, exact
    resume, FSDP on CPU groups, signal-proof workers) with ``--optim muon`` and a budget-fitted
    schedule hooked in (or ``schedule``: step -> learning-rate factor, e.g. the LR finder's
    ramp); the test hooks wired when their variables are set."""
    from .schedules import BudgetFitCallback
    from .trainer import RunTrainer
    from .trainer_hooks import trainer_class

    cls = trainer_class(optimizer_factory(speed.optimizer, args),
                        schedule or budget_schedule(time_budget, args), RunTrainer)
    with_causal_lm_loss(model)  # built, resumed or loaded: no per-step warning (a graph break)
    trainer = cls(model=model, args=args, eval_dataset=eval_dataset,
                  train_dataset=testhooks.training_blocks(train, args), data_collator=collator,
                  processing_class=processing_class, callbacks=callbacks, stream=stream,
                  on_batch=testhooks.batch_hook())
    fit = next((c for c in callbacks if isinstance(c, BudgetFitCallback)), None)
    if fit is not None:
        attach_budget_fit(trainer, fit)
    return trainer


def compile_failure(error: BaseException) -> bool:
    """An error raised by torch.compile's tracer or code generator (not by the model)."""
    return type(error).__module__.startswith(("torch._dynamo", "torch._inductor", "triton"))


@dataclass
class Outcome:
    """What ``Trainer.train`` left: its state, the mean loss, the wall time, and why it
    stopped early (None when it ran to max_steps)."""
    state: object
    train_loss_mean: float
    wall_seconds: float
    interrupted: str | None
    tokens_seen: int | None = None  # tokens actually consumed, all invocations and world sizes


def train(trainer, resume, stopper, position: Position, tokens_per_sample: int) -> Outcome:
    """``Trainer.train``, resuming from ``resume`` when given; a GPU out of memory becomes
    advice."""
    import torch

    t0 = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except torch.cuda.OutOfMemoryError as e:  # pragma: no cover - GPU only
        bs = trainer.args.per_device_train_batch_size
        raise TrainingError(
            f"CUDA out of memory at batch size {bs}: lower --batch_size and raise "
            f"--gradient_accumulation_steps to keep the same tokens per step, or add "
            f"--gradient_checkpointing ({' '.join(str(e).split())[:300]})") from None
    except Exception as e:
        if not (trainer.args.torch_compile and compile_failure(e)):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise TrainingError(f"torch.compile failed ({type(e).__name__}: {first}); train eager with "
                            f"--torch_compile false (checkpoints resume either way)") from None
    state = trainer.state
    stopped = stopper.reason is not None and state.global_step < state.max_steps
    return Outcome(state, result.training_loss, time.time() - t0,
                   stopper.reason if stopped else None,
                   tokens_seen=position.consumed(state.global_step) * tokens_per_sample)

