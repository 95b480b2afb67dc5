"""Evaluation stage: held-out LM metrics, knowledge probes, continuation quality, human
evaluation export, training curves and a report.

:func:`run_evaluation` is the entry point used by ``05_evaluation/run_evaluation.py``.
Modes:

- ``quick`` (<= 2 min on 2 CPU cores for a ~10-30M-parameter model): validation LM metrics
  on at most ``max_eval_tokens`` scored tokens (default 20,000; recorded in metrics.json),
  the bundled probes, 4 greedy continuations, training curves, report.
- ``comprehensive``: the whole validation split (plus EOT-prefixed and era-conditioned
  variants when the tokenizer has era tokens), every ``text_files`` entry, bundled and extra
  multiple-choice files, greedy and sampled continuations of 16 passages, a blind
  human-evaluation pack, and every ``compare`` model on the same measures.

The model folders stay loadable by lm-eval-harness's Hugging Face backend::

    lm_eval --model hf --model_args pretrained=09_models/checkpoints/tiny/final,dtype=float32 \\
        --tasks lambada_openai,hellaswag,arc_easy --device cpu --batch_size 8
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

from .lm import evaluate_lm, model_context_length
from .probes import ProbeFormatError, default_probes_path, load_mc_jsonl, score_items
from .report import METRICS_FORMAT_VERSION

__all__ = ["run_evaluation", "evaluate_lm", "score_items", "load_mc_jsonl", "ProbeFormatError",
           "load_model", "QUICK_MAX_EVAL_TOKENS", "METRICS_FORMAT_VERSION"]

QUICK_MAX_EVAL_TOKENS = 20_000
MODES = ("quick", "comprehensive")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda requested but no CUDA GPU is available; use --device cpu")
    return device


def load_model(model_path: str | Path, device: str = "cpu"):
    """(model, tokenizer) from a model folder; a checkpoint without a tokenizer borrows the
    run's ``final/`` tokenizer."""
    from transformers import AutoModelForCausalLM

    from londonlm.tokenizer import load_tokenizer

    p = Path(model_path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p} is not a model folder (no config.json); pass a folder "
                                f"written by save_pretrained or a checkpoint-N folder")
    tok_dir = p if (p / "tokenizer.json").is_file() else p.parent / "final"
    tokenizer = load_tokenizer(tok_dir if (tok_dir / "tokenizer.json").is_file() else p)
    model = AutoModelForCausalLM.from_pretrained(str(p)).to(device).eval()
    return model, tokenizer


def _model_info(model, path: Path) -> dict:
    from londonlm.checkpoints import checkpoint_step

    step = checkpoint_step(path)
    if step is None:
        try:
            import json

            info = json.loads((path.parent / "run_info.json").read_text())
            step = (info.get("global_step") or info.get("steps")) if path.name == "final" else None
        except Exception:
            step = None
    name = path.name if path.parent.name in ("", ".") else f"{path.parent.name}/{path.name}"
    return {"path": str(path), "name": name, "params": sum(p.numel() for p in model.parameters()),
            "n_positions": model_context_length(model), "vocab_size": model.config.vocab_size,
            "step": step}


def _by_century(per_doc: list[dict], years: Sequence[int | None]) -> dict:
    groups: dict[str, list] = {}
    for d in per_doc:
        y = years[d["index"]] if d["index"] < len(years) else None
        key = f"{(y // 100) * 100}s" if isinstance(y, int) else "undated"
        g = groups.setdefault(key, [0.0, 0, 0, 0])
        g[0] += d["nll"]
        g[1] += d["tokens"]
        g[2] += d["bytes"]
        g[3] += 1
    return {k: {"documents": v[3], "tokens": v[1], "bytes": v[2],
                "loss": v[0] / v[1] if v[1] else None,
                "bits_per_byte": v[0] / (math.log(2) * v[2]) if v[2] else None}
            for k, v in sorted(groups.items())}


def _lm_block(model, tok, texts, years, *, device, max_tokens, per_century: bool) -> dict:
    r = evaluate_lm(model, tok, texts, device=device, max_eval_tokens=max_tokens,
                    return_per_document=per_century and years is not None)
    per_doc = r.pop("per_document", None)
    if per_doc is not None:
        r["by_century"] = _by_century(per_doc, years)
    return r


