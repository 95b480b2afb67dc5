"""The throughput step: MFU of GPT-2 Small and Medium as the project trains them, each lever on
and off, in one call that fits a 15-minute device lease (machine start included).

Each *variant* is one model built as the trainer builds it (``build_model`` then
``prepare_for_training`` with its :class:`SpeedSettings`), compiled or not, at the preset's
vocabulary (30,000; ``--throughput_vocab`` for another, e.g. GPT-2's 50,257 to compare with public
figures), with the micro-batch fitted to the free memory (:func:`fit_micro_batch` over the
sequences per step, 85% of the free memory, the trainer's rule) and accumulation for the rest.
Variants that differ only outside the compiled graph share one model (*subs*: the optimizer,
Python's garbage collector): they cost seconds, not a compile. A variant may set SDPA's kernel
order as ``--sdpa_order`` does (FlashAttention's or cuDNN's first:
:mod:`londonlm.training.speed.attention`); every row names the kernel SDPA then picks for the
model's attention.

The plan runs in priority order within ``budget_s``: before each variant its cost is estimated
(its compile from the last measured compile of that model, else a default) and a variant that
would overrun the budget is skipped and reported as such, never cut mid-way. MFU counts the real
vocabulary's FLOPs (``ModelShape.flops_per_token`` at the unpadded size) whatever the padding: the
padded columns are waste, so padding shows only what it buys in time.

The budget arithmetic (:func:`run_plan`) is pure and tested with a fake clock; the measurements
(:func:`measure_variant`) need CUDA.
"""
from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass, field
from typing import Callable

from . import kernels
from .arith import median_ms, mfu, time_windows, tokens_per_second

PRESET_OF = {"small": "slm", "medium": "regular"}
# sequences per optimizer step: Small at the 64 x 1024 of the public GPT-2 Small figures (llm.c,
# modded-nanogpt, nanochat), Medium at the regular preset's 8 x 4 x 1024
SEQUENCES = {"small": 64, "medium": 32}
CONTEXT = 1024                     # Small at 1024 (the public figures'); regular's own is 1024
TARGETS = {"small": 0.45, "medium": 0.50}
# seconds a variant's compile is assumed to take before one of that model was measured
# (GPT-2 Small compiled in 33 s on an H200, BENCHMARKS.md; Medium has twice the layers)
COMPILE_GUESS = {"small": 45.0, "medium": 90.0}
MODE_FACTOR = {"default": 1.0, "max-autotune-no-cudagraphs": 4.0, "eager": 0.0, "regional": 0.5}
SUB_SECONDS = {"adamw": 6.0, "gc-frozen": 6.0, "kernels": 6.0, "muon": 10.0, "muon-ns-compiled": 25.0}


@dataclass(frozen=True)
class Variant:
    name: str
    model: str = "small"                  # small | medium
    pad_vocab: bool = True
    fused_loss: bool = False
    # eager | default | max-autotune-no-cudagraphs | regional (each repeated block compiled
    # once and reused: accelerate's compile_regions, for a shorter first step)
    compile: str = "default"
    micro_batch: int | None = None        # None: fitted to the free memory
    sequences: int | None = None          # per optimizer step; None: SEQUENCES[model]
    attention: str = "torch"              # SDPA's kernel order, --sdpa_order's: torch | flash | cudnn
    # measured on the same model: adamw | gc-frozen | kernels (AdamW's step profiled: where its GPU
    # time goes, :mod:`.kernels`) | muon | muon-ns-compiled
    subs: tuple = ("adamw",)


