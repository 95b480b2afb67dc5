"""Evaluation outputs: ``metrics.json`` (versioned), ``samples.jsonl``, ``report.md`` + PNGs.

``metrics.json`` is written last and atomically, so its presence means the folder is
complete. Its ``format_version`` changes whenever a key changes meaning."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

METRICS_FORMAT_VERSION = 1


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _clean(obj):
    """JSON-safe copy: NaN/inf become null (strict JSON readers reject them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_metrics(path: str | Path, metrics: Mapping) -> Path:
    return write_text_atomic(path, json.dumps(_clean(metrics), indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Sequence[Mapping]) -> Path:
    return write_text_atomic(path, "".join(json.dumps(_clean(r), ensure_ascii=False) + "\n"
                                           for r in rows))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_probe_categories(probe_summary: Mapping, out_png: str | Path, rule: str = "per_byte",
                          title: str = "Probe accuracy by category") -> Path:
    """Bar chart of accuracy per category with each category's chance level marked."""
    plt = _plt()
    cats = list(probe_summary["by_category"].items())
    names = [c for c, _ in cats]
    acc = [v[rule] for _, v in cats]
    chance = [v["chance"] for _, v in cats]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(names) + 2), 4.5))
    ax.bar(range(len(names)), acc, color="#4a6fa5", label=f"accuracy ({rule})")
    ax.scatter(range(len(names)), chance, color="#c0392b", marker="_", s=600, zorder=3,
               label="chance")
    for i, (_, v) in enumerate(cats):
        ax.text(i, acc[i] + 0.01, f"n={v['n']}", ha="center", fontsize=7)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=40, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (overall {probe_summary['accuracy'][rule]:.3f}, "
                 f"chance {probe_summary['chance']:.3f})")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def plot_comparison(rows: Sequence[Mapping], out_png: str | Path) -> Path:
    """Bits per byte and probe accuracy per compared model/checkpoint (in the given order)."""
    plt = _plt()
    names = [r["name"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot(range(len(rows)), [r.get("bits_per_byte") for r in rows], "o-")
    a1.set_title("validation bits per byte (lower is better)")
    a2.plot(range(len(rows)), [r.get("probe_accuracy") for r in rows], "o-", label="probes")
    if rows and rows[0].get("probe_chance") is not None:
        a2.axhline(rows[0]["probe_chance"], color="#c0392b", ls="--", label="chance")
    a2.set_title("probe accuracy (per-byte rule)")
    a2.legend()
    for ax in (a1, a2):
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def _f(v, nd: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def render_markdown(metrics: Mapping, plots: Mapping[str, str], samples: Sequence[Mapping]) -> str:
    """Human-readable report; every figure names its unit and what it was computed on."""
    m = metrics
    L = [f"# Evaluation report: {m['model']['name']}", "",
         f"- model: `{m['model']['path']}` ({_f(m['model'].get('params'))} parameters, "
         f"context {m['model'].get('n_positions')}, step {m['model'].get('step') or '-'}, "
         f"weights sha256 `{m['model'].get('weights_sha256') or '-'}`)",
         f"- mode: **{m['mode']}**, seed {m['settings']['seed']}, device {m['settings']['device']}, "
         f"weights {m['settings'].get('dtype', 'float32')}, "
         f"created {m['created']}, took {_f(m['timing_s'].get('total'), 1)} s",
         f"- metrics format version {m['format_version']}; machine-readable copy: `metrics.json`", ""]
    L += _lm_section(m.get("lm", {}))
    for name, p in m.get("probes", {}).items():
        L += _probe_section(name, p, plots)
    if "leakage" in m:
        from .time_lock import could_not_know_section

        L += could_not_know_section(m.get("corpus_time"), m.get("leakage"))
    L += _generation_section(m.get("generation"))
    L += _samples_section(samples)
    L += _training_section(m.get("training"), plots)
    L += _compare_section(m.get("compare"), plots)
    L += _human_section(m.get("human_eval"))
    L += ["## lm-eval-harness", "",
          "The model folder loads with lm-eval-harness's Hugging Face backend, e.g.:", "",
          f"    lm_eval --model hf --model_args pretrained={m['model']['path']},"
          f"dtype={m['settings'].get('dtype', 'float32')} --tasks lambada_openai,hellaswag "
          f"--device {m['settings']['device']} --batch_size 8", ""]
    return "\n".join(L)


def _lm_section(lm: Mapping) -> list[str]:
    if not lm:
        return []
    L = ["## Held-out language modelling", "",
         "Sliding window over whole documents (see `context_length`/`stride`); loss in "
         "nats per token; bits per byte = total NLL / (ln 2 x UTF-8 bytes), comparable "
         "across tokenizers and with `shared/bench/bpb.py`.", "",
         "| text | documents | tokens scored | bytes | loss | perplexity | bits/byte | note |",
         "|---|---|---|---|---|---|---|---|"]
    for name, r in lm.items():
        if not isinstance(r, Mapping) or "bits_per_byte" not in r:
            continue
        note = []
        if r.get("truncated"):
            note.append(f"capped at {r.get('max_eval_tokens')} tokens")
        if r.get("prefix"):
            note.append(f"prefix {r['prefix']}")
        L.append(f"| {name} | {r['documents']} | {r['tokens']} | {r['bytes']} | "
                 f"{_f(r['loss'])} | {_f(r['perplexity'], 2)} | {_f(r['bits_per_byte'])} | "
                 f"{'; '.join(note)} |")
    by = lm.get("validation_by_century")
    if by:
        L += ["", "Validation bits per byte by century of the document:", "",
              "| century | documents | bytes | bits/byte |", "|---|---|---|---|"]
        for c, r in by.items():
            L.append(f"| {c} | {r['documents']} | {r['bytes']} | {_f(r['bits_per_byte'])} |")
    return L + [""]


def _probe_section(name: str, p: Mapping, plots: Mapping[str, str]) -> list[str]:
    acc = p["accuracy"]
    L = [f"## Multiple-choice probes: {name}", "",
         f"{p['n']} items scored by log-likelihood of each choice; chance {_f(p['chance'], 3)}. "
         f"Accuracy: sum {_f(acc['sum'], 3)}, per token {_f(acc['per_token'], 3)}, "
         f"**per byte {_f(acc['per_byte'], 3)}**.", "",
         "| category | n | chance | sum | per token | per byte |", "|---|---|---|---|---|---|"]
    for c, v in p["by_category"].items():
        L.append(f"| {c} | {v['n']} | {_f(v['chance'], 3)} | {_f(v['sum'], 3)} | "
                 f"{_f(v['per_token'], 3)} | {_f(v['per_byte'], 3)} |")
    if f"probes_{name}" in plots:
        L += ["", f"![probe accuracy]({plots[f'probes_{name}']})"]
    return L + [""]


def _generation_section(g: Mapping | None) -> list[str]:
    if not g or not g.get("passages"):
        return []
    L = ["## Continuation quality", "",
         f"{passage_count(g)}; prompt {g['prompt_tokens']} tokens, continuation "
         f"{g['continuation_tokens']} tokens. ROUGE F1 against the true continuation; the "
         f"`reference` column is the true continuation itself (the level to expect from "
         f"period text). Each column is a mean over its n texts.", ""]
    cols = [k for k in ("greedy", "sampled") if k in g] + ["reference"]
    L += ["| metric | " + " | ".join(f"{c} (n={g[c].get('texts', '?')})" for c in cols) + " |",
          "|---" * (len(cols) + 1) + "|"]
    for key in ("rouge1", "rouge2", "rougeL", "distinct_1", "distinct_2", "distinct_3",
                "repeated_3gram_rate", "repeated_4gram_rate", "anachronism_rate",
                "archaic_words_per_1k", "eth_verbs_per_1k", "long_s_per_1k_words"):
        L.append(f"| {key} | " + " | ".join(_f(g[c].get(key)) for c in cols) + " |")
    return L + [""]


def passage_count(g: Mapping) -> str:
    """How many passages the continuation figures rest on, and from how many documents
    (a few passages of one document say less than the same number from many)."""
    asked, docs, most = g.get("passages_requested"), g.get("documents"), g.get("max_passages_per_document")
    text = f"{g['passages']} held-out passages"
    if asked is not None and asked != g["passages"]:
        text += f" ({asked} asked for)"
    if docs is not None:
        text += f" from {docs} validation document{'s' if docs != 1 else ''}"
        if most and most > 1 and docs > 1:
            text += f", up to {most} from one"
    return text


def _samples_section(samples: Sequence[Mapping]) -> list[str]:
    if not samples:
        return []
    L = ["## Sample continuations", ""]
    for s in samples[:4]:
        L += [f"**{s.get('mode', '')}** prompt: {s['prompt'].strip()[:300]!r}", "",
              f"> generated: {s['generated'].strip()[:400]!r}", "",
              f"> true continuation: {s.get('reference', '').strip()[:400]!r}", ""]
    return L


def _training_section(tr: Mapping | None, plots: Mapping[str, str]) -> list[str]:
    if not tr:
        return []
    L = ["## Training curves", "",
         f"From `{tr.get('trainer_state')}`: {tr.get('steps')} steps, last train loss "
         f"{_f(tr.get('last_train_loss'))}, last validation loss {_f(tr.get('last_eval_loss'))}, "
         f"best validation loss {_f(tr.get('best_eval_loss'))} at step {tr.get('best_eval_step')}.", ""]
    if "curves" in plots:
        L += [f"![training curves]({plots['curves']})", ""]
    return L


def _compare_section(rows: Sequence[Mapping] | None, plots: Mapping[str, str]) -> list[str]:
    if not rows:
        return []
    L = ["## Comparison", "", "| model | step | loss | bits/byte | probe acc (per byte) |",
         "|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['name']} | {r.get('step') or '-'} | {_f(r.get('loss'))} | "
                 f"{_f(r.get('bits_per_byte'))} | {_f(r.get('probe_accuracy'), 3)} |")
    if "compare" in plots:
        L += ["", f"![comparison]({plots['compare']})"]
    return L + [""]


def _human_section(he: Mapping | None) -> list[str]:
    if not he:
        return []
    return ["## Human evaluation", "",
            f"{he['items']} blind items exported: open `{Path(he['form']).name}` in a browser "
            f"(or fill `{Path(he['sheet']).name}`), then aggregate with "
            f"`python 05_evaluation/run_evaluation.py --import_ratings RATINGS --key "
            f"{he['key']}`. Keep `blind_key.json` from the raters.", ""]
