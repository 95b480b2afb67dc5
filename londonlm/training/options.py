"""Training options: the project defaults every entry point starts from, one run's options,
and how a parsed command line (:class:`~londonlm.training.args.TrainFlags`) plus a preset become
``RunOptions`` and ``transformers.TrainingArguments`` (a :class:`TrainingJob`)."""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..core import Layout, RunLayout, TENSORBOARD, UsageError
from .args import TrainFlags


# With a time budget and no --max_steps, the budget alone decides how many steps run.
BUDGET_STEP_CAP = 10 ** 7


@dataclass(frozen=True)
class TrainDefaults:
    """What config.py gives every training entry point (the scripts build it and pass it in)."""

    presets: Mapping[str, Any]   # name -> preset (a dataclass or a dict of its fields)
    default_preset: str
    layout: Layout
    tokenizer_name: str
    seed: int
    wandb_project: str
    dataloader_workers: int = 2  # GPU only; CPU training loads in the main process

    def preset(self, name: str | None) -> tuple[str, dict]:
        """``(name, fields)`` of a preset (the default one for None)."""
        name = name or self.default_preset
        if name not in self.presets:
            raise UsageError(f"unknown preset {name!r}; choose one of: {', '.join(self.presets)}")
        p = self.presets[name]
        return name, (dataclasses.asdict(p) if dataclasses.is_dataclass(p) else dict(p))

    def at_root(self, root: str | os.PathLike | None) -> Layout:
        """The layout, moved to ``--root`` when one is given."""
        if not root:
            return self.layout
        return Layout.at(root, default_root=self.layout.root, registry_file=self.layout.registry_file)


@dataclass
class RunOptions:
    """One run's choices beyond ``TrainingArguments``."""

    run: RunLayout
    layout: Layout                      # the project: other runs (--init_from RUN/...), logs
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
    cutoff_year: int | None = None      # time lock (None: the corpus's own cutoff, if any)
    eval_max_batches: int = 0
    fresh: bool = False
    save_best: bool = False
    early_stopping_patience: int = 0
    time_budget: float = 0.0            # seconds: the schedule is fitted to end there
    stop_after_seconds: float = 0.0     # seconds: stop with a checkpoint, keep the schedule
    stop_after_steps: int = 0
    profile_steps: int = 0              # torch.profiler window (steps) -> run/profile/
    init_from: str | None = None
    resize_embeddings: bool = False
    shape_overrides: dict | None = None  # shape flags given on the command line
    attn_implementation: str = "auto"   # auto: eager on CPU in bf16, sdpa otherwise
    fused_loss: str = "auto"            # auto: on for CPU training in bf16
    precision_given: str | None = None  # fp32/bf16/fp16 when --bf16/--fp16 was given
    autotune: str = "on"                # off | on | refresh (londonlm.training.autotune)
    autotune_seconds: float = 60.0      # cap on the probe's time (~5% of a tiny run on Zen 1)
    optimizer: str = "adamw"            # adamw | muon
    compile_given: bool = False         # --torch_compile on the command line (else the default's)
    batch_given: bool = False           # micro-batch or accumulation on the command line (else fitted on GPUs)
    eval_batch_given: bool = False      # --per_device_eval_batch_size on the command line
    log_file: Path | None = None
    progress: bool = True

    def speed(self):
        """What this run asks of the speed settings (:class:`~.speed.SpeedOptions`)."""
        from .speed import SpeedOptions

        return SpeedOptions(self.autotune, self.autotune_seconds, self.precision_given,
                            self.attn_implementation, self.fused_loss, self.optimizer,
                            self.compile_given)


@dataclass
class TrainingJob:
    """Everything one training run needs: ``run_training(job.opts, job.args)``."""

    opts: RunOptions
    args: Any  # transformers.TrainingArguments, output_dir = opts.run.dir


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


def _preset_training_values(preset: dict, batch_size: int, seed: int, workers: int) -> dict:
    """TrainingArguments values a preset (and this machine) implies; flags given win."""
    import torch

    from ..core import choose_precision

    cuda = torch.cuda.is_available()
    return {
        "per_device_train_batch_size": batch_size, "per_device_eval_batch_size": batch_size,
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
        "dataloader_num_workers": workers if cuda else 0, "dataloader_pin_memory": cuda,
        "metric_for_best_model": "eval_loss", "greater_is_better": False,
        "ddp_find_unused_parameters": False, "save_safetensors": True,
        "adam_beta2": 0.95,
        # the filter checks every micro-batch's loss for NaN/inf on the host: a GPU sync per
        # micro-batch; and a NaN logged as NaN is what a user should see, not a smoothed-over one
        "logging_nan_inf_filter": False,
        **choose_precision(),
    }


# torch.compile's warm-up on a GPU (about 30-60 s for GPT-2 Small) is paid back within minutes of
# training; a run given less than this many seconds stays eager
COMPILE_MIN_BUDGET_SECONDS = 600


def _on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def compile_pays(cuda: bool, time_budget: float) -> bool:
    """``torch_compile`` by default: on CUDA, unless a time budget too short to pay back the
    warm-up; never on CPU (measured on 2 cores: compiling the blocks took ~24 s and made the tiny
    step no faster, BENCHMARKS.md)."""
    return cuda and not (0 < time_budget < COMPILE_MIN_BUDGET_SECONDS)


