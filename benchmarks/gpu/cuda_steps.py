"""In-process GPU measurements at the GPT-2 Small shape: training throughput and MFU (eager and
torch.compile) and the compiled step's graph breaks, one optimizer step of Muon+AdamW against
AdamW, the memory estimate against the measured peak for each attention kind and loss, the
micro-batch the trainer fits to the free memory (slm and regular presets), and the speed
probe on a GPU (the fixed rules, the step timed as it trains, its model freed). torch is
imported inside the functions: the dry run and the tests of this package need none of it."""
from __future__ import annotations

import contextlib
import gc
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .arith import SMALL, flop_terms, median_ms, mfu, time_windows, tokens_per_second, tokens_per_step

GPT2_TOKENS = 50257  # GPT-2's vocabulary: the padded rows are never inputs or targets


@dataclass
class SmallConfig:
    batch_size: int = 16
    context: int = 1024
    warmup: int = 3
    windows: int = 5
    steps_per_window: int = 10
    compile: bool = True


def small_shape(context: int):
    from londonlm.training.model import ModelShape

    return ModelShape(**{**SMALL, "n_positions": context})


def small_model(context: int):
    """GPT-2 Small as the project builds it (tied embeddings, erf GELU, SDPA) and trains it (no
    generation cache), on the GPU, with TF32 for what stays fp32 (the trainer turns it on on
    CUDA too)."""
    import torch

    from londonlm.training.model import build_model, without_generation_cache

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = build_model(small_shape(context), 0, 0, 0, attn_implementation="sdpa", seed=0)
    return without_generation_cache(model).cuda().train()


def fused_adamw(params, fused: bool = True):
    import torch

    # the project's AdamW settings (beta2 0.95, weight decay 0.1); fused: one kernel per step,
    # else torch's multi-tensor (foreach) implementation
    return torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                             fused=fused or None, foreach=None if fused else True)


def random_batch(cfg: SmallConfig):
    import torch

    g = torch.Generator(device="cuda").manual_seed(0)
    return torch.randint(0, GPT2_TOKENS, (cfg.batch_size, cfg.context), device="cuda", generator=g)


def sdpa_backend(flash_only: bool):
    """Flash attention only (an error where it cannot run), or torch's own choice."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION]) if flash_only else contextlib.nullcontext()


def train_step(fwd, opt, batch):
    """One step as the trainer takes it on a GPU: bf16 autocast over fp32 weights."""
    import torch

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step


def release() -> None:
    """Free what the previous measurement held, so the next one starts from an empty GPU."""
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    if hasattr(torch, "_dynamo"):
        torch._dynamo.reset()


def measure_variant(cfg: SmallConfig, compiled: bool, flash_only: bool) -> dict:
    import torch

    model = small_model(cfg.context)
    opt = fused_adamw(model.parameters())
    step = train_step(torch.compile(model) if compiled else model, opt, random_batch(cfg))
    try:
        with sdpa_backend(flash_only):
            t0 = time.perf_counter()
            step()  # the first step compiles (torch.compile) and allocates: timed apart
            torch.cuda.synchronize()
            first = time.perf_counter() - t0
            windows = time_windows(step, torch.cuda.synchronize, time.perf_counter, cfg.warmup,
                                   cfg.windows, cfg.steps_per_window)
            loss = float(step().detach())
    finally:
        del model, opt, step
        release()
    tps = tokens_per_second(windows, cfg.steps_per_window, tokens_per_step(cfg.batch_size, cfg.context))
    return {"tokens_per_s": round(tps, 1), "first_step_s": round(first, 2), "loss_after": round(loss, 3),
            "step_ms": round(median_ms(windows) / cfg.steps_per_window, 2),
            "window_tokens_per_s": [round(cfg.steps_per_window * tokens_per_step(cfg.batch_size, cfg.context)
                                          / w) for w in windows]}


def measure_with_fallback(cfg: SmallConfig, compiled: bool) -> dict:
    """Flash attention forced; where torch refuses it ("No available kernel"), its own choice,
    with the refusal recorded, rather than no figure at all."""
    try:
        return {"attention": "sdpa (flash)", **measure_variant(cfg, compiled, flash_only=True)}
    except RuntimeError as e:
        if "kernel" not in str(e).lower() and "flash" not in str(e).lower():
            raise
        release()
        note = str(e).strip().splitlines()[0][:200]
        return {"attention": f"sdpa (torch's choice; flash refused: {note})",
                **measure_variant(cfg, compiled, flash_only=False)}


def flops_and_peak(cfg: SmallConfig) -> dict:
    """The MFU's two inputs: the project's FLOPs per token for this shape and context, and
    the device's dense bf16 peak from londonlm.core.hardware (None where unknown)."""
    import torch

    from londonlm.core.hardware import peak_flops

    shape = small_shape(cfg.context)
    n = shape.n_params_non_embedding + shape.vocab_size * shape.n_embd
    terms = flop_terms(shape.n_layer, shape.n_head, shape.n_embd, cfg.context, n)
    if terms["flops_per_token"] != shape.flops_per_token(cfg.context):  # the training logs' formula
        raise ValueError(f"FLOP terms {terms} disagree with ModelShape.flops_per_token "
                         f"({shape.flops_per_token(cfg.context)}): update arith.flop_terms")
    name = torch.cuda.get_device_name(0)
    return {**terms, "device": name, "peak_flops_bf16": peak_flops(name), "n_params": shape.n_params}


