"""Measured speed defaults: on first use per machine, time a few training steps of each
candidate setting (precision x attention kernel x fused LM-head loss) on the run's real model
shape with synthetic tokens, keep the fastest, and cache the figures under the user's cache
directory, keyed by what decides the winner (CPU model and instruction-set flags, thread count,
torch version, model shape class).

Why measure: the fixed rules (:func:`.settings.fixed_rules`) were measured on two EPYC
generations, and the winner moves with the machine (bf16 autocast helps where the CPU's bf16
matmuls outrun its fp32 ones, not on every CPU with bf16 instructions; the fused loss helped on
Zen 4 and not on Zen 5). ``--autotune off`` keeps those rules,
``on`` (default) measures once and reuses the cache, ``refresh`` measures again; a setting the
user gave explicitly is never overridden, only the remaining ones are measured. The probe is a
few steps per candidate (one warm-up, three timed, interleaved round by round so that a drifting
machine cannot decide the winner; cut short when clearly slower), meant to stay under a tenth
of a tiny-preset run. The cache and its keys are :mod:`.cache`'s. On a GPU nothing is probed
(:data:`GPU_RULES`).
"""
from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

from ...core import UsageError, now_iso, return_freed_memory
from ..model import build_model, without_generation_cache
from ..step.fused_loss import enable_fused_loss
from ..step.vocab_padding import padded_vocab
from .cache import cache_key, default_cache_path, device_key, load_cache, save_cache
from .settings import MODES, SpeedSettings, candidate_space, fixed_rules, machine_bf16


@dataclass
class SpeedChoice:
    """The speed settings a run is to use (``candidate``), and why."""
    candidate: SpeedSettings
    source: str                     # measured | cached | default | explicit
    step_seconds: float | None = None
    figures: dict = field(default_factory=dict)
    message: str = ""
    cache: tuple | None = None      # (cache file, key) the figures live under (measured | cached)


def candidates(space: dict[str, list], given: SpeedSettings, first: SpeedSettings) -> list[SpeedSettings]:
    """Every combination of the space with the given settings pinned, ``first`` leading
    (so a probe cut short by its time cap has at least measured the default). The vocabulary
    padding is not probed: every candidate has ``first``'s (the flags' or the fixed rules')."""
    pinned = given.given()
    dims = {k: [pinned[k]] if k in pinned else v for k, v in space.items()}
    out = [SpeedSettings(*c, pad_vocab=first.pad_vocab)
           for c in itertools.product(dims["precision"], dims["attn_implementation"], dims["fused_loss"])]
    out.sort(key=lambda c: c != first)
    return out


class StepTimer:
    """Times single training steps (forward, backward, AdamW step, on random tokens) of any
    candidate on one model of ``shape``, switching the attention kernel, the loss and autocast
    between steps. Sharing one model means every candidate runs on the same weights, memory
    and allocator state, and lets the probe interleave the candidates' steps (see ``probe``).
    ``compile``: the steps run through ``torch.compile``, as a compiled run trains (``regions``:
    each repeated block compiled once, as ``--compile_regions`` trains). ``close`` frees the
    model at once (a GPU's memory is the training run's next)."""

    def __init__(self, shape, batch_size: int, compile: bool = False, dropout: float = 0.0,
                 regions: bool = False):
        import torch
        from accelerate.utils import compile_regions

        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.model = without_generation_cache(build_model(shape, 0, 0, 0, dropout=dropout)).to(self.device).train()
        self.fused_forward = enable_fused_loss(self.model).forward  # no reference back to the model
        self.compiled = (compile_regions if regions else torch.compile)(self.model) if compile else None
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=self.cuda or None)
        self.x = torch.randint(0, shape.vocab_size, (batch_size, shape.n_positions), device=self.device)

    def __call__(self, cand: SpeedSettings) -> float:
        import torch

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cand.precision)
        if self.model.config._attn_implementation != cand.attn_implementation:
            self.model.set_attn_implementation(cand.attn_implementation)
        if cand.fused_loss:
            self.model.forward = self.fused_forward
        else:  # the class's own forward (a bound method stored on the model would be a cycle)
            self.model.__dict__.pop("forward", None)
        # not `self.compiled or self.model`: a compiled module's truth value asks the model for
        # its len(), which GPT-2 has not (a TypeError, found on the first GPU run)
        run = self.model if self.compiled is None else self.compiled
        sync = torch.cuda.synchronize if self.cuda else (lambda: None)
        sync()
        t = time.perf_counter()
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = run(input_ids=self.x, labels=self.x).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - t

    def close(self) -> None:
        self.model = self.fused_forward = self.compiled = self.opt = self.x = None
        _free_gpu_memory()


