"""Command-line front end shared by ``04_training/train_model_slm.py`` and
``train_model.py``: parses ``ModelArguments``, ``DataArguments`` and every
``TrainingArguments`` flag with ``HfArgumentParser``, fills what the user did not set
from the preset (passed in by the script from config.py), then calls
:func:`londonlm.training.run_training`."""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable

from .train_args import DataArguments, ModelArguments


def explicit_flags(argv: list[str]) -> set[str]:
    """Names of the flags present on the command line (``--x`` / ``--x=v``)."""
    return {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}


def default_report_to() -> list[str]:
    """TensorBoard when installed; W&B only when installed and configured to run
    (an API key, or WANDB_MODE=offline), so a fresh machine never blocks on a login."""
    out = []
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        out.append("tensorboard")
    if importlib.util.find_spec("wandb") and os.environ.get("WANDB_MODE") != "disabled" and (
            os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "offline"):
        out.append("wandb")
    return out or ["none"]


def build_training_args(ta, preset: dict, explicit: set[str], run_dir: Path, run_name: str,
                        batch_size: int | None, seed: int, early_stopping: bool,
                        dataloader_workers: int = 2):
    from transformers import TrainingArguments

    from .hardware import choose_precision

    import torch

    cuda = torch.cuda.is_available()
    values = {f.name: getattr(ta, f.name) for f in dataclasses.fields(ta) if f.init}
    bs = batch_size or preset["batch_size"]
    defaults = {
        "per_device_train_batch_size": bs, "per_device_eval_batch_size": bs,
        "gradient_accumulation_steps": preset["grad_accum"],
        "learning_rate": preset["learning_rate"], "warmup_steps": preset["warmup_steps"],
        "max_steps": preset["max_steps"], "save_steps": preset["save_steps"],
        "eval_steps": preset["eval_steps"], "logging_steps": preset["logging_steps"],
        "save_total_limit": preset["save_total_limit"], "weight_decay": preset["weight_decay"],
        "max_grad_norm": preset["max_grad_norm"],
        "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr_rate": preset["min_lr_ratio"]},
        "eval_strategy": "steps", "save_strategy": "steps", "logging_strategy": "steps",
        "prediction_loss_only": True, "seed": seed, "data_seed": seed,
        "report_to": default_report_to(),
        "optim": "adamw_torch_fused" if cuda else "adamw_torch",
        "dataloader_num_workers": dataloader_workers if cuda else 0, "dataloader_pin_memory": cuda,
        "metric_for_best_model": "eval_loss", "greater_is_better": False,
        "ddp_find_unused_parameters": False, "save_safetensors": True,
        "adam_beta2": 0.95,
        **choose_precision(),
    }
    for k, v in defaults.items():
        if k not in explicit and k in values:
            values[k] = v
    if batch_size is not None:
        values["per_device_train_batch_size"] = batch_size
        if "per_device_eval_batch_size" not in explicit:
            values["per_device_eval_batch_size"] = batch_size
    values["output_dir"] = str(run_dir)
    values["run_name"] = run_name
    if "logging_dir" in values:
        values["logging_dir"] = str(run_dir / "runs")
    if early_stopping:
        values["load_best_model_at_end"] = True
    values.pop("local_rank", None) if "local_rank" not in values else None
    return TrainingArguments(**values)


def main(argv: list[str], presets: dict[str, dict], default_preset: str,
         get_paths: Callable, tokenizer_name: str, seed: int, wandb_project: str,
         prog: str | None = None, description: str | None = None,
         dataloader_workers: int = 2) -> int:
    from transformers import HfArgumentParser, TrainingArguments

    from .checkpoints import describe_checkpoints
    from .token_cache import CacheError
    from .training import RunOptions, TrainingError, run_training

    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments),
                              prog=prog, description=description)
    if "--output_dir" not in " ".join(argv):
        argv = [*argv, "--output_dir", "__londonlm_unset__"]
    import torch

    if not torch.cuda.is_available() and "use_cpu" not in explicit_flags(argv):
        # TrainingArguments validates while parsing and refuses an explicit --bf16 on a GPU-less
        # machine unless use_cpu is set (bf16 autocast on CPU is what we want there)
        argv = [*argv, "--use_cpu", "true"]
    try:
        margs, dargs, targs = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    explicit = explicit_flags(argv)
    preset_name = margs.preset or default_preset
    if preset_name not in presets:
        print(f"error: unknown preset {preset_name!r}; choose one of: {', '.join(presets)}",
              file=sys.stderr)
        return 2
    preset = presets[preset_name]
    paths = get_paths(dargs.root)
    run_name = dargs.run_name_dir or (targs.run_name if "run_name" in explicit else None) or preset_name
    if targs.output_dir != "__londonlm_unset__":
        run_dir = Path(targs.output_dir)
    else:
        run_dir = paths.run_dir(run_name)
    if dargs.list_checkpoints:
        print(describe_checkpoints(run_dir))
        return 0
    os.environ.setdefault("WANDB_PROJECT", wandb_project)
    try:
        args = build_training_args(targs, preset, explicit, run_dir, run_name, dargs.batch_size,
                                   targs.seed if "seed" in explicit else seed,
                                   dargs.early_stopping_patience > 0, dataloader_workers)
        opts = RunOptions(
            run_dir=run_dir,
            tokenizer_dir=Path(dargs.tokenizer_dir) if dargs.tokenizer_dir else paths.tokenizer_dir(tokenizer_name),
            processed_dir=Path(dargs.processed_dir) if dargs.processed_dir else paths.processed_dir,
            preset=preset_name,
            n_layer=margs.n_layer or preset["n_layer"], n_head=margs.n_head or preset["n_head"],
            n_embd=margs.n_embd or preset["n_embd"],
            context_length=margs.max_length or preset["context_length"],
            vocab_size=margs.vocab_size,
            dropout=preset["dropout"] if margs.dropout is None else margs.dropout,
            cache_mode=dargs.cache_mode, verify_cache=dargs.verify_cache,
            era_tokens=dargs.era_tokens,
            eval_max_batches=preset["eval_max_batches"] if dargs.eval_max_batches is None else dargs.eval_max_batches,
            fresh=dargs.fresh, save_best=dargs.save_best,
            early_stopping_patience=dargs.early_stopping_patience, max_seconds=dargs.max_seconds,
            stop_after_steps=dargs.stop_after_steps,
            init_from=margs.init_from, resize_embeddings=margs.resize_embeddings,
            shape_overrides={k: getattr(margs, k) for k in ("n_layer", "n_head", "n_embd")
                             if getattr(margs, k) is not None},
            attn_implementation=margs.attn_implementation, fused_loss=margs.fused_loss,
            min_lr_ratio=preset["min_lr_ratio"],
            log_file=paths.training_log)
        if opts.n_embd % opts.n_head and not opts.init_from:
            raise TrainingError(f"--n_embd {opts.n_embd} is not divisible by --n_head {opts.n_head} "
                                f"(preset {preset_name!r} gives n_embd={preset['n_embd']}, "
                                f"n_head={preset['n_head']}); pick a width that is a multiple of "
                                f"the head count")
        run_training(opts, args)
    except (TrainingError, CacheError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