# In priority order: each model's defaults on CUDA first (with Python's GC frozen, and where the GPU
# time goes by kernel: both share the compiled model), then the levers not yet measured on a GPU,
# each one change from the defaults, then those H200 leases measured (BENCHMARKS.md; 2026-11-28:
# Muon's step -2.1 points on Small and -4.1 on Medium, the unpadded vocabulary within noise, the
# fused loss -4.4 on Small; 2026-11-30: regional compile +0.3 on Small, Medium at 64 sequences
# +0.3, cuDNN's attention first the defaults' own kernel there), so that a short lease spends its
# seconds on what is still unknown; the costliest compile option last.
# FlashAttention first leads the levers: on the H200 of 2026-11-30 torch's own order ran cuDNN's
# attention (torch prefers it on Hopper with cuDNN > 9.15), 27% of Small's step and 26% of
# Medium's at about an eighth of the card's peak, and flash was never measured (its profile too).
# Python's GC frozen is timed on Medium only: on Small it moved the defaults by -0.2 and +0.1
# points in two leases (noise), and its 6 s let a 170-s call reach Medium's flash row
PLAN = [
    Variant("small: defaults (padded, stock loss, compiled)", "small", subs=("adamw", "kernels")),
    Variant("medium: defaults (padded, stock loss, compiled)", "medium", subs=("adamw", "gc-frozen", "kernels")),
    Variant("small: FlashAttention first", "small", attention="flash", subs=("adamw", "kernels")),
    Variant("medium: FlashAttention first", "medium", attention="flash"),
    Variant("small: eager", "small", compile="eager", subs=("adamw", "kernels")),
    # a run of ours under a budget below 600 s trains eager (COMPILE_MIN_BUDGET_SECONDS), the race's
    # included (hence the eager step's kernel profile too: how much of it the GPU waits); the fused
    # loss was measured compiled only (-4.4 points), where Inductor fuses the stock loss's passes
    # over the logits itself; eager, nothing does. No compile: seconds each
    Variant("small: eager, fused loss", "small", compile="eager", fused_loss=True),
    Variant("medium: eager", "medium", compile="eager"),
    Variant("medium: eager, fused loss", "medium", compile="eager", fused_loss=True),
    Variant("small: micro-batch 16 x 4 accumulation", "small", micro_batch=16),
    # the defaults' own order on an H100/H200 with cuDNN > 9.15; a lever where torch puts flash first
    Variant("small: cuDNN attention first", "small", attention="cudnn"),
    Variant("medium: cuDNN attention first", "medium", attention="cudnn"),
    Variant("small: regional compile (each block once)", "small", compile="regional"),
    Variant("medium: 64 sequences a step", "medium", sequences=64),
    Variant("small: Muon", "small", subs=("muon", "muon-ns-compiled")),
    Variant("medium: Muon", "medium", subs=("muon", "muon-ns-compiled")),
    Variant("medium: vocabulary unpadded", "medium", pad_vocab=False),
    Variant("medium: fused loss", "medium", fused_loss=True),
    Variant("small: vocabulary unpadded", "small", pad_vocab=False),
    Variant("small: fused loss", "small", fused_loss=True),
    Variant("small: max-autotune-no-cudagraphs", "small", compile="max-autotune-no-cudagraphs"),
]


@dataclass
class ThroughputConfig:
    budget_s: float = 420.0               # the plan's seconds (the lease: 15 min, machine start included)
    vocab: int | None = None              # None: the presets' tokenizer size
    warmup: int = 2
    windows: int = 3
    steps_per_window: int = 4
    plan: list = field(default_factory=lambda: list(PLAN))


def estimate_seconds(v: Variant, compiles: dict[str, float]) -> float:
    """A variant's expected seconds: its compile (the last measured for its model, scaled for the
    mode) and its subs."""
    compile_s = compiles.get(v.model, COMPILE_GUESS[v.model]) * MODE_FACTOR[v.compile]
    return compile_s + sum(SUB_SECONDS[s] for s in v.subs)


def run_plan(plan: list[Variant], measure: Callable[[Variant], list[dict]], budget_s: float,
             clock: Callable[[], float] = time.perf_counter,
             progress: Callable[[list[dict]], None] = lambda rows: None) -> list[dict]:
    """Every variant's rows, in order, within ``budget_s``: a variant whose estimate would overrun
    what is left is skipped (a row saying so). ``measure(variant)`` returns one row per sub, each
    with ``first_step_s`` (the compile, on the first) or ``error``; a raising variant is one error
    row and the plan goes on. ``progress(rows)`` after each variant: a call killed at the lease's
    end keeps what it measured."""
    start, compiles, rows = clock(), {}, []
    for v in plan:
        left = budget_s - (clock() - start)
        need = estimate_seconds(v, compiles)
        if need > left:
            rows.append({"variant": v.name, "sub": "–", "skipped": f"needs ~{need:.0f} s, {max(left, 0):.0f} s left"})
        else:
            rows += _measured(v, measure, compiles)
        progress(rows)
    return rows