def graph_breaks(cfg: SmallConfig) -> int:
    """torch.compile's graph breaks in one training forward of the project's GPT-2 Small (the
    stock loss once broke every step: transformers' warn-once for an unnamed loss)."""
    import torch

    model = small_model(cfg.context)
    batch = random_batch(SmallConfig(2, cfg.context))
    try:
        torch._dynamo.reset()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return torch._dynamo.explain(lambda x: model(input_ids=x, labels=x).loss)(batch).graph_break_count
    finally:
        model = None  # the GPU's memory back for the next measurement
        release()


def step_throughput(ctx) -> dict:
    cfg: SmallConfig = ctx.small
    flops = flops_and_peak(cfg)
    breaks = graph_breaks(cfg) if cfg.compile else None
    rows = []
    for compiled in ([False, True] if cfg.compile else [False]):
        name = "torch.compile" if compiled else "eager"
        try:
            r = measure_with_fallback(cfg, compiled)
        except Exception as e:  # noqa: BLE001  (a compile failure keeps the eager figure)
            release()
            rows.append({"variant": name, "tokens_per_s": None, "error": f"{type(e).__name__}: {e}"[:300]})
            continue
        r["mfu"] = mfu(r["tokens_per_s"], flops["flops_per_token"], flops["peak_flops_bf16"])
        r["mfu"] = None if r["mfu"] is None else round(r["mfu"], 4)
        rows.append({"variant": name, **r})
    measured = [r for r in rows if r["tokens_per_s"]]
    if not measured:
        raise RuntimeError("; ".join(r["error"] for r in rows))
    best = max(measured, key=lambda r: r["tokens_per_s"])
    summary = f"{best['tokens_per_s']:,.0f} tokens/s ({best['variant']})" + (
        f", MFU {best['mfu']:.1%}" if best["mfu"] is not None else ", MFU n/a (peak unknown)")
    figures = {"batch_size": cfg.batch_size, "context": cfg.context,
               "tokens_per_step": tokens_per_step(cfg.batch_size, cfg.context),
               "timing": f"{cfg.warmup} warm-up steps, median of {cfg.windows} windows of "
                         f"{cfg.steps_per_window} steps, torch.cuda.synchronize around each window",
               "precision": "bf16 autocast, fp32 weights; fused AdamW; TF32 matmuls", **flops}
    if len(measured) == 2:
        figures["compile_speedup"] = round(measured[1]["tokens_per_s"] / measured[0]["tokens_per_s"], 3)
    figures["compiled_graph_breaks"] = breaks
    failed = [f"{r['variant']}: {r['error']}" for r in rows if r.get("error")]
    failed += [f"torch.compile: {breaks} graph break(s) in the training forward"] if breaks else []
    nan = [r["variant"] for r in measured if r["loss_after"] != r["loss_after"]]  # NaN != NaN
    res = {"ok": not failed and not nan, "summary": summary, "figures": figures, "rows": rows}
    if failed or nan:
        res["error"] = "; ".join(failed + [f"{v}: loss is NaN" for v in nan])
    return res


def optimizer_ms(opt, warmup: int = 3, steps: int = 20) -> float:
    """Median milliseconds of one ``opt.step()`` over ``steps`` single-step windows."""
    import torch

    return median_ms(time_windows(opt.step, torch.cuda.synchronize, time.perf_counter, warmup, steps, 1))


def optimizer_rows(model) -> list[dict]:
    """One row per optimizer: its median step in ms, or the error that stopped it (Muon needs
    torch >= 2.9; the AdamW figures still count without it)."""
    from londonlm.training.step.optim import MuonOptions, build_muon_adamw

    rows = []
    for name, make in (("AdamW (fused)", lambda: fused_adamw(model.parameters())),
                       ("AdamW (foreach)", lambda: fused_adamw(model.parameters(), fused=False)),
                       ("Muon + AdamW (--optim muon)", lambda: build_muon_adamw(model, MuonOptions(lr=3e-4)))):
        try:
            opt = make()
            rows.append({"optimizer": name, "step_ms": round(optimizer_ms(opt), 3)})
            del opt
        except Exception as e:  # noqa: BLE001  (recorded in the row; the step then fails)
            rows.append({"optimizer": name, "step_ms": None, "error": f"{type(e).__name__}: {e}"[:300]})
    return rows


