"""Step 2 of a run, speed and time: the precision, attention kernel and fused loss this
machine runs fastest (``--autotune``, measured once per machine and cached; explicit flags
win), and the time budget (``--time_budget`` / ``--max_seconds``): refused before any data
work when it cannot hold the warm-up, then a warmup-stable-decay schedule fitted to it while
training (``londonlm.training.schedules``), so the run ends on time with a finished schedule and
``final/`` saved. Also the optimizer factory for ``--optim muon``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .autotune import Candidate, SpeedChoice, resolve_speed_settings, time_candidate
from .base import TrainingError, log
from .model import Kernels
from .ranks import agree
from .schedules import BudgetFitCallback, WarmupStableDecay, check_budget

# The decay takes the last fifth of a budget-fitted schedule: long enough to anneal fully,
# short enough that most of the budget trains at the peak rate (Hägele et al., 2024).
BUDGET_DECAY_FRACTION = 0.2
PRECISIONS = ("fp32", "bf16", "fp16")
# What a run records of its speed settings (run_info.json), and a resumed run keeps
SPEED_RECORD_KEYS = ("precision", "attn_implementation", "fused_loss")


@dataclass(frozen=True)
class SpeedOptions:
    """What a training job asks of its speed settings, whatever it trains (pre-training, chat):
    the --autotune mode, the settings given on the command line (never overridden) and the
    optimizer."""

    autotune: str = "on"                 # off | on | refresh (londonlm.training.autotune)
    probe_seconds: float = 60.0          # cap on the autotune probe's time
    precision: str | None = None         # fp32/bf16/fp16 when --bf16/--fp16 was given
    attn_implementation: str = "auto"    # auto | sdpa | eager
    fused_loss: str = "auto"             # auto | on | off
    optimizer: str = "adamw"             # adamw | muon

    def explicit(self) -> dict:
        """The speed settings the user gave on the command line."""
        out = {}
        if self.precision:
            out["precision"] = self.precision
        if self.attn_implementation != "auto":
            out["attn_implementation"] = self.attn_implementation
        if self.fused_loss != "auto":
            out["fused_loss"] = self.fused_loss == "on"
        return out


@dataclass
class SpeedPlan:
    kernels: Kernels
    source: str                      # measured | cached | default | explicit | resumed
    message: str
    step_seconds: float | None       # one optimizer step (all micro-batches), when known
    figures: dict = field(default_factory=dict)

    def record(self) -> dict:
        """run_info.json's "speed" entry."""
        return {"source": self.source, "step_seconds_estimate": self.step_seconds,
                "seconds_per_micro_batch": self.figures, "why": self.message}


def resumed_speed(previous_info: dict) -> dict:
    """A resumed run keeps what its checkpoints were trained with (``previous_info``: the
    interrupted run's run_info.json, {} when not resuming), so that it continues exactly as
    the uninterrupted run would have (a later probe might choose otherwise)."""
    out = {k: previous_info[k] for k in SPEED_RECORD_KEYS if k in previous_info}
    return out if len(out) == 3 and out["precision"] in PRECISIONS else {}


def apply_precision(args, precision: str) -> None:
    """Set ``TrainingArguments``' precision after it was built: ``bf16``/``fp16`` and the
    ``mixed_precision`` it derived from them at construction (the accelerator reads that)."""
    args.bf16, args.fp16 = precision == "bf16", precision == "fp16"
    args.mixed_precision = "no" if precision == "fp32" else precision


def _agreed(choice: Candidate, fallback: Candidate) -> Candidate:
    """Every rank trains with the same settings: if the ranks' caches chose differently (nodes
    with caches of their own), all of them use ``fallback`` (the fixed rules)."""
    code = ("fp32", "bf16", "fp16").index(choice.precision) * 4 + \
        ("sdpa", "eager").index(choice.attn_implementation) * 2 + int(choice.fused_loss)
    lo, hi = agree([-code, code])
    if -lo != hi:
        log("autotune: the ranks' caches chose different settings; all use the fixed rules")
        return fallback
    return choice


