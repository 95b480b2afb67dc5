"""Step 5 of a run, the record: the final evaluation, ``final/`` as a save_pretrained folder
with its tokenizer and generation_config.json, the best checkpoint, and ``run_info.json``
(written last, atomically: the training stage's sidecar)."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

from ..core import (BEST_INFO, RunLayout, checkpoint_name, checkpoint_step, hardware_summary, now_iso,
                    read_json, write_json_atomic)
from .base import log
from .data import TrainData, validation_bytes
from .init_from import tokenizer_fingerprint
from .loop import Outcome
from .model import Kernels
from .options import RunOptions
from .plan import TrainingPlan

TOKENIZER_EXTRAS = ("special_tokens_map.json", "vocab.json", "merges.txt")  # slow-tokenizer files


def _shape(opts: RunOptions, plan: TrainingPlan) -> dict:
    s = plan.shape
    return {"n_layer": s.n_layer, "n_head": s.n_head, "n_embd": s.n_embd,
            "context_length": opts.context_length, "vocab_size": len(plan.tokenizer),
            "embedding_rows": s.vocab_size}


def _throughput(plan: TrainingPlan, out: Outcome) -> dict:
    prev_wall = (plan.previous_info.get("total_train_wall_seconds")
                 or plan.previous_info.get("train_wall_seconds") or 0.0) if plan.resume else 0.0
    steps_now = out.state.global_step - (checkpoint_step(plan.resume) if plan.resume else 0)
    seen = out.tokens_seen if out.tokens_seen is not None else out.state.global_step * plan.tokens_per_step
    return {"tokens_seen": seen,
            "tokens_per_step": plan.tokens_per_step,
            "train_wall_seconds": round(out.wall_seconds, 1),
            "total_train_wall_seconds": round(out.wall_seconds + prev_wall, 1),
            "tokens_per_second": round(steps_now * plan.tokens_per_step / max(out.wall_seconds, 1e-9), 1)}


def _hyperparameters(args) -> dict:
    return {"learning_rate": args.learning_rate, "batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps, "seed": args.seed,
            "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
            "warmup_steps": args.warmup_steps}


def training_settings(opts: RunOptions, args) -> dict:
    """The settings that shape the trained model (JSON values), recorded in run_info.json so
    a later request with other settings (the pipeline's) is told apart from a current run."""
    return {"preset": opts.preset, "n_layer": opts.n_layer, "n_head": opts.n_head,
            "n_embd": opts.n_embd, "context_length": opts.context_length,
            "vocab_size": opts.vocab_size, "dropout": opts.dropout, "era_tokens": opts.era_tokens,
            "cutoff_year": opts.cutoff_year, "init_from": opts.init_from, "learning_rate": args.learning_rate,
            "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
            "lr_scheduler_kwargs": dict(args.lr_scheduler_kwargs or {}),
            "warmup_steps": args.warmup_steps,
            "max_steps": args.max_steps, "batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "weight_decay": args.weight_decay, "max_grad_norm": args.max_grad_norm,
            "adam_beta1": args.adam_beta1, "adam_beta2": args.adam_beta2,
            "adam_epsilon": args.adam_epsilon, "seed": args.seed, "data_seed": args.data_seed,
            # the fused AdamW is the same update, only faster: a GPU run and a CPU run agree
            "optim": str(getattr(args.optim, "value", args.optim)).replace("_fused", ""),
            "optimizer": opts.optimizer, "time_budget": opts.time_budget,
            # "auto": chosen for the machine (--autotune); the run records what it used
            "precision": opts.precision_given or "auto"}


def run_summary(opts: RunOptions, args, plan: TrainingPlan, data: TrainData, kernels: Kernels,
                model, out: Outcome, settings: dict | None = None) -> dict:
    """The run_info.json record: shape, size, steps, tokens, time, losses, hardware, data,
    hyperparameters (as trained), where it resumed from and its parent; ``settings``: those
    asked for (:func:`training_settings` before the micro-batch was fitted to the GPU)."""
    state, logs = out.state, out.state.log_history
    train_losses = [h["loss"] for h in logs if "loss" in h]
    splits = data.meta["splits"]
    return {
        "run_dir": str(opts.run.dir), "preset": opts.preset, "created": now_iso(),
        "run_name": args.run_name, "shape": _shape(opts, plan),
        "settings": settings or training_settings(opts, args),
        "parameters": sum(p.numel() for p in model.parameters()),
        "global_step": state.global_step, "max_steps": state.max_steps,
        **_throughput(plan, out),
        "final_train_loss": train_losses[-1] if train_losses else None,
        "train_loss_mean": out.train_loss_mean,
        "hardware": hardware_summary(), "world_size": plan.world,
        "precision": kernels.precision, "attn_implementation": kernels.attn,
        "fused_loss": kernels.fused_loss,
        "tokenizer_dir": str(opts.tokenizer_dir), "processed_dir": str(opts.processed_dir),
        "tokenizer_sha256": tokenizer_fingerprint(opts.tokenizer_dir),
        "cache": {"tokens_train": splits["train"]["tokens"],
                  "tokens_validation": splits["validation"]["tokens"],
                  "manifest_sha256": data.meta["manifest_sha256"], "era_tokens": data.era_tokens},
        "corpus_time": plan.corpus_time,
        "resumed_from": str(plan.resume) if plan.resume else None, "parent": plan.parent,
        "interrupted": out.interrupted,
        **_hyperparameters(args),
        "eval_blocks": len(data.eval),
        "validation_bytes": validation_bytes(opts.processed_dir),
        "best_eval_loss": state.best_metric, "best_step": state.best_global_step or None,
        "eval_curve": [[h["step"], h["eval_loss"]] for h in logs if "eval_loss" in h],
        "train_curve": [[h["step"], h["loss"]] for h in logs if "loss" in h],
    }


def final_metrics(trainer, summary: dict, data: TrainData) -> dict:
    """Validation loss, perplexity and bits per byte of the finished model."""
    loss = trainer.evaluate().get("eval_loss")
    out = {"final_eval_loss": loss,
           "final_eval_perplexity": math.exp(min(loss, 50)) if loss is not None else None}
    if loss is not None and summary["validation_bytes"]:
        # nats/token x tokens / bytes / ln 2; era tokens count as tokens: a close estimate
        out["final_eval_bpb"] = (loss * data.meta["splits"]["validation"]["tokens"]
                                 / (math.log(2) * summary["validation_bytes"]))
    return out


def generation_config(tokenizer):
    """generation_config.json of a saved model: the project's sampling defaults (the field
    defaults of :class:`~londonlm.generation.GenerationSettings`) and the tokenizer's ids."""
    from ..core import to_generation_config

    return to_generation_config(bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id)


def save_final(trainer, run: RunLayout, tokenizer, tok_dir: Path) -> Path:
    """``final/``: weights, tokenizer (fast and slow files) and generation_config.json, built
    in a temporary folder and moved into place (:func:`.finetune.save_model_folder`), so a
    crash never leaves a half final/. Every rank calls this (FSDP gathers collectively)."""
    from .finetune import save_model_folder

    def extras(tmp: Path) -> None:
        for f in TOKENIZER_EXTRAS:
            if (Path(tok_dir) / f).exists() and not (tmp / f).exists():
                shutil.copy2(Path(tok_dir) / f, tmp / f)
        generation_config(tokenizer).save_pretrained(str(tmp))

    save_model_folder(trainer, run.final, tokenizer, extras)
    if trainer.is_world_process_zero():
        log(f"final model saved to {run.final}")
    return run.final


def best_record(run: RunLayout) -> dict:
    """--save_best: which checkpoint best/ copies, from its best_info.json ({} when none)."""
    if not (run.best / BEST_INFO).exists():
        return {}
    info = read_json(run.best / BEST_INFO)
    log(f"best model (validation loss {info.get('eval_loss'):.4f} at step {info.get('step')}) "
        f"in {run.best}")
    return {"best_checkpoint": info.get("checkpoint"), "best_eval_loss": info.get("eval_loss"),
            "best_step": info.get("step")}


def finish(trainer, opts: RunOptions, plan: TrainingPlan, data: TrainData, summary: dict) -> dict:
    """Evaluate and save final/ (a finished run) or say how to resume (a stopped one); record
    the best checkpoint; write run_info.json last."""
    zero = trainer.is_world_process_zero()
    if summary["interrupted"]:
        step = summary["global_step"]
        log(f"stopped early ({summary['interrupted']}) at step {step}; checkpoint saved. "
            f"Resume with: ./resume_training.sh {checkpoint_name(step)}")
    else:
        summary.update(final_metrics(trainer, summary, data))
        save_final(trainer, opts.run, plan.tokenizer, opts.tokenizer_dir)
    if opts.save_best:
        summary.update(best_record(opts.run))
    if zero:
        write_json_atomic(opts.run.run_info, summary)
    return summary