def step_optimizers(ctx) -> dict:
    import torch

    model = small_model(ctx.small.context)
    for p in model.parameters():  # fixed gradients: the step's cost does not depend on them
        p.grad = torch.randn_like(p) * 1e-3
    try:
        rows = optimizer_rows(model)
    finally:
        del model
        release()
    adamw, muon = rows[0]["step_ms"], rows[2]["step_ms"]
    ratio = round(muon / adamw, 3) if adamw and muon else None
    res = {"ok": all(r["step_ms"] for r in rows),
           "summary": f"Muon+AdamW {muon} ms vs fused AdamW {adamw} ms" + (f" ({ratio:.2f}x)" if ratio else ""),
           "figures": {"shape": "GPT-2 Small (124M)", "muon_over_fused_adamw": ratio,
                       "timing": "median of 20 single steps after 3 warm-up steps, synchronized"},
           "rows": rows}
    if not res["ok"]:
        res["error"] = "; ".join(f"{r['optimizer']}: {r['error']}" for r in rows if r.get("error"))
    return res


def measured_peak(cfg: SmallConfig, attention: str, fused: bool) -> float:
    """Peak bytes torch's allocator held over two eager bf16 steps with fused AdamW (the second
    holds AdamW's state too), from an emptied GPU."""
    import torch

    from londonlm.training.step.fused_loss import enable_fused_loss

    release()
    torch.cuda.reset_peak_memory_stats()
    model = small_model(cfg.context)
    model.set_attn_implementation(attention)
    if fused:
        enable_fused_loss(model)
    opt = fused_adamw(model.parameters())
    step = train_step(model, opt, random_batch(cfg))
    try:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated())
    finally:
        del model, opt, step
        release()


# the estimate sizes the micro-batch at 85% of free memory: more than this far off is a failure
MEMORY_RATIO_RANGE = (0.67, 1.5)


def step_memory(ctx) -> dict:
    cfg: SmallConfig = ctx.small
    shape, rows = small_shape(cfg.context), []
    for attention in ("sdpa", "eager"):
        for fused in (False, True):
            estimate = shape.training_memory(cfg.batch_size, attention=attention, precision="bf16",
                                             fused_loss=fused).total
            try:
                got = measured_peak(cfg, attention, fused)
            except RuntimeError as e:  # out of memory: the estimate is recorded, the row fails
                rows.append({"attention": attention, "loss": "fused" if fused else "stock",
                             "estimate_gb": round(estimate / 1e9, 3), "error": str(e).splitlines()[0][:200]})
                release()
                continue
            rows.append({"attention": attention, "loss": "fused" if fused else "stock",
                         "estimate_gb": round(estimate / 1e9, 3), "max_allocated_gb": round(got / 1e9, 3),
                         "estimate_over_measured": round(estimate / got, 3)})
    lo, hi = MEMORY_RATIO_RANGE
    off = [r for r in rows if not lo <= r.get("estimate_over_measured", 0) <= hi]
    shown = ", ".join(f"{r['attention']}/{r['loss']} x{r.get('estimate_over_measured', '?')}" for r in rows)
    res = {"ok": not off, "summary": f"estimate / measured peak: {shown}",
           "figures": {"batch_size": cfg.batch_size, "context": cfg.context, "accepted_ratio": f"{lo}-{hi}",
                       "estimate": "ModelShape.training_memory: state 16 B/param, autocast weight copies, "
                                   "activations per token and layer (38 d in bf16), eager's T x T scores, "
                                   "the LM head (10 B per logit stock, 2 fused)",
                       "measured": "torch.cuda.max_memory_allocated over two eager bf16-autocast steps "
                                   "with fused AdamW"},
           "rows": rows}
    if off:
        res["error"] = "estimate outside the accepted range for " + ", ".join(
            f"{r['attention']}/{r['loss']}" for r in off)
    return res


def preset_shape(name: str):
    """A preset's model shape at its tokenizer's size (training pads it: the GPU settings' pad_vocab)."""
    import config
    from londonlm.training.model import ModelShape

    p = config.get_preset(name)
    return ModelShape(p.n_layer, p.n_head, p.n_embd, p.context_length, p.vocab_size), p