def _measured(v: Variant, measure: Callable[[Variant], list[dict]], compiles: dict[str, float]) -> list[dict]:
    """``v``'s rows (one error row when it raised); its compile time noted for the next estimate."""
    try:
        got = measure(v)
    except Exception as e:  # noqa: BLE001  (recorded; the next variant still runs)
        return [{"variant": v.name, "sub": "–", "error": f"{type(e).__name__}: {e}"[:300]}]
    first = next((r.get("first_step_s") for r in got if r.get("first_step_s")), None)
    if first and v.compile == "default":
        compiles[v.model] = first
    return [{"variant": v.name, **r} for r in got]


def best_mfu(rows: list[dict], model: str) -> dict | None:
    """The row of ``model`` with the highest MFU."""
    mine = [r for r in rows if r.get("model") == model and r.get("mfu")]
    return max(mine, key=lambda r: r["mfu"]) if mine else None


def summary(rows: list[dict]) -> str:
    parts = []
    for model, target in TARGETS.items():
        b = best_mfu(rows, model)
        if b is None:
            parts.append(f"{model} – (target {target:.0%})")
            continue
        verdict = "met" if b["mfu"] >= target else "not met"
        parts.append(f"{model} {b['mfu']:.1%} (target {target:.0%}, {verdict}; {b['variant']}, {b['sub']})")
    return "best MFU: " + "; ".join(parts)


def plan_lines(cfg: ThroughputConfig) -> list[str]:
    """The dry run's lines: the rules, then every variant and its subs."""
    lines = [f"in-process, within {cfg.budget_s:.0f} s (a variant that would overrun it is skipped and "
             f"reported): each model built as the trainer builds it (bf16 autocast, SDPA flash, "
             f"vocabulary {cfg.vocab or 'of the presets (30,000)'}), context {CONTEXT}, sequences per "
             f"step small {SEQUENCES['small']} / medium {SEQUENCES['medium']}, micro-batch fitted to 85% "
             f"of the free memory; {cfg.warmup} warm-up steps, median of {cfg.windows} windows of "
             f"{cfg.steps_per_window} steps; MFU = tokens/s x flops_per_token(real vocab) / peak bf16"]
    for i, v in enumerate(cfg.plan, 1):
        attention = "in torch's order" if v.attention == "torch" else f"{v.attention} first"
        lines.append(f"{i}. {v.name}: {v.model}, pad_vocab {'on' if v.pad_vocab else 'off'}, "
                     f"{'fused' if v.fused_loss else 'stock'} loss, compile {v.compile}, "
                     f"{v.sequences or SEQUENCES[v.model]} sequences a step, micro-batch "
                     f"{v.micro_batch or 'fitted'}, attention {attention}; measured: {', '.join(v.subs)}")
    return lines


# --------------------------------------------------------------------------- on the GPU

def model_shape(model: str, vocab: int | None):
    """The preset's shape at ``CONTEXT`` and the real vocabulary (the presets' tokenizer size)."""
    import config
    from londonlm.training.model import ModelShape

    p = config.get_preset(PRESET_OF[model])
    return ModelShape(p.n_layer, p.n_head, p.n_embd, CONTEXT, vocab or p.vocab_size)


def fitted_micro_batch(shape, v: Variant, settings) -> int:
    """The trainer's rule: the largest divisor of the sequences per step whose estimated peak
    fits 85% of the free memory."""
    from londonlm.core import free_memory_bytes
    from londonlm.training.speed.choice import GPU_MEMORY_SHARE, fit_micro_batch, memory_of

    if v.micro_batch:
        return v.micro_batch
    free = free_memory_bytes("cuda")
    return fit_micro_batch(v.sequences or SEQUENCES[v.model], lambda b: memory_of(
        shape, b, settings, "adamw", 0.0).total <= GPU_MEMORY_SHARE * free)


