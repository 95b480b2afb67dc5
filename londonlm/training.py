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
from .checkpoints import BEST_INFO, checkpoint_problem, list_checkpoints, latest_valid_checkpoint
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
    shape_overrides: dict | None = None  # shape flags given on the command line
    attn_implementation: str = "auto"   # auto: eager on CPU in bf16, sdpa otherwise
    fused_loss: str = "auto"            # auto: on for CPU training in bf16
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


def _tokenizer_identity(folder: Path) -> dict | None:
    """What decides token ids: BPE vocabulary, merges and (when known) added tokens, from
    ``tokenizer.json`` or a slow tokenizer's ``vocab.json`` + ``merges.txt``; padding or
    truncation settings do not count. None when the folder holds no tokenizer."""
    folder = Path(folder)
    if (folder / "tokenizer.json").exists():
        d = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        model = d.get("model") or {}
        return {"vocab": model.get("vocab"),
                "merges": [" ".join(m) if isinstance(m, list) else m for m in model.get("merges") or []],
                "added": sorted((t["id"], t["content"]) for t in d.get("added_tokens") or [])}
    if (folder / "vocab.json").exists():
        merges = []
        if (folder / "merges.txt").exists():
            merges = [ln for ln in (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
                      if ln and not ln.startswith("#version")]
        return {"vocab": json.loads((folder / "vocab.json").read_text(encoding="utf-8")),
                "merges": merges, "added": None}
    return None


def _same_tokenizer(a: dict, b: dict) -> bool:
    return (a["vocab"] == b["vocab"] and a["merges"] == b["merges"]
            and (a["added"] is None or b["added"] is None or a["added"] == b["added"]))


def _parent_run_info(src: Path) -> dict | None:
    for f in (src / "run_info.json", src.parent / "run_info.json"):
        if f.exists():
            try:
                return json.loads(f.read_text())
            except ValueError:
                return None
    return None


@dataclass
class InitSource:
    """The weights a continued pre-training run starts from (resolved before any data work)."""
    path: Path
    spec: str
    config: object
    tokenizer_problem: str | None
    note: str | None


def resolve_init_source(spec: str, run_dir: Path, tokenizer, tok_dir: Path,
                        context_length: int) -> InitSource:
    """``--init_from``: a model folder path, ``RUN`` / ``RUN/final|best|latest|checkpoint-N``
    under the runs folder, or ``final``/``best``/``checkpoint-N`` of this run. Checks the
    weights are complete, the context fits, and whether the tokenizer matches."""
    from transformers import AutoConfig

    from .checkpoints import list_checkpoints, resolve_model_path

    runs_root = run_dir.parent
    try:
        if not Path(spec).expanduser().exists() and "/" not in spec and (run_dir / spec).is_dir():
            src = resolve_model_path(spec, run_dir)
        else:
            src = resolve_model_path(spec, None, runs_root)
    except FileNotFoundError as e:
        runs = sorted(p.name for p in runs_root.iterdir() if p.is_dir() and
                      ((p / "final").is_dir() or list_checkpoints(p))) if runs_root.is_dir() else []
        raise TrainingError(f"--init_from {spec!r}: {e}. Give a model folder, a run name, or "
                            f"RUN/final|best|latest|checkpoint-N; runs with weights: "
                            f"{', '.join(runs) or 'none'}") from None
    problem = checkpoint_problem(src, need_training_state=False)
    if problem:
        raise TrainingError(f"--init_from {src}: cannot load weights: {problem}")
    cfg = AutoConfig.from_pretrained(str(src))
    if getattr(cfg, "n_positions", context_length) < context_length:
        raise TrainingError(f"--init_from {src}: its context ({cfg.n_positions}) is shorter than "
                            f"--max_length {context_length}; lower --max_length to at most "
                            f"{cfg.n_positions}")
    mine = _tokenizer_identity(tok_dir)
    theirs = _tokenizer_identity(src)
    tok_problem = note = None
    info = _parent_run_info(src)
    if theirs is None:
        if info and info.get("tokenizer_sha256") and info["tokenizer_sha256"] != _tokenizer_fingerprint(tok_dir):
            tok_problem = (f"it was trained with tokenizer {info.get('tokenizer_dir')} "
                           f"(sha256 {info['tokenizer_sha256'][:12]}), not {tok_dir}")
        elif not info:
            note = "no tokenizer saved with the weights: only the vocabulary size was checked"
    elif mine is None or not _same_tokenizer(theirs, mine):
        n_theirs = len(theirs["vocab"] or {}) + len(theirs["added"] or [])
        tok_problem = (f"its tokenizer (saved with the weights, ~{n_theirs} entries) differs from "
                       f"{tok_dir} ({len(tokenizer)} tokens): token ids would not mean the same")
    if tok_problem is None and cfg.vocab_size < len(tokenizer):
        tok_problem = (f"its vocabulary ({cfg.vocab_size}) is smaller than the tokenizer's "
                       f"({len(tokenizer)})")
    eos = getattr(cfg, "eos_token_id", None)
    if tok_problem is None and eos is not None and eos != tokenizer.eos_token_id:
        tok_problem = f"its eos id {eos} differs from the tokenizer's {tokenizer.eos_token_id}"
    if tok_problem:
        if theirs is not None:
            tok_problem += f"; to keep it, pass --tokenizer_dir {src}"
        elif info and info.get("tokenizer_dir"):
            tok_problem += f"; to keep it, pass --tokenizer_dir {info['tokenizer_dir']}"
    return InitSource(src, spec, cfg, tok_problem, note)


def _tokenizer_fingerprint(tokenizer_dir: Path) -> str:
    return sha256_file(tokenizer_dir / "tokenizer.json")


def _gb(x: float) -> str:
    return f"{x:.2f} GB" if x >= 1 else f"{x * 1000:.0f} MB"


def _validation_bytes(processed_dir: Path) -> int | None:
    """UTF-8 bytes of the validation split (file sizes from the manifest), for bits per byte."""
    try:
        from .corpus import read_manifest

        return sum((processed_dir / r["path"]).stat().st_size for r in read_manifest(processed_dir)
                   if r.get("split") == "validation")
    except Exception:  # the estimate is optional
        return None


def run_training(opts: RunOptions, args) -> dict:
    """Train (or resume) one run. ``args`` is a ``transformers.TrainingArguments`` whose
    output_dir is ``opts.run_dir``. Returns the run summary also saved as run_info.json."""
    import torch
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, EarlyStoppingCallback,
                              GenerationConfig, Trainer, default_data_collator)

    from .callbacks import (EvalLossOnlyCallback, LogFileCallback, SaveBestCallback,
                            StopAndSaveCallback, ThroughputCallback)
    from .data import PackedBlocks
    from .hardware import (device_name, hardware_summary, keep_freed_memory_in_heap, peak_flops,
                           physical_cores)
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
    # Everything that can be wrong with the shape or the parent weights fails here, in
    # seconds, before the token cache is built or read.
    init = None
    n_layer, n_head, n_embd = opts.n_layer, opts.n_head, opts.n_embd
    vocab_rows = padded_vocab(len(tokenizer))
    # Resume decision first (it only reads): a bad name fails in a second, not after caching.
    if opts.fresh:
        resolve_resume(run_dir, args.resume_from_checkpoint, True)  # --fresh + a name: refused
    resume = None if opts.fresh else resolve_resume(run_dir, args.resume_from_checkpoint, False)
    resumed_parent = None  # resuming a continued pre-training run: its shape is the checkpoint's
    if resume is not None and (run_dir / "run_info.json").exists():
        try:
            resumed_parent = json.loads((run_dir / "run_info.json").read_text()).get("parent")
        except ValueError:
            pass
    if opts.init_from:
        init = resolve_init_source(opts.init_from, run_dir, tokenizer, tok_dir, opts.context_length)
        if resume is not None:
            if not resumed_parent or Path(resumed_parent.get("path", "")) != init.path.resolve():
                raise TrainingError(
                    f"--init_from starts a new run but {run_dir} already has checkpoints "
                    f"({resume.name})" + (f" of a run continued from {resumed_parent['path']}"
                                          if resumed_parent else "")
                    + "; pass --fresh or a new --run_name")
            log(f"resuming the run continued from {init.path}; its weights are in {resume.name}")
            init = None
    if resumed_parent:
        cfg = AutoConfig.from_pretrained(str(resume))
        n_layer, n_head, n_embd, vocab_rows = cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size
    if init is not None:
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
        n_layer, n_head, n_embd = cfg.n_layer, cfg.n_head, cfg.n_embd
        if not (init.tokenizer_problem and opts.resize_embeddings):
            vocab_rows = cfg.vocab_size
    shape = ModelShape(n_layer, n_head, n_embd, opts.context_length, vocab_rows)
    try:
        shape.validate()
    except ValueError as e:
        raise TrainingError(str(e)) from None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    tokens_per_step = (args.per_device_train_batch_size * args.gradient_accumulation_steps
                       * world * shape.n_positions)
    log(f"model: {n_layer} layers x {n_embd} wide, {n_head} heads, context "
        f"{opts.context_length}, vocab {len(tokenizer)} (embedding rows {shape.vocab_size}): "
        f"{shape.n_params / 1e6:.2f}M parameters, ~{_gb(shape.memory_estimate_gb(args.per_device_train_batch_size))} "
        f"to train at batch {args.per_device_train_batch_size}"
        + (f"; weights from {init.path}" if init else ""))
    if init and init.note:
        log(f"warning: --init_from {init.path}: {init.note}")

    if opts.fresh and is_main_process():
        moved = move_run_aside(run_dir)
        if moved:
            log(f"--fresh: previous run moved to {moved}")
            if init is not None:
                try:  # the parent was inside the run just moved aside: follow it
                    rel = init.path.resolve().relative_to(run_dir.resolve())
                    if (moved / rel).exists():
                        init.path = moved / rel
                except ValueError:
                    pass

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

    cuda = torch.cuda.is_available()
    # Measured on 2 CPU cores in bf16 (BENCHMARKS.md): the matmul-based eager attention beats
    # PyTorch's CPU flash kernel at these context lengths; on GPUs sdpa/flash is the fast one.
    attn = opts.attn_implementation
    if attn == "auto":
        attn = "eager" if (not cuda and args.bf16) else "sdpa"
    # the fused loss measured ~15% faster in CPU bf16 on a Zen 4 EPYC, even on a Zen 5 one (with
    # lower peak memory), and no faster in CPU fp32: auto = CPU bf16 only (BENCHMARKS.md)
    fused = opts.fused_loss == "on" or (opts.fused_loss == "auto" and not cuda and args.bf16)
    if not cuda:
        torch.set_num_threads(physical_cores())
        keep_freed_memory_in_heap()
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    parent = None
    if resumed_parent:
        parent = resumed_parent
        model = AutoModelForCausalLM.from_pretrained(str(resume))
    elif init is not None:
        src = init.path
        model = AutoModelForCausalLM.from_pretrained(str(src))
        resized = False
        if init.tokenizer_problem:  # only reached with --resize_embeddings
            model.resize_token_embeddings(padded_vocab(len(tokenizer)))
            resized = True
            log(f"--resize_embeddings: {init.tokenizer_problem}; embeddings resized to "
                f"{padded_vocab(len(tokenizer))} rows")
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(model.config, k, getattr(tokenizer, k))
        pinfo = _parent_run_info(src) or {}
        st = src / "trainer_state.json"
        parent_step = (json.loads(st.read_text()).get("global_step") if st.exists()
                       else pinfo.get("global_step"))
        parent = {"path": str(src.resolve()), "init_from": opts.init_from,
                  "config_sha256": sha256_file(src / "config.json"),
                  "step": parent_step, "run_dir": pinfo.get("run_dir"),
                  "run_name": pinfo.get("run_name"), "preset": pinfo.get("preset"),
                  "tokens_seen": pinfo.get("tokens_seen"),
                  "tokenizer_sha256": pinfo.get("tokenizer_sha256"),
                  "tokenizer": "resized" if resized else "same",
                  "resized_embeddings": resized}
        log(f"init from {src}: step 0, fresh optimizer and schedule (continued pre-training)")
    else:
        model = build_model(shape, tokenizer.bos_token_id, tokenizer.eos_token_id,
                            tokenizer.pad_token_id, dropout=opts.dropout,
                            attn_implementation=attn, seed=args.seed)
    if resumed_parent or init is not None:
        model.set_attn_implementation(attn)
    if fused:
        from .fused_loss import enable_fused_loss

        enable_fused_loss(model)
    log(f"precision: {'bf16' if args.bf16 else 'fp16' if args.fp16 else 'fp32'}, attention: {attn}, "
        f"fused LM-head loss: {'on' if fused else 'off'}"
        + ("" if cuda else f", {torch.get_num_threads()} threads"))

    callbacks = [ThroughputCallback(tokens_per_step, shape.flops_per_token(),
                                    peak_flops(device_name()), world),
                 EvalLossOnlyCallback()]
    stopper = StopAndSaveCallback(opts.max_seconds, opts.stop_after_steps)
    callbacks.append(stopper)
    if opts.log_file and is_main_process():
        callbacks.append(LogFileCallback(opts.log_file))
    if opts.save_best:
        callbacks.append(SaveBestCallback(run_dir))
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
    prev_wall = 0.0
    if resume is not None and (run_dir / "run_info.json").exists():
        try:
            prev = json.loads((run_dir / "run_info.json").read_text())
            prev_wall = prev.get("total_train_wall_seconds") or prev.get("train_wall_seconds") or 0.0
        except ValueError:
            pass
    state = trainer.state
    interrupted = stopper.reason is not None and state.global_step < state.max_steps

    logs = state.log_history
    train_losses = [h["loss"] for h in logs if "loss" in h]
    summary = {
        "run_dir": str(run_dir), "preset": opts.preset, "created": now_iso(),
        "run_name": args.run_name,
        "shape": {"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd,
                  "context_length": opts.context_length, "vocab_size": len(tokenizer),
                  "embedding_rows": shape.vocab_size},
        "parameters": sum(p.numel() for p in model.parameters()),
        "global_step": state.global_step, "max_steps": state.max_steps,
        "tokens_seen": state.global_step * tokens_per_step, "tokens_per_step": tokens_per_step,
        "train_wall_seconds": round(wall, 1),
        "total_train_wall_seconds": round(wall + (prev_wall if resume else 0.0), 1),
        "tokens_per_second": round((state.global_step - (int(resume.name.split('-')[1]) if resume else 0))
                                   * tokens_per_step / max(wall, 1e-9), 1),
        "final_train_loss": train_losses[-1] if train_losses else None,
        "train_loss_mean": result.training_loss,
        "hardware": hardware_summary(), "world_size": world,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "attn_implementation": attn, "fused_loss": fused,
        "tokenizer_dir": str(tok_dir), "tokenizer_sha256": _tokenizer_fingerprint(tok_dir),
        "cache": {"tokens_train": meta["splits"]["train"]["tokens"],
                  "tokens_validation": meta["splits"]["validation"]["tokens"],
                  "manifest_sha256": meta["manifest_sha256"], "era_tokens": era},
        "resumed_from": str(resume) if resume else None, "parent": parent,
        "interrupted": stopper.reason if interrupted else None,
        "learning_rate": args.learning_rate, "batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps, "seed": args.seed,
        "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup_steps": args.warmup_steps,
        "eval_blocks": len(eval_ds),
        "validation_bytes": _validation_bytes(Path(opts.processed_dir)),
        "best_eval_loss": state.best_metric, "best_step": state.best_global_step or None,
        "eval_curve": [[h["step"], h["eval_loss"]] for h in logs if "eval_loss" in h],
        "train_curve": [[h["step"], h["loss"]] for h in logs if "loss" in h],
    }
    if interrupted:
        log(f"stopped early ({stopper.reason}) at step {state.global_step}; checkpoint saved. "
            f"Resume with: ./resume_training.sh checkpoint-{state.global_step}")
    else:
        ev = trainer.evaluate()
        summary["final_eval_loss"] = ev.get("eval_loss")
        summary["final_eval_perplexity"] = math.exp(min(ev["eval_loss"], 50)) if "eval_loss" in ev else None
        if summary["final_eval_loss"] is not None and summary["validation_bytes"]:
            # nats/token x tokens / bytes / ln 2; era tokens count as tokens: a close estimate
            summary["final_eval_bpb"] = (summary["final_eval_loss"] * meta["splits"]["validation"]["tokens"]
                                         / (math.log(2) * summary["validation_bytes"]))
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
            log(f"final model saved to {final}")
    if opts.save_best and (run_dir / "best" / BEST_INFO).exists():
        binfo = json.loads((run_dir / "best" / BEST_INFO).read_text())
        summary["best_checkpoint"] = binfo.get("checkpoint")
        summary["best_eval_loss"] = binfo.get("eval_loss")
        summary["best_step"] = binfo.get("step")
        log(f"best model (validation loss {binfo.get('eval_loss'):.4f} at step {binfo.get('step')}) "
            f"in {run_dir / 'best'}")
    if trainer.is_world_process_zero():
        write_json_atomic(run_dir / "run_info.json", summary)
    return summary
