"""Training options: the command line every training job parses (dataclass flags read by
``HfArgumentParser`` beside ``transformers.TrainingArguments``, so every Trainer flag works too;
:class:`TrainFlags`, one parsed command line, which the pipeline and the grid adjust with
:meth:`TrainFlags.override` instead of building argv), the project defaults every entry point
starts from (:class:`TrainDefaults`), and how flags plus a preset become one run's
:class:`RunOptions` (built once: the model's shape and one object per concern, data, speed and
run control) and its ``TrainingArguments``, whose only constructor is here
(:func:`make_training_arguments`). Fields left ``None`` are filled from the chosen preset.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from ..core import (TENSORBOARD, Layout, OneLineErrors, RunLayout, UsageError, check_ranges, choose_precision,
                    number_in, require_usable_gpus)
from .data import DataOptions
from .speed.probe import MODES
from .speed.settings import SpeedRequest, SpeedSettings
from .step.callbacks import RunControl

_POSITIVE_INT, _NON_NEGATIVE_INT = number_in(1), number_in(0)
_POSITIVE, _NON_NEGATIVE = number_in(0, kind=float, above=True), number_in(0, kind=float)
_BELOW_ONE = number_in(0, 1, kind=float, below=True)
# What a value given on the command line must be (the defaults may mean "unset": -1 steps, a 0
# budget). Checked before any work, so nonsense ends in one line instead of a run that
# misreads it (negative --max_steps trained a whole epoch) or a traceback deep inside.
FLAG_RANGES = {
    # the model and its data
    "n_layer": _POSITIVE_INT, "n_head": _POSITIVE_INT, "n_embd": _POSITIVE_INT, "max_length": number_in(2),
    "vocab_size": number_in(2), "dropout": _BELOW_ONE, "cutoff_year": number_in(1000, 2100), "batch_size": _POSITIVE_INT,
    "eval_max_batches": _POSITIVE_INT, "early_stopping_patience": _NON_NEGATIVE_INT,
    # run control: 0 is the default "off", so a given value must be more
    "time_budget": _POSITIVE, "max_seconds": _POSITIVE, "stop_after_seconds": _POSITIVE,
    "stop_after_steps": _POSITIVE_INT, "profile_steps": _POSITIVE_INT,
    # the Trainer's own
    "max_steps": _POSITIVE_INT, "num_train_epochs": _POSITIVE, "learning_rate": _POSITIVE,
    "per_device_train_batch_size": _POSITIVE_INT, "per_device_eval_batch_size": _POSITIVE_INT,
    "gradient_accumulation_steps": _POSITIVE_INT, "eval_accumulation_steps": _POSITIVE_INT,
    "warmup_steps": _NON_NEGATIVE, "warmup_ratio": _BELOW_ONE, "weight_decay": _NON_NEGATIVE,
    "max_grad_norm": _NON_NEGATIVE, "adam_beta1": _BELOW_ONE, "adam_beta2": _BELOW_ONE,
    "adam_epsilon": _POSITIVE, "logging_steps": _POSITIVE, "eval_steps": _POSITIVE, "save_steps": _POSITIVE,
    "save_total_limit": _POSITIVE_INT, "dataloader_num_workers": _NON_NEGATIVE_INT, "seed": _NON_NEGATIVE_INT,
    "data_seed": _NON_NEGATIVE_INT,
}


@dataclass
class ModelArguments:
    preset: Optional[str] = field(default=None, metadata={
        "help": "Model/training preset: micro, tiny, slm (GPT-2 Small), regular (GPT-2 Medium)."})
    n_layer: Optional[int] = field(default=None, metadata={"help": "Override the preset's layer count."})
    n_head: Optional[int] = field(default=None, metadata={"help": "Override the preset's head count."})
    n_embd: Optional[int] = field(default=None, metadata={"help": "Override the preset's width."})
    max_length: Optional[int] = field(default=None, metadata={
        "help": "Context length (tokens per training block); overrides the preset."})
    vocab_size: Optional[int] = field(default=None, metadata={
        "help": "Tokenizer vocabulary size; must equal the trained tokenizer's."})
    dropout: Optional[float] = field(default=None, metadata={"help": "Dropout probability."})
    init_from: Optional[str] = field(default=None, metadata={
        "help": "Start a new run from these weights with a fresh optimizer and schedule (continued "
                "pre-training, not resume): a model folder (checkpoint-N, final/, best/, a local HF "
                "model), a run name, or RUN/final|best|latest|checkpoint-N. The shape comes from "
                "the weights; a different tokenizer is refused unless --resize_embeddings. The "
                "parent is recorded in run_info.json."})
    resize_embeddings: bool = field(default=False, metadata={
        "help": "With --init_from: accept a tokenizer that differs from the weights' and resize the "
                "embeddings to it."})

    def __post_init__(self):
        for k in ("n_layer", "n_head", "n_embd", "max_length", "vocab_size"):
            v = getattr(self, k)
            if v is not None and v <= 0:
                raise UsageError(f"--{k}: must be positive, got {v}")
        if self.n_head and self.n_embd and self.n_embd % self.n_head:
            raise UsageError(f"--n_embd {self.n_embd} is not divisible by --n_head {self.n_head}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise UsageError(f"--dropout: must be in [0, 1), got {self.dropout}")


@dataclass
class DataArguments:
    run_name_dir: Optional[str] = field(default=None, metadata={
        "help": "Run folder name under 09_models/checkpoints/ (default: --run_name, else the preset)."})
    root: Optional[str] = field(default=None, metadata={
        "help": "Project root holding data/ and 09_models/ (default: $LONDONLM_ROOT or the repo)."})
    tokenizer_dir: Optional[str] = field(default=None, metadata={
        "help": "Tokenizer folder (default: 09_models/tokenizers/london_historical_bpe)."})
    processed_dir: Optional[str] = field(default=None, metadata={
        "help": "Processed corpus folder with manifest.jsonl (default: data/london_historical/processed)."})
    use_pretokenized: bool = field(default=False, metadata={
        "help": "Require a compatible pretokenized cache; fail if it is absent or incompatible."})
    no_pretokenized: bool = field(default=False, metadata={
        "help": "Rebuild the pretokenized cache even if a compatible one exists."})
    verify_cache: bool = field(default=False, metadata={
        "help": "Verify the cache's full sha256 before training (reads every byte)."})
    era_tokens: Optional[bool] = field(default=None, metadata={
        "help": "Prepend each document's era token (e.g. <|1650s|>) in the cache (default: when the "
                "tokenizer has era tokens)."})
    cutoff_year: Optional[int] = field(default=None, metadata={
        "help": "Time-lock the run to this year: refuse a corpus, tokenizer, --init_from parent or "
                "resumed checkpoint that reaches past it (default: the corpus's own cutoff, if it was "
                "built with one). Recorded in run_info.json and the model card."})
    batch_size: Optional[int] = field(default=None, metadata={
        "help": "Per-device batch size (alias of --per_device_train_batch_size)."})
    eval_max_batches: Optional[int] = field(default=None, metadata={
        "help": "Evaluate on at most this many validation batches (0 = the whole split)."})
    save_best: bool = field(default=False, metadata={
        "help": "Save a checkpoint whenever the validation loss improves and keep a copy of the "
                "best one in best/ (with best_info.json), beside the last --save_total_limit."})
    early_stopping_patience: int = field(default=0, metadata={
        "help": "Stop after this many evaluations without validation-loss improvement (0 = off)."})
    list_checkpoints: bool = field(default=False, metadata={
        "help": "List this run's checkpoints (step, loss, time, validity) and exit."})

    def __post_init__(self):
        if self.use_pretokenized and self.no_pretokenized:
            raise UsageError("--use_pretokenized and --no_pretokenized contradict each other")
        if self.batch_size is not None and self.batch_size <= 0:
            raise UsageError(f"--batch_size: must be positive, got {self.batch_size}")
    @property
    def cache_mode(self) -> str:
        return "require" if self.use_pretokenized else "rebuild" if self.no_pretokenized else "auto"


@dataclass
class SpeedArguments:
    """How fast a run trains, for every training job (pre-training, chat, the grid)."""

    attn_implementation: str = field(default="auto", metadata={
        "help": "Attention kernel: auto (eager on CPU in bf16, where it measured faster than "
                "PyTorch's CPU flash kernel; sdpa otherwise), sdpa (PyTorch scaled-dot-product / "
                "flash), eager."})
    fused_loss: str = field(default="auto", metadata={
        "help": "Fused LM-head + cross-entropy that never keeps the full logits (auto: on for CPU "
                "training in bf16, where it measured faster; off in CPU fp32, where it did not, and "
                "on GPU until measured there), on, off."})
    autotune: Optional[str] = field(default=None, metadata={
        "help": "Speed settings (precision, attention kernel, fused loss) measured on this machine: "
                "on (measure once per machine and model shape, cache the winner under "
                "~/.cache/londonlm/autotune.json, reuse it), refresh (measure again), off (fixed "
                "rules by CPU/GPU type). Flags you give (--bf16, --attn_implementation, "
                "--fused_loss) always win. Default: $LONDONLM_AUTOTUNE, else on."})
    optimizer: Optional[str] = field(default=None, metadata={
        "help": "adamw, or muon (Muon on the hidden weight matrices, AdamW on embeddings, norms "
                "and biases); also accepted as --optim muon|adamw. Default: the preset's (adamw)."})

    def __post_init__(self):
        if self.attn_implementation not in ("auto", "sdpa", "eager"):
            raise UsageError(f"--attn_implementation: must be auto, sdpa or eager, got "
                             f"{self.attn_implementation!r}")
        if self.fused_loss not in ("auto", "on", "off"):
            raise UsageError(f"--fused_loss: must be auto, on or off, got {self.fused_loss!r}")
        if self.autotune is not None and self.autotune not in ("off", "on", "refresh"):
            raise UsageError(f"--autotune: must be off, on or refresh, got {self.autotune!r}")
        if self.optimizer is not None and self.optimizer not in ("adamw", "muon"):
            raise UsageError(f"--optim/--optimizer: must be adamw or muon, got {self.optimizer!r}")


@dataclass
class RunControlArguments:
    """When a run starts over, stops and ends, for every training job."""

    fresh: bool = field(default=False, metadata={
        "help": "Start over: move existing checkpoints aside (never deleted) and train from scratch."})
    time_budget: float = field(default=0.0, metadata={
        "help": "Train for this many seconds: the step time is measured and a warmup-stable-decay "
                "schedule fitted so that its decay ends at the budget (within one step); the run "
                "then evaluates and saves final/ like any finished run. Without --max_steps the "
                "budget alone decides the step count. Refused before any work when it cannot hold "
                "the warm-up. Spans resumes. 0 = no budget."})
    max_seconds: float = field(default=0.0, metadata={
        "help": "Same as --time_budget."})
    stop_after_seconds: float = field(default=0.0, metadata={
        "help": "Stop with a checkpoint after this much training time in this invocation, keeping "
                "the planned schedule (for preemptible machines and chunked runs; resume later). "
                "0 = off."})
    stop_after_steps: int = field(default=0, metadata={
        "help": "Stop with a checkpoint once this invocation reaches this global step, keeping the "
                "--max_steps schedule (for preemptible machines and chunked runs; 0 = off)."})

    profile_steps: int = field(default=0, metadata={
        "help": "Profile this many whole steps (after 3 warm-up steps) with torch.profiler and "
                "write where the time went, by op group, to the run's profile/ folder "
                "(profile.md, profile.json, a Chrome trace.json). Training goes on. 0 = off."})

    def __post_init__(self):
        if self.stop_after_steps < 0:
            raise UsageError(f"--stop_after_steps: must be >= 0, got {self.stop_after_steps}")
        for k in ("time_budget", "max_seconds", "stop_after_seconds"):
            if getattr(self, k) < 0:
                raise UsageError(f"--{k}: must be >= 0 seconds, got {getattr(self, k)}")
        if self.time_budget and self.max_seconds and self.time_budget != self.max_seconds:
            raise UsageError(f"--max_seconds is another name for --time_budget; they disagree "
                             f"({self.max_seconds:g} vs {self.time_budget:g}): give one")


_UNSET = "__londonlm_unset__"  # transformers < 5 requires --output_dir; None means "the run's"


def explicit_flags(argv: list[str]) -> set[str]:
    """Names of the flags present on the command line (``--x`` / ``--x=v``)."""
    return {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}


@dataclass(frozen=True)
class TrainFlags:
    """One training command line, parsed: model, speed, data and run-control arguments, the
    Trainer's values (``output_dir`` None unless given) and the names of the flags the user
    gave, which win over the preset."""

    model: ModelArguments
    speed: SpeedArguments
    data: DataArguments
    control: RunControlArguments
    trainer: dict
    explicit: frozenset

    GROUPS = ("model", "speed", "data", "control")

    def override(self, **values) -> "TrainFlags":
        """A copy with some flags set as if they had been given (validated the same way)."""
        groups = {g: {} for g in self.GROUPS}
        trainer = dict(self.trainer)
        for key, value in values.items():
            group = next((g for g in self.GROUPS
                          if key in {f.name for f in fields(getattr(self, g))}), None)
            if group is not None:
                groups[group][key] = value
            elif key in trainer:
                trainer[key] = value
            else:
                raise UsageError(f"unknown training option {key!r}")
        return TrainFlags(*(replace(getattr(self, g), **groups[g]) for g in self.GROUPS),
                          trainer, self.explicit | set(values))


def our_optimizer_flag(argv: list[str]) -> list[str]:
    """``--optim muon`` / ``--optim adamw`` name our optimizer choice (``--optimizer``); any
    other ``--optim`` value (adamw_torch, adafactor...) stays the Trainer's own flag."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--optim" and i + 1 < len(argv) and argv[i + 1] in ("muon", "adamw"):
            out += ["--optimizer", argv[i + 1]]
            i += 2
            continue
        if a in ("--optim=muon", "--optim=adamw"):
            a = "--optimizer=" + a.split("=", 1)[1]
        out.append(a)
        i += 1
    return out


