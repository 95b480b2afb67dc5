#!/usr/bin/env python3
"""Race londonlm training against the reference recipe (../shared/bench/baseline_clm.py, HF
run_clm.py style, grouped and per-line padded) on the same tokenizer, corpus slice, model
shape, batch, context and learning rate, alternating runs, under one wall-clock budget each.

    python benchmarks/train_throughput.py --budget_seconds 120 --runs 3              # race, tiny shape
    python benchmarks/train_throughput.py --shape 30m --budget_seconds 120 --runs 3  # ~30M parameters
    python benchmarks/train_throughput.py --mode equal_steps --steps 150             # bf16 vs fp32 loss
    python benchmarks/train_throughput.py --mode time_to_quality --ttq_seconds 600   # time to quality

Per run it records useful (non-pad) tokens/s, step time, peak RSS of the training process,
validation loss (same tokenizer, same scorer for every recipe) and bits per byte of the
resulting model on the validation split, scored by ../shared/bench/bpb.py. Prints medians,
the ratios ours/reference and writes everything to --out/results.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def run_measured(cmd: list[str], env: dict, log_path: Path) -> tuple[int, float, float]:
    """(exit code, wall seconds, peak RSS MiB of the child) via os.wait4's rusage."""
    t0 = time.time()
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.time() - t0, usage.ru_maxrss / 1024


def prepare(work: Path, files: list[Path], vocab: int, context: int, validation_percent: float) -> dict:
    """Corpus + tokenizer with the project's own stages, then the same split as plain text
    files for the reference recipe."""
    from londonlm.corpus import CollectionOptions, build_corpus, iter_split_texts
    from londonlm.tokens.stage import train_tokenizer_stage

    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = src / f.name
        if not target.exists():
            target.symlink_to(f.resolve())
    data = work / "data" / "london_historical"
    build_corpus(data / "processed", data / "metadata",
                 options=CollectionOptions(validation_percent=validation_percent, log=lambda *_: None),
                 source_dir=src)
    tok_dir = work / "09_models" / "tokenizers" / "london_historical_bpe"
    train_tokenizer_stage(data / "processed", tok_dir, vocab_size=vocab, min_frequency=2, era_tokens=False,
                          model_max_length=context, log=lambda *_: None)
    out = {"tokenizer": tok_dir, "processed": data / "processed"}
    for split, name in (("train", "train.txt"), ("validation", "val.txt")):
        path = work / name
        # one document after another, as the reference's text loader reads lines of files
        path.write_text("\n".join(t for _, t in iter_split_texts(data / "processed", split)), encoding="utf-8")
        out[split] = path
    return out


