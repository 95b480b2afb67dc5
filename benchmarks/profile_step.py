#!/usr/bin/env python3
"""Where a training step's time goes, by op group, on this machine: our trainer run for real
(``04_training/train_model_slm.py --profile_steps N``, the same slice, tokenizer and shape as
``train_throughput.py``), one column per recipe, and a saved profile to compare against.

    python benchmarks/profile_step.py --steps 10                                  # the defaults
    python benchmarks/profile_step.py --recipes ours,ours@fp32/sdpa/off --save after.json
    python benchmarks/profile_step.py --compare before.json                       # before | after

Groups (``londonlm/training/step/profiling.py``): GEMM (linear layers, forward and backward),
attention core, norms/GELU/residuals, LM head + loss, embeddings, Muon's Newton-Schulz and the
rest of the optimizer, data loading, other ops (grad-norm clipping, zeroing) and the
Python/Trainer overhead (wall time outside every op). Also the GEMM rate inside the linear
layers and, for reference, torch's bf16 and fp32 matmul rate at the layers' shapes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import (REPO, SHAPES, candidate_flags, cpu_description, ours,  # noqa: E402
                              setup)


def gemm_rates(shape: tuple, threads: int | None = None) -> dict:
    """torch.matmul GFLOP/s (bf16 and fp32) at the linear layers' shapes of one micro-batch."""
    import torch

    from londonlm.core import use_training_threads

    use_training_threads() if threads is None else torch.set_num_threads(threads)
    n_layer, n_head, d, ctx, batch = shape
    rows = batch * ctx
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        rates = []
        for k, n in ((d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)):
            a, b = torch.randn(rows, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            for _ in range(3):
                a @ b
            reps, t0 = 20, time.perf_counter()
            for _ in range(reps):
                a @ b
            rates.append(2 * rows * k * n * reps / (time.perf_counter() - t0) / 1e9)
        out[str(dtype).split(".")[-1]] = round(sum(rates) / len(rates), 1)
    return out


def profile_recipe(a, prep, out: Path, env: dict, recipe: str) -> dict:
    extra = [] if recipe == "ours" else candidate_flags(recipe[5:])
    tag = recipe.replace("@", "_").replace("/", "_")
    skip = 3
    ours(a, prep, out, env, [*extra, "--profile_steps", str(a.steps),
                             "--stop_after_steps", str(skip + a.steps + 1)],
         run=f"profile_{tag}", max_seconds=0, log_name=f"profile_{tag}.log")
    run_dir = a.work / "09_models" / "checkpoints" / f"profile_{tag}"
    res = json.loads((run_dir / "profile" / "profile.json").read_text())
    info = json.loads((run_dir / "run_info.json").read_text())
    res["settings"] = {k: info.get(k) for k in ("precision", "attn_implementation", "fused_loss")}
    res["settings"]["optimizer"] = (info.get("settings") or {}).get("optimizer")
    return res


def table(columns: dict[str, dict]) -> str:
    names = list(columns)
    groups = [g["group"] for g in next(iter(columns.values()))["groups"]]
    lines = ["| op group | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for i, g in enumerate(groups):
        cells = [f"{c['groups'][i]['ms_per_step']:.1f} ms ({100 * c['groups'][i]['share']:.0f}%)"
                 for c in columns.values()]
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    lines.append("| **step** | " + " | ".join(f"**{c['step_ms']:.0f} ms**" for c in columns.values()) + " |")
    lines.append("| GEMM GFLOP/s | " + " | ".join(str(c.get("gemm_gflops_per_s", "-")) for c in columns.values())
                 + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default="ours", help="comma list: ours (the defaults) or "
                   "ours@PRECISION/ATTN/FUSED (one autotune candidate, e.g. ours@fp32/sdpa/off)")
    p.add_argument("--steps", type=int, default=10, help="steps profiled (after 3 warm-up steps)")
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--work", type=Path, default=None, help="scratch root (default /tmp/londonlm_bench_SHAPE)")
    p.add_argument("--save", type=Path, help="write the profiles (JSON) here")
    p.add_argument("--compare", type=Path, help="a saved profile: printed beside this one")
    p.add_argument("--ours_extra", nargs=argparse.REMAINDER, default=[], help="extra flags for our trainer")
    a = p.parse_args()
    a.n_layer, a.n_head, a.n_embd, a.context, a.batch_size = SHAPES[a.shape]
    a.lr, a.warmup_steps, a.max_steps, a.vocab, a.budget_seconds = 2e-3, 30, 10_000, 4096, 0
    a.files = None
    a.out = None
    a.work = (a.work or Path(f"/tmp/londonlm_bench_{a.shape}")).resolve()
    out, _files, prep, env = setup(a, "results_profile")
    columns = {r: profile_recipe(a, prep, out, env, r) for r in a.recipes.split(",")}
    result = {"meta": {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                       "date": time.strftime("%Y-%m-%d"), "machine": cpu_description(), "repo": str(REPO)},
              "matmul_gflops_per_s": gemm_rates(SHAPES[a.shape]), "profiles": columns}
    shown = dict(columns)
    if a.compare:
        before = json.loads(a.compare.read_text())
        shown = {f"before: {k}": v for k, v in before["profiles"].items()} | \
                {f"after: {k}": v for k, v in columns.items()}
    print(f"{result['meta']['machine']}; torch matmul at these shapes: "
          f"{result['matmul_gflops_per_s']} GFLOP/s")
    print(table(shown))
    if a.save:
        a.save.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