def time_candidate(cand: SpeedSettings, shape, batch_size: int, *, warmup_steps: int = 1,
                   timed_steps: int = 3, compile: bool = False, dropout: float = 0.0,
                   regions: bool = False) -> list[float]:
    """Seconds of each of ``timed_steps`` training steps of ``cand`` alone, after
    ``warmup_steps`` untimed ones (the step-time estimate of a run whose settings are fixed;
    ``compile``: compiled, as the run will train (``regions``: by regions), the compilation in
    the warm-up; ``dropout``: the run's, whose random masks cost time too)."""
    timer = StepTimer(shape, batch_size, compile=compile, dropout=dropout, regions=regions)
    try:
        return [t for i, t in enumerate(timer(cand) for _ in range(warmup_steps + timed_steps))
                if i >= warmup_steps]
    finally:
        timer.close()


def probe(cands: list[SpeedSettings], shape, batch_size: int, *, max_seconds: float = 30.0,
          rounds: int = 3, log: Callable[[str], None] = print,
          timer: Callable = StepTimer) -> dict:
    """Figures ``{label: {"step_seconds", "timed_steps"[, "cut"]}}`` (or ``{"error"}``) for the
    candidates timed within ``max_seconds``; the training RNG streams are left untouched.

    One untimed warm-up step per candidate (kernel selection, allocator growth), then up to
    ``rounds`` rounds of one timed step per candidate, each round starting one candidate
    later. Interleaved, a machine whose speed drifts (a VM's neighbours, clock changes) slows
    every candidate alike; timed one after another, the drift would decide between candidates
    a few percent apart. After the first round, a candidate over 1.3x the best is dropped.
    ``timer(shape, batch_size)`` builds the step timer, a callable ``candidate -> seconds``
    (``StepTimer``; tests pass a fake)."""
    import torch

    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            step = timer(shape, batch_size)
        except (RuntimeError, ValueError, NotImplementedError) as e:  # OOM building the model
            return {c.label: {"error": f"{type(e).__name__}: {str(e)[:200]}"} for c in cands}
        figures, deadline = {}, time.perf_counter() + max_seconds
        warmed = _warm_up(step, cands, figures, deadline)
        if len(figures) + len(warmed) < len(cands):
            log(f"autotune: probe time cap of {max_seconds:g} s reached; "
                f"{len(cands) - len(warmed) - len(figures)} candidate(s) left for the next run")
        times = _interleaved_rounds(step, warmed, figures, rounds, deadline)
        for label, ts in times.items():
            figures[label] = {"step_seconds": round(statistics.median(ts), 5), "timed_steps": len(ts),
                              "spread": round(max(ts) / min(ts), 3)}
        getattr(step, "close", _free_gpu_memory)()
    return figures


def _warm_up(step: Callable, cands: list[SpeedSettings], figures: dict,
             deadline: float) -> list[SpeedSettings]:
    """One untimed step of each candidate, in order, until the time cap (the first always);
    returns those that ran (a failure goes to ``figures``)."""
    warmed = []
    for i, cand in enumerate(cands):
        if i and time.perf_counter() > deadline:
            break
        if _step_or_error(step, cand, figures) is not None:
            warmed.append(cand)
    return warmed


def _interleaved_rounds(step: Callable, active: list[SpeedSettings], figures: dict, rounds: int,
                        deadline: float) -> dict[str, list[float]]:
    """Step times per candidate label: each round one step of every candidate still in the
    race, starting one candidate later than the round before; after the first round those
    over 1.3x the best go to ``figures`` as cut short."""
    times: dict[str, list[float]] = {c.label: [] for c in active}
    for r in range(rounds):
        if not active or (r and time.perf_counter() > deadline):
            break
        for cand in active[r % len(active):] + active[:r % len(active)]:
            sec = _step_or_error(step, cand, figures)
            if sec is not None:
                times[cand.label].append(sec)
        active = [c for c in active if c.label not in figures]  # a step failed: out
        if r == 0 and active:
            best = min(times[c.label][0] for c in active)
            for c in [c for c in active if times[c.label][0] > 1.3 * best]:
                figures[c.label] = {"step_seconds": round(times[c.label][0], 5), "timed_steps": 1,
                                    "cut": True}
                active.remove(c)
    return {c.label: times[c.label] for c in active}


