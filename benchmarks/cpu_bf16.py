#!/usr/bin/env python3
"""bf16 against fp32 on this CPU: the question behind the fixed rules' precision
(``londonlm.core.cpu_has_fast_bf16``: bf16 where its matmuls outrun fp32's, not wherever the CPU
has bf16 instructions).

    python benchmarks/cpu_bf16.py --runs 5

Two measures, each interleaved round by round (a machine whose speed drifts slows both alike),
medians of ``--runs`` rounds:

- GEMM rate, GFLOP/s: ``torch.matmul`` at a GPT-2 layer's shapes (tokens x 768 by 768 x 3072),
  the work a training step is mostly made of;
- a training step, seconds: the autotune probe's own timer (``StepTimer``: the project's model,
  AdamW, synthetic tokens) with the fixed rules' settings for each precision (bf16: eager
  attention and the fused loss; fp32: SDPA and the stock loss), at each ``--shapes`` preset's
  model shape.

It prints a Markdown table, each row as it is measured, and, with ``--json``, writes the figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from train_throughput import cpu_description  # noqa: E402  (names the CPU family/model)

# (model shape, micro-batch) per preset: the presets' own shapes, slm's context cut to 256
# so that a CPU times its step in seconds
SHAPES = {"micro": ((2, 2, 64, 64, 512), 8), "tiny": ((4, 4, 256, 128, 4096), 32),
          "slm@256": ((12, 12, 768, 256, 30000), 4)}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="interleaved rounds (medians are taken)")
    p.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    p.add_argument("--gemm_tokens", type=int, default=2048, help="rows of the GEMM (tokens a step)")
    p.add_argument("--json", type=Path, help="write the figures here")
    a = p.parse_args(argv)
    if a.runs < 1 or a.gemm_tokens < 1:
        p.error("--runs and --gemm_tokens must be at least 1")
    return a


def gemm_rates(runs: int, tokens: int) -> dict[str, float]:
    """Median GFLOP/s of ``tokens x 768 @ 768 x 3072`` per precision, interleaved."""
    import torch

    a32, b32 = torch.randn(tokens, 768), torch.randn(768, 3072)
    pairs = {"fp32": (a32, b32), "bf16": (a32.bfloat16(), b32.bfloat16())}
    flops = 2 * tokens * 768 * 3072
    rates: dict[str, list[float]] = {k: [] for k in pairs}
    for a, b in pairs.values():  # warm-up: the kernel's first call picks and packs
        a @ b
    for r in range(runs):
        for name in (list(pairs) if r % 2 == 0 else list(reversed(pairs))):
            a, b = pairs[name]
            t = time.perf_counter()
            for _ in range(5):
                a @ b
            rates[name].append(5 * flops / (time.perf_counter() - t) / 1e9)
    return {k: round(statistics.median(v), 1) for k, v in rates.items()}


def step_seconds(runs: int, shape_key: str) -> dict[str, float]:
    """Median seconds of a training step per precision (the fixed rules' settings for each)."""
    from londonlm.training.model import ModelShape
    from londonlm.training.speed.probe import StepTimer
    from londonlm.training.speed.settings import SpeedSettings

    dims, batch = SHAPES[shape_key]
    cands = {"fp32": SpeedSettings("fp32", "sdpa", False, False),
             "bf16": SpeedSettings("bf16", "eager", True, False)}
    timer = StepTimer(ModelShape(*dims), batch)
    try:
        for c in cands.values():
            timer(c)
        times: dict[str, list[float]] = {k: [] for k in cands}
        for r in range(runs):
            for name in (list(cands) if r % 2 == 0 else list(reversed(cands))):
                times[name].append(timer(cands[name]))
    finally:
        timer.close()
    return {k: round(statistics.median(v), 4) for k, v in times.items()}


def machine() -> str:
    """The CPU (family and model: generations under one brand differ here most) and the rule's
    answer for it."""
    import torch

    from londonlm.core import cpu_has_fast_bf16, cpu_has_native_bf16

    return (f"{cpu_description()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
            f"bf16 instructions: {'yes' if cpu_has_native_bf16() else 'no'}, "
            f"the fixed rules take bf16: {'yes' if cpu_has_fast_bf16() else 'no'}")


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    from londonlm.core import use_training_threads

    use_training_threads()
    # each row as it is measured: where bf16 is emulated (no avx512_bf16/AMX) one measure can
    # take minutes, and a table printed only at the end looks like a hang
    out = {"machine": machine(), "runs": a.runs}
    print(out["machine"], end="\n\n")
    print("| measure | fp32 | bf16 | bf16 / fp32 |")
    print("|---|---|---|---|", flush=True)
    g = out["gemm_gflops"] = gemm_rates(a.runs, a.gemm_tokens)
    print(f"| GEMM {a.gemm_tokens} x 768 x 3072, GFLOP/s | {g['fp32']} | {g['bf16']} | "
          f"{g['bf16'] / g['fp32']:.2f}x the rate |", flush=True)
    out["step_seconds"] = {}
    for k in a.shapes:
        s = out["step_seconds"][k] = step_seconds(a.runs, k)
        print(f"| {k} training step, s | {s['fp32']} | {s['bf16']} | {s['bf16'] / s['fp32']:.2f}x the time |",
              flush=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
