"""One pre-training run, top to bottom: plan -> speed -> data -> model -> Trainer -> record.

Single process or torchrun DDP/FSDP (CPU gloo groups included). Each line of
:func:`run_training` is one step with its own module: :mod:`.plan` (tokenizer, resume, parent,
shape, time lock), :mod:`.speed.choice` (precision, kernels, compile, micro-batch, budget),
:mod:`.data` (token cache, blocks, the stream), :mod:`.model`, :mod:`.step.trainer` (the Trainer
and the call that trains; :mod:`.step.callbacks` runs around every step), :mod:`.record`
(final/, best/, run_info.json). Chat fine-tuning trains through the same pieces (:mod:`.finetune`).
"""
from __future__ import annotations

import torch
from transformers import EarlyStoppingCallback, default_data_collator

from .data import StreamSampler, prepare_data
from .dist import is_main_process, log
from .model import apply_speed, build_model, configure_torch, load_weights, padded_vocab
from .options import RunOptions
from .plan import TrainingPlan, plan_run, start_fresh
from .record import SaveBestCallback, finish, run_summary, training_settings
from .resume import check_optimizer
from .speed.choice import check_time_budget, choose_speed, fit_batch_to_memory
from .speed.settings import SpeedSettings
from .step.callbacks import LogFileCallback, common_callbacks
from .step.schedules import BudgetFitCallback
from .step.trainer import build_trainer, train


def run_training(opts: RunOptions, args) -> dict:
    """Train (or resume) one run. ``args`` is a ``transformers.TrainingArguments`` whose
    output_dir is ``opts.run.dir``. Returns the run summary also saved as run_info.json."""
    plan = plan_run(opts, args)
    configure_torch()  # training threads before the speed probe times anything
    check_optimizer(plan.resume, opts.speed.optimizer)
    speed = choose_speed(opts.speed, args, plan.shape, plan.world, plan.resume.speed)
    settings = training_settings(opts, args)  # as asked: the micro-batch may be fitted next
    fit_batch_to_memory(args, plan.shape, speed, opts.speed, opts.dropout, plan.world, plan.resume.micro_batch)
    check_time_budget(opts.control.time_budget, args, plan.shape, speed)
    start_fresh(opts, plan)
    data = prepare_data(opts.run, opts.data, opts.context_length, plan.tokenizer,
                        args.per_device_eval_batch_size, plan.world, args.torch_compile)
    # the data position is the stream's (any world size), not the Trainer's per-rank batch skipping
    position = plan.resume.start(plan.tokens_per_step // opts.context_length, len(data.train),
                                 opts.context_length)
    seed = args.seed if args.data_seed is None else args.data_seed
    stream = StreamSampler(len(data.train), seed, position.start, position.samples_per_step)
    args.ignore_data_skip = True
    model = make_model(opts, plan, speed.settings, args.seed)
    callbacks, stopper = common_callbacks(
        args, flops_per_token=plan.shape.flops_per_token(), tokens_per_step=plan.tokens_per_step,
        world=plan.world, position=position, stream=stream, tokens_per_sample=opts.context_length,
        control=opts.control, extra=run_callbacks(opts))
    trainer = build_trainer(model, args, train=data.train, eval_dataset=data.eval,
                            collator=default_data_collator, callbacks=callbacks, stream=stream,
                            optimizer=opts.speed.optimizer, time_budget=opts.control.time_budget,
                            processing_class=plan.tokenizer)
    outcome = train(trainer, plan.resume.checkpoint, stopper, position, opts.context_length)
    summary = run_summary(opts, args, plan, data, speed.settings, model, outcome, settings)
    summary["speed"] = speed.record()
    fit = next((c for c in callbacks if isinstance(c, BudgetFitCallback)), None)
    if fit is not None:
        summary["time_budget"] = fit.report()
    return finish(trainer, opts, plan, data, summary)


def make_model(opts: RunOptions, plan: TrainingPlan, speed: SpeedSettings, seed: int):
    """The model the Trainer trains (it then loads a resumed checkpoint's weights itself):
    a resumed continued run's checkpoint, the ``--init_from`` parent, or a fresh one."""
    tok = plan.tokenizer
    if plan.resumes_continued_run:
        model = load_weights(plan.resume.checkpoint, tok)
    elif plan.init is not None:
        rows = padded_vocab(len(tok)) if plan.init.tokenizer_problem else None
        model = load_weights(plan.init.path, tok, rows)
        if rows:
            log(f"--resize_embeddings: {plan.init.tokenizer_problem}; embeddings resized to {rows} rows")
        log(f"init from {plan.init.path}: step 0, fresh optimizer and schedule (continued pre-training)")
    else:
        model = build_model(plan.shape, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id,
                            dropout=opts.dropout, attn_implementation=speed.attn_implementation, seed=seed)
    apply_speed(model, speed)
    log(f"precision: {speed.precision}, attention: {speed.attn_implementation}, fused LM-head loss: "
        f"{'on' if speed.fused_loss else 'off'}"
        + ("" if torch.cuda.is_available() else f", {torch.get_num_threads()} threads"))
    return model


def run_callbacks(opts: RunOptions) -> list:
    """Pre-training's own callbacks beside every job's: the log file, --save_best, early stopping."""
    extra = []
    if opts.log_file and is_main_process():
        extra.append(LogFileCallback(opts.log_file))
    if opts.save_best:
        extra.append(SaveBestCallback(opts.run))
    if opts.early_stopping_patience:
        extra.append(EarlyStoppingCallback(early_stopping_patience=opts.early_stopping_patience))
    return extra