def _step_or_error(step: Callable, cand: SpeedSettings, figures: dict) -> float | None:
    """One step of ``cand``; a failure (OOM, a kernel this device lacks) is recorded in
    ``figures`` as that candidate's result and returns None."""
    try:
        return step(cand)
    except (RuntimeError, ValueError, NotImplementedError) as e:
        figures[cand.label] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
        _free_gpu_memory()
        return None


def _free_gpu_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    else:  # the probe's largest candidate (fp32, stock loss) needs ~3x the chosen one's memory
        return_freed_memory()


def fastest(cands: list[SpeedSettings], figures: dict) -> SpeedSettings | None:
    timed = [c for c in cands if "step_seconds" in figures.get(c.label, {})]
    return min(timed, key=lambda c: figures[c.label]["step_seconds"]) if timed else None


# A probe decides only with at least this many timed steps of its winner, whose slowest is at
# most this many times its fastest: a busy machine (another job on the cores) gives one step per
# candidate after the warm-ups, or steps that swing; such figures chose badly and, cached, every
# later run would reuse them (hostile inputs round 4, item 17)
DECISIVE_STEPS = 2
DECISIVE_SPREAD = 1.25


def indecisive(best: SpeedSettings, figures: dict) -> str | None:
    """Why the winner's figures are too few or too noisy to decide on (None when they are not)."""
    f = figures.get(best.label, {})
    if f.get("timed_steps", 0) < DECISIVE_STEPS:
        return f"{best.label} was timed {f.get('timed_steps', 0)} step(s), fewer than {DECISIVE_STEPS}"
    if f.get("spread", 1.0) > DECISIVE_SPREAD:
        return (f"{best.label}'s slowest step took {f['spread']:.2f}x its fastest (over {DECISIVE_SPREAD}x: "
                f"the machine is busy or its speed drifts)")
    return None


def explain(choice: SpeedSettings, cands: list[SpeedSettings], figures: dict, how: str,
            given: SpeedSettings) -> str:
    """One paragraph: what was chosen and the measured figures behind it."""
    timed = sorted((c for c in cands if c.label in figures),
                   key=lambda c: figures[c.label].get("step_seconds", float("inf")))
    parts = []
    for c in timed:
        f = figures[c.label]
        parts.append(f"{c.label} failed ({f['error'][:60]})" if "step_seconds" not in f else
                     f"{c.label} {f['step_seconds']:.3f}" + (" (cut short)" if f.get("cut") else ""))
    fixed = given.given()
    pinned = f"; fixed by your flags: {', '.join(f'{k}={v}' for k, v in fixed.items())}" if fixed else ""
    return (f"speed settings: {choice.describe()}, the fastest of {len(cands)} candidate(s) "
            f"{how} (seconds per training step: {'; '.join(parts)}){pinned}. "
            f"`--autotune refresh` measures again, `--autotune off` uses the fixed rules.")


# On a GPU the probe would time eager steps of each candidate while the run trains compiled
# (torch.compile fuses what the candidates differ in), and the eager-attention candidate alone
# holds B*H*T^2 scores per layer (~30 GB at GPT-2 Medium's batch 8): the fixed rules instead
GPU_RULES = ("the fixed rules on a GPU: SDPA (flash) attention, the stock loss, half precision, the "
             "vocabulary padded to x128; torch.compile where it can build")
# Share of the free memory a probed candidate's estimated step may take (the probe shares the
# machine with the run that follows; the estimate is within a quarter of measured peaks)
PROBE_MEMORY_SHARE = 0.6


def fitting(cands: list[SpeedSettings], shape, batch_size: int,
            free_bytes: float | None, dropout: float = 0.0) -> tuple[list[SpeedSettings], str]:
    """The candidates whose estimated step fits ``PROBE_MEMORY_SHARE`` of ``free_bytes`` (all
    when unknown), and a note naming those left out: a probe step past the memory is killed
    by the kernel, taking the run with it."""
    if not free_bytes:
        return cands, ""
    need = {c: shape.training_memory(batch_size, attention=c.attn_implementation, precision=c.precision,
                                     fused_loss=c.fused_loss, dropout=dropout).total for c in cands}
    out = [c for c in cands if need[c] <= PROBE_MEMORY_SHARE * free_bytes]
    left = [f"{c.label} (~{need[c] / 1e9:.1f} GB)" for c in cands if c not in out]
    return out, (f"not timed, as their steps would not fit the {free_bytes / 1e9:.1f} GB free: "
                 f"{', '.join(left)}" if left else "")


