"""Step 2 of a run, speed and time: the precision, attention kernel and fused loss this
machine runs fastest (``--autotune``, measured once per machine and cached; explicit flags
win), and the time budget (``--time_budget`` / ``--max_seconds``): refused before any data
work when it cannot hold the warm-up, then a warmup-stable-decay schedule fitted to it while
training (``londonlm.schedules``), so the run ends on time with a finished schedule and
``final/`` saved. Also the optimizer factory for ``--optim muon``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..autotune import Candidate, SpeedChoice, resolve_speed_settings, time_candidate
from ..ranks import agree
from ..schedules import BudgetFitCallback, WarmupStableDecay, check_budget
from .base import TrainingError, log
from .model import Kernels
from .options import RunOptions
from .plan import TrainingPlan

# The decay takes the last fifth of a budget-fitted schedule: long enough to anneal fully,
# short enough that most of the budget trains at the peak rate (Hägele et al., 2024).
BUDGET_DECAY_FRACTION = 0.2
PRECISIONS = ("fp32", "bf16", "fp16")


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


def explicit_speed(opts: RunOptions) -> dict:
    """The speed settings the user gave on the command line (they are never overridden)."""
    out = {}
    if opts.precision_given:
        out["precision"] = opts.precision_given
    if opts.attn_implementation != "auto":
        out["attn_implementation"] = opts.attn_implementation
    if opts.fused_loss != "auto":
        out["fused_loss"] = opts.fused_loss == "on"
    return out


def resumed_speed(plan: TrainingPlan) -> dict:
    """A resumed run keeps what its checkpoints were trained with, so that it continues
    exactly as the uninterrupted run would have (a later probe might choose otherwise)."""
    info = plan.previous_info if plan.resume is not None else {}
    keys = {"precision": "precision", "attn_implementation": "attn_implementation",
            "fused_loss": "fused_loss"}
    out = {k: info[src] for k, src in keys.items() if src in info}
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


def choose_speed(opts: RunOptions, args, plan: TrainingPlan) -> SpeedPlan:
    """Precision, attention and fused loss for this run; sets ``args``' precision to match."""
    import torch

    explicit = explicit_speed(opts)
    resumed = resumed_speed(plan)
    if resumed and len(explicit) < 3:
        choice = SpeedChoice(Candidate(**{**resumed, **explicit}), "resumed",
                             message=f"speed settings of the resumed run kept: "
                                     f"{Candidate(**{**resumed, **explicit}).describe()}")
    else:
        choice = resolve_speed_settings(opts.autotune, plan.shape, args.per_device_train_batch_size,
                                        explicit, world_size=plan.world,
                                        max_probe_seconds=opts.autotune_seconds, log=log)
    fallback = resolve_speed_settings("off", plan.shape, args.per_device_train_batch_size, explicit,
                                      log=lambda _m: None).candidate
    cand = _agreed(choice.candidate, fallback)
    log(choice.message if cand == choice.candidate else f"speed settings: {cand.describe()}")
    apply_precision(args, cand.precision)
    step = choice.step_seconds * args.gradient_accumulation_steps if choice.step_seconds else None
    kernels = Kernels(cand.attn_implementation, cand.fused_loss, cand.precision, torch.cuda.is_available())
    return SpeedPlan(kernels, choice.source, choice.message, step, choice.figures)


def check_time_budget(opts: RunOptions, args, plan: TrainingPlan, speed: SpeedPlan) -> None:
    """Refuse, before the token cache is touched, a budget that cannot hold the warm-up. The
    step time is the autotune figure, else two timed steps of the chosen settings."""
    if not opts.time_budget:
        return
    step = speed.step_seconds
    if step is None:
        k = speed.kernels
        times = time_candidate(Candidate(k.precision, k.attn, k.fused_loss), plan.shape,
                               args.per_device_train_batch_size, warmup_steps=1, timed_steps=2)
        step = min(times) * args.gradient_accumulation_steps
    step = agree([round(step * 1e6)])[0] / 1e6  # the slowest rank's estimate, on every rank
    fits = check_budget(opts.time_budget, args.warmup_steps, step)
    log(f"time budget {opts.time_budget:g} s: about {fits} steps at ~{step:.3g} s per step "
        f"(fitted while training)")


def budget_schedule(opts: RunOptions, args) -> WarmupStableDecay | None:
    """The learning-rate schedule a budgeted run trains with (None: the Trainer's own)."""
    if not opts.time_budget:
        return None
    floor = float((args.lr_scheduler_kwargs or {}).get("min_lr_rate", 0.0))
    return WarmupStableDecay(args.warmup_steps, args.max_steps, BUDGET_DECAY_FRACTION, floor, "linear")


def budget_callback(opts: RunOptions) -> BudgetFitCallback | None:
    return BudgetFitCallback(opts.time_budget, log=log) if opts.time_budget else None


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


def check_resume_optimizer(opts: RunOptions, plan: TrainingPlan) -> None:
    """A checkpoint's optimizer state only loads into the optimizer that wrote it."""
    if plan.resume is None:
        return
    settings = plan.previous_info.get("settings") or {}
    before = settings.get("optimizer", "adamw")
    if before != opts.optimizer:
        raise TrainingError(
            f"{plan.resume} was trained with --optim {before}; resume it with --optim {before}, "
            f"or start a new run from its weights with --init_from {plan.resume} --optim "
            f"{opts.optimizer} --run_name NEW (or --fresh to start this run over)")


def optimizer_factory(opts: RunOptions, args):
    """``--optim muon``: Muon on the hidden matrices, AdamW on the rest (None: the Trainer's)."""
    if opts.optimizer == "adamw":
        return None
    if opts.optimizer != "muon":
        raise TrainingError(f"unknown optimizer {opts.optimizer!r}: choose adamw or muon")
    from ..optim import build_muon_adamw, describe_split, muon_options_from_args

    def build(model):
        log(describe_split(model))
        return build_muon_adamw(model, muon_options_from_args(args))

    return build
