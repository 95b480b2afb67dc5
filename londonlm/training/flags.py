"""The command line of every training job: the flag groups (dataclasses read by
``HfArgumentParser`` beside ``transformers.TrainingArguments``, so every Trainer flag works too),
their ranges, and the one parser (:func:`parse_flags`), which also reads ``--optim muon|adamw``
as our optimizer choice. :class:`TrainFlags` is one parsed pre-training command line; the
pipeline, the grid and the family adjust it with :meth:`TrainFlags.override` instead of building
argv. What the flags become (the preset filling what was not given) is :mod:`.job`'s business.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from typing import Optional

from ..core import OneLineErrors, UsageError, check_ranges, number_in, require_usable_gpus
from .dist import rank
from .speed.attention import SDPA_ORDERS
from .speed.settings import MODES
from .trackers import take_report_to
from .trainer_checks import check_json_objects, check_trainer_args

_POSITIVE_INT, _NON_NEGATIVE_INT = number_in(1), number_in(0)
_POSITIVE, _NON_NEGATIVE = number_in(0, kind=float, above=True), number_in(0, kind=float)
_BELOW_ONE = number_in(0, 1, kind=float, below=True)
_SEED = number_in(0, 2**32 - 1)  # numpy's seeding takes no more
# What a value given on the command line must be (the defaults may mean "unset": -1 steps, a 0
# budget). Checked before any work, so nonsense ends in one line instead of a run that
# misreads it (negative --max_steps trained a whole epoch) or a traceback deep inside.
FLAG_RANGES = {
    # the model and its data
    "n_layer": _POSITIVE_INT, "n_head": _POSITIVE_INT, "n_embd": _POSITIVE_INT, "max_length": number_in(2),
    "vocab_size": number_in(2), "dropout": _BELOW_ONE, "cutoff_year": number_in(1000, 2100), "batch_size": _POSITIVE_INT,
    "eval_max_batches": _NON_NEGATIVE_INT, "early_stopping_patience": _NON_NEGATIVE_INT,  # 0: the whole split
    # run control: 0 is the default "off", so a given value must be more
    "time_budget": _POSITIVE, "max_seconds": _POSITIVE, "stop_after_seconds": _POSITIVE,
    "stop_after_steps": _POSITIVE_INT, "profile_steps": _POSITIVE_INT, "decay_on_plateau": _POSITIVE_INT,
    # the Trainer's own
    "max_steps": _POSITIVE_INT, "num_train_epochs": _POSITIVE, "learning_rate": _POSITIVE,
    "per_device_train_batch_size": _POSITIVE_INT, "per_device_eval_batch_size": _POSITIVE_INT,
    "gradient_accumulation_steps": _POSITIVE_INT, "eval_accumulation_steps": _POSITIVE_INT,
    "warmup_steps": _NON_NEGATIVE, "warmup_ratio": _BELOW_ONE, "weight_decay": _NON_NEGATIVE,
    "max_grad_norm": _NON_NEGATIVE, "adam_beta1": _BELOW_ONE, "adam_beta2": _BELOW_ONE,
    "adam_epsilon": _POSITIVE, "logging_steps": _POSITIVE, "eval_steps": _POSITIVE, "save_steps": _POSITIVE,
    "save_total_limit": _POSITIVE_INT, "dataloader_num_workers": _NON_NEGATIVE_INT,
    "seed": _SEED, "data_seed": _SEED, "label_smoothing_factor": _BELOW_ONE, "neftune_noise_alpha": _POSITIVE,
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
class RunArguments:
    """Which run a command line names: its folder, the project root, a listing of it."""

    run_name_dir: Optional[str] = field(default=None, metadata={
        "help": "Run folder name under 09_models/checkpoints/ (default: --run_name, else the preset)."})
    root: Optional[str] = field(default=None, metadata={
        "help": "Project root holding data/ and 09_models/ (default: $LONDONLM_ROOT or the repo)."})
    list_checkpoints: bool = field(default=False, metadata={
        "help": "List this run's checkpoints (step, loss, time, validity) and exit."})


@dataclass
class DataArguments:
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
        "help": "Evaluate on at most this many validation batches (0 = the whole split), of the "
                "evaluation batch asked for (--per_device_eval_batch_size, else --batch_size, else "
                "the preset's), whatever micro-batch a GPU's memory is fitted to."})

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
    pad_vocab: str = field(default="auto", metadata={
        "help": "Pad the embedding and LM head to a multiple of 128 rows while training, for whole "
                "tensor-core tiles; the padded rows are never predicted (the loss is the unpadded "
                "model's) and never saved (checkpoints and final/ have the tokenizer's size). auto: "
                "on for GPU training, off on CPUs (not measured to help there); on, off."})
    sdpa_order: str = field(default="torch", metadata={
        "help": "The order PyTorch's SDPA attention tries its kernels in while training: torch "
                "(PyTorch's own: cuDNN's fused attention first on H100/H200/B200 with cuDNN > 9.15, "
                "FlashAttention first elsewhere), flash (FlashAttention first) or cudnn (cuDNN's "
                "first); a kernel that cannot serve the shape falls back to the next. The log names "
                "the kernel that runs. No effect on CPUs."})
    compile_regions: bool = field(default=False, metadata={
        "help": "Compile each repeated block once and reuse it for the others (accelerate's regional "
                "compilation) instead of the whole model in one graph: a shorter first step, for runs "
                "too short to pay back a whole compile (a time budget under 10 minutes trains eager "
                "on a GPU by default). Turns --torch_compile on. Its step speed and first step on a "
                "GPU: benchmarks/gpu_acceptance.py's 'regional compile' row."})
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
        if self.pad_vocab not in ("auto", "on", "off"):
            raise UsageError(f"--pad_vocab: must be auto, on or off, got {self.pad_vocab!r}")
        if self.sdpa_order not in SDPA_ORDERS:
            *rest, last = SDPA_ORDERS
            raise UsageError(f"--sdpa_order: must be {', '.join(rest)} or {last}, got {self.sdpa_order!r}")
        if self.autotune is not None and self.autotune not in MODES:
            raise UsageError(f"--autotune: must be {', '.join(MODES[:-1])} or {MODES[-1]}, got {self.autotune!r}")
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
                "then evaluates and saves final/ like any finished run. Without --max_steps or "
                "--num_train_epochs (either is then an upper bound) the budget alone decides the "
                "step count, and the warm-up (unless --warmup_steps is given) "
                "is the preset's share of its steps (e.g. 1,000 of 60,000) of the steps that fit. "
                "Refused before any work when it cannot hold the warm-up. Spans resumes. 0 = no budget."})
    max_seconds: float = field(default=0.0, metadata={
        "help": "Same as --time_budget."})
    stop_after_seconds: float = field(default=0.0, metadata={
        "help": "Stop with a checkpoint after this much training time in this invocation, keeping "
                "the planned schedule (for preemptible machines and chunked runs; resume later). "
                "0 = off."})
    stop_after_steps: int = field(default=0, metadata={
        "help": "Stop with a checkpoint once this invocation reaches this global step, keeping the "
                "--max_steps schedule (for preemptible machines and chunked runs; 0 = off)."})

    save_best: bool = field(default=False, metadata={
        "help": "Save a checkpoint whenever the validation loss improves and keep a copy of the "
                "best one in best/ (with best_info.json), beside the last --save_total_limit."})
    early_stopping_patience: int = field(default=0, metadata={
        "help": "Stop after this many evaluations without validation-loss improvement (0 = off)."})
    decay_on_plateau: int = field(default=0, metadata={
        "help": "With --time_budget: after this many evaluations without validation-loss "
                "improvement, begin the learning-rate decay at once (its usual fifth of the steps "
                "run so far) and end the run when it ends, rather than go on training on text the "
                "model has begun to overfit; the budget's unspent seconds are not used. 0 = off."})

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
        if self.decay_on_plateau and not (self.time_budget or self.max_seconds):
            raise UsageError("--decay_on_plateau needs --time_budget: it moves the decay of the "
                             "schedule a budget fits")


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
    run: RunArguments
    trainer: dict
    explicit: frozenset

    GROUPS = ("model", "speed", "data", "control", "run")

    @staticmethod
    def run_naming_flags(what: str, names: str) -> dict[str, str]:
        """The flags that name and place a run, for :meth:`refuse_given` in a command that trains
        several (``what``: "a grid", "a family"; ``names``: how it names each run)."""
        named = (f"does not apply to {what}: each run is named {names} in the runs folder of --root; "
                 f"choose the names with --prefix")
        return {"output_dir": named, "run_name": named, "run_name_dir": named,
                "list_checkpoints": f"does not apply to {what}: list one run's checkpoints with "
                                    f"04_training/train_model_slm.py --run_name NAME --list_checkpoints"}

    def refuse_given(self, owned: dict[str, str]) -> "TrainFlags":
        """Itself, unless a flag that the calling command (a grid, a family) sets for each of its
        runs was given: its value would be replaced without a word (``owned``: flag -> why, and
        what to give instead)."""
        given = sorted(set(owned) & self.explicit)
        if given:
            raise UsageError(f"--{given[0]} {owned[given[0]]}")
        return self

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

    rank()  # torchrun's RANK/WORLD_SIZE/LOCAL_RANK, junk or contradictory: one line naming the variable
    argv = our_optimizer_flag(list(argv))
    given = explicit_flags(argv)
    argv, report_to = take_report_to(argv)  # checked here: one line, before any work
    check_json_objects(argv)
    if "output_dir" not in given:
        argv += ["--output_dir", _UNSET]
    if {"load_best_model_at_end", "lr_scheduler_type"} & given and not {"eval_strategy", "evaluation_strategy"} & given:
        # TrainingArguments checks these (the best model, a schedule that follows the evaluation
        # loss) against its own default, no evaluations, while parsing; every preset evaluates
        # by steps (and saves at each evaluation), as given here
        argv += ["--eval_strategy", "steps"]
    if not torch.cuda.is_available() and "use_cpu" not in given:
        # a machine showing GPUs this torch cannot use would train on the CPU without a word
        require_usable_gpus()
        # TrainingArguments validates while parsing and refuses an explicit --bf16 on a GPU-less
        # machine unless use_cpu is set (bf16 autocast on CPU is what we want there)
        argv += ["--use_cpu", "true"]
    parser = type("FlagParser", (OneLineErrors, HfArgumentParser), {})(
        (*groups, TrainingArguments), prog=prog, description=description, allow_abbrev=False)
    try:
        # the values' ranges are checked on argparse's own conversion, before TrainingArguments
        # is built: building it imports the model code (~4 s), which a mistyped value need not wait for
        namespace, _ = parser.parse_known_args(argv)
        check_ranges({k: v for k, v in vars(namespace).items() if k in given}, FLAG_RANGES)
        *values, ta, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except UsageError:
        raise
    except Exception as e:  # TrainingArguments checks what it was given as it builds (files too)
        raise UsageError(_refused(e, argv)) from None
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)} (see --help)")
    trainer = {f.name: getattr(ta, f.name) for f in dataclasses.fields(ta) if f.init}
    check_trainer_args(ta, given)
    if "output_dir" not in given:
        trainer["output_dir"] = None
    if report_to is not None:
        trainer["report_to"] = report_to
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
        argv, (ModelArguments, SpeedArguments, DataArguments, RunControlArguments, RunArguments), prog,
        description)
    return TrainFlags(*values, trainer, given)


def precision_given(trainer: dict, explicit) -> str | None:
    """The precision ``--bf16``/``--fp16`` set (either way), from the Trainer's parsed values
    and the names of the flags given; None when neither was given."""
    if not {"bf16", "fp16"} & set(explicit):
        return None
    return "bf16" if trainer.get("bf16") else "fp16" if trainer.get("fp16") else "fp32"
