"""One pre-training run, top to bottom: plan -> data -> model -> Trainer -> record.

Single process or torchrun DDP/FSDP (CPU gloo groups included); every step is a named
function in this package, and the Trainer, its arguments and callbacks come from
:mod:`.loop`, which every training job (chat fine-tuning too) shares.
"""
from __future__ import annotations

from .base import is_main_process
from .data import TrainData, data_stream, prepare_data
from .loop import RunControl, build_trainer, common_callbacks, train
from .model import configure_torch, make_model
from .options import RunOptions
from .plan import TrainingPlan, plan_run, start_fresh
from .sampler import Position, StreamSampler
from .schedules import BudgetFitCallback
from .speed import SpeedPlan, check_resume_optimizer, check_time_budget, choose_speed, fit_batch_to_memory
from .summary import finish, run_summary, training_settings


def make_callbacks(opts: RunOptions, args, plan: TrainingPlan, stream: StreamSampler,
                   position: Position) -> tuple[list, object]:
    """Every run's callbacks (:func:`.loop.common_callbacks`) plus pre-training's own:
    perplexity in the log file, --save_best and early stopping."""
    from transformers import EarlyStoppingCallback

    from .callbacks import LogFileCallback, SaveBestCallback

    extra = []
    if opts.log_file and is_main_process():
        extra.append(LogFileCallback(opts.log_file))
    if opts.save_best:
        extra.append(SaveBestCallback(opts.run))
    if opts.early_stopping_patience:
        extra.append(EarlyStoppingCallback(early_stopping_patience=opts.early_stopping_patience))
    return common_callbacks(args, flops_per_token=plan.shape.flops_per_token(),
                            tokens_per_step=plan.tokens_per_step, world=plan.world,
                            position=position, stream=stream, tokens_per_sample=opts.context_length,
                            control=run_control(opts), extra=extra)


def run_control(opts: RunOptions) -> RunControl:
    return RunControl(opts.time_budget, opts.stop_after_seconds, opts.stop_after_steps,
                      opts.profile_steps, opts.run.profile)


def run_training(opts: RunOptions, args) -> dict:
    """Train (or resume) one run. ``args`` is a ``transformers.TrainingArguments`` whose
    output_dir is ``opts.run.dir``. Returns the run summary also saved as run_info.json."""
    from transformers import default_data_collator

    plan = plan_run(opts, args)
    configure_torch()  # training threads before the autotune probe times anything
    check_resume_optimizer(opts.optimizer, plan.resume, plan.previous_info)
    speed: SpeedPlan = choose_speed(opts.speed(), args, plan.shape, plan.world,
                                    plan.previous_info if plan.resume is not None else {})
    settings = training_settings(opts, args)  # what was asked: the micro-batch may be fitted below
    fit_batch_to_memory(args, plan.shape, speed.kernels, opts.optimizer, opts.dropout, opts.batch_given,
                        opts.eval_batch_given, plan.world, plan.previous_info)
    check_time_budget(opts.time_budget, args, plan.shape, speed)
    start_fresh(opts, plan)
    data: TrainData = prepare_data(opts, plan.tokenizer, args.per_device_eval_batch_size, plan.world,
                                   args.torch_compile)
    # --- multi-process: the data position is the stream sampler's (any world size), not the
    # Trainer's per-rank batch skipping; threads from OMP_NUM_THREADS / affinity / quota
    seed = args.seed if args.data_seed is None else args.data_seed
    stream, position = data_stream(plan, data.train, opts.context_length, seed)
    args.ignore_data_skip = True
    kernels = speed.kernels
    model = make_model(opts, plan, kernels, args.seed)
    callbacks, stopper = make_callbacks(opts, args, plan, stream, position)
    trainer = build_trainer(model, args, train=data.train, eval_dataset=data.eval,
                            collator=default_data_collator, callbacks=callbacks, stream=stream,
                            speed=opts.speed(), time_budget=opts.time_budget,
                            processing_class=plan.tokenizer)
    # --- end multi-process
    outcome = train(trainer, plan.resume, stopper, position, opts.context_length)
    summary = run_summary(opts, args, plan, data, kernels, model, outcome, settings)
    summary["speed"] = speed.record()
    fit = next((c for c in callbacks if isinstance(c, BudgetFitCallback)), None)
    if fit is not None:
        summary["time_budget"] = fit.report()
    return finish(trainer, opts, plan, data, summary)
