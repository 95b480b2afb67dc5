"""One training run, top to bottom: plan -> data -> model -> Trainer -> record.

Single process or torchrun DDP/FSDP (CPU gloo groups included); every step is a named
function in this package.
"""
from __future__ import annotations

import time

from . import testhooks
from ..schedules import BudgetFitCallback
from ..trainer_hooks import trainer_class
from .base import TrainingError, is_main_process
from .data import TrainData, data_stream, prepare_data
from .model import configure_torch, make_model
from .options import RunOptions
from .plan import TrainingPlan, plan_run, start_fresh
from .sampler import DataPosition, Position, StreamSampler
from .speed import (SpeedPlan, attach_budget_fit, budget_callback, budget_schedule,
                    check_resume_optimizer, check_time_budget, choose_speed, optimizer_factory)
from .summary import Outcome, finish, run_summary
from .trainer import RunTrainer


def make_callbacks(opts: RunOptions, plan: TrainingPlan, stream: StreamSampler,
                   position: Position) -> tuple[list, object]:
    """Throughput/MFU, perplexity, the data position, the log file, --save_best, early
    stopping, the time-budget fitter and, last, the stopper: it agrees with the other ranks on
    what the callbacks before it decided. Returns (callbacks, the stopper, which knows why
    training stopped)."""
    from transformers import EarlyStoppingCallback

    from ..callbacks import (EvalLossOnlyCallback, LogFileCallback, SaveBestCallback,
                             StopAndSaveCallback, ThroughputCallback)
    from ..hardware import device_name, peak_flops

    ctx = opts.context_length
    callbacks = [ThroughputCallback(plan.tokens_per_step, plan.shape.flops_per_token(),
                                    peak_flops(device_name()), plan.world,
                                    tokens_at=lambda step: position.consumed(step) * ctx),
                 EvalLossOnlyCallback(),
                 DataPosition(position, plan.world, stream.n_blocks, stream.seed)]
    if opts.log_file and is_main_process():
        callbacks.append(LogFileCallback(opts.log_file))
    if opts.save_best:
        callbacks.append(SaveBestCallback(opts.run))
    if opts.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=opts.early_stopping_patience))
    fit = budget_callback(opts)
    if fit is not None:
        callbacks.append(fit)
    stopper = StopAndSaveCallback(opts.stop_after_seconds, opts.stop_after_steps,
                                  clock=testhooks.stop_clock(), on_step=testhooks.step_hook())
    return callbacks + [stopper], stopper


def train(trainer, plan: TrainingPlan, stopper, position: Position, context_length: int) -> Outcome:
    """``Trainer.train``, resuming when the plan says so; a GPU out of memory becomes advice."""
    import torch

    t0 = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=str(plan.resume) if plan.resume else None)
    except torch.cuda.OutOfMemoryError as e:  # pragma: no cover - GPU only
        bs = trainer.args.per_device_train_batch_size
        raise TrainingError(
            f"CUDA out of memory at batch size {bs}: lower --batch_size and raise "
            f"--gradient_accumulation_steps to keep the same tokens per step, or add "
            f"--gradient_checkpointing ({e})") from None
    state = trainer.state
    stopped = stopper.reason is not None and state.global_step < state.max_steps
    return Outcome(state, result.training_loss, time.time() - t0,
                   stopper.reason if stopped else None,
                   tokens_seen=position.consumed(state.global_step) * context_length)


def run_training(opts: RunOptions, args) -> dict:
    """Train (or resume) one run. ``args`` is a ``transformers.TrainingArguments`` whose
    output_dir is ``opts.run.dir``. Returns the run summary also saved as run_info.json."""
    from transformers import default_data_collator

    plan = plan_run(opts, args)
    configure_torch()  # training threads before the autotune probe times anything
    check_resume_optimizer(opts, plan)
    speed: SpeedPlan = choose_speed(opts, args, plan)
    check_time_budget(opts, args, plan, speed)
    start_fresh(opts, plan)
    data: TrainData = prepare_data(opts, plan.tokenizer, args.per_device_eval_batch_size)
    # --- multi-process: the data position is the stream sampler's (any world size), not the
    # Trainer's per-rank batch skipping; threads from OMP_NUM_THREADS / affinity / quota
    seed = args.seed if args.data_seed is None else args.data_seed
    stream, position = data_stream(plan, data.train, opts.context_length, seed)
    args.ignore_data_skip = True
    kernels = speed.kernels
    model = make_model(opts, plan, kernels, args.seed)
    callbacks, stopper = make_callbacks(opts, plan, stream, position)
    trainer_cls = trainer_class(optimizer_factory(opts, args), budget_schedule(opts, args), RunTrainer)
    trainer = trainer_cls(model=model, args=args, eval_dataset=data.eval,
                         train_dataset=testhooks.training_blocks(data.train, args),
                         data_collator=default_data_collator, processing_class=plan.tokenizer,
                         callbacks=callbacks, stream=stream, on_batch=testhooks.batch_hook())
    fit = next((c for c in callbacks if isinstance(c, BudgetFitCallback)), None)
    if fit is not None:
        attach_budget_fit(trainer, fit)
    # --- end multi-process
    outcome = train(trainer, plan, stopper, position, opts.context_length)
    summary = run_summary(opts, args, plan, data, kernels, model, outcome)
    summary["speed"] = speed.record()
    if fit is not None:
        summary["time_budget"] = fit.report()
    return finish(trainer, opts, plan, data, summary)
