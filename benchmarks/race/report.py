"""The race's record: each recipe's figures and held-out curve, the time each takes to reach
the other's final bits per byte, what each variant of ours bought against ours unchanged at the
same seconds, the JSON, and the block of BENCHMARKS.md between ``<!-- gpu-race:begin -->`` and
``<!-- gpu-race:end -->`` (replaced in place, appended when absent)."""
from __future__ import annotations

import json
from pathlib import Path

from londonlm.core.artifacts import write_text_atomic

from gpu.report import fmt, table, update_block  # benchmarks/ is the entry script's folder

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
    compare_variants(results)


def variant_base(results: dict) -> tuple[str, dict]:
    """What the variants are compared with: ours unchanged at their seconds (the variant
    ``base`` where the race ran one, else the race's own ``ours``)."""
    v = results.get("variants", {})
    return ("base", v["base"]) if "base" in v else ("ours", results.get("ours", {}))


def seed_bpb(results: dict) -> float | None:
    """The seed recipe's final bpb the variants are read against: this call's race's, else the
    one given from an earlier race on the same data (``--seed_bpb``)."""
    ran = results.get("seed_recipe", {}).get("bpb")
    return ran if ran is not None else results["meta"].get("seed_bpb_given")


def compare_variants(results: dict) -> None:
    """Each scored variant's ``vs_base`` (its bpb less ours unchanged at the same seconds:
    below 0 it helped) and ``reaches_seed`` (its time to the seed recipe's final bpb)."""
    seed = seed_bpb(results)
    _, base = variant_base(results)
    for name, r in results.get("variants", {}).items():
        if r.get("bpb") is None:
            continue
        r["vs_base"] = None if base.get("bpb") is None or name == "base" else round(r["bpb"] - base["bpb"], 4)
        r["reaches_seed"] = time_to(r.get("curve", []), seed) if seed is not None else None


def write_json(results: dict, path: Path) -> Path:
    """Whole or not at all: it is rewritten after each run, and a kill mid-write lost the runs before."""
    return write_text_atomic(path, json.dumps(results, indent=2, default=str) + "\n")


def _machine_line(m: dict) -> str:
    if m.get("gpu"):
        return (f"{m['gpu']} ({fmt(m.get('gpu_memory_gib'))} GiB), driver {m.get('driver')}, CUDA {m.get('cuda')}, "
                f"torch {m.get('torch')}, transformers {m.get('transformers')}, Python {m.get('python')}; "
                f"CPU {m.get('cpu')}.")
    return f"CPU only: {m.get('cpu')}; torch {m.get('torch')}, transformers {m.get('transformers')}."


def _row(name: str, r: dict, train_tokens: int | None) -> dict:
    """One run's row; ``passes``: its tokens over the training documents' (how far a recipe
    overtrains a small corpus is read beside its bpb)."""
    if r.get("status") != "ok":
        return {"recipe": name, "steps": None, "tokens": None, "passes": None, "train s": None, "tokens/s": None,
                "MFU": None, "held-out bpb": None, "settings": f"{r.get('status')}: {r.get('error', '')[:200]}"}
    best = (f"; best/ (step {r.get('best_step')}): {r['best_bpb']} bpb" if r.get("best_bpb") is not None else "")
    return {"recipe": name, "steps": r["steps"], "tokens": r["tokens"],
            "passes": f"{r['tokens'] / train_tokens:.1f}" if train_tokens else None, "train s": r["train_seconds"],
            "tokens/s": r["tokens_per_s"], "MFU": f"{r['mfu'] * 100:.1f}%" if r.get("mfu") is not None else None,
            "held-out bpb": r["bpb"], "settings": r.get("summary", "") + best}


def runs(results: dict) -> list[tuple[str, dict]]:
    """Every run in the order raced: the two recipes (unless only variants ran), then the
    variants (``ours+NAME``)."""
    return [(r, results[r]) for r in RECIPES if r in results] + [
        (f"ours+{name}", v) for name, v in results.get("variants", {}).items()]


def _variant_rows(results: dict) -> list[dict]:
    base_name, _ = variant_base(results)
    seed = seed_bpb(results)
    rows = []
    for name, r in results.get("variants", {}).items():
        hit = r.get("reaches_seed")
        rows.append({"variant": name, "flags": " ".join(r.get("flags", [])) or "(none: ours unchanged)",
                     "seconds": fmt(r.get("seconds")), "held-out bpb": r.get("bpb"),
                     f"against {base_name}": (f"{r['vs_base']:+.4f}" if r.get("vs_base") is not None else "–"),
                     "reaches seed_recipe's final bpb": ("–" if r.get("bpb") is None or seed is None else
                                                         "no" if not hit else
                                                         f"{'at most ' if hit['at_most'] else ''}{hit['seconds']:g} s")})
    return rows


def _curve(r: dict) -> str:
    curve = " · ".join(f"{_secs(p['seconds'])} s: {p['bpb']:.4f}" for p in r.get("curve", [])) or "–"
    missed = r.get("unscored") or []
    if missed:  # a folder the scorer could not load: said, not silently left out
        curve += f" ({_n(len(missed), 'folder')} not scored: {missed[0]['error'][:160]})"
    return curve


def _secs(s: float) -> str:
    return f"{s:.1f}" if s < 100 else f"{s:.0f}"