def parse_flags(argv: list[str], groups: tuple, prog: str | None = None,
                description: str | None = None) -> tuple[list, dict, frozenset]:
    """Parse ``argv`` into the dataclasses ``groups`` followed by ``TrainingArguments``: the
    one parser of every training job's command line (``--help`` prints the usage and exits).
    Returns (the groups' values, the Trainer's values, the names of the flags given)."""
    import torch
    from transformers import HfArgumentParser, TrainingArguments

    argv = our_optimizer_flag(list(argv))
    given = explicit_flags(argv)
    if "output_dir" not in given:
        argv += ["--output_dir", _UNSET]
    if not torch.cuda.is_available() and "use_cpu" not in given:
        # a machine showing GPUs this torch cannot use would train on the CPU without a word
        require_usable_gpus()
        # TrainingArguments validates while parsing and refuses an explicit --bf16 on a GPU-less
        # machine unless use_cpu is set (bf16 autocast on CPU is what we want there)
        argv += ["--use_cpu", "true"]
    parser = type("FlagParser", (OneLineErrors, HfArgumentParser), {})(
        (*groups, TrainingArguments), prog=prog, description=description, allow_abbrev=False)
    try:
        *values, ta = parser.parse_args_into_dataclasses(args=argv)
    except UsageError:
        raise
    except Exception as e:  # TrainingArguments checks what it was given as it builds (files too)
        raise UsageError(_refused(e, argv)) from None
    trainer = {f.name: getattr(ta, f.name) for f in dataclasses.fields(ta) if f.init}
    named = {**{f.name: getattr(v, f.name) for v in values for f in dataclasses.fields(v)}, **trainer}
    check_ranges({k: v for k, v in named.items() if k in given}, FLAG_RANGES)
    if "output_dir" not in given:
        trainer["output_dir"] = None
    return values, trainer, frozenset(given)


