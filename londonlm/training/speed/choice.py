"""The speed settings a run trains with, and the numbers that follow from them: the precision,
attention kernel and LM-head loss (a resumed run's own, else measured by the probe or the fixed
rules; agreed by every rank), whether ``torch.compile`` can build kernels here (checked before
any data work: off with a message, or refused when asked for), the micro-batch fitted to the
GPU's free memory, and the step time a ``--time_budget`` is checked against.
"""
from __future__ import annotations

import os
import shutil
import sysconfig
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ...core import free_memory_bytes
from ..dist import TrainingError, agree, log
from ..step.schedules import check_budget
from .probe import SpeedChoice, resolve_speed_settings, time_candidate
from .settings import PRECISIONS, SpeedRequest, SpeedSettings


@dataclass
class SpeedPlan:
    """What a run trains with: the settings, on which device, why, and the step time when known."""
    settings: SpeedSettings
    cuda: bool
    source: str                      # measured | cached | default | explicit | resumed
    message: str
    step_seconds: float | None       # one optimizer step (all micro-batches), when known
    figures: dict = field(default_factory=dict)

    def record(self) -> dict:
        """run_info.json's "speed" entry."""
        return {"source": self.source, "step_seconds_estimate": self.step_seconds,
                "seconds_per_micro_batch": self.figures, "why": self.message}


def apply_precision(args, precision: str) -> None:
    """Set ``TrainingArguments``' precision after it was built: ``bf16``/``fp16`` and the
    ``mixed_precision`` it derived from them at construction (the accelerator reads that)."""
    args.bf16, args.fp16 = precision == "bf16", precision == "fp16"
    args.mixed_precision = "no" if precision == "fp32" else precision


def _agreed(choice: SpeedSettings, fallback: SpeedSettings) -> SpeedSettings:
    """Every rank trains with the same settings: if the ranks' caches chose differently (nodes
    with caches of their own), all of them use ``fallback`` (the fixed rules)."""
    code = PRECISIONS.index(choice.precision) * 4 + \
        ("sdpa", "eager").index(choice.attn_implementation) * 2 + int(choice.fused_loss)
    lo, hi = agree([-code, code])
    if -lo != hi:
        log("autotune: the ranks' caches chose different settings; all use the fixed rules")
        return fallback
    return choice


def choose_speed(request: SpeedRequest, args, shape, world: int, kept: SpeedSettings | None = None) -> SpeedPlan:
    """Precision, attention and fused loss for a model of ``shape`` trained with ``args``
    (``kept``: a resumed run's own, which it keeps unless the command line names others); sets
    ``args``' precision and torch.compile to match. The one speed policy of every training job."""
    import torch

    given, batch = request.given, args.per_device_train_batch_size
    if kept is not None and not given.complete:
        settings = given.over(kept)
        choice = SpeedChoice(settings, "resumed", message=f"speed settings of the resumed run kept: "
                                                          f"{settings.describe()}")
    else:
        choice = resolve_speed_settings(request.autotune, shape, batch, given, world_size=world,
                                        max_probe_seconds=request.probe_seconds, log=log,
                                        free_bytes=free_memory_bytes("cpu"))
    fallback = resolve_speed_settings("off", shape, batch, given, log=lambda _m: None).candidate
    settings = _agreed(choice.candidate, fallback)
    log(choice.message if settings == choice.candidate else f"speed settings: {settings.describe()}")
    apply_precision(args, settings.precision)
    settle_compile(args, request.compile_given)
    step = choice.step_seconds * args.gradient_accumulation_steps if choice.step_seconds else None
    return SpeedPlan(settings, torch.cuda.is_available(), choice.source, choice.message, step, choice.figures)


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


def memory_of(shape, batch: int, settings: SpeedSettings, optimizer: str, dropout: float, shards: int = 1):
    """:meth:`ModelShape.training_memory` of a step trained with these settings."""
    return shape.training_memory(batch, attention=settings.attn_implementation, precision=settings.precision,
                                 fused_loss=settings.fused_loss, optimizer=optimizer, dropout=dropout,
                                 shards=shards)


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


def fit_batch_to_memory(args, shape, speed: SpeedPlan, request: SpeedRequest, dropout: float, world: int = 1,
                        kept: tuple[int, int] | None = None) -> None:
    """Log the step's memory estimate; on CUDA, unless the command line fixed the batch, choose
    the micro-batch from the free memory every rank measured (the least of them), keeping
    batch x accumulation (tokens per step): a preset's 16 x 512 x 2 uses a fifth of an 80 GB
    card. A resumed run keeps the split it was trained with (``kept``: batch, accumulation), so
    that it continues as the uninterrupted run would."""
    shards = world if args.fsdp else 1
    batch, accum = args.per_device_train_batch_size, args.gradient_accumulation_steps
    per_step, fit = batch * accum, speed.cuda and not request.batch_given
    if fit and kept is not None and kept[0] * kept[1] == per_step:
        if kept[0] != batch:
            log(f"micro-batch {kept[0]} x {kept[1]} accumulation steps, as the resumed run trained")
            _set_micro_batch(args, kept[0], per_step, request.eval_batch_given)
    elif fit:
        free = -agree([-free_memory_bytes("cuda")])[0]
        chosen = fit_micro_batch(per_step, lambda b: memory_of(
            shape, b, speed.settings, request.optimizer, dropout, shards).total <= GPU_MEMORY_SHARE * free)
        if chosen != batch:
            log(f"micro-batch {chosen} x {per_step // chosen} accumulation steps (was {batch} x {accum}; "
                f"same tokens per step): the largest whose estimated peak fits "
                f"{GPU_MEMORY_SHARE:.0%} of the {_gb(free)} free on the GPU (--batch_size fixes it)")
            _set_micro_batch(args, chosen, per_step, request.eval_batch_given)
    batch, k = args.per_device_train_batch_size, speed.settings
    m = memory_of(shape, batch, k, request.optimizer, dropout, shards)
    log(f"memory: ~{_gb(m.total)} per device to train at micro-batch {batch} ({k.attn_implementation} "
        f"attention, {k.precision}, {'fused' if k.fused_loss else 'stock'} loss): weights, gradients and "
        f"optimizer {_gb(m.state)}, activations {_gb(m.activations + m.scores)}, LM head {_gb(m.logits)}")


# --------------------------------------------------------------------------- the time budget's step time

def check_time_budget(time_budget: float, args, shape, speed: SpeedPlan) -> None:
    """Refuse, before the data is touched, a budget that cannot hold the warm-up. The step
    time is the autotune figure, else two timed steps of the chosen settings."""
    if not time_budget:
        return
    step = speed.step_seconds
    if step is None:  # timed as the run will train: compiled when it compiles (the warm-up compiles)
        times = time_candidate(speed.settings, shape, args.per_device_train_batch_size, warmup_steps=1,
                               timed_steps=2, compile=bool(args.torch_compile))
        step = min(times) * args.gradient_accumulation_steps
    step = agree([round(step * 1e6)])[0] / 1e6  # the slowest rank's estimate, on every rank
    fits = check_budget(time_budget, args.warmup_steps, step)
    log(f"time budget {time_budget:g} s: about {fits} steps at ~{step:.3g} s per step "
        f"(fitted while training)")