def _reach_line(t: dict) -> str:
    if t["seconds"] is None:
        return (f"- `{t['recipe']}` does not reach the final {t['target_bpb']} bpb of `{t['reaches']}` "
                f"within its seconds.")
    return (f"- `{t['recipe']}` reaches the final {t['target_bpb']} bpb of `{t['reaches']}` after "
            f"{'at most ' if t['at_most'] else ''}{t['seconds']:g} s of training.")


def block_name(preset: str, race: bool) -> str:
    """The block a race writes: one per preset (``regular``'s beside ``slm``'s, whose is plain
    ``gpu-race``), and a --variants_only call's its own, so that it never replaces the race's."""
    return "gpu-race" + ("" if preset == "slm" else f"-{preset}") + ("" if race else "-variants")


def markers(preset: str, race: bool) -> tuple[str, str]:
    name = block_name(preset, race)
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def raced(results: dict) -> bool:
    return any(r in results for r in RECIPES)


def markdown(results: dict, picture: str | None = None) -> str:
    """The block; ``picture``: the race's picture, relative to the file the block goes in."""
    m, d = results["meta"], results["meta"]["data"]
    where = m["machine"].get("gpu") or "CPU"
    title = (f"## GPU race: ours against the seed recipe, `{m['preset']}`, {m['seconds']:g} s each" if raced(results)
             else f"## GPU race, variants of ours only: `{m['preset']}`")
    lines = [f"{title} ({where}, {m['date']})", "", f"    {m['command']}", "", _machine_line(m["machine"]), "",
             f"Data: {_n(d['train_documents'], 'training document')} ({fmt(d['train_tokens'])} tokens), "
             f"{_n(d['validation_documents'], 'validation document')} that ours evaluates on while it trains "
             f"({', '.join(d['validation_ids'])}; the corpus stage's hash-of-id rule), "
             f"{_n(d['heldout_documents'], 'held-out document')} ({', '.join(d['heldout_ids'])}; whole files set "
             f"apart by a hash of their names, never trained or evaluated on); bits per byte by "
             f"`../shared/bench/bpb.py` on the first "
             f"{fmt(m['score_bytes'])} bytes of each held-out document ({fmt(d['scored_bytes'])} bytes). "
             f"Every run uses the project's tokenizer ({d['tokenizer_vocab']} tokens) trained on the "
             f"training documents. Curve points are weight snapshots taken every {_every(m)} of training (the "
             f"same instrument on every run), scored after training. Training seconds run from each Trainer's "
             f"start to its last step (evaluations and checkpoints written meanwhile count; ours' settings say "
             f"how many seconds they took); tokens/s and MFU are over them. Passes: the tokens a run trained on over the training documents' tokens.", ""]
    lines += table([_row(name, r, d.get("train_tokens")) for name, r in runs(results)]) + [""]
    lines += ["Held-out bpb over training time:", ""]
    lines += table([{"recipe": name, "curve (seconds of training: bpb)": _curve(r)} for name, r in runs(results)])
    if picture:
        lines += ["", f"![held-out bpb over training time, every run]({picture})"]
    lines += [""] + [_reach_line(t) for t in results.get("time_to_bpb", [])]
    if results.get("ours_lower") is not None:
        lines += [f"- `ours` ends {'lower' if results['ours_lower'] else 'NOT lower'} than `seed_recipe`."]
    if results.get("variants"):
        base_name, base = variant_base(results)
        lines += ["", f"What each change bought: each variant is ours with the flags shown, against ours unchanged "
                      f"(`{base_name}`, {fmt(base.get('seconds', m['seconds']))} s, {base.get('bpb')} bpb) at the "
                      f"same seconds, on the same machine in the same call (below 0: the change helped).", ""]
        lines += table(_variant_rows(results))
        given = m.get("seed_bpb_given")
        if given is not None and not raced(results):
            lines += ["", f"seed_recipe's final bpb above is {given} bpb, given (`--seed_bpb`) from an earlier race "
                          f"on the same data and device kind (its block, `gpu-race`); this call ran no seed recipe."]
            if base.get("bpb") is not None:
                hit = base.get("reaches_seed")
                lines += ["", f"- `{base_name}` (ours unchanged, {fmt(base.get('seconds', m['seconds']))} s) "
                              + (f"reaches the seed recipe's {given} bpb after "
                                 f"{'at most ' if hit['at_most'] else ''}{hit['seconds']:g} s of training."
                                 if hit else f"does NOT reach the seed recipe's {given} bpb "
                                             f"(ends at {base['bpb']}).")]
    return "\n".join(lines).rstrip() + "\n"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _every(m: dict) -> str:
    """The snapshots' spacing: the race's, and the variants' where their seconds differ."""
    race = f"{_secs(m['curve_every'])} s"
    other = {v["seconds"] for v in m.get("variants", [])} - {m["seconds"]}
    if not other or not m.get("curve_points"):
        return race
    return f"{race} ({', '.join(_secs(s / m['curve_points']) + ' s' for s in sorted(other))} for the variants)"


def write_block(results: dict, bench_md: Path, png: Path | None = None) -> Path:
    """The race's block in ``bench_md`` (a variants-only call's: its own), replacing an earlier one;
    it links ``png`` where that lies in ``bench_md``'s folder (a picture elsewhere, such as a
    device call's output folder, would be a broken link once committed)."""
    picture = None
    if png is not None and png.resolve().is_relative_to(bench_md.resolve().parent):
        picture = png.resolve().relative_to(bench_md.resolve().parent).as_posix()
    return update_block(bench_md, markdown(results, picture), *markers(results["meta"]["preset"], raced(results)))
