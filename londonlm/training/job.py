"""One training job's configuration: a frozen tree built once, from the command line, the preset
and config.py's defaults, and validated once; the ``TrainingArguments`` the Trainer reads are
generated from it by :func:`training_arguments` and never changed afterwards.

The tree, node by node (each a frozen dataclass):

- ``model``   :class:`ModelConfig`: the shape, dropout, the ``--init_from`` parent;
- ``data``    :class:`DataOptions`: tokenizer, corpus, token cache, validation;
- ``speed``   :class:`SpeedConfig`: what was asked (``--autotune``, precision, attention, loss,
  vocabulary padding),
  what was chosen, ``torch_compile`` and the micro-batch;
- ``optim``   :class:`OptimConfig`: the optimizer (AdamW or Muon) and its schedule;
- ``control`` :class:`RunControl`: resume or start over, the time budget, stops, saving the best;
- ``output``  :class:`OutputConfig`: the run folder, its name, the log file, the trackers;
- ``trainer``: every other ``TrainingArguments`` value (logging, saving, seeds, FSDP...).

Decisions that need a measurement (the speed probe, the compile preflight, the micro-batch
fitted to GPU memory) take a tree and return a new one (:meth:`TrainingConfig.but`); nothing edits
one. Pre-training builds its tree with :func:`build_config`; chat fine-tuning and the LR finder
build the same tree from their own presets (:func:`config_from_values`). What of a tree shapes
the trained model, recorded so a request with other settings is told from a current run:
:func:`training_settings`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ..core import (TENSORBOARD, Layout, RunLayout, UsageError, choose_precision, require_usable_gpus,
                    write_json_atomic)
from .defaults import (TrainDefaults, asked_length, default_autotune, enum_name, preset_trainer_values, strategy,
                       why_not_load_best)
from .dist import log
from .flags import TrainFlags, precision_given
from .speed.compile import compile_pays
from .speed.settings import SpeedRequest, SpeedSettings
from .trainer_checks import check_scheduler, keywords_taken


@dataclass(frozen=True)
class ModelConfig:
    """The model's shape (the preset's, or the flags'), dropout, and the weights a continued
    run starts from (whose own shape then wins: :mod:`.plan`)."""

    n_layer: int
    n_head: int
    n_embd: int
    context_length: int
    vocab_size: int | None = None       # --vocab_size: must equal the tokenizer's
    dropout: float = 0.0
    init_from: str | None = None
    resize_embeddings: bool = False
    shape_flags: tuple = ()             # (name, value) of the shape flags given on the command line

    @property
    def shape_overrides(self) -> dict:
        return dict(self.shape_flags)


@dataclass(frozen=True)
class SpeedConfig:
    """How fast the job trains: what its flags asked, what was chosen for this machine, whether
    it compiles, and its micro-batch (tokens per step = micro_batch x grad_accum x ranks x
    context, whatever the split)."""

    request: SpeedRequest = field(default_factory=SpeedRequest)
    chosen: SpeedSettings | None = None   # decided by :func:`.speed.choice.choose_speed`
    torch_compile: bool = False
    compile_given: bool = False           # --torch_compile was on the command line
    micro_batch: int = 1
    grad_accum: int = 1
    eval_batch: int = 1
    batch_given: bool = False             # the micro-batch or accumulation was given (else fitted on GPUs)
    eval_batch_given: bool = False

    @property
    def precision(self) -> str | None:
        """The chosen precision, else the one the flags gave, else None (the machine's default)."""
        return (self.chosen or self.request.given).precision


# The Trainer's values that the optimizer node holds
OPTIM_FIELDS = ("learning_rate", "warmup_steps", "max_steps", "weight_decay", "max_grad_norm", "adam_beta1",
                "adam_beta2", "adam_epsilon", "optim", "lr_scheduler_type", "lr_scheduler_kwargs")


@dataclass(frozen=True)
class DataOptions:
    """Where a run's text comes from and how its token cache and validation blocks are made."""

    tokenizer_dir: Path
    processed_dir: Path
    cache_mode: str = "auto"            # auto | require (--use_pretokenized) | rebuild (--no_pretokenized)
    verify_cache: bool = False          # read every byte of the cache before training
    era_tokens: bool | None = None      # None: when the tokenizer has era tokens
    cutoff_year: int | None = None      # time lock (None: the corpus's own cutoff, if any)
    eval_max_blocks: int = 0            # validation blocks per evaluation (0: the whole split)
    progress: bool = True


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer and its schedule. ``optimizer`` is ours (adamw, or muon on the hidden
    matrices); ``optim`` is the Trainer's AdamW implementation."""

    optimizer: str = "adamw"
    learning_rate: float = 5e-5
    warmup_steps: float = 0
    max_steps: int = -1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    optim: Any = "adamw_torch"
    lr_scheduler_type: Any = "linear"
    lr_scheduler_kwargs: Mapping = field(default_factory=dict)
    # A run whose length was asked for (--time_budget, --max_steps, --num_train_epochs) and not
    # its warm-up warms up for this share of its steps (the preset's warm-up over its steps) where
    # that is shorter, so its schedule keeps the preset's shape: GPT-2 Medium's 2,000 of 60,000
    # would otherwise outlast a 3-minute budget on one GPU (:mod:`.length`). None: warmup_steps
    # as they stand.
    warmup_share: float | None = None
    # --num_train_epochs: the run trains the steps that read its training blocks this many times
    # over, counted once the data is (:func:`.length.fit_length`; max_steps is then set). None:
    # max_steps decides.
    passes: float | None = None


@dataclass(frozen=True)
class RunControl:
    """When a run starts, stops and ends besides its schedule: resume (a checkpoint, or the
    latest) or start over, a time budget the schedule is fitted to, a stop with a checkpoint
    after some seconds or at some step of this invocation, a profiler window, the best
    checkpoint kept, early stopping, a budget's decay begun early when validation stalls."""

    time_budget: float = 0.0
    stop_after_seconds: float = 0.0
    stop_after_steps: int = 0
    profile_steps: int = 0            # --profile_steps: a torch.profiler window of this many steps
    profile_dir: object = None        # where its tables and trace go (the run's profile/)
    fresh: bool = False
    resume_from: str | None = None    # --resume_from_checkpoint (None: the latest valid one)
    save_best: bool = False
    early_stopping_patience: int = 0
    decay_on_plateau: int = 0         # evaluations without improvement before a budget's decay begins


@dataclass(frozen=True)
class OutputConfig:
    """Where the run lives and what it is called; the project's layout (other runs, logs)."""

    run: RunLayout
    run_name: str
    layout: Layout | None = None
    preset: str = ""
    log_file: Path | None = None


@dataclass(frozen=True)
class TrainingConfig:
    """One training job's whole configuration (see the module docstring)."""

    model: ModelConfig
    data: DataOptions | None
    speed: SpeedConfig
    optim: OptimConfig
    control: RunControl
    output: OutputConfig
    trainer: Mapping = field(default_factory=dict)  # every other TrainingArguments value

    def __post_init__(self):
        object.__setattr__(self, "trainer", MappingProxyType(dict(self.trainer)))

    def but(self, **nodes) -> "TrainingConfig":
        """A new tree with some nodes replaced (``speed=...``) or some of their fields
        (``speed={"micro_batch": 4}``)."""
        new = {k: (replace(getattr(self, k), **v) if isinstance(v, dict) and k != "trainer" else v)
               for k, v in nodes.items()}
        return replace(self, **new)

    @property
    def run(self) -> RunLayout:
        return self.output.run

    @property
    def sequences_per_step(self) -> int:
        """Sequences one rank trains per optimizer step."""
        return self.speed.micro_batch * self.speed.grad_accum

    def record(self) -> dict:
        """The tree as JSON values (logged, and saved with the run as training_config.json)."""
        return self.record_value(self)

    @staticmethod
    def record_value(v):
        """A value as JSON: dataclasses and mappings as objects, enums by their value, paths as text."""
        plain = TrainingConfig.record_value
        if is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v if isinstance(v, (str, int, float, bool, type(None))) else str(getattr(v, "value", v))


@dataclass(frozen=True)
class JobRequest:
    """What a fine-tuning job's command line asks beyond its preset, for jobs whose preset is
    not a pre-training preset (chat): the speed request, the optimizer, the run control and any
    other ``TrainingArguments`` flag given. Becomes part of the job's tree (:func:`config_from_values`)."""

    speed: SpeedRequest | None = None   # None: the defaults (--autotune from $LONDONLM_AUTOTUNE)
    optimizer: str | None = None        # None: the preset's
    control: RunControl = field(default_factory=RunControl)
    trainer: Mapping = field(default_factory=dict)
    explicit: frozenset = frozenset()

    def speed_request(self) -> SpeedRequest:
        return self.speed or SpeedRequest(autotune=default_autotune())

    @classmethod
    def from_flags(cls, speed, control, trainer: Mapping = (), explicit: frozenset = frozenset(),
                   profile_dir=None) -> "JobRequest":
        """From parsed :class:`~.flags.SpeedArguments` and :class:`~.flags.RunControlArguments`
        (the precision from ``--bf16``/``--fp16`` when ``explicit`` names them)."""
        t = dict(trainer)
        request = SpeedRequest(autotune=speed.autotune or default_autotune(),
                               given=SpeedSettings.from_flags(precision_given(t, explicit),
                                                              speed.attn_implementation, speed.fused_loss,
                                                              speed.pad_vocab),
                               sdpa_order=speed.sdpa_order, compile_regions=speed.compile_regions)
        run_control = RunControl(control.time_budget or control.max_seconds, control.stop_after_seconds,
                                 control.stop_after_steps, control.profile_steps, profile_dir, fresh=control.fresh,
                                 save_best=control.save_best,
                                 early_stopping_patience=control.early_stopping_patience,
                                 decay_on_plateau=control.decay_on_plateau)
        return cls(request, speed.optimizer, run_control, t, frozenset(explicit))


# --------------------------------------------------------------------------- the one TrainingArguments

def training_arguments(config: TrainingConfig):
    """The ``TrainingArguments`` of ``config``: the only place one is made from a tree, and
    nothing changes it afterwards. Bad values become one usage error."""
    s, o, c = config.speed, config.optim, config.control
    values = {**config.trainer, **{k: getattr(o, k) for k in OPTIM_FIELDS}}
    values["lr_scheduler_kwargs"] = dict(o.lr_scheduler_kwargs)
    values.update(per_device_train_batch_size=s.micro_batch, gradient_accumulation_steps=s.grad_accum,
                  per_device_eval_batch_size=s.eval_batch, torch_compile=s.torch_compile,
                  output_dir=str(config.output.run.dir), run_name=config.output.run_name,
                  # the stream sampler starts where the checkpoint says (any world size), not the
                  # Trainer's per-rank batch skipping
                  ignore_data_skip=True)
    if not s.torch_compile:  # a backend alone compiles (the Trainer builds accelerate's dynamo plugin)
        values.update(torch_compile_backend=None, torch_compile_mode=None)
    values.update(choose_precision() if s.precision is None else
                  {"bf16": s.precision == "bf16", "fp16": s.precision == "fp16"})
    _refuse_other_half_eval(values)
    if "logging_dir" in values:  # transformers < 5
        values["logging_dir"] = str(config.output.run.dir / TENSORBOARD)
    if c.early_stopping_patience > 0:
        values["load_best_model_at_end"] = True
    if values.get("fsdp") and "state_dict_type" not in (values.get("fsdp_config") or {}):
        # each rank writes its part of the optimizer state: gathering it is what FSDP avoids
        values["fsdp_config"] = {**(values.get("fsdp_config") or {}), "state_dict_type": "SHARDED_STATE_DICT"}
    return make_training_arguments(values)


def _refuse_other_half_eval(values: dict) -> None:
    """--fp16_full_eval beside bf16 training (or --bf16_full_eval beside fp16): the evaluation
    casts the weights to one half type while the training's autocast computes in the other, and
    the first evaluation died in layer_norm ("mixed dtype (CPU)"), a traceback after the steps."""
    trains = "bf16" if values.get("bf16") else "fp16" if values.get("fp16") else None
    for other in ("bf16", "fp16"):
        if values.get(f"{other}_full_eval") and trains not in (None, other):
            raise UsageError(f"--{other}_full_eval evaluates in {other} while this run trains in {trains}: give "
                             f"--{trains}_full_eval, or leave it out to evaluate as the run trains")


def make_training_arguments(values: dict):
    """``TrainingArguments(**values)``: its one constructor in the project.

    On a machine without CUDA ``use_cpu`` is set: ``TrainingArguments`` otherwise refuses
    ``bf16=True`` there ("Your setup doesn't support bf16/gpu"), though bf16 autocast runs on
    every x86 CPU (natively with avx512_bf16/AMX, emulated elsewhere). Unless ``use_cpu`` was
    asked for, a machine showing GPUs that this torch cannot use is refused (it would train on
    the CPU without a word). A bad value becomes a one-line usage error."""
    import torch
    from transformers import TrainingArguments

    values = dict(values)
    for flag in ("dataloader_persistent_workers", "dataloader_multiprocessing_context"):
        if values.get(flag) and not values.get("dataloader_num_workers"):
            # (the DataLoader's ValueError came when the Trainer first built it, a traceback)
            raise UsageError(f"--{flag} sets up loader processes, and this run has none "
                             f"(--dataloader_num_workers 0, the CPU default); give both or neither")
    if not torch.cuda.is_available():
        if not values.get("use_cpu"):  # not on purpose: refused where GPUs go unused
            require_usable_gpus()
        values["use_cpu"] = True
    try:
        args = TrainingArguments(**values)
    except ValueError as e:
        raise UsageError(str(e)) from None
    check_scheduler(args)
    return args


# --------------------------------------------------------------------------- built from values

def config_from_values(values: Mapping, *, model: ModelConfig, data: DataOptions | None,
                       request: SpeedRequest, optimizer: str, control: RunControl, output: OutputConfig,
                       explicit: frozenset = frozenset()) -> TrainingConfig:
    """A tree from a flat mapping of ``TrainingArguments`` values (a preset's, then the flags'):
    the optimizer and speed values go to their nodes, the rest stays the Trainer's. Every job
    (pre-training, chat, the LR finder) builds its tree here, so the compile policy and the
    micro-batch rules are the same for all."""
    values = dict(values)
    # asking for a compile backend or mode is asking to compile (the Trainer reads it so too)
    given = bool({"torch_compile", "torch_compile_backend", "torch_compile_mode"} & explicit)
    compiled = values.pop("torch_compile", None)
    if request.compile_regions:  # asking how to compile is asking to compile
        if given and compiled is not None and not compiled:
            raise UsageError("--compile_regions compiles the model's blocks: it cannot go with --torch_compile false")
        compiled, given = True, True
    speed = SpeedConfig(
        request=request,
        torch_compile=bool(compiled) if compiled is not None else compile_pays(_on_cuda(), control.time_budget),
        compile_given=given,
        micro_batch=values.pop("per_device_train_batch_size"), grad_accum=values.pop("gradient_accumulation_steps"),
        eval_batch=values.pop("per_device_eval_batch_size"),
        batch_given=bool({"batch_size", "per_device_train_batch_size", "gradient_accumulation_steps"} & explicit),
        eval_batch_given="per_device_eval_batch_size" in explicit)
    _refuse_evaluations_missing(control, values)
    _refuse_trainer_optimizer_under_muon(optimizer, values, explicit)
    if "lr_scheduler_type" in explicit:
        values["lr_scheduler_kwargs"] = _asked_schedule_keywords(values, explicit, control)
    optim = OptimConfig(optimizer=optimizer, warmup_share=values.pop("warmup_share", None),
                        passes=values.pop("passes", None),
                        **{k: values.pop(k) for k in OPTIM_FIELDS if k in values})
    for owned in ("output_dir", "run_name", "bf16", "fp16", "ignore_data_skip", "resume_from_checkpoint"):
        values.pop(owned, None)  # the tree's own: generated by training_arguments
    config = TrainingConfig(model, data, speed, optim, control, output, values)
    training_arguments(config)  # validated once, as built: bad Trainer values fail before any work
    return config


def _asked_schedule_keywords(values: Mapping, explicit: frozenset, control: RunControl) -> dict:
    """The keywords of a learning-rate schedule asked for by name: the preset's are for its own
    schedule, so this one keeps those it takes (the preset's min_lr_rate was a TypeError in
    --lr_scheduler_type linear's). Refused on a budgeted run: the schedule fitted to the budget
    would replace it."""
    kind, kwargs = values.get("lr_scheduler_type"), values.get("lr_scheduler_kwargs")
    if control.time_budget:
        raise UsageError(f"--lr_scheduler_type {enum_name(kind)}: a --time_budget run trains with the "
                         f"warmup-stable-decay schedule fitted to its budget (its floor: --lr_scheduler_kwargs "
                         f"'{{\"min_lr_rate\": R}}'); leave --lr_scheduler_type out, or give --max_steps instead "
                         f"of the budget")
    return kwargs if "lr_scheduler_kwargs" in explicit else keywords_taken(kind, kwargs)


def _refuse_evaluations_missing(control: RunControl, values: Mapping) -> None:
    """What the run does at its evaluations needs some: a plateau's decay would wait forever,
    --save_best would never save (the run ended as if it had not been asked), and the
    Trainer's early stopping was an AssertionError traceback once the model was made."""
    if strategy(values, "eval_strategy") != "no":
        return
    for flag, on in (("decay_on_plateau", control.decay_on_plateau), ("save_best", control.save_best),
                     ("early_stopping_patience", control.early_stopping_patience)):
        if on:
            raise UsageError(f"--{flag} acts at the evaluations, and --eval_strategy no holds none; "
                             f"give --eval_strategy steps (with --eval_steps N), or leave --{flag} out")


def _refuse_trainer_optimizer_under_muon(optimizer: str, values: Mapping, explicit: frozenset) -> None:
    """Muon + AdamW is built from the learning rate, weight decay and Adam's betas and epsilon
    alone, so the Trainer's own ``--optim NAME`` and ``--optim_args`` went unused without a word
    under a Muon run (the tiny preset's default): ``--optim adafactor`` trained Muon."""
    if optimizer != "muon":
        return
    if "optim" in explicit:
        raise UsageError(f"--optim {enum_name(values.get('optim'))} is the Trainer's optimizer, and this run "
                         f"trains with Muon (--optim muon, or the preset's): give --optimizer adamw with it "
                         f"to train with the Trainer's, or leave it out")
    if "optim_args" in explicit:
        raise UsageError("--optim_args goes to the Trainer's optimizer, and this run trains with Muon, which "
                         "takes --learning_rate, --weight_decay, --adam_beta1, --adam_beta2 and --adam_epsilon: "
                         "leave --optim_args out, or give --optimizer adamw")


def _on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# --------------------------------------------------------------------------- pre-training's tree

def run_of(flags: TrainFlags, defaults: TrainDefaults) -> tuple[RunLayout, str, Layout]:
    """The run folder a command line names: --output_dir, else the runs folder's
    --run_name_dir / --run_name / preset name. Returns (run, run name, layout)."""
    refuse_empty_run_names(flags)
    layout = defaults.at_root(flags.run.root)
    preset_name = flags.model.preset or defaults.default_preset
    run_name = (flags.run.run_name_dir or (flags.trainer.get("run_name") if "run_name" in flags.explicit
                                            else None) or preset_name)
    out = flags.trainer.get("output_dir")
    return (RunLayout(Path(out)) if out else layout.run(run_name)), run_name, layout


def refuse_empty_run_names(flags: TrainFlags) -> None:
    """--output_dir, --run_name_dir or --run_name given empty (a variable that was not set, as
    ``--root ""`` is refused): each read as not given, and the preset's run trained or resumed
    in its folder instead of the run asked for, exit 0."""
    given = {"output_dir": flags.trainer.get("output_dir"), "run_name_dir": flags.run.run_name_dir,
             "run_name": flags.trainer.get("run_name")}
    for flag, value in given.items():
        if flag in flags.explicit and not str(value or "").strip():
            raise UsageError(f"--{flag} is empty: give the run's name or folder (was a variable not set?), "
                             f"or leave --{flag} out for the preset's run; nothing was written")


def _trainer_values(flags: TrainFlags, preset: dict, seed: int, workers: int) -> dict:
    """Every Trainer value: the flags the user gave, the preset's for the rest."""
    values, explicit = dict(flags.trainer), flags.explicit
    bs = flags.data.batch_size or preset["batch_size"]
    seed = values["seed"] if "seed" in explicit else seed
    for k, v in preset_trainer_values(preset, bs, seed, workers).items():
        if k not in explicit and k in values:
            values[k] = v
    if flags.data.batch_size is not None:  # --batch_size is the train batch, and eval's unless given
        if "per_device_train_batch_size" in explicit and values["per_device_train_batch_size"] != flags.data.batch_size:
            # two names of one value that disagree: --batch_size won without a word
            raise UsageError(f"--batch_size is another name for --per_device_train_batch_size; they disagree "
                             f"({flags.data.batch_size} vs {values['per_device_train_batch_size']}): give one")
        values["per_device_train_batch_size"] = flags.data.batch_size
        if "per_device_eval_batch_size" not in explicit:
            values["per_device_eval_batch_size"] = flags.data.batch_size
    budget = flags.control.time_budget or flags.control.max_seconds
    values.update(asked_length(explicit, values, budget, preset["warmup_steps"], preset["max_steps"]))
    if "passes" in values:
        values.pop("num_train_epochs")  # the passes' steps are counted with the data (.length)
    if not {"torch_compile", "torch_compile_backend", "torch_compile_mode"} & explicit:
        values.pop("torch_compile", None)  # the compile policy decides
    why = why_not_load_best(values) if values.get("load_best_model_at_end") else None
    if why and "load_best_model_at_end" not in explicit:
        log(f"note: final/ will hold the last step's weights, not the best evaluation's (the "
            f"preset's default): {why}")
        values["load_best_model_at_end"] = False
    return values


def _model_config(flags: TrainFlags, preset_name: str, preset: dict) -> ModelConfig:
    m = flags.model
    model = ModelConfig(
        n_layer=m.n_layer or preset["n_layer"], n_head=m.n_head or preset["n_head"],
        n_embd=m.n_embd or preset["n_embd"], context_length=m.max_length or preset["context_length"],
        vocab_size=m.vocab_size, dropout=preset["dropout"] if m.dropout is None else m.dropout,
        init_from=m.init_from, resize_embeddings=m.resize_embeddings,
        shape_flags=tuple((k, getattr(m, k)) for k in ("n_layer", "n_head", "n_embd") if getattr(m, k) is not None))
    if model.n_embd % model.n_head and not model.init_from:
        raise UsageError(f"--n_embd {model.n_embd} is not divisible by --n_head {model.n_head} "
                         f"(preset {preset_name!r} gives n_embd={preset['n_embd']}, "
                         f"n_head={preset['n_head']}); pick a width that is a multiple of the "
                         f"head count")
    return model


def build_config(flags: TrainFlags, defaults: TrainDefaults) -> TrainingConfig:
    """A parsed command line + the project defaults -> the run's configuration tree."""
    preset_name, preset = defaults.preset(flags.model.preset)
    run, run_name, layout = run_of(flags, defaults)
    os.environ.setdefault("WANDB_PROJECT", defaults.wandb_project)
    d, sp, c = flags.data, flags.speed, flags.control
    values = _trainer_values(flags, preset, defaults.seed, defaults.dataloader_workers)
    max_batches = preset["eval_max_batches"] if d.eval_max_batches is None else d.eval_max_batches
    data = DataOptions(
        tokenizer_dir=Path(d.tokenizer_dir) if d.tokenizer_dir else layout.tokenizer_dir(defaults.tokenizer_name),
        processed_dir=Path(d.processed_dir) if d.processed_dir else layout.processed_dir,
        cache_mode=d.cache_mode, verify_cache=d.verify_cache, era_tokens=d.era_tokens, cutoff_year=d.cutoff_year,
        # batches of the evaluation batch asked for: counted here, before a GPU's micro-batch is
        # fitted to its memory (which the evaluation's follows), so fitting never changes them
        eval_max_blocks=max_batches * values["per_device_eval_batch_size"])
    asked = JobRequest.from_flags(sp, c, flags.trainer, flags.explicit, profile_dir=run.profile)
    control = replace(asked.control, resume_from=flags.trainer.get("resume_from_checkpoint"))
    output = OutputConfig(run, run_name, layout, preset_name, layout.training_log)
    return config_from_values(values, model=_model_config(flags, preset_name, preset), data=data,
                              request=asked.speed, optimizer=sp.optimizer or preset.get("optimizer", "adamw"),
                              control=control, output=output, explicit=flags.explicit)


def save_config(config: TrainingConfig, path: Path) -> None:
    """training_config.json: the tree a run trained with (after every decision), for people
    and tools to read; never read back to configure a run."""
    write_json_atomic(Path(path), config.record())


def describe(config: TrainingConfig) -> str:
    """The configuration in one line for the log (training_config.json holds it whole)."""
    m, s, o, c = config.model, config.speed, config.optim, config.control
    k = s.chosen or s.request.given
    parts = [f"{m.n_layer}x{m.n_embd}, {m.n_head} heads, context {m.context_length}, dropout {m.dropout:g}",
             f"{k.precision or 'auto'}/{k.attn_implementation or 'auto'}/fused-"
             f"{'auto' if k.fused_loss is None else 'on' if k.fused_loss else 'off'}/pad-"
             f"{'auto' if k.pad_vocab is None else 'on' if k.pad_vocab else 'off'}, "
             f"compile {('by regions' if s.request.compile_regions else 'on') if s.torch_compile else 'off'}, "
             f"micro-batch {s.micro_batch} x {s.grad_accum}"
             + ("" if s.request.sdpa_order == "torch" else f", SDPA {s.request.sdpa_order} first"),
             f"{o.optimizer} lr {o.learning_rate:g}, warmup {o.warmup_steps:g}, {o.max_steps} steps max"
             + ("" if o.passes is None else f" ({o.passes:g} passes)")]
    if c.time_budget:
        parts.append(f"budget {c.time_budget:g} s")
    return (f"configuration ({config.output.run.training_config.name} in the run): " + "; ".join(parts))



def training_settings(config: TrainingConfig) -> dict:
    """The settings that shape the trained model (JSON values), as asked (before any decision
    for this machine), recorded in run_info.json so a later request with other settings (the
    pipeline's) is told apart from a current run."""
    m, o, t = config.model, config.optim, config.trainer
    return {"preset": config.output.preset, "n_layer": m.n_layer, "n_head": m.n_head,
            "n_embd": m.n_embd, "context_length": m.context_length,
            "vocab_size": m.vocab_size, "dropout": m.dropout, "era_tokens": config.data.era_tokens,
            "cutoff_year": config.data.cutoff_year, "init_from": m.init_from, "learning_rate": o.learning_rate,
            "lr_scheduler_type": enum_name(o.lr_scheduler_type),
            "lr_scheduler_kwargs": dict(o.lr_scheduler_kwargs or {}),
            "warmup_steps": o.warmup_steps,
            "max_steps": o.max_steps, "batch_size": config.speed.micro_batch,
            "gradient_accumulation_steps": config.speed.grad_accum,
            "weight_decay": o.weight_decay, "max_grad_norm": o.max_grad_norm,
            "adam_beta1": o.adam_beta1, "adam_beta2": o.adam_beta2,
            "adam_epsilon": o.adam_epsilon, "seed": t.get("seed"), "data_seed": t.get("data_seed"),
            # the fused AdamW is the same update, only faster: a GPU run and a CPU run agree
            "optim": enum_name(o.optim).replace("_fused", ""),
            "optimizer": o.optimizer, "time_budget": config.control.time_budget,
            # "auto": chosen for the machine (--autotune); the run records what it used
            "precision": config.speed.request.given.precision or "auto",
            # --num_train_epochs, where given (a run recorded before it existed compares the same)
            **({} if o.passes is None else {"passes": o.passes})}


__all__ = ["DataOptions", "ModelConfig", "OptimConfig", "OutputConfig", "RunControl", "SpeedConfig", "TrainingConfig",
           "build_config", "config_from_values", "make_training_arguments", "run_of", "training_arguments",
           "training_settings"]
