"""The race's record: each recipe's figures and held-out curve, the time each takes to reach
the other's final bits per byte, the JSON, and the block of BENCHMARKS.md between
``<!-- gpu-race:begin -->`` and ``<!-- gpu-race:end -->`` (replaced in place, appended when absent)."""
from __future__ import annotations

import json
from pathlib import Path

from gpu.report import fmt, replace_section, table  # benchmarks/ is the entry script's folder

BEGIN, END = "<!-- gpu-race:begin -->", "<!-- gpu-race:end -->"
RECIPES = ("ours", "seed_recipe")


def mfu(tokens_per_s: float | None, flops_per_token: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation over the device's dense bf16 peak; None where it is unknown."""
    if not tokens_per_s or not peak_flops:
        return None
    return tokens_per_s * flops_per_token / peak_flops


def time_to(curve: list[dict], target: float) -> dict | None:
    """When a curve (points with ``seconds`` and ``bpb``) first reaches ``target`` bpb:
    interpolated linearly between the two points around it; ``at_most`` when the first point
    is already there (it got there sooner, unseen). None when it never does."""
    points = sorted(curve, key=lambda p: p["seconds"])
    for i, p in enumerate(points):
        if p["bpb"] <= target:
            if i == 0:
                return {"seconds": round(p["seconds"], 1), "at_most": True}
            a = points[i - 1]
            frac = (a["bpb"] - target) / (a["bpb"] - p["bpb"])
            return {"seconds": round(a["seconds"] + frac * (p["seconds"] - a["seconds"]), 1), "at_most": False}
    return None


def compare(results: dict) -> None:
    """Adds ``time_to_bpb`` (each recipe's time to the other's final bpb) and ``ours_lower``."""
    done = {r: results[r] for r in RECIPES if results.get(r, {}).get("bpb") is not None}
    results["time_to_bpb"] = []
    for a, b in ((x, y) for x in done for y in done if x != y):
        hit = time_to(done[a].get("curve", []), done[b]["bpb"])
        results["time_to_bpb"].append({"recipe": a, "reaches": b, "target_bpb": done[b]["bpb"],
                                       **(hit or {"seconds": None, "at_most": False})})
    results["ours_lower"] = (done["ours"]["bpb"] < done["seed_recipe"]["bpb"]) if len(done) == 2 else None


def write_json(results: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def _machine_line(m: dict) -> str:
    if m.get("gpu"):
        return (f"{m['gpu']} ({fmt(m.get('gpu_memory_gib'))} GiB), driver {m.get('driver')}, CUDA {m.get('cuda')}, "
                f"torch {m.get('torch')}, transformers {m.get('transformers')}, Python {m.get('python')}; "
                f"CPU {m.get('cpu')}.")
    return f"CPU only: {m.get('cpu')}; torch {m.get('torch')}, transformers {m.get('transformers')}."


def _row(name: str, r: dict) -> dict:
    if r.get("status") != "ok":
        return {"recipe": name, "steps": None, "tokens": None, "train s": None, "tokens/s": None,
                "MFU": None, "held-out bpb": None, "settings": f"failed: {r.get('error', '')[:200]}"}
    return {"recipe": name, "steps": r["steps"], "tokens": r["tokens"], "train s": r["train_seconds"],
            "tokens/s": r["tokens_per_s"], "MFU": f"{r['mfu'] * 100:.1f}%" if r.get("mfu") is not None else None,
            "held-out bpb": r["bpb"], "settings": r.get("summary", "")}


def _curve(r: dict) -> str:
    return " · ".join(f"{_secs(p['seconds'])} s: {p['bpb']:.4f}" for p in r.get("curve", [])) or "–"


def _secs(s: float) -> str:
    return f"{s:.1f}" if s < 100 else f"{s:.0f}"


def _reach_line(t: dict) -> str:
    if t["seconds"] is None:
        return (f"- `{t['recipe']}` does not reach the final {t['target_bpb']} bpb of `{t['reaches']}` "
                f"within its seconds.")
    return (f"- `{t['recipe']}` reaches the final {t['target_bpb']} bpb of `{t['reaches']}` after "
            f"{'at most ' if t['at_most'] else ''}{t['seconds']:g} s of training.")


def markdown(results: dict) -> str:
    m, d = results["meta"], results["meta"]["data"]
    where = m["machine"].get("gpu") or "CPU"
    lines = [f"## GPU race: ours against the seed recipe, `{m['preset']}`, {m['seconds']:g} s each "
             f"({where}, {m['date']})", "", f"    {m['command']}", "", _machine_line(m["machine"]), "",
             f"Data: {d['train_documents']} training documents ({fmt(d['train_tokens'])} tokens), "
             f"{d['heldout_documents']} held out by the corpus stage's hash-of-id rule "
             f"({', '.join(d['heldout_ids'])}); bits per byte by `../shared/bench/bpb.py` on the first "
             f"{fmt(m['score_bytes'])} bytes of each held-out document ({fmt(d['scored_bytes'])} bytes). "
             f"Both recipes use the project's tokenizer ({d['tokenizer_vocab']} tokens) trained on the "
             f"training documents. Curve points are weight snapshots taken every {_secs(m['curve_every'])} s "
             f"of training (the same instrument on both), scored after training. Training seconds run from "
             f"each Trainer's start to its last step (evaluations and checkpoints written meanwhile count); "
             f"tokens/s and MFU are over them.", ""]
    lines += table([_row(r, results.get(r, {})) for r in RECIPES]) + [""]
    lines += ["Held-out bpb over training time:", ""]
    lines += table([{"recipe": r, "curve (seconds of training: bpb)": _curve(results.get(r, {}))}
                    for r in RECIPES]) + [""]
    lines += [_reach_line(t) for t in results.get("time_to_bpb", [])]
    if results.get("ours_lower") is not None:
        lines += [f"- `ours` ends {'lower' if results['ours_lower'] else 'NOT lower'} than `seed_recipe`."]
    return "\n".join(lines).rstrip() + "\n"


def write_block(results: dict, bench_md: Path) -> Path:
    """The race's block in ``bench_md``, replacing an earlier one."""
    old = bench_md.read_text() if bench_md.exists() else ""
    bench_md.write_text(replace_section(old, markdown(results), BEGIN, END))
    return bench_md
