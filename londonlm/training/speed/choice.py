"""The speed settings a run trains with, and the numbers that follow from them: the precision,
attention kernel and LM-head loss (a resumed run's own, else measured by the probe or the fixed
rules; agreed by every rank), whether ``torch.compile`` can build kernels here (:mod:`.compile`),
the micro-batch fitted to the GPU's free memory, and the step time a ``--time_budget`` is checked
against. Each decision takes the job's configuration tree (:mod:`..job`) and returns a new one.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from transformers import TrainerCallback

from ...core import free_memory_bytes
from ..dist import TrainingError, agree, is_main_process, log
from ..step.schedules import check_budget, shared_warmup
from ..step.vocab_padding import padded_vocab
from .probe import SpeedChoice, resolve_speed_settings, time_candidate
from .cache import forget
from .compile import settle_compile
from .settings import PRECISIONS, SpeedSettings, emulated_bf16_notice, machine_bf16


@dataclass
class SpeedPlan:
    """What a run trains with: the settings, on which device, why, and the step time when known."""
    settings: SpeedSettings
    cuda: bool
    source: str                      # measured | cached | default | explicit | resumed
    message: str
    step_seconds: float | None       # one optimizer step (all micro-batches), when known
    figures: dict = field(default_factory=dict)
    cache: tuple | None = None       # (cache file, key) the estimate came from (measured | cached)

    def record(self) -> dict:
        """run_info.json's "speed" entry."""
        return {"source": self.source, "step_seconds_estimate": self.step_seconds,
                "seconds_per_micro_batch": self.figures, "why": self.message}


def _agreed(choice: SpeedSettings, fallback: SpeedSettings) -> SpeedSettings:
    """Every rank trains with the same settings: if the ranks' caches chose differently (nodes
    with caches of their own), all of them use ``fallback`` (the fixed rules)."""
    code = ((PRECISIONS.index(choice.precision) * 2 + ("sdpa", "eager").index(choice.attn_implementation)) * 2
            + int(choice.fused_loss)) * 2 + int(bool(choice.pad_vocab))
    lo, hi = agree([-code, code])
    if -lo != hi:
        log("autotune: the ranks' caches chose different settings; all use the fixed rules")
        return fallback
    return choice


def choose_speed(config, shape, world: int, kept: SpeedSettings | None = None):
    """Precision, attention and fused loss for a model of ``shape`` trained as ``config`` asks
    (``kept``: a resumed run's own, which it keeps unless the command line names others), and
    torch.compile where it can build kernels. The one speed policy of every training job.
    Returns (the tree with them, the :class:`SpeedPlan`)."""
    import torch

    request, batch = config.speed.request, config.speed.micro_batch
    given = request.given
    if kept is not None and not given.complete:
        settings = given.over(kept)
        choice = SpeedChoice(settings, "resumed", message=f"speed settings of the resumed run kept: "
                                                          f"{settings.describe()}")
    else:
        choice = resolve_speed_settings(request.autotune, shape, batch, given, world_size=world,
                                        max_probe_seconds=request.probe_seconds, log=log,
                                        free_bytes=free_memory_bytes("cpu"), dropout=config.model.dropout)
    fallback = resolve_speed_settings("off", shape, batch, given, log=lambda _m: None).candidate
    settings = _agreed(choice.candidate, fallback)
    log(choice.message if settings == choice.candidate else f"speed settings: {settings.describe()}")
    cuda = torch.cuda.is_available()
    notice = emulated_bf16_notice(settings, machine_bf16({"device": "cpu"}), cuda)
    if notice:
        log(notice)
    config = settle_compile(config.but(speed={"chosen": settings}))
    step = choice.step_seconds * config.speed.grad_accum if choice.step_seconds else None
    return config, SpeedPlan(settings, cuda, choice.source, choice.message, step,
                             choice.figures, choice.cache if settings == choice.candidate else None)


# --------------------------------------------------------------------------- memory and micro-batch

# Share of a GPU's free memory a step's estimated peak may take: the estimate is of an eager step
# (a compiled one stores less), and the allocator's fragmentation and NCCL's buffers need the rest
GPU_MEMORY_SHARE = 0.85


def memory_of(shape, batch: int, settings: SpeedSettings, optimizer: str, dropout: float, shards: int = 1):
    """:meth:`ModelShape.training_memory` of a step trained with these settings (at the padded
    rows when the vocabulary is padded)."""
    if settings.pad_vocab:
        shape = replace(shape, vocab_size=padded_vocab(shape.vocab_size))
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


