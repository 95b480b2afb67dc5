#!/usr/bin/env python3
"""What a training step pays for two things the throughput figures and the step-time estimate
once left out or put in unlike a run: a generation cache and dropout. The project's model
(``build_model``), bf16 autocast, AdamW, eager and torch.compile'd, each with the thing on and off:

- ``--what cache``: GPT-2's config default (``use_cache`` on: every forward copies each layer's
  keys and values into a ``DynamicCache`` nothing reads) against the model as it trains
  (``prepare_for_training`` turns it off, as the Trainer does). The throughput benchmarks
  (``benchmarks/gpu/``) and the speed probe step models outside a Trainer and timed it on
  until 2026-11-28.
- ``--what dropout``: dropout 0 (what the time budget's step estimate timed until 2026-11-28)
  against ``--dropout`` (slm's and regular's 0.1, what they train with).

    python benchmarks/step_costs.py --what cache --runs 3
    python benchmarks/step_costs.py --what dropout --modes eager --runs 3

Each (setting, compiled) is one fresh process (inductor's caches off, so every compiled run
compiles), the settings alternated run by run; per run the median of ``--steps`` steps after two
warm-up steps; the table gives the medians over runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from train_throughput import cpu_description  # noqa: E402  (names the CPU family/model)


def one_run(a) -> dict:
    """In this process: steps of one setting; a JSON line on stdout."""
    import torch

    sys.path.insert(0, str(REPO))
    from londonlm.training.model import ModelShape, build_model

    torch.manual_seed(0)
    shape = ModelShape(a.n_layer, a.n_head, a.n_embd, a.context, a.vocab)
    dropout = a.dropout if a.what == "dropout" and a.setting == "on" else 0.0
    model = build_model(shape, 0, 0, 0, dropout=dropout, seed=0).train()
    model.config.use_cache = a.what == "cache" and a.setting == "on"
    fwd = torch.compile(model) if a.compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, a.vocab, (a.batch, a.context), generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(a.steps + 2):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fwd(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {"first_s": times[0], "step_s": statistics.median(times[2:]), "loss": float(loss)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=256)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--what", choices=["cache", "dropout"], default="cache")
    p.add_argument("--dropout", type=float, default=0.1, help="the dropout of --what dropout's 'on'")
    p.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    p.add_argument("--json", type=Path)
    p.add_argument("--one", choices=["on", "off"], help=argparse.SUPPRESS)  # internal: one run, this process
    a = p.parse_args(argv)
    if a.one:
        a.setting = a.one
        a.compiled = os.environ.get("STEP_COSTS_COMPILED") == "1"
        print(json.dumps(one_run(a)), flush=True)
        return 0
    shape_flags = [f"--{k}={getattr(a, k)}" for k in ("n_layer", "n_head", "n_embd", "context", "vocab", "batch",
                                                       "steps", "what", "dropout")]
    rows: dict[tuple, list[dict]] = {}
    for run in range(a.runs):
        for mode in a.modes:
            for setting in ("on", "off"):
                env = {**os.environ, "STEP_COSTS_COMPILED": "1" if mode == "compiled" else "0",
                       "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
                r = subprocess.run([sys.executable, __file__, "--one", setting, *shape_flags], env=env,
                                   capture_output=True, text=True)
                if r.returncode:
                    print(f"error: the {mode} run with {a.what} {setting} failed: {r.stderr.strip()[-500:]}",
                          file=sys.stderr)
                    return 2
                rows.setdefault((mode, setting), []).append(json.loads(r.stdout.strip().splitlines()[-1]))
                print(f"run {run + 1} {mode} {a.what} {setting}: {rows[mode, setting][-1]}", flush=True)
    med = statistics.median
    print(f"\n{cpu_description()}; {a.n_layer} layers x {a.n_embd}, context {a.context}, micro-batch {a.batch}, "
          f"bf16 autocast; median of {a.runs} runs")
    on_name = "cache on" if a.what == "cache" else f"dropout {a.dropout:g}"
    off_name = "cache off" if a.what == "cache" else "dropout 0"
    print(f"| step | {on_name}, s | {off_name}, s | off / on |")
    print("|---|---|---|---|")
    table = {}
    for mode in a.modes:
        on, off = (med(r["step_s"] for r in rows[mode, c]) for c in ("on", "off"))
        table[mode] = {"on_s": on, "off_s": off}
        print(f"| {mode} | {on:.3f} | {off:.3f} | {off / on:.2f} |")
    if a.json:
        a.json.write_text(json.dumps({"what": a.what, "median": table, "runs": {f"{m} {c}": v for (m, c), v in rows.items()}},
                                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
