"""Step 2 of a run, speed and time: the precision, attention kernel and fused loss this
machine runs fastest (``--autotune``, measured once per machine and cached; explicit flags
win), and the time budget (``--time_budget`` / ``--max_seconds``): refused before any data
work when it cannot hold the warm-up, then a warmup-stable-decay schedule fitted to it while
training (``londonlm.training.schedules``), so the run ends on time with a finished schedule and
``final/`` saved; whether ``torch.compile`` can build kernels here (checked before any data
work; off with a message, or refused when asked for); the optimizer factory for ``--optim muon``.
"""
from __future__ import annotations

import os
import shutil
import sysconfig
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..core import free_memory_bytes
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
    compile_given: bool = False          # --torch_compile was on the command line

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
                                        max_probe_seconds=speed.probe_seconds, log=log,
                                        free_bytes=free_memory_bytes("cpu"))
    fallback = resolve_speed_settings("off", shape, batch, explicit, log=lambda _m: None).candidate
    cand = _agreed(choice.candidate, fallback)
    log(choice.message if cand == choice.candidate else f"speed settings: {cand.describe()}")
    apply_precision(args, cand.precision)
    settle_compile(args, speed.compile_given)
    step = choice.step_seconds * args.gradient_accumulation_steps if choice.step_seconds else None
    kernels = Kernels(cand.attn_implementation, cand.fused_loss, cand.precision, torch.cuda.is_available())
    return SpeedPlan(kernels, choice.source, choice.message, step, choice.figures)


# --------------------------------------------------------------------------- torch.compile