def _compiled(model, mode: str):
    """What a variant times: the model itself (eager), torch.compile of the whole of it, or of
    each repeated block once (regional: the graph traced for one block serves the rest)."""
    import torch

    if mode == "eager":
        return model
    if mode == "regional":
        from accelerate.utils import compile_regions

        return compile_regions(model)
    return torch.compile(model, mode=None if mode == "default" else mode)


def _optimizer(model, sub: str):
    import torch

    from londonlm.training.step.optim import MuonOptions, build_muon_adamw

    if sub.startswith("muon"):
        return build_muon_adamw(model, MuonOptions(lr=3e-4, ns_compiled=sub == "muon-ns-compiled"))
    fused = next(model.parameters()).is_cuda or None  # fused AdamW, as the trainer's on CUDA
    return torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=fused)


def _train_step(fwd, opt, batches):
    import torch

    def step():
        for x in batches:  # accumulation: the micro-batches of one optimizer step
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                loss = fwd(input_ids=x, labels=x).loss / len(batches)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step


def measure_variant(v: Variant, cfg: ThroughputConfig, peak: float | None, device: str = "cuda") -> list[dict]:
    """One row per sub of ``v`` on one model (compiled once), each naming the attention kernel
    that ran, all under ``v``'s attention order. ``device`` "cpu": the tests' smoke run of this
    code (a variant with its micro-batch given)."""
    from londonlm.training.speed.attention import sdpa_kernel_for, sdpa_order

    with sdpa_order(v.attention):
        s = model_shape(v.model, cfg.vocab)
        kernel = sdpa_kernel_for(s.n_head, s.n_embd // s.n_head, s.n_positions, device)
        return [{**r, "attention": kernel} for r in _measure_subs(v, cfg, peak, device)]


def _measure_subs(v: Variant, cfg: ThroughputConfig, peak: float | None, device: str) -> list[dict]:
    import torch

    from londonlm.training.model import build_model, prepare_for_training
    from londonlm.training.speed.settings import SpeedSettings

    from .cuda_steps import release

    torch.backends.cuda.matmul.allow_tf32 = True
    settings = SpeedSettings("bf16", "sdpa", v.fused_loss, v.pad_vocab)
    shape = model_shape(v.model, cfg.vocab)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        release()
    b = fitted_micro_batch(shape, v, settings)
    accum = max(1, (v.sequences or SEQUENCES[v.model]) // b)
    model = prepare_for_training(build_model(shape, 0, 0, 0, seed=0), settings).to(device).train()
    fwd = _compiled(model, v.compile)
    g = torch.Generator(device=device).manual_seed(0)
    batches = [torch.randint(0, shape.vocab_size, (b, shape.n_positions), device=device, generator=g)
               for _ in range(accum)]
    common = {"model": v.model, "micro_batch": f"{b} x {accum}",
              "rows": model.get_input_embeddings().weight.shape[0]}
    try:
        return [{"sub": sub, **common, **_measure_sub(sub, model, _train_step(fwd, _optimizer(model, sub), batches),
                                                      cfg, sync, shape, peak, b * accum * shape.n_positions)}
                for sub in v.subs]
    finally:
        del model, fwd, batches
        if device == "cuda":
            release()


def _measure_sub(sub: str, model, step, cfg: ThroughputConfig, sync, shape, peak: float | None,
                 tokens: int) -> dict:
    """One sub's figures: its first step's seconds (the model's compile, on the first sub), then
    either the timed windows' rate and MFU or (``kernels``) the profiled step's kernel time."""
    t0 = time.perf_counter()
    step()  # the first step compiles (the model on the first sub, Newton-Schulz on its own)
    sync()
    first = round(time.perf_counter() - t0, 1)
    if sub == "kernels":
        try:
            return {"first_step_s": first, "kernels": kernels.profile_kernels(step, sync, cfg.steps_per_window)}
        except Exception as e:  # noqa: BLE001  (a profiler failure must not cost the variant's measured rows)
            return {"first_step_s": first, "kernels": {"error": f"the profiler failed: {type(e).__name__}: {e}"[:300]}}
    if sub == "gc-frozen":  # nanochat's: nothing the loop allocates is ever scanned
        gc.collect()
        gc.freeze()
        gc.disable()
    try:
        windows = time_windows(step, sync, time.perf_counter, cfg.warmup, cfg.windows, cfg.steps_per_window)
    finally:
        if sub == "gc-frozen":
            gc.enable()
            gc.unfreeze()
    loss = float(step().detach())
    tps = tokens_per_second(windows, cfg.steps_per_window, tokens)
    m = mfu(tps, shape.flops_per_token(shape.n_positions), peak)
    return {"tokens_per_s": round(tps), "step_ms": round(median_ms(windows) / cfg.steps_per_window, 2),
            "first_step_s": first, "loss": round(loss, 3), "mfu": None if m is None else round(m, 4)}


def graph_breaks(vocab: int | None) -> int:
    """torch.compile's graph breaks in one training forward of Small as the defaults train it
    (padded vocabulary: the head's output cut by a forward hook)."""
    import torch

    from londonlm.training.model import build_model, prepare_for_training
    from londonlm.training.speed.settings import SpeedSettings

    from .cuda_steps import release

    shape = model_shape("small", vocab)
    model = prepare_for_training(build_model(shape, 0, 0, 0, seed=0),
                                 SpeedSettings("bf16", "sdpa", False, True)).cuda().train()
    x = torch.randint(0, shape.vocab_size, (2, CONTEXT), device="cuda")
    try:
        torch._dynamo.reset()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return torch._dynamo.explain(lambda t: model(input_ids=t, labels=t).loss)(x).graph_break_count
    finally:
        model = None
        release()


def step_levers(ctx) -> dict:
    """The throughput step: :data:`PLAN` within the budget; passes when no variant failed."""
    import torch

    from londonlm.core.hardware import peak_flops

    cfg: ThroughputConfig = ctx.throughput
    name = torch.cuda.get_device_name(0)
    peak = peak_flops(name)
    t0 = time.perf_counter()
    breaks = graph_breaks(cfg.vocab)
    partial = ctx.out / "throughput_partial.json"
    partial.parent.mkdir(parents=True, exist_ok=True)
    rows = run_plan(cfg.plan, lambda v: measure_variant(v, cfg, peak), cfg.budget_s - (time.perf_counter() - t0),
                    progress=lambda rs: partial.write_text(json.dumps(rs, indent=1)))
    errors = [f"{r['variant']} ({r['sub']}): {r['error']}" for r in rows if r.get("error")]
    nan = [f"{r['variant']} ({r['sub']}): loss NaN" for r in rows if r.get("loss") != r.get("loss")]
    figures = {"device": name, "peak_flops_bf16": peak, "budget_s": cfg.budget_s, "context": CONTEXT,
               "sequences_per_step": SEQUENCES, "vocab": cfg.vocab or "presets' (30,000)",
               "targets": {k: f"{t:.0%}" for k, t in TARGETS.items()},
               "flops_per_token": {m: model_shape(m, cfg.vocab).flops_per_token(CONTEXT) for m in SEQUENCES},
               "timing": f"{cfg.warmup} warm-up steps, median of {cfg.windows} windows of {cfg.steps_per_window} "
                         f"optimizer steps, synchronized"}
    figures["compiled_graph_breaks"] = breaks
    errors += [f"torch.compile: {breaks} graph break(s) in the padded model's training forward"] if breaks else []
    # the kernel profiles are tables of their own (report.step_section), not cells of the rows'
    res = {"ok": not errors and not nan, "summary": summary(rows), "figures": figures, "rows": rows,
           "kernels": {r["variant"]: r.pop("kernels") for r in rows if "kernels" in r}}
    if errors or nan:
        res["error"] = "; ".join(errors + nan)
    return res

