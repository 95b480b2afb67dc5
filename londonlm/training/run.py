"""One pre-training run, top to bottom: plan -> decide -> data -> model -> Trainer -> record.

Single process or torchrun DDP/FSDP (CPU gloo groups included). The run's configuration tree
(:mod:`.job`) is built before this is called and never edited: each decision that needs a
measurement returns a new tree, and the ``TrainingArguments`` are generated from the final one.
Each line of :func:`run_training` is one step with its own module: :mod:`.plan` (every check
before work: tokenizer, resume, parent, shape, time lock), :mod:`.speed.choice` (precision,
kernels, compile, micro-batch, budget), :mod:`.data` (token cache, blocks, the stream),
:mod:`.length` (the step count and warm-up, once the data is counted), :mod:`.model`,
:mod:`.step.trainer` (the Trainer and the call that trains; the callbacks of
:mod:`.step.callbacks` around every step), :mod:`.record` (final/, best/, run_info.json).
Chat fine-tuning and the LR finder train through the same pieces (:mod:`.finetune`).
"""
from __future__ import annotations

import torch
from transformers import EarlyStoppingCallback, default_data_collator

from .currency import finished_earlier
from .data import Position, StreamSampler, TrainData, check_blocks_fit, prepare_data
from .dist import is_main_process, log
from .job import TrainingConfig, describe, training_arguments, training_settings
from .length import fit_length, refuse_length_behind
from .model import build_model, configure_torch, load_weights, prepare_for_training
from .plan import TrainingPlan, check_run_folder, plan_run, start_fresh
from .resume import RunRecord, check_schedule
from .record import ConfigFileCallback, SaveBestCallback, finish, recover_run_folder, run_summary, start_record
from .runlock import run_lock
from .speed.choice import check_time_budget, choose_speed, fit_batch_to_memory, refuse_step_past_memory, speed_callbacks
from .speed.settings import SpeedSettings
from .step.callbacks import LogFileCallback, step_callbacks
from .step.schedules import BudgetFitCallback
from .step.vocab_padding import real_rows
from .step.trainer import build_trainer, train


def run_training(config: TrainingConfig) -> dict:
    """Train (or resume) one run, or skip one that finished earlier as asked. Returns the run
    summary also saved as run_info.json."""
    _ = training_arguments(config).device  # joins the process group under torchrun: ranks agree from here
    check_run_folder(config)  # before the lock makes the folder (and any missing one above it)
    with run_lock(config.run):
        recover_run_folder(config.run)  # a move aside or a swap a kill cut short, before any reading
        earlier = finished_earlier(config)
        if earlier is not None:
            return earlier
        plan = plan_run(config)
        settings = training_settings(config)  # as asked, before the decisions below
        check_schedule(plan.resume, settings)
        refuse_length_behind(config.optim.max_steps, plan.resume.step)  # before start_fresh moves anything
        configure_torch()  # training threads before the speed probe times anything
        check_blocks_fit(config.run, config.data, config.model.context_length, plan.tokenizer)
        refuse_step_past_memory(config.sequences_per_step, config.model.context_length, 2, config.speed.grad_accum)
        config, speed = choose_speed(config, plan.shape, plan.world, plan.resume.speed)
        config = fit_batch_to_memory(config, plan.shape, speed, plan.world, plan.resume.micro_batch)
        config = check_time_budget(config, plan.shape, speed)
        start_fresh(config, plan)
        data = prepare_data(config.run, config.data, config.model.context_length, plan.tokenizer,
                            config.speed.eval_batch, plan.world, config.speed.torch_compile)
        context = config.model.context_length
        position = plan.resume.start(plan.tokens_per_step // context, len(data.train), context)
        config = fit_length(config, position, len(data.train), plan.resume.trained_warmup)
        args = training_arguments(config)  # the Trainer's, from the final tree; never changed
        log_config(config)
        return train_run(config, args, plan, speed, settings, data, position)


def train_run(config: TrainingConfig, args, plan: TrainingPlan, speed, settings: dict, data: TrainData,
              position: Position) -> dict:
    """The model, the Trainer and the call that trains over ``data`` from ``position``, then
    the record."""
    context = config.model.context_length
    seed = args.seed if args.data_seed is None else args.data_seed
    stream = StreamSampler(len(data.train), seed, position.start, position.samples_per_step)
    model = make_model(config, plan, speed.settings, args.seed)
    start = start_record(config, args, plan, data, speed.settings, settings)
    callbacks, stopper = step_callbacks(
        config.control, flops_per_token=plan.shape.flops_per_token(), tokens_per_step=plan.tokens_per_step,
        world=plan.world, position=position, stream=stream, tokens_per_sample=context,
        job=[RunRecord(start)] + run_callbacks(config) + speed_callbacks(speed))
    trainer = build_trainer(model, args, config, train=data.train, eval_dataset=data.eval,
                            collator=default_data_collator, callbacks=callbacks, stream=stream,
                            processing_class=plan.tokenizer)
    outcome = train(trainer, plan.resume.checkpoint, stopper, position, context)
    summary = run_summary(config, args, plan, data, model, outcome, start)
    summary["speed"] = speed.record()
    fit = next((c for c in callbacks if isinstance(c, BudgetFitCallback)), None)
    if fit is not None:
        summary["time_budget"] = fit.report()
    return finish(trainer, config, plan, data, summary)


def log_config(config: TrainingConfig) -> None:
    """The final tree in one line, rank 0 (saved whole as training_config.json once the run
    trains: :class:`.record.ConfigFileCallback`)."""
    if is_main_process():
        log(describe(config))


def make_model(config: TrainingConfig, plan: TrainingPlan, speed: SpeedSettings, seed: int):
    """The model the Trainer trains (it then loads a resumed checkpoint's weights itself):
    a resumed continued run's checkpoint, the ``--init_from`` parent, or a fresh one, each
    prepared for training."""
    tok = plan.tokenizer
    if plan.resumes_continued_run:
        model = load_weights(plan.resume.checkpoint, tok)
    elif plan.init is not None:
        rows = len(tok) if plan.init.tokenizer_problem else None
        model = load_weights(plan.init.path, tok, rows, seed)
        if rows:
            log(f"--resize_embeddings: {plan.init.tokenizer_problem}; embeddings resized to {rows} rows")
        log(f"init from {plan.init.path}: step 0, fresh optimizer and schedule (continued pre-training)")
    else:
        model = build_model(plan.shape, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id,
                            dropout=config.model.dropout, attn_implementation=speed.attn_implementation,
                            seed=seed)
    prepare_for_training(model, speed)
    log(f"precision: {speed.precision}, attention: {speed.attn_implementation}, fused LM-head loss: "
        f"{'on' if speed.fused_loss else 'off'}, vocabulary "
        + (f"padded to {model.get_input_embeddings().weight.shape[0]} rows while training (saved at "
           f"{model.config.vocab_size})" if real_rows(model) else "unpadded")
        + ("" if torch.cuda.is_available() else f", {torch.get_num_threads()} threads"))
    return model


def run_callbacks(config: TrainingConfig) -> list:
    """Pre-training's own callbacks beside every job's: training_config.json, the log file,
    --save_best, early stopping."""
    extra = [ConfigFileCallback(config)] if is_main_process() else []
    if config.output.log_file and is_main_process():
        extra.append(LogFileCallback(config.output.log_file))
    if config.control.save_best:
        extra.append(SaveBestCallback(config.run))
    if config.control.early_stopping_patience:
        extra.append(EarlyStoppingCallback(early_stopping_patience=config.control.early_stopping_patience))
    return extra