def score(model_dir: Path, val_file: Path, max_bytes: int) -> dict:
    """Bits per byte from the shared tool, and the validation loss per token it implies
    (every recipe uses the same tokenizer, so losses compare too)."""
    res = subprocess.run([sys.executable, str(SHARED / "bench" / "bpb.py"), str(model_dir), str(val_file),
                          "--max-bytes", str(max_bytes)], capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        raise SystemExit(f"bpb.py failed on {model_dir}: {res.stderr[-500:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    return {"bpb": r["bpb"], "val_loss": round(r["bpb"] * r["bytes"] * math.log(2) / r["tokens"], 4)}


def ours(a, prep, out: Path, env: dict, extra: list[str] | None = None, run: str = "bench",
         max_seconds: float | None = None, log_name: str = "ours.log") -> dict:
    seconds = a.budget_seconds if max_seconds is None else max_seconds
    cmd = [sys.executable, str(REPO / "04_training" / "train_model_slm.py"), "--root", str(a.work),
           "--preset", "tiny", "--run_name_dir", run, "--fresh",
           "--n_layer", str(a.n_layer), "--n_head", str(a.n_head), "--n_embd", str(a.n_embd),
           "--max_length", str(a.context), "--batch_size", str(a.batch_size), "--learning_rate", str(a.lr),
           "--warmup_steps", str(a.warmup_steps), "--max_steps", str(a.max_steps),
           *(["--stop_after_seconds", str(seconds)] if seconds else []),
           "--era_tokens", "false", "--eval_steps", "1000000", "--save_steps", "1000000",
           "--logging_steps", "10", "--report_to", "none", *a.ours_extra, *(extra or [])]
    rc, wall, rss = run_measured(cmd, env, out / log_name)
    if rc != 0:
        raise SystemExit(f"our training failed (exit {rc}); see {out / log_name}")
    run_dir = a.work / "09_models" / "checkpoints" / run
    info = json.loads((run_dir / "run_info.json").read_text())
    model_dir = run_dir / "final" if (run_dir / "final" / "config.json").exists() else max(
        run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return {"recipe": "londonlm", "precision": info.get("precision"),
            "attn_implementation": info.get("attn_implementation"), "fused_loss": info.get("fused_loss"),
            "final_train_loss": info.get("final_train_loss"),
            "steps": info["global_step"], "train_seconds": info["train_wall_seconds"],
            "useful_tokens_per_s": info["tokens_per_second"],
            "step_time_s": info["train_wall_seconds"] / max(1, info["global_step"]),
            "peak_rss_mib": round(rss, 1), "wall_seconds": round(wall, 1), "model_dir": str(model_dir)}


def reference(a, prep, out: Path, env: dict, style: str, max_seconds: float | None = None,
              tag: str = "") -> dict:
    ref_out = out / f"ref_{style}{tag}"
    cmd = [sys.executable, str(SHARED / "bench" / "baseline_clm.py"), "--train-files", str(prep["train"]),
           "--tokenizer", str(prep["tokenizer"]), "--style", style, "--n-layer", str(a.n_layer),
           "--n-head", str(a.n_head), "--n-embd", str(a.n_embd), "--block-size", str(a.context),
           "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--warmup-steps", str(a.warmup_steps),
           "--max-steps", str(a.max_steps), "--max-seconds",
           str(a.budget_seconds if max_seconds is None else max_seconds), "--out", str(ref_out)]
    rc, wall, rss = run_measured(cmd, env, out / f"ref_{style}{tag}.log")
    if rc != 0:
        raise SystemExit(f"reference ({style}) failed (exit {rc}); see {out / f'ref_{style}{tag}.log'}")
    r = json.loads((ref_out / "baseline_result.json").read_text())
    return {"recipe": f"reference/{style}", "steps": r["steps"], "train_seconds": r["train_seconds"],
            "useful_tokens_per_s": r["useful_tokens_per_s"],
            "step_time_s": r["train_seconds"] / max(1, r["steps"]), "peak_rss_mib": round(rss, 1),
            "wall_seconds": round(wall, 1), "model_dir": str(ref_out / "model")}


SHAPES = {  # name: (n_layer, n_head, n_embd, context, batch)
    "tiny": (4, 4, 256, 128, 32),   # the tiny preset, 4.2M parameters
    "30m": (8, 8, 512, 256, 16),    # ~27M parameters with a 4,096 vocabulary
}
# Our trainer with every speed lever off: fp32, stock loss, sdpa (the "ours_fp32" recipe).
FP32_FLAGS = ["--bf16", "false", "--fused_loss", "off", "--attn_implementation", "sdpa"]


def cpu_description() -> str:
    name = platform.processor() or platform.machine()
    try:
        info = open("/proc/cpuinfo").read()
        name = next(ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name"))
        # family/model tell CPU generations apart under one brand name (Zen 4 is family 25,
        # Zen 5 family 26), and the bf16 speed-up differs between them
        field = {ln.split(":", 1)[0].strip(): ln.split(":", 1)[1].strip() for ln in info.splitlines()
                 if ln.startswith(("cpu family", "model\t"))}
        if field:
            name += f" (family {field.get('cpu family', '?')} model {field.get('model', '?')})"
        name += " (avx512_bf16)" if "avx512_bf16" in info else " (amx_bf16)" if "amx_bf16" in info else \
            " (no native bf16)"
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} CPUs, python {platform.python_version()}"


def candidate_flags(label: str) -> list[str]:
    """Our trainer pinned to one autotune candidate, e.g. ``fp32/eager/on``."""
    precision, attn, fused = label.split("/")
    return ["--bf16", str(precision == "bf16").lower(), "--fp16", str(precision == "fp16").lower(),
            "--attn_implementation", attn, "--fused_loss", fused]


def expand_recipes(recipes: str) -> list[str]:
    """``candidates`` stands for every speed candidate the autotune times on this machine."""
    out = []
    for r in recipes.split(","):
        if r != "candidates":
            out.append(r)
            continue
        from londonlm.training.speed.cache import device_key
        from londonlm.training.speed.settings import candidate_space, machine_bf16

        dev = device_key()
        space = candidate_space(dev, machine_bf16(dev))
        out += [f"ours@{p}/{attn}/{'on' if f else 'off'}" for p in space["precision"]
                for attn in space["attn_implementation"] for f in space["fused_loss"]]
    return out


def race(a, prep, out: Path, env: dict) -> dict:
    """Alternating runs of each recipe under one wall-clock budget; medians and ratios."""
    recipes = expand_recipes(a.recipes)
    results: dict[str, list[dict]] = {r: [] for r in recipes}
    for i in range(a.runs):  # alternate recipes so drift in machine load hits all of them alike,
        # each round starting one recipe later, so that none always runs first (after set-up)
        for r in recipes[i % len(recipes):] + recipes[:i % len(recipes)]:
            if r == "ours":
                res = ours(a, prep, out, env)
            elif r == "ours_fp32":
                res = ours(a, prep, out, env, FP32_FLAGS, run="bench_fp32", log_name="ours_fp32.log")
                res["recipe"] = "londonlm/fp32"
            elif r.startswith("ours@"):
                tag = r[5:].replace("/", "_")
                res = ours(a, prep, out, env, candidate_flags(r[5:]), run=f"bench_{tag}",
                           log_name=f"ours_{tag}.log")
                res["recipe"] = f"londonlm/{r[5:]}"
            else:
                res = reference(a, prep, out, env, r)
            res.update(score(Path(res["model_dir"]), prep["validation"], a.score_bytes))
            res["run"] = i
            results[r].append(res)
            print(json.dumps(res), flush=True)
    summary = {}
    for r, rows in results.items():
        summary[r] = {k: statistics.median(x[k] for x in rows if x.get(k) is not None)
                      for k in ("useful_tokens_per_s", "step_time_s", "peak_rss_mib", "bpb", "val_loss", "steps")
                      if any(x.get(k) is not None for x in rows)}
        summary[r]["useful_tokens_per_s_runs"] = [x["useful_tokens_per_s"] for x in rows]
    cands = [r for r in recipes if r.startswith("ours@") and summary[r].get("useful_tokens_per_s")]
    if "ours" in summary and cands:  # the measured defaults against the fastest candidate
        best = max(cands, key=lambda r: summary[r]["useful_tokens_per_s"])
        summary["fastest_candidate"] = best
        summary["ours_over_fastest_candidate"] = round(summary["ours"]["useful_tokens_per_s"]
                                                       / summary[best]["useful_tokens_per_s"], 3)
        # paired within each round: the guests' speed drifts by ~10% over minutes, which a ratio
        # of medians taken minutes apart carries and a ratio within one round mostly cancels
        paired = [x["useful_tokens_per_s"] / max(next(y for y in results[r] if y["run"] == x["run"])
                                                 ["useful_tokens_per_s"] for r in cands)
                  for x in results["ours"]]
        summary["ours_over_fastest_candidate_per_round"] = [round(v, 3) for v in paired]
        summary["ours_over_fastest_candidate_paired_median"] = round(statistics.median(paired), 3)
    if "ours" in summary:
        for r in recipes:
            if r != "ours" and summary[r].get("useful_tokens_per_s"):
                summary[f"ratio_ours_over_{r}"] = round(summary["ours"]["useful_tokens_per_s"]
                                                        / summary[r]["useful_tokens_per_s"], 2)
    return {"summary": summary, "runs": results}


def equal_steps(a, prep, out: Path, env: dict) -> dict:
    """Loss at equal steps: our default (bf16 autocast where native, fused loss) against our
    fp32 run, same seed, same data order, same steps; validation loss by the shared scorer and
    the mean training loss over the last quarter of the logged steps."""
    rows = {}
    for name, extra in (("default", []), ("fp32", FP32_FLAGS)):
        res = ours(a, prep, out, env, [*extra, "--max_steps", str(a.steps), "--logging_steps", "5"],
                   run=f"eq_{name}", max_seconds=0, log_name=f"eq_{name}.log")
        st = json.loads((Path(res["model_dir"]).parent / "run_info.json").read_text())
        curve = [l for _, l in st["train_curve"]]
        res["train_loss_last_quarter"] = statistics.mean(curve[-max(1, len(curve) // 4):])
        res.update(score(Path(res["model_dir"]), prep["validation"], a.score_bytes))
        rows[name] = res
        print(json.dumps(res), flush=True)
    d, f = rows["default"], rows["fp32"]
    return {"rows": rows, "steps": a.steps,
            "val_loss_rel_diff": round((d["val_loss"] - f["val_loss"]) / f["val_loss"], 4),
            "train_loss_rel_diff": round((d["train_loss_last_quarter"] - f["train_loss_last_quarter"])
                                         / f["train_loss_last_quarter"], 4),
            "speedup": round(d["useful_tokens_per_s"] / f["useful_tokens_per_s"], 2)}


def time_to_quality(a, prep, out: Path, env: dict) -> dict:
    """The reference (grouped) trains for --ttq_seconds; our tiny preset then trains with its
    own schedule, saving every --ttq_save_steps; each checkpoint is scored by the shared bpb
    tool and the first whose validation loss is at or below the reference's gives our time."""
    ref = reference(a, prep, out, env, "grouped", max_seconds=a.ttq_seconds, tag="_ttq")
    ref.update(score(Path(ref["model_dir"]), prep["validation"], a.score_bytes))
    print(json.dumps(ref), flush=True)
    res = ours(a, prep, out, env, ["--max_steps", str(a.ttq_max_steps), "--save_steps", str(a.ttq_save_steps),
                                   "--save_total_limit", "1000", "--logging_steps", str(a.ttq_save_steps)],
               run="ttq", max_seconds=a.ttq_seconds, log_name="ours_ttq.log")
    run_dir = Path(res["model_dir"]).parent
    points = []
    for ck in sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        step = int(ck.name.split("-")[1])
        hist = json.loads((ck / "trainer_state.json").read_text())["log_history"]
        secs = [h["train_seconds"] for h in hist if h.get("step") == step and "train_seconds" in h]
        if not secs:
            continue
        points.append({"step": step, "train_seconds": secs[0], **score(ck, prep["validation"], a.score_bytes)})
        print(json.dumps(points[-1]), flush=True)
        if points[-1]["val_loss"] <= ref["val_loss"]:
            break
    hit = points[-1] if points and points[-1]["val_loss"] <= ref["val_loss"] else None
    return {"reference": ref, "ours": res, "curve": points,
            "ours_seconds_to_reference_loss": hit["train_seconds"] if hit else None,
            "fraction_of_reference_time": round(hit["train_seconds"] / ref["train_seconds"], 3) if hit else None}


SCRATCH_MARK = ".londonlm_bench_scratch"  # in a --work folder these benchmarks made


def claim_work(work: Path) -> None:
    """Refuse a --work that is no scratch folder of these benchmarks: it is used as a project root
    (its data/london_historical/processed and 09_models/tokenizers/london_historical_bpe made
    from --files), so a project's own root lost its corpus and tokenizer to the benchmark's.
    A new or empty folder is marked as theirs; an earlier run's (before the mark: src/ holding
    links to the files only) is taken as it is."""
    mark = work / SCRATCH_MARK
    if mark.exists():
        return
    src = work / "src"
    earlier = src.is_dir() and all(p.is_symlink() for p in src.iterdir())
    if work.exists() and any(work.iterdir()) and not earlier:
        print(f"error: --work {work} holds other files (a project's root would lose its corpus and tokenizer "
              f"to the benchmark's): name a new or empty folder", file=sys.stderr)
        raise SystemExit(2)
    work.mkdir(parents=True, exist_ok=True)
    mark.touch()


def setup(a, results_name: str):
    """(output folder, training files, prepared data, offline environment) shared by the races."""
    claim_work(a.work)
    out = (a.out or a.work / results_name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    files = a.files or sorted((SHARED / "corpus").glob("gutenberg_*.txt"))[:6]
    if not files:
        raise SystemExit("no training texts: pass --files or provide ../shared/corpus")
    prep = prepare(a.work, files, a.vocab, a.context, validation_percent=20)
    env = dict(os.environ, WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false", HF_DATASETS_OFFLINE="1",
               HF_HUB_OFFLINE="1", HF_DATASETS_CACHE=str(a.work / "hf_datasets_cache"))
    return out, files, prep, env


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["race", "equal_steps", "time_to_quality"], default="race",
                   help="race: throughput and loss under one budget; equal_steps: our default "
                        "precision against fp32 at equal steps; time_to_quality: seconds for our "
                        "tiny preset to reach the reference's validation loss after --ttq_seconds")
    p.add_argument("--files", nargs="*", type=Path, help="training texts (default: a slice of ../shared/corpus)")
    p.add_argument("--work", type=Path, default=None, help="scratch root (default /tmp/londonlm_bench_SHAPE)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default WORK/results)")
    p.add_argument("--recipes", default="ours,grouped,padded",
                   help="comma list of ours (the defaults: measured by --autotune), ours_fp32 (every "
                        "speed lever off), ours@PRECISION/ATTN/FUSED (one candidate, e.g. "
                        "ours@fp32/eager/on), candidates (every candidate the autotune times "
                        "here), grouped, padded")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--budget_seconds", type=float, default=120)
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny",
                   help="model shape and batch (the flags below override it)")
    p.add_argument("--n_layer", type=int)
    p.add_argument("--n_head", type=int)
    p.add_argument("--n_embd", type=int)
    p.add_argument("--context", type=int)
    p.add_argument("--batch_size", type=int)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup_steps", type=int, default=30)
    p.add_argument("--max_steps", type=int, default=10_000, help="schedule length (the budget stops first)")
    p.add_argument("--steps", type=int, default=150, help="equal_steps: steps per run")
    p.add_argument("--ttq_seconds", type=float, default=600, help="time_to_quality: reference budget")
    p.add_argument("--ttq_max_steps", type=int, default=500, help="time_to_quality: our schedule (tiny preset)")
    p.add_argument("--ttq_save_steps", type=int, default=25, help="time_to_quality: checkpoint interval")
    p.add_argument("--score_bytes", type=int, default=200_000, help="validation bytes scored per model")
    p.add_argument("--ours_extra", nargs=argparse.REMAINDER, default=[], help="extra flags for our trainer")
    a = p.parse_args()
    for k, v in zip(("n_layer", "n_head", "n_embd", "context", "batch_size"), SHAPES[a.shape]):
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.work = (a.work or Path(f"/tmp/londonlm_bench_{a.shape}")).resolve()
    out, files, prep, env = setup(a, f"results_{a.mode}")
    result = {"race": race, "equal_steps": equal_steps, "time_to_quality": time_to_quality}[a.mode](
        a, prep, out, env)
    meta = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "date": time.strftime("%Y-%m-%d"),
            "machine": cpu_description(), "files": [str(f) for f in files],
            "args": {k: str(v) for k, v in vars(a).items()}}
    (out / "results.json").write_text(json.dumps({"meta": meta, **result}, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "rows", "curve")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
