#!/usr/bin/env python3
"""Race londonlm training against the reference recipe (../shared/bench/baseline_clm.py, HF
run_clm.py style, grouped and per-line padded) on the same tokenizer, corpus slice, model
shape, batch, context and learning rate, alternating runs, under one wall-clock budget each.

    python benchmarks/train_throughput.py --budget_seconds 120 --runs 3

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
    from londonlm.corpus import build_corpus, iter_split_texts
    from londonlm.tokenizer_stage import train_tokenizer_stage

    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = src / f.name
        if not target.exists():
            target.symlink_to(f.resolve())
    data = work / "data" / "london_historical"
    build_corpus(data / "processed", data / "metadata", source_dir=src, validation_percent=validation_percent,
                 log=lambda *_: None)
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


def ours(a, prep, out: Path, env: dict) -> dict:
    run = "bench"
    cmd = [sys.executable, str(REPO / "04_training" / "train_model_slm.py"), "--root", str(a.work),
           "--preset", "tiny", "--run_name_dir", run, "--fresh",
           "--n_layer", str(a.n_layer), "--n_head", str(a.n_head), "--n_embd", str(a.n_embd),
           "--max_length", str(a.context), "--batch_size", str(a.batch_size), "--learning_rate", str(a.lr),
           "--warmup_steps", str(a.warmup_steps), "--max_steps", str(a.max_steps),
           "--max_seconds", str(a.budget_seconds), "--era_tokens", "false",
           "--eval_steps", "1000000", "--save_steps", "1000000", "--logging_steps", "10",
           "--report_to", "none", *a.ours_extra]
    rc, wall, rss = run_measured(cmd, env, out / "ours.log")
    if rc != 0:
        raise SystemExit(f"our training failed (exit {rc}); see {out / 'ours.log'}")
    run_dir = a.work / "09_models" / "checkpoints" / run
    info = json.loads((run_dir / "run_info.json").read_text())
    model_dir = run_dir / "final" if (run_dir / "final" / "config.json").exists() else max(
        run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return {"recipe": "londonlm", "steps": info["global_step"], "train_seconds": info["train_wall_seconds"],
            "useful_tokens_per_s": info["tokens_per_second"],
            "step_time_s": info["train_wall_seconds"] / max(1, info["global_step"]),
            "peak_rss_mib": round(rss, 1), "wall_seconds": round(wall, 1), "model_dir": str(model_dir)}


def reference(a, prep, out: Path, env: dict, style: str) -> dict:
    ref_out = out / f"ref_{style}"
    cmd = [sys.executable, str(SHARED / "bench" / "baseline_clm.py"), "--train-files", str(prep["train"]),
           "--tokenizer", str(prep["tokenizer"]), "--style", style, "--n-layer", str(a.n_layer),
           "--n-head", str(a.n_head), "--n-embd", str(a.n_embd), "--block-size", str(a.context),
           "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--warmup-steps", str(a.warmup_steps),
           "--max-steps", str(a.max_steps), "--max-seconds", str(a.budget_seconds), "--out", str(ref_out)]
    rc, wall, rss = run_measured(cmd, env, out / f"ref_{style}.log")
    if rc != 0:
        raise SystemExit(f"reference ({style}) failed (exit {rc}); see {out / f'ref_{style}.log'}")
    r = json.loads((ref_out / "baseline_result.json").read_text())
    return {"recipe": f"reference/{style}", "steps": r["steps"], "train_seconds": r["train_seconds"],
            "useful_tokens_per_s": r["useful_tokens_per_s"],
            "step_time_s": r["train_seconds"] / max(1, r["steps"]), "peak_rss_mib": round(rss, 1),
            "wall_seconds": round(wall, 1), "model_dir": str(ref_out / "model")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", nargs="*", type=Path, help="training texts (default: a slice of ../shared/corpus)")
    p.add_argument("--work", type=Path, default=Path("/tmp/londonlm_bench"), help="scratch root")
    p.add_argument("--out", type=Path, default=None, help="results folder (default WORK/results)")
    p.add_argument("--recipes", default="ours,grouped,padded")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--budget_seconds", type=float, default=120)
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=256)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup_steps", type=int, default=30)
    p.add_argument("--max_steps", type=int, default=10_000, help="schedule length (the budget stops first)")
    p.add_argument("--score_bytes", type=int, default=200_000, help="validation bytes scored per model")
    p.add_argument("--ours_extra", nargs=argparse.REMAINDER, default=[], help="extra flags for our trainer")
    a = p.parse_args()
    a.work = a.work.resolve()
    out = (a.out or a.work / "results").resolve()
    out.mkdir(parents=True, exist_ok=True)
    files = a.files or sorted((SHARED / "corpus").glob("gutenberg_*.txt"))[:6]
    if not files:
        raise SystemExit("no training texts: pass --files or provide ../shared/corpus")
    prep = prepare(a.work, files, a.vocab, a.context, validation_percent=20)
    env = dict(os.environ, WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false", HF_DATASETS_OFFLINE="1",
               HF_HUB_OFFLINE="1", HF_DATASETS_CACHE=str(a.work / "hf_datasets_cache"))
    recipes = a.recipes.split(",")
    results: dict[str, list[dict]] = {r: [] for r in recipes}
    for i in range(a.runs):  # alternate recipes so drift in machine load hits all of them alike
        for r in recipes:
            res = ours(a, prep, out, env) if r == "ours" else reference(a, prep, out, env, r)
            res.update(score(Path(res["model_dir"]), prep["validation"], a.score_bytes))
            res["run"] = i
            results[r].append(res)
            print(json.dumps(res), flush=True)
    summary = {}
    for r, rows in results.items():
        summary[r] = {k: statistics.median(x[k] for x in rows if x.get(k) is not None)
                      for k in ("useful_tokens_per_s", "step_time_s", "peak_rss_mib", "bpb", "val_loss", "steps")
                      if any(x.get(k) is not None for x in rows)}
    if "ours" in summary:
        for r in recipes:
            if r != "ours" and summary[r].get("useful_tokens_per_s"):
                summary[f"ratio_ours_over_{r}"] = round(summary["ours"]["useful_tokens_per_s"]
                                                        / summary[r]["useful_tokens_per_s"], 2)
    meta = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                       f"python {platform.python_version()}",
            "files": [str(f) for f in files], "args": {k: str(v) for k, v in vars(a).items()}}
    (out / "results.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": results}, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
