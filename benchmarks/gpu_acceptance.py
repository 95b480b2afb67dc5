#!/usr/bin/env python3
"""GPU acceptance in one command: on one CUDA GPU, run the `gpu` tests, measure the MFU of
GPT-2 Small and Medium with each speed lever on and off within a time budget (padded vocabulary,
fused loss, compile mode, micro-batch, Muon with eager or compiled Newton-Schulz, Python's GC
frozen: ``--steps throughput`` alone fits a 15-minute lease), GPT-2 Small at GPT-2's vocabulary
(eager and torch.compile, with its graph breaks), Muon vs AdamW step
cost, the memory estimate against the measured peak (each attention kind and loss), the
micro-batch fitted to the free memory (slm, regular) and the speed settings a GPU gets, then run
the training CLI through a kill and exact resume, FSDP2 under torchrun (AdamW, and Muon stopped
and resumed), torch.compile without a C compiler, --profile_steps with CUDA kernels, the
batched server at 1/8/32 clients in bf16 and the GGUF export (about 10 min on an H100/H200).
Every step is timed; a failing one is recorded with its error and the others still run.

    python benchmarks/gpu_acceptance.py --bench_md BENCHMARKS.md
    python benchmarks/gpu_acceptance.py --dry_run                   # the plan, no GPU needed
    python benchmarks/gpu_acceptance.py --steps throughput,memory    # a subset
    python benchmarks/gpu_acceptance.py --steps throughput --throughput_seconds 420 --bench_md BENCHMARKS.md
    python benchmarks/gpu_acceptance.py --steps race --race_data .gpu_race --bench_md BENCHMARKS.md

The ``race`` step (benchmarks/gpu_race.py: ours against the seed recipe at equal seconds, held-out
bits per byte) runs only when named: it takes minutes and reads data prepared on a CPU
(``python benchmarks/gpu_race.py --prepare --data .gpu_race --source_dir ../shared/corpus``),
carried to the GPU machine; it writes its own block (gpu-race) into --bench_md.

Writes OUT/gpu_acceptance.json (machine, date, each step's figures and status),
OUT/gpu_acceptance.md (a Markdown section for BENCHMARKS.md) and OUT/logs/; --bench_md puts
that section into the file between `<!-- gpu-acceptance:begin -->` and `... :end -->`,
replacing an earlier one. A run of only some steps writes a block of its own instead, named by
its steps (`--steps throughput`: `<!-- gpu-acceptance-throughput:begin -->`), replacing that
block's earlier copy or, the first time, put after the last acceptance block: it never erases
what a run of other steps recorded. Exit 0 when every step passed, 1 when one failed, 2 without
CUDA.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from gpu.cuda_steps import SmallConfig  # benchmarks/ is this script's folder, first on sys.path
from gpu.levers import ThroughputConfig
from gpu.runner import BY_NAME, STEPS, Context, RaceConfig, run_step

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = ("error: no CUDA GPU here; this run needs one NVIDIA GPU and a CUDA build of torch "
           "(`python benchmarks/gpu_acceptance.py --dry_run` lists what it would run)")


def step_names(values: list[str]) -> list[str]:
    """``--steps a,b c`` to step names in run order; an unknown name is a usage error."""
    asked = [n for v in values for n in v.split(",") if n]
    unknown = [n for n in asked if n not in BY_NAME and n != "all"]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown step(s) {', '.join(unknown)}; choose from "
                                         f"{', '.join(BY_NAME)} or all")
    if not asked:  # (`--steps ,`: no step, whose empty run was the full run's block, erasing it)
        raise argparse.ArgumentTypeError(f"name at least one step: {', '.join(BY_NAME)} or all")
    return [s.name for s in STEPS if ("all" in asked and s.in_all) or s.name in asked]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_acceptance.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", nargs="+", default=["all"], help=f"comma list of {', '.join(BY_NAME)} (default all)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_acceptance")
    p.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    p.add_argument("--bench_md", type=Path, help="put the section into this file (e.g. BENCHMARKS.md)")
    p.add_argument("--dry_run", action="store_true", help="print the steps and commands; run nothing")
    p.add_argument("--batch_size", type=int, default=16, help="GPT-2 Small steps: sequences per step")
    p.add_argument("--context", type=int, default=1024, help="GPT-2 Small steps: tokens per sequence")
    p.add_argument("--windows", type=int, default=5, help="timed windows (the median is reported)")
    p.add_argument("--steps_per_window", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the windows")
    p.add_argument("--no_compile", action="store_true", help="skip the torch.compile variant")
    p.add_argument("--throughput_seconds", type=float, default=420.0, help="throughput step: seconds its "
                   "variants may take (those that would overrun are skipped and reported); 420 fits a "
                   "15-minute lease with the machine's start")
    p.add_argument("--throughput_vocab", type=int, help="throughput step: the vocabulary (default: the "
                   "presets' tokenizer size; 50257 compares with public GPT-2 figures)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per subprocess")
    p.add_argument("--resume_tol", type=float, default=1e-5, help="largest loss difference that "
                   "counts as an exact resume")
    p.add_argument("--race_data", type=Path, default=REPO / ".gpu_race", help="race step: the data folder "
                   "prepared on a CPU (benchmarks/gpu_race.py --prepare) and carried here")
    p.add_argument("--race_preset", default="slm", help="race step: the preset raced (that of --race_data)")
    p.add_argument("--race_seconds", type=float, default=180.0, help="race step: training seconds per recipe")
    a = p.parse_args(argv)
    try:
        a.steps = step_names(a.steps)
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    return a


def context(a: argparse.Namespace) -> Context:
    work = a.work or Path(tempfile.gettempdir()) / f"londonlm_gpu_acceptance_{time.strftime('%Y%m%d_%H%M%S')}"
    small = SmallConfig(a.batch_size, a.context, a.warmup, a.windows, a.steps_per_window, not a.no_compile)
    race = RaceConfig(a.race_data.resolve(), a.race_preset, a.race_seconds, a.bench_md)
    throughput = ThroughputConfig(budget_s=a.throughput_seconds, vocab=a.throughput_vocab)
    return Context(out=a.out.resolve(), work=work.resolve(), timeout=a.timeout, resume_tol=a.resume_tol, small=small,
                   throughput=throughput, race=race)


def dry_run(a: argparse.Namespace, ctx: Context) -> int:
    print(f"GPU acceptance plan ({len(a.steps)} steps); reports in {ctx.out}, scratch in {ctx.work}")
    for i, name in enumerate(a.steps, 1):
        print(f"{i}. {name}: {BY_NAME[name].title}")
        for line in BY_NAME[name].plan(ctx):
            print(f"     {line}")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    ctx = context(a)
    if a.dry_run:
        return dry_run(a, ctx)
    from gpu.report import ANY_END, check_block, machine_info, markers, part_name, write_reports

    part = part_name(a.steps, [s.name for s in STEPS if s.in_all])  # None: the full run's block
    if a.bench_md:
        try:  # before the steps: a lease spent on a run whose block then cannot be written
            check_block(a.bench_md, *markers(part), ANY_END if part else None)
        except (OSError, ValueError) as e:
            print(f"error: --bench_md {e}", file=sys.stderr)
            return 2
    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    results = {"command": shlex.join(["python", "benchmarks/gpu_acceptance.py", *(sys.argv[1:] if argv is None else argv)]),
               "date": time.strftime("%Y-%m-%d"), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "machine": machine_info(), "work": str(ctx.work), "steps": {}}
    for i, name in enumerate(a.steps, 1):
        print(f"[{i}/{len(a.steps)}] {name}: {BY_NAME[name].title} ...", flush=True)
        r = results["steps"][name] = run_step(BY_NAME[name], ctx)
        print(f"    {r['status']} in {r['seconds']:.1f} s: {r.get('summary') or r.get('error', '')}", flush=True)
        write_reports(results, ctx.out)  # after every step: a run cut short keeps what it measured
    try:
        paths = write_reports(results, ctx.out, a.bench_md, part)
    except (OSError, ValueError) as e:  # the file changed during the run: the reports in --out have it all
        print(f"error: cannot write the block: {e} (the run's reports are in {ctx.out})", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0 if all(r["status"] == "passed" for r in results["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