def _with_micro_batch(config, batch: int):
    """The tree with this micro-batch, the accumulation that keeps the tokens per step, and the
    same evaluation batch unless one was given."""
    per_step = config.sequences_per_step
    speed = {"micro_batch": batch, "grad_accum": per_step // batch}
    if not config.speed.eval_batch_given:
        speed["eval_batch"] = batch
    return config.but(speed=speed)


def fit_batch_to_memory(config, shape, speed: SpeedPlan, world: int = 1, kept: tuple[int, int] | None = None):
    """Log the step's memory estimate; on CUDA, unless the command line fixed the batch, choose
    the micro-batch from the free memory every rank measured (the least of them), keeping
    batch x accumulation (tokens per step): a preset's 16 x 512 x 2 uses a fifth of an 80 GB
    card. A resumed run keeps the split it was trained with (``kept``: batch, accumulation), so
    that it continues as the uninterrupted run would. Returns the tree with the micro-batch."""
    shards = world if config.trainer.get("fsdp") else 1
    optimizer, dropout = config.optim.optimizer, config.model.dropout
    batch, accum, per_step = config.speed.micro_batch, config.speed.grad_accum, config.sequences_per_step
    fit = speed.cuda and not config.speed.batch_given
    if fit and kept is not None and kept[0] * kept[1] == per_step:
        if kept[0] != batch:
            log(f"micro-batch {kept[0]} x {kept[1]} accumulation steps, as the resumed run trained")
            config = _with_micro_batch(config, kept[0])
    elif fit:
        free = -agree([-free_memory_bytes("cuda")])[0]
        chosen = fit_micro_batch(per_step, lambda b: memory_of(
            shape, b, speed.settings, optimizer, dropout, shards).total <= GPU_MEMORY_SHARE * free)
        if chosen != batch:
            log(f"micro-batch {chosen} x {per_step // chosen} accumulation steps (was {batch} x {accum}; "
                f"same tokens per step): the largest whose estimated peak fits "
                f"{GPU_MEMORY_SHARE:.0%} of the {_gb(free)} free on the GPU (--batch_size fixes it)")
            config = _with_micro_batch(config, chosen)
    batch, k = config.speed.micro_batch, speed.settings
    refuse_past_memory(shape, batch, k, optimizer, dropout, shards, "cuda" if speed.cuda else "cpu")
    m = memory_of(shape, batch, k, optimizer, dropout, shards)
    log(f"memory: ~{_gb(m.total)} per device to train at micro-batch {batch} ({k.attn_implementation} "
        f"attention, {k.precision}, {'fused' if k.fused_loss else 'stock'} loss): weights, gradients and "
        f"optimizer {_gb(m.state)}, activations {_gb(m.activations + m.scores)}, LM head {_gb(m.logits)}")
    return config


def refuse_past_memory(shape, batch: int, settings: SpeedSettings, optimizer: str, dropout: float, shards: int,
                       device: str) -> None:
    """One line when even the most frugal step at this micro-batch (SDPA, the fused loss, bf16
    or fp32, whichever needs less) needs more memory than the device has free, the least any rank
    measured, and on a CPU shared by the node's ranks: the kernel's out-of-memory killer ended
    such a run minutes in (exit 137, not a word; ``--per_device_train_batch_size 1000000000``),
    or CUDA's out-of-memory error did after the token cache was built."""
    free = free_memory_bytes(device)
    free = -agree([-(free if free is not None else 2 ** 62)])[0]  # (unknown: no refusal)
    ranks_here = 1 if device == "cuda" else int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    need = ranks_here * min(memory_of(shape, batch, replace(settings, attn_implementation="sdpa", fused_loss=True,
                                                             precision=p), optimizer, dropout, shards).total
                            for p in ("bf16", "fp32"))
    if need > free:
        raise TrainingError(
            f"a training step at micro-batch {batch} x {shape.n_positions} tokens of this "
            f"{shape.n_params:,}-parameter model needs at least {_gb(need)}"
            f"{f' for the {ranks_here} ranks here' if ranks_here > 1 else ''}, more than the {_gb(free)} free "
            f"on the {device}: lower --per_device_train_batch_size (--gradient_accumulation_steps keeps the "
            f"tokens per step)")


# A step's batches held at once may take at most this share of the free memory: the rest is the
# model's, its optimizer's and its activations' (:func:`refuse_past_memory`). An ordinary step
# holds megabytes (512 sequences of 1,024 tokens: 8 MB).
STEP_BATCHES_SHARE = 0.5


def refuse_step_past_memory(sequences: int, tokens: int, tensors: int, accum: int) -> None:
    """One line, before the speed probe, when one optimizer step's batches do not fit in memory.
    The Trainer fetches all ``accum`` micro-batches of a step (``get_batch_samples``) before its
    first forward and holds them to its end: ``sequences`` (this rank's per step) of ``tokens``
    int64 ids in ``tensors`` tensors each (input_ids, labels, ...), on the device they train on.
    ``--gradient_accumulation_steps 1000000`` grew memory by gigabytes before the first step, until
    the machine ran out, with SIGTERM unheard (its handler waits for a step's end)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    free = free_memory_bytes(device)
    free = -agree([-(free if free is not None else 2 ** 62)])[0]  # (unknown: no refusal)
    ranks_here = 1 if device == "cuda" else int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    need = ranks_here * sequences * tokens * tensors * 8
    if need > STEP_BATCHES_SHARE * free:
        raise TrainingError(
            f"one optimizer step holds all its {accum:,} micro-batches at once ({sequences:,} sequences of "
            f"{tokens:,} tokens{f' on each of the {ranks_here} ranks here' if ranks_here > 1 else ''}: "
            f"{_gb(need)}), more than {STEP_BATCHES_SHARE:.0%} of the {_gb(free)} free on the {device}: lower "
            f"--gradient_accumulation_steps (or --per_device_train_batch_size); nothing was trained")


# --------------------------------------------------------------------------- the time budget's step time

def check_time_budget(config, shape, speed: SpeedPlan):
    """The tree with its warm-up fitted to the budget (the share ``config.optim.warmup_share``
    of the steps the budget holds, when it has one); refused, before the data is touched, when
    the budget cannot hold the warm-up. The step time is the autotune figure, else two timed
    steps of the chosen settings."""
    time_budget = config.control.time_budget
    if not time_budget:
        return config
    step = speed.step_seconds
    if step is None:  # timed as the run will train: compiled when it compiles (the warm-up compiles)
        times = time_candidate(speed.settings, shape, config.speed.micro_batch, warmup_steps=1,
                               timed_steps=2, compile=config.speed.torch_compile, dropout=config.model.dropout,
                               regions=config.speed.request.compile_regions)
        step = min(times) * config.speed.grad_accum
    step = agree([round(step * 1e6)])[0] / 1e6  # the slowest rank's estimate, on every rank
    share = config.optim.warmup_share
    if share is not None:  # (a resumed run's schedule, warm-up included, comes from its checkpoint)
        # the steps the budget holds, or fewer where --max_steps caps them (--num_train_epochs'
        # steps, counted with the data, are capped later: .length.fit_length)
        held = int(time_budget // step)
        if config.optim.max_steps > 0:
            held = min(held, config.optim.max_steps)
        warmup = shared_warmup(held, share)
        log(f"time budget: warm-up {warmup} steps, the preset's share ({share:.3g}) of the steps it holds")
        config = replace(config, optim=replace(config.optim, warmup_steps=warmup))
    fits = check_budget(time_budget, config.optim.warmup_steps, step)
    log(f"time budget {time_budget:g} s: about {fits} steps at ~{step:.3g} s per step "
        f"(fitted while training)")
    return config


# --------------------------------------------------------------------------- the estimate, checked

class EstimateCheck(TrainerCallback):
    """A measured choice whose step time the run then misses by ``factor`` (either way) was
    measured under another load (a busy machine), and every later run would reuse it: the run
    says so and drops its cache entry, so the next run measures again. The run's own step time
    is the median of ``window`` steps after ``skip`` warm-up ones (host clock; an evaluation or a
    save between two steps is one outlier among them)."""

    def __init__(self, estimate: float, cache: tuple, factor: float = 2.0, skip: int = 3, window: int = 8,
                 clock: Callable[[], float] = time.perf_counter, log: Callable[[str], None] = log):
        self.estimate, self.cache, self.factor = estimate, cache, factor
        self.skip, self.window, self.clock, self.log = skip, window, clock, log
        self.times: list[float] = []
        self.last, self.seen, self.verdict = None, 0, None

    def on_step_end(self, args, state, control, **kw):
        now, self.seen = self.clock(), self.seen + 1
        if self.last is not None and self.seen > self.skip and self.verdict is None:
            self.times.append(now - self.last)
            if len(self.times) == self.window:
                self.verdict = self._judge(statistics.median(self.times))
        self.last = now

    def _judge(self, seconds: float) -> str:
        ratio = seconds / self.estimate
        if 1 / self.factor <= ratio <= self.factor:
            return "held"
        path, key = self.cache
        self.log(f"autotune: this run trains at {seconds:.3g} s per step, {ratio:.1f}x the {self.estimate:.3g} s "
                 f"its cached figures estimated (measured under another load?); "
                 + ("the cache entry is dropped, the next run measures again" if is_main_process()
                    and _forget(path, key) else "the next run measures again (`--autotune refresh`)"))
        return "missed"


def _forget(path, key) -> bool:
    try:
        return forget(path, key)
    except OSError:
        return False


def speed_callbacks(plan: SpeedPlan) -> list:
    """The step callbacks a run's speed choice asks for: the estimate checked when it came from
    the probe's figures."""
    if plan.cache is None or not plan.step_seconds:
        return []
    return [EstimateCheck(plan.step_seconds, plan.cache)]
