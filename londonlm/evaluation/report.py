"""What an evaluation writes and says: ``metrics.json`` (versioned), ``samples.jsonl``,
``report.md`` with its PNGs, and the "what this model could not know" section that the report
and the model card share.

``metrics.json`` is written last and atomically, so its presence means the folder is
complete. Its ``format_version`` changes whenever a key changes meaning.

The "could not know" section states the run's cutoff and the years of its training text
(words per decade, as a table with bars, since a historian reads the shape at a glance), then
the leakage probes (:mod:`.metrics.leakage`): accuracy on facts from before and after the
cutoff, against chance, and what that can and cannot show.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

from ..core import distinct_tokenizers, md_cell, write_text_atomic
from .metrics.leakage import PRIMARY, format_p

METRICS_FORMAT_VERSION = 1
BAR_WIDTH = 30  # characters of the longest bar in the words-per-decade table


# --------------------------------------------------------------------------- files

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


# --------------------------------------------------------------------------- plots

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


# --------------------------------------------------------------------------- report.md

def _f(v, nd: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def render_markdown(metrics: Mapping, plots: Mapping[str, str], samples: Sequence[Mapping]) -> str:
    """Human-readable report; every figure names its unit and what it was computed on."""
    m = metrics
    L = [f"# Evaluation report: {md_cell(m['model']['name'])}", "",
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
        L.append(f"| {md_cell(name)} | {r['documents']} | {r['tokens']} | {r['bytes']} | "
                 f"{_f(r['loss'])} | {_f(r['perplexity'], 2)} | {_f(r['bits_per_byte'])} | "
                 f"{'; '.join(note)} |")
    by = lm.get("validation_by_century")
    if by:
        L += ["", "Validation bits per byte by century of the document:", "",
              "| century | documents | bytes | bits/byte |", "|---|---|---|---|"]
        for c, r in by.items():
            L.append(f"| {md_cell(c)} | {r['documents']} | {r['bytes']} | {_f(r['bits_per_byte'])} |")
    return L + [""]


def _probe_section(name: str, p: Mapping, plots: Mapping[str, str]) -> list[str]:
    acc = p["accuracy"]
    L = [f"## Multiple-choice probes: {md_cell(name)}", "",
         f"{p['n']} items scored by log-likelihood of each choice; chance {_f(p['chance'], 3)}. "
         f"Accuracy: sum {_f(acc['sum'], 3)}, per token {_f(acc['per_token'], 3)}, "
         f"**per byte {_f(acc['per_byte'], 3)}**.", "",
         "| category | n | chance | sum | per token | per byte |", "|---|---|---|---|---|---|"]
    for c, v in p["by_category"].items():
        L.append(f"| {md_cell(c)} | {v['n']} | {_f(v['chance'], 3)} | {_f(v['sum'], 3)} | "
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


def print_table(m: Mapping) -> None:
    """The evaluation's headline figures as a table on the console (the report has them all)."""
    v = m["lm"]["validation"]
    print(f"\n{'metric':<34}{'value':>12}")
    print("-" * 46)
    rows = [("validation loss (nats/token)", v["loss"]), ("validation perplexity", v["perplexity"]),
            ("validation bits per byte", v["bits_per_byte"]),
            ("validation tokens scored", v["tokens"])]
    # each --text_files file: the figure its user asked for (its name cut to fit the column)
    rows += [(f"{key.removeprefix('file:')[:20]} bits per byte", r["bits_per_byte"])
             for key, r in m["lm"].items() if key.startswith("file:")]
    for name, pr in m["probes"].items():
        rows += [(f"probes[{name}] acc per byte", pr["accuracy"]["per_byte"]),
                 (f"probes[{name}] acc sum", pr["accuracy"]["sum"]),
                 (f"probes[{name}] chance", pr["chance"])]
    g = m.get("generation", {}).get("greedy")
    if g:
        n = f"(n={g.get('texts')})"
        rows += [(f"greedy ROUGE-L F1 {n}", g.get("rougeL")),
                 (f"greedy repeated 3-gram rate {n}", g.get("repeated_3gram_rate")),
                 (f"greedy anachronism rate {n}", g.get("anachronism_rate"))]
    rows.append(("time (s)", m["timing_s"]["total"]))
    for name, val in rows:
        s = "-" if val is None else (f"{val:.4f}" if isinstance(val, float) else str(val))
        print(f"{name:<34}{s:>12}")
    if g:
        print(f"(continuations: {passage_count(m['generation'])})")
    for r in m.get("compare") or []:
        print(f"  compare {r['name']:<28} bpb {r['bits_per_byte']:.4f}  probes {r['probe_accuracy']:.3f}")
    note = tokenizers_note(m.get("compare") or [])
    if note:
        print(note)


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
        L.append(f"| {md_cell(r['name'])} | {r.get('step') or '-'} | {_f(r.get('loss'))} | "
                 f"{_f(r.get('bits_per_byte'))} | {_f(r.get('probe_accuracy'), 3)} |")
    note = tokenizers_note(rows)
    if note:
        L += ["", note]
    if "compare" in plots:
        L += ["", f"![comparison]({plots['compare']})"]
    return L + [""]


