#!/usr/bin/env python3
"""The training-memory estimate against the peak a CPU step really reaches: for each shape,
attention kind (sdpa, eager), precision (bf16 autocast, fp32) and loss (stock, fused), one
AdamW step's peak from the profiler's allocation events beside ``ModelShape.training_memory``
and the estimate it replaced. A Markdown table on stdout (BENCHMARKS.md).

    python benchmarks/memory_estimate.py
"""
from __future__ import annotations

import argparse

import torch

from londonlm.training.step.fused_loss import enable_fused_loss
from londonlm.training.model import ModelShape, build_model

# (shape, micro-batch): the tiny preset's, a width-heavy and a context-heavy one
SHAPES = ((ModelShape(4, 4, 256, 128, 4096), 8), (ModelShape(2, 4, 192, 96, 2048), 6),
          (ModelShape(2, 8, 64, 384, 512), 4))


def measured_peak_bytes(shape: ModelShape, batch: int, attention: str, precision: str, fused: bool) -> float:
    """The peak of one AdamW training step on the CPU, as torch's allocator saw it: the
    weights and AdamW's moments (alive before the step) plus the largest sum of the step's live
    allocations, from the profiler's allocation events in time order."""
    model = build_model(shape, 0, 0, 0, attn_implementation=attention, seed=0)
    if fused:
        enable_fused_loss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, shape.vocab_size, (batch, shape.n_positions), generator=torch.Generator().manual_seed(0))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # AdamW's moments exist from here
    held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *(
        v for st in opt.state.values() for v in st.values() if torch.is_tensor(v) and v.dim())])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    live = peak = 0
    for e in sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return held + peak


def old_estimate(shape: ModelShape, batch: int) -> float:
    """The estimate before: 16 B/param + 34*T*d + 5*H*T^2 bytes per layer and sequence."""
    T, d = shape.n_positions, shape.n_embd
    return shape.n_params * 16 + shape.n_layer * batch * (34 * T * d + 5 * shape.n_head * T * T)


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print("| shape, micro-batch | attention | precision | loss | measured MB | new estimate MB (ratio) "
          "| old estimate MB (ratio) |\n|---|---|---|---|---|---|---|")
    for shape, batch in SHAPES:
        for attention in ("sdpa", "eager"):
            for precision in ("bf16", "fp32"):
                for fused in (False, True):
                    got = measured_peak_bytes(shape, batch, attention, precision, fused)
                    new = shape.training_memory(batch, attention=attention, precision=precision,
                                                fused_loss=fused).total
                    old = old_estimate(shape, batch)
                    print(f"| L{shape.n_layer} d{shape.n_embd} H{shape.n_head} T{shape.n_positions} "
                          f"V{shape.vocab_size} B{batch} | {attention} | {precision} | "
                          f"{'fused' if fused else 'stock'} | {got / 1e6:.1f} | {new / 1e6:.1f} ({new / got:.2f}x) "
                          f"| {old / 1e6:.1f} ({old / got:.2f}x) |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