def resolve_speed_settings(mode: str, shape, batch_size: int, given: SpeedSettings = SpeedSettings(), *,
                           cache_path: Path | None = None, world_size: int = 1,
                           max_probe_seconds: float = 60.0, log: Callable[[str], None] = print,
                           timer: Callable = StepTimer, free_bytes: float | None = None,
                           dropout: float = 0.0) -> SpeedChoice:
    """Precision, attention kernel and fused loss for a run of ``shape`` at ``batch_size``.
    ``given``: the settings the user fixed; they always win and only the others are chosen. On
    a GPU, the fixed rules (:data:`GPU_RULES`); on a CPU, candidates whose step would not fit
    ``free_bytes`` are not timed. ``dropout``: the run's; the candidates are timed with it (the
    step time a time budget is fitted from) and their figures filed under it."""
    if mode not in MODES:
        raise UsageError(f"--autotune must be one of {', '.join(MODES)}, got {mode!r}")
    dev = device_key()
    bf16 = machine_bf16(dev)
    pinned = given.over(fixed_rules(dev, bf16, given.precision))
    if mode == "off" or given.probed_given or dev["device"] == "cuda":
        why = ("all given by your flags" if given.probed_given else "the fixed rules (--autotune off)"
               if mode == "off" else GPU_RULES)
        return SpeedChoice(pinned, "explicit" if given.probed_given else "default",
                           message=f"speed settings: {pinned.describe()} ({why})")
    space = candidate_space(dev, bf16)
    if pinned.pad_vocab:  # timed at the rows it trains with
        shape = replace(shape, vocab_size=padded_vocab(shape.vocab_size))
    cands, too_big = fitting(candidates(space, given, pinned), shape, batch_size, free_bytes, dropout)
    if not cands:
        return SpeedChoice(pinned, "default", message=(
            f"speed settings: {pinned.describe()} (the fixed rules: {too_big})"))
    path, key = Path(cache_path or default_cache_path()), cache_key(dev, shape, batch_size, dropout)
    if dropout:
        timer = partial(timer, dropout=dropout)
    stored = load_cache(path, log).get(key, {})
    figures = dict(stored.get("figures", {})) if mode == "on" else {}
    missing = [c for c in cands if c.label not in figures]
    how = f"in the cache {path} (measured {stored.get('measured', '?')})"
    if missing and world_size > 1:
        # ranks timing on their own could choose differently; the first single-process run fills it
        return SpeedChoice(pinned, "default", message=(
            f"speed settings: {pinned.describe()} (the fixed rules: this machine and shape are not "
            f"measured yet, and {world_size} processes must agree; run once with one process to "
            f"measure)"))
    if missing:
        figures, how, shaky = _measure(cands, missing, figures, shape, batch_size, path, key,
                                       max_probe_seconds, log, timer)
        if shaky:
            return SpeedChoice(pinned, "default", message=(
                f"speed settings: {pinned.describe()} (the fixed rules: the probe's figures are too few "
                f"or too noisy to decide: {shaky}; not cached, the next run measures again)"))
    best = fastest(cands, figures)
    if best is None:
        return SpeedChoice(pinned, "default", message=(
            f"speed settings: {pinned.describe()} (the fixed rules: no candidate could be timed)"))
    shown = {c.label: figures[c.label] for c in cands if c.label in figures}
    note = f" Candidates {too_big}." if too_big else ""
    return SpeedChoice(best, "measured" if missing else "cached", figures[best.label]["step_seconds"],
                       shown, explain(best, cands, figures, how, given) + note, cache=(path, key))


def _measure(cands, missing, figures, shape, batch_size, path, key, max_seconds, log, timer):
    """Time ``missing`` (and the cached leader again: figures taken minutes or days apart, under
    another load, must not decide between candidates on their own); merge the figures into the
    cache when they can decide. Returns (every figure, how they were had, why they cannot
    decide or None)."""
    anchor = fastest([c for c in cands if c not in missing], figures)
    t0 = time.perf_counter()
    new = probe(([anchor] if anchor else []) + missing, shape, batch_size, max_seconds=max_seconds,
                log=log, timer=timer)
    figures = {**figures, **new}
    best = fastest(cands, figures)
    shaky = indecisive(best, figures) if best is not None and best.label in new else None
    if shaky:
        return figures, "", shaky
    entries = load_cache(path, lambda _m: None)  # re-read: another run may have written since
    old = entries.get(key, {}).get("figures", {})
    entries[key] = {"figures": {**old, **new}, "measured": now_iso(),
                    "probe_seconds": round(time.perf_counter() - t0, 2)}
    try:
        save_cache(path, entries)
    except OSError as e:
        log(f"warning: could not write the autotune cache {path} ({e}); the next run measures again")
    return figures, f"measured just now ({time.perf_counter() - t0:.1f} s probe, cached in {path})", None