def tokenizers_note(rows: Sequence[Mapping]) -> str | None:
    """A line under the comparison when its models number tokens differently."""
    n = distinct_tokenizers(rows)
    return (f"Note: these models use {n} different tokenizers, so their losses (nats per token) are not "
            f"comparable; compare them by bits per byte (the same bytes for every model).") if n > 1 else None


def _human_section(he: Mapping | None) -> list[str]:
    if not he:
        return []
    return ["## Human evaluation", "",
            f"{he['items']} blind items exported: open `{Path(he['form']).name}` in a browser "
            f"(or fill `{Path(he['sheet']).name}`), then aggregate with "
            f"`python 05_evaluation/run_evaluation.py --import_ratings RATINGS --key "
            f"{he['key']}`. Keep `blind_key.json` from the raters.", ""]


# --------------------------------------------------------------------------- could not know

def leakage_summary(result: dict) -> str:
    """One line: per-byte accuracy before and after the cutoff against chance, and the verdict."""
    facts, cutoff = result.get("facts") or {}, result.get("cutoff_year")
    parts = []
    for side, sign in (("before", "≤"), ("after", ">")):
        s = facts.get(side) or {}
        acc = (s.get("per_byte") or {}).get("accuracy")
        if s.get("n") and acc is not None:
            where = f"{sign} {cutoff}" if cutoff is not None else "all"
            parts.append(f"facts {where}: {acc:.1%} of {s['n']} (chance {s['chance']:.1%})")
    return "; ".join(parts + [result.get("verdict", "")])


def year_histogram(words_by_decade: dict) -> list[str]:
    """Words of training text per decade as a Markdown table with a bar per row."""
    rows = sorted(((str(k), int(v)) for k, v in (words_by_decade or {}).items()), key=lambda kv: kv[0])
    if not rows:
        return ["(no dated training text recorded)"]
    top = max(v for _, v in rows) or 1
    lines = ["| decade | words | |", "|---|---:|---|"]
    for decade, words in rows:
        label = f"{decade}s" if decade.isdigit() else decade
        bar = '█' * max(1, round(BAR_WIDTH * words / top)) if words else ''
        lines.append(f"| {md_cell(label)} | {words:,} | {bar} |")
    return lines


def _years_line(record: dict) -> str:
    years = record.get("years") or [None, None]
    cutoff = record.get("cutoff_year")
    span = f"{years[0]}–{years[1]}" if years[0] is not None else "unknown years"
    if cutoff is None:
        return (f"This model was trained without a cutoff year: its training text spans {span}, "
                f"so it may know anything written up to {years[1] or 'the end of its corpus'}.")
    return (f"**Cutoff: {cutoff}.** Only documents whose date evidence is {cutoff} or earlier were "
            f"kept (undated documents were left out), and the tokenizer was trained on the same "
            f"text. Its training text spans {span}.")