def _prefix_lists(tok, years: Sequence[int | None] | None, n: int, with_era: bool) -> list[list[int]]:
    from londonlm.tokenizer import era_token, era_tokens_of

    eot = tok.eos_token_id if tok.eos_token_id is not None else tok.bos_token_id
    eras = set(era_tokens_of(tok)) if with_era else set()
    out = []
    for i in range(n):
        pre = [eot]
        y = years[i] if years is not None and i < len(years) else None
        t = era_token(y) if y is not None else None
        if with_era and t in eras:
            pre.append(tok.convert_tokens_to_ids(t))
        out.append(pre)
    return out


def run_evaluation(model_path: str | Path, out_dir: str | Path, *, val_texts: list[str],
                   val_years: list[int | None] | None = None, mode: str = "quick",
                   probes_path: str | Path | None = None, extra_mc_files: Sequence[str | Path] = (),
                   text_files: Sequence[str | Path] = (), compare: Sequence[str | Path] = (),
                   device: str = "cpu", seed: int = 0, max_eval_tokens: int | None = None,
                   trainer_state_path: str | Path | None = None, log=print) -> dict:
    """Evaluate one model (and optionally compare others); write metrics.json, samples.jsonl,
    report.md and plots into ``out_dir``; return the metrics dict."""
    import torch

    from . import curves, generation_quality, human_eval, report
    from londonlm.artifacts import now_iso, versions

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not val_texts:
        raise ValueError("no validation texts: the corpus manifest has no split == 'validation' "
                         "documents; run the corpus stage first or pass --text_files")
    t_start = time.time()
    timing: dict[str, float] = {}
    device = resolve_device(device)
    torch.manual_seed(seed)
    quick = mode == "quick"
    if max_eval_tokens is None and quick:
        max_eval_tokens = QUICK_MAX_EVAL_TOKENS
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = Path(model_path)
    # read every MC file up front so a malformed file fails before minutes of scoring
    probe_sets = {"london": load_mc_jsonl(probes_path or default_probes_path())}
    if not quick:
        for f in extra_mc_files:
            probe_sets[Path(f).stem] = load_mc_jsonl(f)
    for f in text_files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"text file not found: {f}")

    t = time.time()
    model, tok = load_model(model_path, device)
    timing["load"] = time.time() - t
    info = _model_info(model, model_path)
    log(f"evaluating {info['name']} ({info['params']:,} parameters) in {mode} mode on {device}")

    # held-out LM: the bench-comparable figure first (no prefix, first token unscored)
    t = time.time()
    lm: dict = {"validation": _lm_block(model, tok, val_texts, val_years, device=device,
                                        max_tokens=max_eval_tokens, per_century=True)}
    if lm["validation"].get("by_century"):
        lm["validation_by_century"] = lm["validation"].pop("by_century")
    if not quick:
        r = evaluate_lm(model, tok, val_texts, device=device, max_eval_tokens=max_eval_tokens,
                        prepend_tokens=_prefix_lists(tok, val_years, len(val_texts), False))
        r["prefix"] = "EOT"
        lm["validation_eot_prefixed"] = r
        from londonlm.tokenizer import era_tokens_of

        if era_tokens_of(tok) and val_years is not None:
            r = evaluate_lm(model, tok, val_texts, device=device, max_eval_tokens=max_eval_tokens,
                            prepend_tokens=_prefix_lists(tok, val_years, len(val_texts), True))
            r["prefix"] = "EOT + era token"
            lm["validation_era_conditioned"] = r
    for f in text_files:
        raw = Path(f).read_bytes().decode("utf-8", errors="ignore")  # as bench/bpb.py reads
        lm[f"file:{Path(f).name}"] = evaluate_lm(model, tok, [raw], device=device,
                                                 max_eval_tokens=max_eval_tokens if quick else None)
    timing["lm"] = time.time() - t
    v = lm["validation"]
    log(f"validation: loss {v['loss']:.4f}  ppl {v['perplexity']:.2f}  bpb {v['bits_per_byte']:.4f}"
        f"  ({v['tokens']} tokens{', capped' if v['truncated'] else ''})")

    t = time.time()
    probes, probe_rows = {}, []
    for name, items in probe_sets.items():
        res = score_items(model, tok, items, device=device)
        probe_rows += [{"set": name, **row} for row in res.pop("items")]
        probes[name] = res
    timing["probes"] = time.time() - t

    t = time.time()
    gen_metrics, samples = generation_quality.evaluate_generation(
        model, tok, val_texts, n_passages=4 if quick else 16,
        continuation_tokens=32 if quick else 64, prompt_tokens=48,
        modes=("greedy",) if quick else ("greedy", "sampled"), seed=seed, device=device)
    timing["generation"] = time.time() - t

    plots: dict[str, str] = {}
    for name, res in probes.items():
        png = out / f"probes_{name}.png"
        report.plot_probe_categories(res, png, title=f"Probe accuracy by category ({name})")
        plots[f"probes_{name}"] = png.name

    training = None
    state = Path(trainer_state_path) if trainer_state_path else curves.find_trainer_state(model_path)
    if state is not None and state.is_file():
        training = curves.plot_curves(state, out / "training_curves.png", title=info["name"])
        training["trainer_state"] = str(state)
        plots["curves"] = "training_curves.png"

    compare_rows = []
    human = None
    if compare or not quick:
        t = time.time()
        main_row = {"name": info["name"], "path": str(model_path), "step": info["step"],
                    "loss": v["loss"], "bits_per_byte": v["bits_per_byte"],
                    "probe_accuracy": probes["london"]["accuracy"]["per_byte"],
                    "probe_chance": probes["london"]["chance"]}
        he_samples = {info["name"]: [{"prompt": s["prompt"], "text": s["generated"]}
                                     for s in samples if s["mode"] == ("greedy" if quick else "sampled")]}
        rows = [main_row]
        for cpath in compare:
            cpath = Path(cpath)
            cm, ctok = load_model(cpath, device)
            ci = _model_info(cm, cpath)
            cv = evaluate_lm(cm, ctok, val_texts, device=device, max_eval_tokens=max_eval_tokens)
            cp = score_items(cm, ctok, probe_sets["london"], device=device)
            rows.append({"name": ci["name"], "path": str(cpath), "step": ci["step"],
                         "loss": cv["loss"], "bits_per_byte": cv["bits_per_byte"],
                         "tokens": cv["tokens"], "probe_accuracy": cp["accuracy"]["per_byte"],
                         "probe_chance": cp["chance"]})
            if not quick:
                _, cs = generation_quality.evaluate_generation(
                    cm, ctok, val_texts, n_passages=16, continuation_tokens=64, prompt_tokens=48,
                    modes=("sampled",), seed=seed, device=device)
                he_samples[ci["name"]] = [{"prompt": s["prompt"], "text": s["generated"]} for s in cs]
            del cm
        # checkpoints in training order when steps are known; others keep the given order
        if compare:
            compare_rows = sorted(rows, key=lambda r: (r["step"] is None, r["step"] or 0))
            report.plot_comparison(compare_rows, out / "compare.png")
            plots["compare"] = "compare.png"
        if not quick:
            # the true continuations join as a blind control: raters' scores for real period
            # text give the ceiling each model is measured against
            he_samples["reference (true text)"] = [
                {"prompt": s["prompt"], "text": s["reference"]} for s in samples if s["mode"] == "sampled"]
            human = human_eval.export_blind(he_samples, out / "human_eval", seed=seed)
        timing["compare_and_human_eval"] = time.time() - t

    timing["total"] = time.time() - t_start
    metrics = {
        "format_version": METRICS_FORMAT_VERSION,
        "created": now_iso(),
        "mode": mode,
        "model": info,
        "settings": {"seed": seed, "device": device, "max_eval_tokens": max_eval_tokens,
                     "max_eval_tokens_meaning": "cap on scored validation tokens (documents in "
                     "manifest order, last one cut at a word boundary); null = whole split",
                     "context_length": v["context_length"], "stride": v["stride"],
                     "probe_files": {k: str(probes_path or default_probes_path()) if k == "london"
                                     else str(next(f for f in extra_mc_files if Path(f).stem == k))
                                     for k in probe_sets},
                     "text_files": [str(f) for f in text_files]},
        "lm": lm,
        "probes": probes,
        "generation": gen_metrics,
        "training": training,
        "compare": compare_rows,
        "human_eval": human,
        "timing_s": {k: round(x, 2) for k, x in timing.items()},
        "versions": versions(),
    }
    report.write_jsonl(out / "samples.jsonl", samples)
    report.write_jsonl(out / "probe_items.jsonl", probe_rows)
    report.write_text_atomic(out / "report.md", report.render_markdown(metrics, plots, samples))
    report.write_metrics(out / "metrics.json", metrics)  # last: marks the folder complete
    log(f"wrote {out / 'metrics.json'} and report.md in {timing['total']:.1f} s")
    return metrics