def build_training_args(flags: TrainFlags, preset: dict, run: RunLayout, run_name: str,
                        seed: int, dataloader_workers: int = 2):
    """``TrainingArguments``: every flag the user gave, the preset's values for the rest."""
    from .loop import make_training_arguments

    values = dict(flags.trainer)
    explicit = flags.explicit
    bs = flags.data.batch_size or preset["batch_size"]
    seed = values["seed"] if "seed" in explicit else seed
    for k, v in _preset_training_values(preset, bs, seed, dataloader_workers).items():
        if k not in explicit and k in values:
            values[k] = v
    if flags.data.batch_size is not None:  # --batch_size is the train batch, and eval's unless given
        values["per_device_train_batch_size"] = flags.data.batch_size
        if "per_device_eval_batch_size" not in explicit:
            values["per_device_eval_batch_size"] = flags.data.batch_size
    values["output_dir"] = str(run.dir)
    values["run_name"] = run_name
    if "logging_dir" in values:  # transformers < 5
        values["logging_dir"] = str(run.dir / TENSORBOARD)
    if flags.data.early_stopping_patience > 0:
        values["load_best_model_at_end"] = True
    budget = flags.control.time_budget or flags.control.max_seconds
    if budget and "max_steps" not in explicit:
        values["max_steps"] = BUDGET_STEP_CAP  # the budget alone decides how many steps run
    if "torch_compile" not in explicit:
        values["torch_compile"] = compile_pays(_on_cuda(), budget)
    return make_training_arguments(values)


def run_options(flags: TrainFlags, preset_name: str, preset: dict, run: RunLayout,
                defaults: TrainDefaults, layout: Layout) -> RunOptions:
    """``RunOptions`` from the flags, the preset filling what was not given."""
    m, d, sp, c = flags.model, flags.data, flags.speed, flags.control
    opts = RunOptions(
        run=run, layout=layout, preset=preset_name,
        tokenizer_dir=Path(d.tokenizer_dir) if d.tokenizer_dir else layout.tokenizer_dir(defaults.tokenizer_name),
        processed_dir=Path(d.processed_dir) if d.processed_dir else layout.processed_dir,
        n_layer=m.n_layer or preset["n_layer"], n_head=m.n_head or preset["n_head"],
        n_embd=m.n_embd or preset["n_embd"],
        context_length=m.max_length or preset["context_length"], vocab_size=m.vocab_size,
        dropout=preset["dropout"] if m.dropout is None else m.dropout,
        cache_mode=d.cache_mode, verify_cache=d.verify_cache, era_tokens=d.era_tokens,
        cutoff_year=d.cutoff_year,
        eval_max_batches=preset["eval_max_batches"] if d.eval_max_batches is None else d.eval_max_batches,
        fresh=c.fresh, save_best=d.save_best, early_stopping_patience=d.early_stopping_patience,
        time_budget=c.time_budget or c.max_seconds, stop_after_seconds=c.stop_after_seconds,
        stop_after_steps=c.stop_after_steps, profile_steps=c.profile_steps,
        init_from=m.init_from, resize_embeddings=m.resize_embeddings,
        shape_overrides={k: getattr(m, k) for k in ("n_layer", "n_head", "n_embd")
                         if getattr(m, k) is not None},
        attn_implementation=sp.attn_implementation, fused_loss=sp.fused_loss,
        precision_given=given_precision(flags), autotune=sp.autotune or default_autotune(),
        optimizer=sp.optimizer or preset.get("optimizer", "adamw"),
        compile_given="torch_compile" in flags.explicit,
        batch_given=bool({"batch_size", "per_device_train_batch_size", "gradient_accumulation_steps"}
                         & flags.explicit),
        eval_batch_given="per_device_eval_batch_size" in flags.explicit, log_file=layout.training_log)
    if opts.n_embd % opts.n_head and not opts.init_from:
        raise UsageError(f"--n_embd {opts.n_embd} is not divisible by --n_head {opts.n_head} "
                         f"(preset {preset_name!r} gives n_embd={preset['n_embd']}, "
                         f"n_head={preset['n_head']}); pick a width that is a multiple of the "
                         f"head count")
    return opts


def given_precision(flags: TrainFlags) -> str | None:
    """fp32/bf16/fp16 when the command line set --bf16 or --fp16 (either way), else None."""
    if not {"bf16", "fp16"} & set(flags.explicit):
        return None
    t = flags.trainer
    return "bf16" if t.get("bf16") else "fp16" if t.get("fp16") else "fp32"


def default_autotune() -> str:
    """``--autotune`` when not given: $LONDONLM_AUTOTUNE (e.g. ``off`` in a test suite that
    wants the fixed rules everywhere), else ``on``."""
    from .autotune import MODES

    mode = os.environ.get("LONDONLM_AUTOTUNE", "on") or "on"
    if mode not in MODES:
        raise UsageError(f"LONDONLM_AUTOTUNE must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def run_of(flags: TrainFlags, defaults: TrainDefaults) -> tuple[RunLayout, str, Layout]:
    """The run folder a command line names: --output_dir, else the runs folder's
    --run_name_dir / --run_name / preset name. Returns (run, run name, layout)."""
    layout = defaults.at_root(flags.data.root)
    preset_name = flags.model.preset or defaults.default_preset
    run_name = (flags.data.run_name_dir or (flags.trainer.get("run_name") if "run_name" in flags.explicit
                                             else None) or preset_name)
    out = flags.trainer.get("output_dir")
    return (RunLayout(Path(out)) if out else layout.run(run_name)), run_name, layout


def make_job(flags: TrainFlags, defaults: TrainDefaults) -> TrainingJob:
    """A parsed command line + the project defaults -> the run's options and Trainer args."""
    preset_name, preset = defaults.preset(flags.model.preset)
    run, run_name, layout = run_of(flags, defaults)
    os.environ.setdefault("WANDB_PROJECT", defaults.wandb_project)
    args = build_training_args(flags, preset, run, run_name, defaults.seed,
                               defaults.dataloader_workers)
    return TrainingJob(run_options(flags, preset_name, preset, run, defaults, layout), args)