def _compiler_problem(device_type: str) -> str | None:
    """What torch.compile's code generators need and this machine lacks, or None: on CUDA,
    Triton and a C compiler (Triton builds a small C launcher per kernel signature), on the
    CPU a C++ compiler (inductor's kernels); and the Python headers, both."""
    if device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed (torch's CUDA wheels for Linux bring it)"
        cc = os.environ.get("CC")
        if not (shutil.which(cc) if cc else any(shutil.which(c) for c in ("cc", "gcc", "clang"))):
            return (f"no C compiler ({'CC=' + cc if cc else 'cc, gcc or clang'}): Triton builds a C "
                    f"launcher for each kernel; install gcc")
    else:
        import torch._inductor.config as inductor_config

        cxx = inductor_config.cpp.cxx[-1]  # what inductor will call ($CXX, else g++)
        if not shutil.which(cxx):
            return f"no C++ compiler ({cxx}) for inductor's CPU kernels; install g++"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        return f"no Python headers ({headers}); install the python3-dev package of this Python"
    return None


def _probe(x):
    return (x * 2.0).sin() + 1.0


def compile_problem(device_type: str) -> str | None:
    """Why torch.compile cannot build kernels for ``device_type`` here (one line), or None. The
    tools it needs first, then a real compile of a tiny function with inductor's caches off (a
    cached kernel would load without a compiler and prove nothing)."""
    import torch
    import torch._inductor.config as inductor_config

    missing = _compiler_problem(device_type)
    if missing:
        return missing
    try:
        with inductor_config.patch(force_disable_caches=True), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "dynamo_pgo force disabled": what we asked for
            torch.compile(_probe, dynamic=False)(torch.ones(8, device=device_type))
        if device_type == "cuda":
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001  (whatever stops the compile stops the run's too)
        lines = str(e).strip().splitlines()
        return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"
    finally:
        torch._dynamo.reset()
    return None


def compile_off(args) -> None:
    """Turn ``TrainingArguments``' torch.compile off after it was built: its backend too, from
    which the Trainer builds accelerate's dynamo plugin (a backend alone compiles)."""
    args.torch_compile, args.torch_compile_backend, args.torch_compile_mode = False, None, None


def settle_compile(args, given: bool) -> None:
    """Before any data work, every rank checks that torch.compile can build kernels here. Where
    one cannot: asked for on the command line, the run is refused naming the fix; on by default
    (CUDA), every rank trains eager and the log says why."""
    import torch

    if not args.torch_compile:
        return
    problem = compile_problem("cuda" if not args.use_cpu and torch.cuda.is_available() else "cpu")
    if not agree([int(problem is not None)])[0]:
        return
    problem = problem or "another rank could not compile"
    if given:
        raise TrainingError(f"--torch_compile: torch.compile cannot build kernels here ({problem}); "
                            f"install what it names, or pass --torch_compile false")
    compile_off(args)
    log(f"torch.compile: off, training eager: it cannot build kernels here ({problem}). Install what "
        f"it names to compile; --torch_compile false skips this check")


# --------------------------------------------------------------------------- memory and micro-batch

# Share of a GPU's free memory a step's estimated peak may take: the estimate is of an eager step
# (a compiled one stores less), and the allocator's fragmentation and NCCL's buffers need the rest
GPU_MEMORY_SHARE = 0.85


def memory_of(shape, batch: int, kernels: Kernels, optimizer: str, dropout: float, shards: int = 1):
    """:meth:`ModelShape.training_memory` of a step trained with these kernels."""
    return shape.training_memory(batch, attention=kernels.attn, precision=kernels.precision,
                                 fused_loss=kernels.fused_loss, optimizer=optimizer,
                                 dropout=dropout, shards=shards)


def fit_micro_batch(sequences_per_step: int, fits: Callable[[int], bool]) -> int:
    """The largest micro-batch that divides the sequences each rank trains per optimizer step
    (so the tokens per step stay the same) and ``fits``; 1 when none does."""
    return max((b for b in range(1, sequences_per_step + 1) if sequences_per_step % b == 0 and fits(b)),
               default=1)


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB" if x >= 1e9 else f"{x / 1e6:.0f} MB"


def _set_micro_batch(args, batch: int, per_step: int, eval_batch_given: bool) -> None:
    args.per_device_train_batch_size, args.gradient_accumulation_steps = batch, per_step // batch
    if not eval_batch_given:
        args.per_device_eval_batch_size = batch


def fit_batch_to_memory(args, shape, kernels: Kernels, optimizer: str, dropout: float,
                        batch_given: bool, eval_batch_given: bool, world: int = 1,
                        previous_info: dict | None = None) -> None:
    """Log the step's memory estimate; on CUDA, unless the command line fixed the batch, choose
    the micro-batch from the free memory every rank measured (the least of them), keeping
    batch x accumulation (tokens per step): a preset's 16 x 512 x 2 uses a fifth of an 80 GB
    card. A resumed run keeps the split it was trained with (``previous_info``), so that it
    continues as the uninterrupted run would."""
    shards = world if args.fsdp else 1
    batch, accum = args.per_device_train_batch_size, args.gradient_accumulation_steps
    per_step = batch * accum
    before = (previous_info or {}).get("batch_size"), (previous_info or {}).get("gradient_accumulation_steps")
    if kernels.cuda and not batch_given and None not in before and before[0] * before[1] == per_step:
        if before[0] != batch:
            log(f"micro-batch {before[0]} x {before[1]} accumulation steps, as the resumed run trained")
            _set_micro_batch(args, before[0], per_step, eval_batch_given)
    elif kernels.cuda and not batch_given:
        free = -agree([-free_memory_bytes("cuda")])[0]
        chosen = fit_micro_batch(per_step, lambda b: memory_of(
            shape, b, kernels, optimizer, dropout, shards).total <= GPU_MEMORY_SHARE * free)
        if chosen != batch:
            log(f"micro-batch {chosen} x {per_step // chosen} accumulation steps (was {batch} x {accum}; "
                f"same tokens per step): the largest whose estimated peak fits "
                f"{GPU_MEMORY_SHARE:.0%} of the {_gb(free)} free on the GPU (--batch_size fixes it)")
            _set_micro_batch(args, chosen, per_step, eval_batch_given)
    batch = args.per_device_train_batch_size
    m = memory_of(shape, batch, kernels, optimizer, dropout, shards)
    log(f"memory: ~{_gb(m.total)} per device to train at micro-batch {batch} ({kernels.attn} attention, "
        f"{kernels.precision}, {'fused' if kernels.fused_loss else 'stock'} loss): weights, gradients and "
        f"optimizer {_gb(m.state)}, activations {_gb(m.activations + m.scores)}, LM head {_gb(m.logits)}")


def check_time_budget(time_budget: float, args, shape, speed: SpeedPlan) -> None:
    """Refuse, before the data is touched, a budget that cannot hold the warm-up. The step
    time is the autotune figure, else two timed steps of the chosen settings."""
    if not time_budget:
        return
    step = speed.step_seconds
    if step is None:  # timed as the run will train: compiled when it compiles (the warm-up compiles)
        k = speed.kernels
        times = time_candidate(Candidate(k.precision, k.attn, k.fused_loss), shape,
                               args.per_device_train_batch_size, warmup_steps=1, timed_steps=2,
                               compile=bool(args.torch_compile))
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


def budget_callback(time_budget: float, clock: Callable[[], float] | None = None) -> BudgetFitCallback | None:
    if not time_budget:
        return None
    return BudgetFitCallback(time_budget, log=log, **({"clock": clock} if clock else {}))


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