def choose_speed(speed: SpeedOptions, args, shape, world: int, previous_info: dict) -> SpeedPlan:
    """Precision, attention and fused loss for a model of ``shape`` trained with ``args``
    (``previous_info``: the resumed run's record, {} for a new run); sets ``args``'
    precision to match. The one precision policy of every training job."""
    import torch

    explicit = speed.explicit()
    resumed = resumed_speed(previous_info)
    batch = args.per_device_train_batch_size
    if resumed and len(explicit) < 3:
        kept = Candidate(**{**resumed, **explicit})
        choice = SpeedChoice(kept, "resumed", message=f"speed settings of the resumed run kept: "
                                                      f"{kept.describe()}")
    else:
        choice = resolve_speed_settings(speed.autotune, shape, batch, explicit, world_size=world,
                                        max_probe_seconds=speed.probe_seconds, log=log)
    fallback = resolve_speed_settings("off", shape, batch, explicit, log=lambda _m: None).candidate
    cand = _agreed(choice.candidate, fallback)
    log(choice.message if cand == choice.candidate else f"speed settings: {cand.describe()}")
    apply_precision(args, cand.precision)
    step = choice.step_seconds * args.gradient_accumulation_steps if choice.step_seconds else None
    kernels = Kernels(cand.attn_implementation, cand.fused_loss, cand.precision, torch.cuda.is_available())
    return SpeedPlan(kernels, choice.source, choice.message, step, choice.figures)


def check_time_budget(time_budget: float, args, shape, speed: SpeedPlan) -> None:
    """Refuse, before the data is touched, a budget that cannot hold the warm-up. The step
    time is the autotune figure, else two timed steps of the chosen settings."""
    if not time_budget:
        return
    step = speed.step_seconds
    if step is None:
        k = speed.kernels
        times = time_candidate(Candidate(k.precision, k.attn, k.fused_loss), shape,
                               args.per_device_train_batch_size, warmup_steps=1, timed_steps=2)
        step = min(times) * args.gradient_accumulation_steps
    step = agree([round(step * 1e6)])[0] / 1e6  # the slowest rank's estimate, on every rank
    fits = check_budget(time_budget, args.warmup_steps, step)
    log(f"time budget {time_budget:g} s: about {fits} steps at ~{step:.3g} s per step "
        f"(fitted while training)")


def budget_schedule(time_budget: float, args) -> WarmupStableDecay | None:
    """The learning-rate schedule a budgeted run trains with (None: the Trainer's own)."""
    if not time_budget:
        return None
    floor = float((args.lr_scheduler_kwargs or {}).get("min_lr_rate", 0.0))
    return WarmupStableDecay(args.warmup_steps, args.max_steps, BUDGET_DECAY_FRACTION, floor, "linear")


def budget_callback(time_budget: float) -> BudgetFitCallback | None:
    return BudgetFitCallback(time_budget, log=log) if time_budget else None


def attach_budget_fit(trainer, fit: BudgetFitCallback) -> None:
    """The Trainer's progress bar shows the fitted step count, not the cap it started with;
    the fitter runs first among the callbacks, so the loggers (``report_to``, the log file,
    the progress bar) get its corrected end-of-training samples/s."""
    from transformers.trainer_callback import ProgressCallback

    handler = trainer.callback_handler
    handler.callbacks.remove(fit)
    handler.callbacks.insert(0, fit)
    bars = [c for c in handler.callbacks if isinstance(c, ProgressCallback)]

    def on_total(total: int) -> None:
        for cb in bars:
            bar = getattr(cb, "training_bar", None)
            if bar is not None and bar.total != total:
                bar.total = total
                bar.refresh()

    fit.on_total = on_total


def check_resume_optimizer(optimizer: str, resume, previous_info: dict) -> None:
    """A checkpoint's optimizer state only loads into the optimizer that wrote it."""
    if resume is None:
        return
    settings = previous_info.get("settings") or {}
    before = settings.get("optimizer", "adamw")
    if before != optimizer:
        raise TrainingError(
            f"{resume} was trained with --optim {before}; resume it with --optim {before}, "
            f"or start a new run from its weights with --init_from {resume} --optim "
            f"{optimizer} --run_name NEW (or --fresh to start this run over)")


def optimizer_factory(optimizer: str, args):
    """``--optim muon``: Muon on the hidden matrices, AdamW on the rest (None: the Trainer's)."""
    if optimizer == "adamw":
        return None
    if optimizer != "muon":
        raise TrainingError(f"unknown optimizer {optimizer!r}: choose adamw or muon")
    from .optim import build_muon_adamw, describe_split, muon_options_from_args

    def build(model):
        log(describe_split(model))
        return build_muon_adamw(model, muon_options_from_args(args))

    return build
