"""Training with the Hugging Face ``Trainer``: one implementation behind every training
script (GPT-2 Small, Medium, tiny, micro), single process or torchrun DDP/FSDP."""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .artifacts import now_iso, sha256_file, write_json_atomic
from .checkpoints import checkpoint_problem, list_checkpoints, latest_valid_checkpoint
from .modeling import ModelShape, build_model, padded_vocab

logger = logging.getLogger("londonlm.training")


class TrainingError(RuntimeError):
    """A training set-up problem the user can fix; the message says how."""


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def log(msg: str) -> None:
    if is_main_process():
        print(msg, flush=True)


@dataclass
class RunOptions:
    run_dir: Path
    tokenizer_dir: Path
    processed_dir: Path
    preset: str
    n_layer: int
    n_head: int
    n_embd: int
    context_length: int
    vocab_size: int | None = None
    dropout: float = 0.0
    cache_mode: str = "auto"
    verify_cache: bool = False
    era_tokens: bool | None = None
    eval_max_batches: int = 0
    fresh: bool = False
    save_best: bool = False
    early_stopping_patience: int = 0
    max_seconds: float = 0.0
    stop_after_steps: int = 0
    init_from: str | None = None
    resize_embeddings: bool = False
    attn_implementation: str = "sdpa"
    min_lr_ratio: float = 0.1
    log_file: Path | None = None
    progress: bool = True


def move_run_aside(run_dir: Path) -> Path | None:
    """--fresh: move checkpoints, final/, best/ and run_info.json to a dated sibling folder
    (the token cache stays: it does not depend on the run)."""
    movable = [p for p in run_dir.iterdir() if p.name in ("final", "best", "run_info.json", "runs")
               or p.name.startswith("checkpoint-")] if run_dir.is_dir() else []
    if not movable:
        return None
    dest = run_dir.parent / f"{run_dir.name}.previous-{time.strftime('%Y%m%d-%H%M%S')}"
    dest.mkdir(parents=True)
    for p in movable:
        shutil.move(str(p), str(dest / p.name))
    return dest


def resolve_resume(run_dir: Path, spec: str | None, fresh: bool) -> Path | None:
    """The checkpoint to resume from, never silently nothing when one was asked for.

    spec None: latest valid checkpoint (invalid ones are named and skipped), or a fresh
    start when the run has none. spec 'checkpoint-N' / a path: that one, or an error
    listing the available ones."""
    if fresh:
        if spec:
            raise TrainingError("--fresh and --resume_from_checkpoint contradict each other")
        return None
    if spec in (None, "", "auto"):
        ck = latest_valid_checkpoint(run_dir, warn=log)
        if ck is not None:
            log(f"resuming from {ck} (latest valid checkpoint; use --fresh to start over)")
        return ck
    cands = [Path(spec).expanduser(), run_dir / spec]
    if spec == "latest":
        ck = latest_valid_checkpoint(run_dir, warn=log)
        cands = [ck] if ck else []
    for c in cands:
        if c and c.is_dir():
            problem = checkpoint_problem(c)
            if problem:
                raise TrainingError(f"checkpoint {c} cannot be resumed: {problem}. Pick another "
                                    f"(`python 04_training/test_checkpoint.py --list-checkpoints`)")
            return c
    avail = [f"{p.name}{'' if checkpoint_problem(p) is None else ' (invalid)'}"
             for p in list_checkpoints(run_dir)]
    raise TrainingError(f"checkpoint {spec!r} not found in {run_dir}; available: "
                        f"{', '.join(avail) or 'none'}. Use --fresh to start a new run.")


def _check_init_weights(model, tokenizer, source: str, resize: bool):
    if model.config.vocab_size < len(tokenizer):
        if not resize:
            raise TrainingError(
                f"--init_from {source}: its vocabulary ({model.config.vocab_size}) is smaller than "
                f"the tokenizer's ({len(tokenizer)}); use the parent's tokenizer or pass "
                f"--resize_embeddings")
        model.resize_token_embeddings(padded_vocab(len(tokenizer)))
    ids = {k: getattr(model.config, k) for k in ("bos_token_id", "eos_token_id")}
    if ids["eos_token_id"] is not None and ids["eos_token_id"] != tokenizer.eos_token_id and not resize:
        raise TrainingError(f"--init_from {source}: its eos id {ids['eos_token_id']} differs from the "
                            f"tokenizer's {tokenizer.eos_token_id}; the tokenizers differ")


def _tokenizer_fingerprint(tokenizer_dir: Path) -> str:
    return sha256_file(tokenizer_dir / "tokenizer.json")