def could_not_know_section(record: dict | None, leakage: dict | None, heading: str = "##") -> list[str]:
    """The section's Markdown lines (``record``: run_info ``corpus_time``; ``leakage``: the
    probes' result, either may be None)."""
    lines = [f"{heading} What this model could not know", ""]
    if not record and not leakage:
        return lines + ["The run recorded no corpus years and no leakage probes were run, so "
                        "nothing can be said about what this model could not know.", ""]
    if record:
        lines += [_years_line(record), "", "Training text by decade:", "",
                  *year_histogram(record.get("words_by_decade") or {}), ""]
    if leakage:
        lines += [f"{heading}# Leakage probes", "", *leakage_markdown(leakage), ""]
    else:
        lines += ["No leakage probes were run on this model (`05_evaluation/run_evaluation.py` runs them).", ""]
    return lines


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _ci(ci) -> str:
    return "–" if not ci else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%"


def _share(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def _sides(cutoff) -> tuple[str, str]:
    if cutoff is None:
        return "all facts (no cutoff)", "after the cutoff"
    return f"dated ≤ {cutoff}", f"dated > {cutoff}"


def leakage_markdown(result: dict) -> list[str]:
    """Markdown lines for a report section: the before/after table of facts, the table of
    new words, the breakdown by category, the verdict and what it can and cannot show."""
    cutoff, facts, words = result.get("cutoff_year"), result["facts"], result.get("words")
    label_before, label_after = _sides(cutoff)
    lines = [(f"Multiple-choice facts about London and England, each dated by the year it became "
             f"knowable, scored by log-likelihood per byte (`{facts.get('file', '')}`, "
             f"{facts['n']} items). p is the exact one-sided probability of doing at least this "
             f"well by guessing."), "",
             "| facts | items | accuracy | 95% CI | chance | p (above chance) | sum-rule accuracy |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for label, side in ((label_before, facts["before"]), (label_after, facts["after"])):
        s = side[PRIMARY]
        lines.append(f"| {label} | {side['n']} | {_pct(s['accuracy'])} | {_ci(s['ci95'])} | "
                     f"{_pct(side['chance'])} | {format_p(s['p_value'])} | {_pct(side['sum']['accuracy'])} |")
    lines.append("")
    if words and words.get("n"):
        lines += [(f"New words (`{words.get('file', '')}`): each word first recorded in a known year, "
                  f"against four older words of similar length. *share* is the fraction of a word's "
                  f"controls the model finds more surprising than the word: near 0 the word is "
                  f"stranger than all of them (as a word never read would be), near 0.5 it is "
                  f"ordinary. Spelling and the tokenizer move a share too (a word the tokenizer "
                  f"never saw is cut into more pieces, even for an untrained model), so compare "
                  f"the two sides, and other models on the same words, rather than either with "
                  f"0.5; the verdict rests on the facts."), "",
                  "| new words | words | mean share | 95% CI |", "|---|---:|---:|---|"]
        for label, side in ((label_before.replace("dated", "first used"), words["before"]),
                            (label_after.replace("dated", "first used"), words["after"])):
            ci = side["ci95"]
            lines.append(f"| {label} | {side['n']} | {_share(side['mean'])} | "
                         f"{'–' if not ci else f'{ci[0]:.2f}–{ci[1]:.2f}'} |")
        lines.append("")
    cats = facts.get("by_category") or {}
    if cats:
        lines += ["| category | before: items | before: accuracy | after: items | after: accuracy |",
                  "|---|---:|---:|---:|---:|"]
        for cat, sides in cats.items():
            b, a = sides["before"], sides["after"]
            lines.append(f"| {md_cell(cat)} | {b['n']} | {_pct(b[PRIMARY]['accuracy'])} | {a['n']} | "
                         f"{_pct(a[PRIMARY]['accuracy'])} |")
        lines.append("")
    lines += [f"**Verdict:** {result['verdict']}.", ""]
    before = facts["before"][PRIMARY]
    if before["above_chance"]:
        lines.append("Before-cutoff accuracy is above chance, so the model does answer from what it "
                     "read; after-cutoff accuracy at chance is then evidence that it did not read "
                     "about the later years.")
    else:
        lines.append(f"Before-cutoff accuracy is not above chance either (p={format_p(before['p_value'])}): "
                     "a small model may not recall even the facts it did read, so for this model "
                     "the probe cannot bound leakage. It only does so when the before-cutoff "
                     "accuracy is above chance.")
    return lines