def step_micro_batch(ctx) -> dict:
    """What the trainer does on this GPU for the slm and regular presets: the micro-batch from
    the free memory (tokens per step kept), then two real steps at it: the peak against the
    estimate, and no out-of-memory."""
    import torch

    from londonlm.core import RunLayout
    from londonlm.training import ModelConfig, OutputConfig, RunControl, SpeedRequest, config_from_values
    from londonlm.training.model import build_model, prepare_for_training
    from londonlm.training.speed.choice import SpeedPlan, fit_batch_to_memory, memory_of
    from londonlm.training.speed.settings import SpeedSettings

    kernels = SpeedSettings("bf16", "sdpa", False, True)  # the fixed rules on a GPU
    plan, rows = SpeedPlan(kernels, True, "default", "", None), []
    for name in ("slm", "regular"):
        shape, preset = preset_shape(name)
        out = RunLayout(Path(tempfile.mkdtemp()))
        config = config_from_values(
            dict(output_dir=str(out.dir), per_device_train_batch_size=preset.batch_size,
                 gradient_accumulation_steps=preset.grad_accum, per_device_eval_batch_size=preset.batch_size,
                 report_to=[]),
            model=ModelConfig(shape.n_layer, shape.n_head, shape.n_embd, shape.n_positions, dropout=preset.dropout),
            data=None, request=SpeedRequest(), optimizer="adamw", control=RunControl(),
            output=OutputConfig(out, name))
        release()
        fitted = fit_batch_to_memory(config, shape, plan).speed
        b, accum = fitted.micro_batch, fitted.grad_accum
        torch.cuda.reset_peak_memory_stats()
        model = prepare_for_training(build_model(shape, 0, 0, 0, dropout=preset.dropout, seed=0), kernels).cuda().train()
        opt = fused_adamw(model.parameters())
        x = torch.randint(0, shape.vocab_size, (b, shape.n_positions), device="cuda")
        row = {"preset": name, "preset_batch": f"{preset.batch_size} x {preset.grad_accum}",
               "fitted_batch": f"{b} x {accum}",
               "estimate_gb": round(memory_of(shape, b, kernels, "adamw", preset.dropout).total / 1e9, 2)}
        try:
            for _ in range(2):
                train_step(model, opt, x)()
            torch.cuda.synchronize()
            row["max_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        except torch.cuda.OutOfMemoryError as e:
            row["error"] = f"out of memory: {str(e).splitlines()[0][:150]}"
        finally:
            del model, opt, x
            release()
        row["same_tokens_per_step"] = b * accum == preset.batch_size * preset.grad_accum
        rows.append(row)
    ok = all("error" not in r and r["same_tokens_per_step"] for r in rows)
    res = {"ok": ok, "summary": "; ".join(f"{r['preset']} {r['preset_batch']} -> {r['fitted_batch']} "
                                          f"({r.get('max_allocated_gb', 'OOM')} GB)" for r in rows),
           "figures": {"rule": "the largest micro-batch dividing batch x accumulation whose estimated peak fits "
                               "85% of the free memory (londonlm.training.speed.choice.fit_batch_to_memory)"},
           "rows": rows}
    if not ok:
        res["error"] = "a fitted micro-batch ran out of memory or changed the tokens per step"
    return res


def step_probe(ctx) -> dict:
    """The speed settings on a GPU: the fixed rules with nothing timed (an eager probe would time
    another program than the compiled run); the budget check's step timed as the run trains
    (eager and compiled both shown); the timer's model freed as soon as it is done."""
    import torch

    from londonlm.training.speed.probe import resolve_speed_settings, time_candidate
    from londonlm.training.speed.settings import SpeedSettings

    cfg: SmallConfig = ctx.small
    shape = small_shape(cfg.context)

    def no_timing(*_a, **_k):
        raise AssertionError("the probe timed a candidate on a GPU")

    choice = resolve_speed_settings("refresh", shape, cfg.batch_size, timer=no_timing, log=lambda _m: None,
                                    cache_path=ctx.work / "autotune.json")
    release()
    before = torch.cuda.memory_allocated()
    cand, times = SpeedSettings(choice.candidate.precision, "sdpa", False), {}
    for compiled in (False, True):
        times["compiled" if compiled else "eager"] = min(time_candidate(
            cand, shape, cfg.batch_size, warmup_steps=2, timed_steps=3, compile=compiled))
        release()
    left = torch.cuda.memory_allocated() - before
    ok = choice.source == "default" and left < 64 * 2**20
    res = {"ok": ok, "summary": f"{choice.candidate.describe()} (fixed rules); step {times['eager'] * 1e3:.1f} ms "
                                f"eager, {times['compiled'] * 1e3:.1f} ms compiled; {left / 2**20:.0f} MB left behind",
           "figures": {"choice": choice.message, "eager_step_ms": round(times["eager"] * 1e3, 2),
                       "compiled_step_ms": round(times["compiled"] * 1e3, 2),
                       "memory_left_after_timing_mb": round(left / 2**20, 1)}}
    if not ok:
        res["error"] = f"source {choice.source}, {left / 2**20:.0f} MB left behind after timing"
    return res