def run_training(opts: RunOptions, args) -> dict:
    """Train (or resume) one run. ``args`` is a ``transformers.TrainingArguments`` whose
    output_dir is ``opts.run_dir``. Returns the run summary also saved as run_info.json."""
    import torch
    from transformers import (AutoModelForCausalLM, AutoTokenizer, EarlyStoppingCallback,
                              GenerationConfig, Trainer, default_data_collator)

    from .callbacks import (EvalLossOnlyCallback, LogFileCallback, StopAndSaveCallback,
                            ThroughputCallback)
    from .data import PackedBlocks
    from .hardware import device_name, hardware_summary, peak_flops, physical_cores
    from .token_cache import ensure_cache
    from .tokenizer import era_tokens_of

    run_dir = Path(opts.run_dir)
    tok_dir = Path(opts.tokenizer_dir)
    if not (tok_dir / "tokenizer.json").exists():
        raise TrainingError(f"no tokenizer at {tok_dir}: run "
                            f"`python 03_tokenizer/train_historical_tokenizer.py` first")
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    if opts.vocab_size and opts.vocab_size != len(tokenizer):
        raise TrainingError(f"--vocab_size {opts.vocab_size} differs from the tokenizer's "
                            f"{len(tokenizer)}; retrain the tokenizer with --vocab_size "
                            f"{opts.vocab_size} or drop the flag")
    shape = ModelShape(opts.n_layer, opts.n_head, opts.n_embd, opts.context_length,
                       padded_vocab(len(tokenizer)))
    try:
        shape.validate()
    except ValueError as e:
        raise TrainingError(str(e)) from None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    tokens_per_step = (args.per_device_train_batch_size * args.gradient_accumulation_steps
                       * world * shape.n_positions)
    log(f"model: {opts.n_layer} layers x {opts.n_embd} wide, {opts.n_head} heads, context "
        f"{opts.context_length}, vocab {len(tokenizer)} (padded to {shape.vocab_size}): "
        f"{shape.n_params / 1e6:.2f}M parameters, ~{shape.memory_estimate_gb(args.per_device_train_batch_size):.2f} GB "
        f"to train at batch {args.per_device_train_batch_size}")

    # Resume decision before any data work: a bad name fails in a second, not after caching.
    if opts.fresh and is_main_process():
        moved = move_run_aside(run_dir)
        if moved:
            log(f"--fresh: previous run moved to {moved}")
    resume = resolve_resume(run_dir, args.resume_from_checkpoint, opts.fresh)
    if resume is not None and opts.init_from:
        raise TrainingError(f"--init_from starts a new run but {run_dir} already has checkpoints "
                            f"({resume.name}); pass --fresh or a new --run_name")

    era = opts.era_tokens if opts.era_tokens is not None else bool(era_tokens_of(tokenizer))
    cache_dir = run_dir / "pretokenized_data"
    meta = ensure_cache(cache_dir, tok_dir, Path(opts.processed_dir), opts.context_length, era,
                        mode=opts.cache_mode, progress=opts.progress and is_main_process(),
                        verify_full=opts.verify_cache, log=log)
    train_ds = PackedBlocks.from_cache(cache_dir, "train", opts.context_length)
    eval_ds = PackedBlocks.from_cache(cache_dir, "validation", opts.context_length)
    if len(train_ds) == 0:
        raise TrainingError(f"the training split has {meta['splits']['train']['tokens']} tokens, "
                            f"fewer than one block of {opts.context_length}; add text or lower "
                            f"--max_length")
    if len(eval_ds) == 0:
        raise TrainingError(f"the validation split has {meta['splits']['validation']['tokens']} "
                            f"tokens, fewer than one block of {opts.context_length}; add text or "
                            f"lower --max_length")
    if opts.eval_max_batches:
        eval_ds = eval_ds.subset_evenly(opts.eval_max_batches * args.per_device_eval_batch_size)
    log(f"data: {len(train_ds):,} train blocks, {len(eval_ds):,} validation blocks of "
        f"{opts.context_length} tokens (era tokens: {'on' if era else 'off'})")

    if not torch.cuda.is_available():
        torch.set_num_threads(physical_cores())
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    parent = None
    if opts.init_from:
        from .checkpoints import resolve_model_path

        src = resolve_model_path(opts.init_from, run_dir.parent / opts.init_from
                                 if "/" not in opts.init_from else None, run_dir.parent)
        model = AutoModelForCausalLM.from_pretrained(str(src))
        _check_init_weights(model, tokenizer, str(src), opts.resize_embeddings)
        if model.config.n_positions < opts.context_length:
            raise TrainingError(f"--init_from {src}: its context ({model.config.n_positions}) is "
                                f"shorter than --max_length {opts.context_length}")
        parent = {"path": str(src.resolve()), "init_from": opts.init_from,
                  "config_sha256": sha256_file(src / "config.json")}
        log(f"init from {src}: fresh optimizer and schedule (continued pre-training)")
    else:
        model = build_model(shape, tokenizer.bos_token_id, tokenizer.eos_token_id,
                            tokenizer.pad_token_id, dropout=opts.dropout,
                            attn_implementation=opts.attn_implementation, seed=args.seed)

    callbacks = [ThroughputCallback(tokens_per_step, shape.flops_per_token(),
                                    peak_flops(device_name()), world),
                 EvalLossOnlyCallback()]
    stopper = StopAndSaveCallback(opts.max_seconds, opts.stop_after_steps)
    callbacks.append(stopper)
    if opts.log_file and is_main_process():
        callbacks.append(LogFileCallback(opts.log_file))
    if opts.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=opts.early_stopping_patience))

    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      data_collator=default_data_collator, processing_class=tokenizer,
                      callbacks=callbacks)
    t0 = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except torch.cuda.OutOfMemoryError as e:  # pragma: no cover - GPU only
        raise TrainingError(
            f"CUDA out of memory at batch size {args.per_device_train_batch_size}: lower "
            f"--batch_size and raise --gradient_accumulation_steps to keep the same tokens per "
            f"step, or add --gradient_checkpointing ({e})") from None
    wall = time.time() - t0
    state = trainer.state
    interrupted = stopper.reason is not None and state.global_step < state.max_steps

    logs = state.log_history
    train_losses = [h["loss"] for h in logs if "loss" in h]
    summary = {
        "run_dir": str(run_dir), "preset": opts.preset, "created": now_iso(),
        "shape": {"n_layer": opts.n_layer, "n_head": opts.n_head, "n_embd": opts.n_embd,
                  "context_length": opts.context_length, "vocab_size": len(tokenizer),
                  "embedding_rows": shape.vocab_size},
        "parameters": sum(p.numel() for p in model.parameters()),
        "global_step": state.global_step, "max_steps": state.max_steps,
        "tokens_seen": state.global_step * tokens_per_step, "tokens_per_step": tokens_per_step,
        "train_wall_seconds": round(wall, 1),
        "tokens_per_second": round((state.global_step - (int(resume.name.split('-')[1]) if resume else 0))
                                   * tokens_per_step / max(wall, 1e-9), 1),
        "final_train_loss": train_losses[-1] if train_losses else None,
        "train_loss_mean": result.training_loss,
        "hardware": hardware_summary(), "world_size": world,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "tokenizer_dir": str(tok_dir), "tokenizer_sha256": _tokenizer_fingerprint(tok_dir),
        "cache": {"tokens_train": meta["splits"]["train"]["tokens"],
                  "tokens_validation": meta["splits"]["validation"]["tokens"],
                  "manifest_sha256": meta["manifest_sha256"], "era_tokens": era},
        "resumed_from": str(resume) if resume else None, "parent": parent,
        "interrupted": stopper.reason if interrupted else None,
        "learning_rate": args.learning_rate, "batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps, "seed": args.seed,
    }
    if interrupted:
        log(f"stopped early ({stopper.reason}) at step {state.global_step}; checkpoint saved. "
            f"Resume with: ./resume_training.sh checkpoint-{state.global_step}")
    else:
        ev = trainer.evaluate()
        summary["final_eval_loss"] = ev.get("eval_loss")
        summary["final_eval_perplexity"] = math.exp(min(ev["eval_loss"], 50)) if "eval_loss" in ev else None
        if trainer.is_world_process_zero():
            final = run_dir / "final"
            tmp = run_dir / ".final.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            trainer.save_model(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            for f in ("special_tokens_map.json", "vocab.json", "merges.txt"):
                if (tok_dir / f).exists() and not (tmp / f).exists():
                    shutil.copy2(tok_dir / f, tmp / f)
            GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, do_sample=True, temperature=0.8,
                             top_p=0.95, top_k=50, repetition_penalty=1.1,
                             max_new_tokens=100).save_pretrained(str(tmp))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            if opts.save_best and state.best_model_checkpoint:
                best_src = Path(state.best_model_checkpoint)
                if best_src.is_dir():
                    best = run_dir / "best"
                    shutil.rmtree(best, ignore_errors=True)
                    shutil.copytree(best_src, best, ignore=shutil.ignore_patterns(
                        "optimizer.pt", "scheduler.pt", "rng_state*.pth"))
                    summary["best_checkpoint"] = best_src.name
                    summary["best_eval_loss"] = state.best_metric
            log(f"final model saved to {final}")
    if trainer.is_world_process_zero():
        write_json_atomic(run_dir / "run_info.json", summary)
    return summary