def _refused(error: Exception, argv: list[str]) -> str:
    """The Trainer's own refusal, naming the flag whose value it quotes when one does."""
    text = " ".join(str(error).split()) or type(error).__name__
    for flag, value in zip(argv, argv[1:]):
        if flag.startswith("--") and value and not value.startswith("--") and repr(value) in text:
            return f"{flag}: {text}"
    return text


def parse_train_flags(argv: list[str], prog: str | None = None,
                      description: str | None = None) -> TrainFlags:
    """Parse a pre-training command line (``--help`` prints the usage and exits)."""
    values, trainer, given = parse_flags(
        argv, (ModelArguments, SpeedArguments, DataArguments, RunControlArguments), prog, description)
    return TrainFlags(*values, trainer, given)


# --------------------------------------------------------------------------- a run's options

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
    """One run's choices beyond ``TrainingArguments``, built once from the flags and a preset:
    where it lives, the model's shape, and one settings object per concern (its data, its speed
    settings, when it stops)."""

    run: RunLayout
    layout: Layout                      # the project: other runs (--init_from RUN/...), logs
    preset: str
    n_layer: int
    n_head: int
    n_embd: int
    context_length: int
    data: DataOptions
    speed: SpeedRequest = field(default_factory=SpeedRequest)
    control: RunControl = field(default_factory=RunControl)
    vocab_size: int | None = None
    dropout: float = 0.0
    init_from: str | None = None
    resize_embeddings: bool = False
    shape_overrides: dict | None = None  # shape flags given on the command line
    fresh: bool = False
    save_best: bool = False
    early_stopping_patience: int = 0
    log_file: Path | None = None


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
    data = DataOptions(
        tokenizer_dir=Path(d.tokenizer_dir) if d.tokenizer_dir else layout.tokenizer_dir(defaults.tokenizer_name),
        processed_dir=Path(d.processed_dir) if d.processed_dir else layout.processed_dir,
        cache_mode=d.cache_mode, verify_cache=d.verify_cache, era_tokens=d.era_tokens, cutoff_year=d.cutoff_year,
        eval_max_batches=preset["eval_max_batches"] if d.eval_max_batches is None else d.eval_max_batches)
    speed = SpeedRequest(
        autotune=sp.autotune or default_autotune(),
        given=SpeedSettings.from_flags(given_precision(flags), sp.attn_implementation, sp.fused_loss),
        optimizer=sp.optimizer or preset.get("optimizer", "adamw"),
        compile_given="torch_compile" in flags.explicit,
        batch_given=bool({"batch_size", "per_device_train_batch_size", "gradient_accumulation_steps"}
                         & flags.explicit),
        eval_batch_given="per_device_eval_batch_size" in flags.explicit)
    control = RunControl(c.time_budget or c.max_seconds, c.stop_after_seconds, c.stop_after_steps,
                         c.profile_steps, run.profile)
    opts = RunOptions(
        run=run, layout=layout, preset=preset_name,
        n_layer=m.n_layer or preset["n_layer"], n_head=m.n_head or preset["n_head"],
        n_embd=m.n_embd or preset["n_embd"], context_length=m.max_length or preset["context_length"],
        data=data, speed=speed, control=control, vocab_size=m.vocab_size,
        dropout=preset["dropout"] if m.dropout is None else m.dropout,
        init_from=m.init_from, resize_embeddings=m.resize_embeddings,
        shape_overrides={k: getattr(m, k) for k in ("n_layer", "n_head", "n_embd") if getattr(m, k) is not None},
        fresh=c.fresh, save_best=d.save_best, early_stopping_patience=d.early_stopping_patience,
        log_file=layout.training_log)
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
