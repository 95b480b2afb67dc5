#!/usr/bin/env python3
"""A fair race at equal wall-clock time: every recipe (ours and the reference,
../shared/bench/baseline_clm.py) gets its learning-rate schedule fitted to the same training
budget, so each finishes its schedule (warm-up, then the decay to its floor) when the time is
up, instead of being cut off early in a schedule planned for 10,000 steps.

    python benchmarks/budget_race.py --budgets 300 600 --runs 3                  # the race
    python benchmarks/budget_race.py --budgets 20 --runs 1 --warmup_steps 3 --n_layer 2 \
        --n_head 2 --n_embd 64 --context 64 --batch_size 8 --vocab 512 --score_bytes 20000 \
        --files ../shared/corpus/gutenberg_{journal_of_the_plague_year,beggars_opera,amelia}.txt

Fitting: our training CLI fits its own schedule (``--time_budget``: warmup-stable-decay, the
step time measured while training). The reference runs under benchmarks/budget_shim/, which
hands its Trainer the same londonlm.training.step.schedules.BudgetFitCallback, so its own cosine schedule
ends at the budget too (``--schedule wsd`` gives it the warmup-stable-decay instead;
``--ours_budget_flag ''`` runs ours under the shim as well). Every run also has a hard stop
at 1.25 x the budget.

Per budget and recipe it reports medians over --runs of validation bits per byte (the shared
scorer ../shared/bench/bpb.py, tokenizer-independent), validation loss, useful (non-pad)
tokens/s, peak RSS of the training process, training seconds and steps, whether the schedule
finished, and writes everything to --out/results.json. With two or more budgets it also
reports time to the same validation loss: how long each recipe needs to reach another's bits
per byte at the largest budget (interpolated in log time between the budgets raced), e.g.
``--budgets 150 300 600 --recipes ours,ours_adamw`` for Muon against AdamW. Runs alternate
between recipes so drift in machine load hits all alike.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import SHAPES, cpu_description, ours, reference, score, setup  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIM = REPO / "benchmarks" / "budget_shim"
HARD_STOP = 1.25  # x budget: a run whose fitting failed is stopped (and flagged), never left running
# our recipes and their extra training flags
OURS = {"ours": [], "ours_fp32": ["--bf16", "false", "--fused_loss", "off", "--attn_implementation", "sdpa"],
        "ours_muon": ["--optim", "muon"], "ours_adamw": ["--optim", "adamw"]}
REFERENCE = ("grouped", "padded")
REPORTED = ("bpb", "val_loss", "useful_tokens_per_s", "peak_rss_mib", "train_seconds", "steps", "fitted_steps")


def train(a, prep, out: Path, env: dict, recipe: str, budget: float, tag: str) -> dict:
    """One run of ``recipe`` fitted to ``budget`` seconds (hard stop at HARD_STOP x budget)."""
    ns = copy.copy(a)
    ns.max_steps = 10 ** 6  # only a bound: the budget decides
    report = out / f"fit_{recipe}{tag}.json"
    report.unlink(missing_ok=True)
    extra = []
    if recipe in OURS and a.ours_budget_flag:
        extra = [a.ours_budget_flag, str(budget)]
    else:
        env = dict(env, LONDONLM_RACE_BUDGET=str(budget), LONDONLM_RACE_SCHEDULE=a.schedule,
                   LONDONLM_RACE_REPORT=str(report),
                   PYTHONPATH=os.pathsep.join([str(SHIM), str(REPO), env.get("PYTHONPATH", "")]))
    if recipe in REFERENCE:
        res = reference(ns, prep, out, env, recipe, max_seconds=HARD_STOP * budget, tag=tag)
    else:
        res = ours(ns, prep, out, env, [*OURS[recipe], *extra], run=f"race_{recipe}",
                   max_seconds=HARD_STOP * budget, log_name=f"{recipe}{tag}.log")
        res["recipe"] = f"londonlm/{recipe}"
    if report.exists():  # the shim's record
        fit = json.loads(report.read_text())
    else:  # our CLI's own (run_info.json beside final/ or the last checkpoint)
        info = json.loads((Path(res["model_dir"]).parent / "run_info.json").read_text())
        fit = info.get("time_budget") or {}
        res["autotune"] = (info.get("speed") or {}).get("source")
        res["optimizer"] = (info.get("settings") or {}).get("optimizer")
    res["budget_seconds"] = budget
    res["fitted_steps"] = fit.get("fitted_total_steps")
    res["finished_schedule"] = (res["steps"] >= fit["fitted_total_steps"] if fit
                                else Path(res["model_dir"]).name == "final")
    return res


def race_budget(a, prep, out: Path, env: dict, budget: float) -> dict:
    recipes = a.recipes.split(",")
    rows: dict[str, list[dict]] = {r: [] for r in recipes}
    for i in range(a.runs):
        for r in recipes:
            res = train(a, prep, out, env, r, budget, f"_{budget:g}s_{i}")
            res.update(score(Path(res["model_dir"]), prep["validation"], a.score_bytes), run=i)
            rows[r].append(res)
            print(json.dumps(res), flush=True)
    summary = {}
    for r, xs in rows.items():
        summary[r] = {k: statistics.median(x[k] for x in xs) for k in REPORTED
                      if all(x.get(k) is not None for x in xs)}
        summary[r]["unfinished_schedules"] = sum(not x["finished_schedule"] for x in xs)
    return {"budget_seconds": budget, "summary": summary, "runs": rows}


def equal_loss_times(races: list[dict]) -> list[dict]:
    """Time to the same validation loss: for each pair of recipes (A, B), how long A needs to
    reach B's median bits per byte at the largest budget, A's medians interpolated linearly in
    log(time) between the budgets raced (a bound when A is already there at the smallest
    budget, None when A does not get there within the largest)."""
    if len(races) < 2:
        return []
    races = sorted(races, key=lambda r: r["budget_seconds"])
    curve = {rec: [(r["budget_seconds"], r["summary"][rec]["bpb"]) for r in races]
             for rec in races[0]["summary"] if all("bpb" in r["summary"].get(rec, {}) for r in races)}
    longest = races[-1]["budget_seconds"]
    out = []
    for a, points in curve.items():
        for b in curve:
            if a == b:
                continue
            target = curve[b][-1][1]
            row = {"recipe": a, "reaches": b, "target_bpb": target, "at_most": False, "seconds": None}
            if points[0][1] <= target:
                row.update(seconds=points[0][0], at_most=True)
            for (t1, y1), (t2, y2) in zip(points, points[1:]):
                if row["seconds"] is None and y1 > target >= y2:
                    row["seconds"] = round(math.exp(math.log(t1) + (y1 - target) / (y1 - y2)
                                                    * (math.log(t2) - math.log(t1))), 1)
            row["time_ratio"] = round(longest / row["seconds"], 2) if row["seconds"] else None
            out.append(row)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", type=float, nargs="+", default=[300.0, 600.0],
                   help="training seconds per run, one race each")
    p.add_argument("--runs", type=int, default=3, help="runs per recipe and budget (medians)")
    p.add_argument("--recipes", default="ours,grouped",
                   help=f"comma list of {', '.join([*OURS, *REFERENCE])}")
    p.add_argument("--schedule", choices=["own", "wsd"], default="own",
                   help="own: each recipe's own schedule shape, fitted; wsd: warmup-stable-decay for all")
    p.add_argument("--ours_budget_flag", default="--time_budget",
                   help="our CLI's own time-budget flag; '' runs ours under the shim like the reference")
    p.add_argument("--files", nargs="*", type=Path, help="training texts (default: a slice of ../shared/corpus)")
    p.add_argument("--work", type=Path, default=None, help="scratch root (default /tmp/londonlm_budget_SHAPE)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default WORK/results_budget)")
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    for k in ("n_layer", "n_head", "n_embd", "context", "batch_size"):
        p.add_argument(f"--{k}", type=int, help="override the shape's value")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup_steps", type=int, default=30)
    p.add_argument("--score_bytes", type=int, default=200_000, help="validation bytes scored per model")
    p.add_argument("--ours_extra", nargs=argparse.REMAINDER, default=[], help="extra flags for our trainer")
    a = p.parse_args(argv)
    for k, v in zip(("n_layer", "n_head", "n_embd", "context", "batch_size"), SHAPES[a.shape]):
        if getattr(a, k) is None:
            setattr(a, k, v)
    unknown = set(a.recipes.split(",")) - {*OURS, *REFERENCE}
    if unknown:
        p.error(f"unknown recipes: {', '.join(sorted(unknown))}")
    a.work = (a.work or Path(f"/tmp/londonlm_budget_{a.shape}")).resolve()
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    out, files, prep, env = setup(a, "results_budget")
    races = [race_budget(a, prep, out, env, b) for b in a.budgets]
    meta = {"command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
            "date": time.strftime("%Y-%m-%d"), "machine": cpu_description(),
            "files": [str(f) for f in files], "args": {k: str(v) for k, v in vars(a).items()}}
    equal = equal_loss_times(races)
    (out / "results.json").write_text(json.dumps({"meta": meta, "races": races, "equal_loss": equal},
                                                 indent=2))
    print(json.dumps([{"budget_seconds": r["budget_seconds"], **r["summary"]} for r in races], indent=2))
    for row in equal:
        when = ("not within the budgets raced" if row["seconds"] is None else
                f"{'<= ' if row['at_most'] else ''}{row['seconds']:g} s ({row['time_ratio']}x less time)")
        print(f"{row['recipe']} reaches {row['reaches']}'s {row['target_bpb']} bpb at the largest budget: {when}")
    return 0 if all(math.isfinite(v.get("bpb", math.nan)) for r in races for v in r["summary"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
