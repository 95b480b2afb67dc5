"""Model card, dataset card and LICENSE rendering for publishing to the Hugging Face Hub.

Everything here is pure text rendering from facts gathered elsewhere (``run_info.json``,
``trainer_state.json``, ``evaluation/metrics.json``, the corpus manifest, the verified
model folder), so a card can only state numbers that were actually measured; a missing
input becomes an explicit "not recorded" line rather than an invented value.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

# Metrics given their own rows (and model-index entries) when the evaluation wrote them.
# Paths follow londonlm.evaluation.run_evaluation: ``lm.validation.*`` and ``probes.<set>.*``.
HEADLINE_METRICS: tuple[tuple[str, str, str], ...] = (
    # (dotted key in metrics.json, model-index metric type, human name)
    ("lm.validation.loss", "loss", "Validation loss (nats/token)"),
    ("lm.validation.perplexity", "perplexity", "Validation perplexity"),
    ("lm.validation.bits_per_byte", "bits_per_byte", "Validation bits per byte"),
)
PROBE_RULE = "per_byte"  # the choice rule the evaluation report leads with
# Hub license identifiers we can write a LICENSE file for: (full name, canonical text URL).
LICENSES: dict[str, tuple[str, str]] = {
    "mit": ("MIT License", "https://opensource.org/licenses/MIT"),
    "apache-2.0": ("Apache License 2.0", "https://www.apache.org/licenses/LICENSE-2.0"),
    "bsd-3-clause": ("BSD 3-Clause License", "https://opensource.org/licenses/BSD-3-Clause"),
    "cc-by-4.0": ("Creative Commons Attribution 4.0", "https://creativecommons.org/licenses/by/4.0/legalcode"),
    "cc-by-sa-4.0": ("Creative Commons Attribution-ShareAlike 4.0",
                     "https://creativecommons.org/licenses/by-sa/4.0/legalcode"),
    "cc-by-nc-4.0": ("Creative Commons Attribution-NonCommercial 4.0",
                     "https://creativecommons.org/licenses/by-nc/4.0/legalcode"),
    "cc0-1.0": ("Creative Commons Zero 1.0 (public domain dedication)",
                "https://creativecommons.org/publicdomain/zero/1.0/legalcode"),
    "openrail": ("Open RAIL License", "https://huggingface.co/blog/open_rail"),
    "other": ("Other (see the model card)", ""),
}
MIT_TEXT = """MIT License

Copyright (c) {year} {holder}

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""
DEFAULT_PROMPT = "It was a cold morning in Cheapside, and"


# ---------------------------------------------------------------- small formatting helpers
def fmt_num(v: Any) -> str:
    """Integers with thousands separators, floats to 4 significant digits."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.4g}"
        return f"{v:,.4f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.1f}"
    return str(v)


def fmt_seconds(s: float | int | None) -> str:
    if s is None:
        return "not recorded"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def flatten_numeric(obj: Any, prefix: str = "") -> dict[str, float | int]:
    """Dotted paths to every numeric leaf of nested dicts (bools and lists skipped:
    lists in metrics files are per-item details, not results)."""
    out: dict[str, float | int] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten_numeric(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = obj
    return out


def lookup(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---------------------------------------------------------------- corpus summary
def summarize_manifest(rows: Iterable[dict]) -> dict:
    """Documents, words and licences per source and per decade from manifest rows."""
    rows = list(rows)
    sources: dict[str, dict] = {}
    decades: dict[str, dict] = defaultdict(lambda: {"documents": 0, "words": 0, "chars": 0})
    years = [r["year"] for r in rows if isinstance(r.get("year"), int)]
    for r in rows:
        s = sources.setdefault(str(r.get("source")), {
            "kind": r.get("source_kind", ""), "documents": 0, "words": 0, "chars": 0,
            "licenses": set(), "year_min": None, "year_max": None})
        s["documents"] += 1
        s["words"] += int(r.get("words") or 0)
        s["chars"] += int(r.get("chars") or 0)
        s["licenses"].add(str(r.get("license") or "unknown"))
        y = r.get("year")
        if isinstance(y, int):
            s["year_min"] = y if s["year_min"] is None else min(s["year_min"], y)
            s["year_max"] = y if s["year_max"] is None else max(s["year_max"], y)
        d = r.get("decade")
        key = f"{d}s" if isinstance(d, int) else "undated"
        decades[key]["documents"] += 1
        decades[key]["words"] += int(r.get("words") or 0)
        decades[key]["chars"] += int(r.get("chars") or 0)
    for s in sources.values():
        s["licenses"] = sorted(s["licenses"])
    return {
        "documents": len(rows),
        "train_documents": sum(r.get("split") == "train" for r in rows),
        "validation_documents": sum(r.get("split") == "validation" for r in rows),
        "words": sum(int(r.get("words") or 0) for r in rows),
        "chars": sum(int(r.get("chars") or 0) for r in rows),
        "london_documents": sum(bool(r.get("london", True)) for r in rows),
        "year_min": min(years) if years else None,
        "year_max": max(years) if years else None,
        "sources": dict(sorted(sources.items())),
        "decades": dict(sorted(decades.items(), key=lambda kv: (kv[0] == "undated", kv[0]))),
    }


def _years(lo, hi) -> str:
    """'1623', '1660–1703' or 'undated' (a one-year corpus is not a range)."""
    if lo is None:
        return "undated"
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _source_table(corpus: dict) -> list[str]:
    lines = ["| Source | Kind | Documents | Words | Years | Licence |", "|---|---|---:|---:|---|---|"]
    for name, s in corpus["sources"].items():
        years = _years(s["year_min"], s["year_max"])
        lines.append(f"| {_md_escape(name)} | {_md_escape(s['kind'])} | {s['documents']:,} | "
                     f"{s['words']:,} | {years} | {_md_escape(', '.join(s['licenses']))} |")
    return lines


def _decade_table(corpus: dict) -> list[str]:
    lines = ["| Decade | Documents | Words |", "|---|---:|---:|"]
    for dec, d in corpus["decades"].items():
        lines.append(f"| {dec} | {d['documents']:,} | {d['words']:,} |")
    return lines


# ---------------------------------------------------------------- usage snippet
def usage_snippet(model_id: str, prompt: str = DEFAULT_PROMPT, era_token: str | None = None,
                  max_new_tokens: int = 40) -> str:
    """Python that loads ``model_id`` and generates; the publisher runs this exact code
    against the staged folder before uploading, so the card's snippet is known to work."""
    text = prompt if era_token is None else era_token + prompt
    return (
        "from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline, set_seed\n"
        "\n"
        f"model_id = {model_id!r}\n"
        "tokenizer = AutoTokenizer.from_pretrained(model_id)\n"
        "model = AutoModelForCausalLM.from_pretrained(model_id)\n"
        "generator = pipeline(\"text-generation\", model=model, tokenizer=tokenizer)\n"
        "set_seed(42)\n"
        f"out = generator({text!r}, max_new_tokens={max_new_tokens}, do_sample=True,\n"
        "                temperature=0.8, top_p=0.95, repetition_penalty=1.1)\n"
        "print(out[0][\"generated_text\"])\n"
    )


# ---------------------------------------------------------------- model card
@dataclass
class CardInputs:
    """Facts for a model card. Only ``model_name`` and ``model_facts`` are required."""

    model_name: str
    model_facts: dict                      # from the verified folder: shape, parameters, special ids
    repo_id: str | None = None
    license: str = "mit"
    checkpoint: str = "final"              # which folder of the run was published
    run_info: dict | None = None
    trainer_state: dict | None = None
    trainer_state_source: str | None = None  # e.g. "checkpoint-600/trainer_state.json"
    metrics: dict | None = None
    samples: list[dict] = field(default_factory=list)  # {"prompt", "text", "settings"}
    samples_source: str = ""
    corpus: dict | None = None             # summarize_manifest(...)
    corpus_note: str = ""                  # e.g. manifest changed since training
    usage_prompt: str = DEFAULT_PROMPT
    dataset_repo_id: str | None = None    # the corpus published alongside, if any


def headline_results(metrics: dict | None) -> list[tuple[str, float, str]]:
    """(model-index metric type, value, human name) for every measured headline number:
    held-out loss / perplexity / bits per byte, and each probe set's accuracy per rule."""
    out: list[tuple[str, float, str]] = []
    for key, mtype, name in HEADLINE_METRICS:
        v = lookup(metrics or {}, key)
        if _finite(v):
            out.append((mtype, float(v), name))
    probes = (metrics or {}).get("probes")
    for set_name, res in (probes.items() if isinstance(probes, dict) else ()):
        acc = res.get("accuracy") if isinstance(res, dict) else None
        if not isinstance(acc, dict):
            continue
        rules = sorted(acc, key=lambda r: (r != PROBE_RULE, r))
        for rule in rules:
            if _finite(acc[rule]):
                out.append((f"accuracy_{rule}" if rule != PROBE_RULE else "accuracy",
                            float(acc[rule]), f"Probe accuracy ({set_name}, {rule})"))
        if _finite(res.get("chance")):
            out.append(("accuracy_chance", float(res["chance"]), f"Probe chance level ({set_name})"))
    return out


def model_index_results(metrics: dict | None, run_info: dict | None) -> list:
    """``EvalResult`` entries for the measured headline metrics; falls back to the trainer's
    own validation loss when no evaluation was run (still a measured number)."""
    from huggingface_hub import EvalResult

    def result(mtype: str, value: float, name: str, source: str) -> EvalResult:
        # no source_name: the Hub requires a source_url with it, and there is none to give
        return EvalResult(task_type="text-generation", task_name="Text Generation",
                          dataset_type="london_historical",
                          dataset_name="London historical corpus (held-out validation split)",
                          dataset_split="validation", metric_type=mtype,
                          metric_value=round(float(value), 6), metric_name=f"{name} [{source}]")

    out = [result(t, v, n, "londonlm evaluation") for t, v, n in headline_results(metrics)
           if t != "accuracy_chance"]
    if not out and run_info:
        for key, mtype, name in (("final_eval_loss", "loss", "Validation loss (trainer)"),
                                 ("final_eval_perplexity", "perplexity", "Validation perplexity (trainer)")):
            if _finite(run_info.get(key)):
                out.append(result(mtype, run_info[key], name, "londonlm training"))
    return out


def _front_matter(inp: CardInputs) -> str:
    from huggingface_hub import ModelCardData

    tags = ["gpt2", "text-generation", "history", "historical-english", "london", "londonlm"]
    if inp.model_facts.get("era_tokens"):
        tags.append("era-conditioning")
    data = ModelCardData(
        language="en", license=inp.license, library_name="transformers",
        pipeline_tag="text-generation", tags=tags, model_name=inp.model_name,
        datasets=[inp.dataset_repo_id] if inp.dataset_repo_id else None,
        eval_results=model_index_results(inp.metrics, inp.run_info) or None,
    )
    return data.to_yaml()


def _hardware(run_info: dict) -> str:
    hw = run_info.get("hardware") or {}
    if hw.get("gpus"):
        gpus = hw["gpus"]
        names = sorted(set(gpus))
        return ", ".join(f"{gpus.count(n)}× {n}" for n in names)
    if hw:
        return (f"CPU only ({hw.get('cpu_cores_physical', '?')} physical cores, "
                f"{hw.get('platform', 'unknown platform')})")
    return "not recorded"


def _last_parts(path: Any, n: int = 2) -> str:
    """``run/checkpoint-N`` from a local path: a public card must not expose the
    publisher's folder layout (home directory, user name)."""
    parts = [p for p in str(path).replace("\\", "/").split("/") if p]
    return "/".join(parts[-n:]) if parts else str(path)


def _training_section(inp: CardInputs) -> list[str]:
    ri, st = inp.run_info, inp.trainer_state
    lines = ["## Training procedure", ""]
    if not ri and not st:
        return lines + ["No `run_info.json` or `trainer_state.json` was found for this model, so "
                        "training details were not recorded.", ""]
    rows: list[tuple[str, str]] = []
    if ri:
        rows += [("Preset", str(ri.get("preset") or "custom")),
                 ("Published weights", f"`{inp.checkpoint}`"),
                 ("Optimizer steps", f"{fmt_num(ri.get('global_step'))} of {fmt_num(ri.get('max_steps'))}"),
                 ("Tokens seen", fmt_num(ri.get("tokens_seen"))),
                 ("Tokens per step", fmt_num(ri.get("tokens_per_step"))),
                 ("Batch size × grad. accumulation × devices",
                  f"{ri.get('batch_size')} × {ri.get('gradient_accumulation_steps')} × {ri.get('world_size', 1)}"),
                 ("Peak learning rate", fmt_num(ri.get("learning_rate"))),
                 ("Precision", str(ri.get("precision", "not recorded"))),
                 ("Hardware", _hardware(ri)),
                 ("Training wall time", fmt_seconds(ri.get("train_wall_seconds"))),
                 ("Throughput", f"{fmt_num(ri.get('tokens_per_second'))} tokens/s"
                  if ri.get("tokens_per_second") is not None else "not recorded"),
                 ("Final training loss", fmt_num(ri.get("final_train_loss"))),
                 ("Final validation loss", fmt_num(ri.get("final_eval_loss"))),
                 ("Final validation perplexity", fmt_num(ri.get("final_eval_perplexity"))),
                 ("Seed", str(ri.get("seed")))]
        if ri.get("best_eval_loss") is not None:
            where = (f"`{_last_parts(ri['best_checkpoint'])}`" if ri.get("best_checkpoint")
                     else f"step {ri['best_step']}" if ri.get("best_step") else "")
            rows.append(("Best validation loss",
                         f"{fmt_num(ri['best_eval_loss'])}" + (f" ({where})" if where else "")))
        if ri.get("resumed_from"):
            rows.append(("Resumed from", f"`{_last_parts(ri['resumed_from'])}`"))
        if ri.get("parent"):
            parent = ri["parent"] if isinstance(ri["parent"], dict) else {"init_from": ri["parent"]}
            rows.append(("Initialised from (continued pre-training)",
                         f"`{_last_parts(parent.get('init_from') or parent.get('path'))}`"))
        if ri.get("interrupted"):
            rows.append(("Stopped early", str(ri["interrupted"])))
    if st:
        logs = st.get("log_history") or []
        tr = [(h.get("step"), h["loss"]) for h in logs if "loss" in h]
        ev = [(h.get("step"), h["eval_loss"]) for h in logs if "eval_loss" in h]
        src = f" ({inp.trainer_state_source})" if inp.trainer_state_source else ""
        rows.append((f"Trainer state{src}", f"step {fmt_num(st.get('global_step'))} of "
                                            f"{fmt_num(st.get('max_steps'))}"))
        if tr:
            rows.append(("Logged training loss", f"{fmt_num(tr[0][1])} at step {tr[0][0]} → "
                                                 f"{fmt_num(tr[-1][1])} at step {tr[-1][0]}"))
        if ev:
            rows.append(("Logged validation loss",
                         ", ".join(f"{fmt_num(v)} (step {s})" for s, v in ev[-5:])))
        if st.get("best_metric") is not None:
            best = st.get("best_model_checkpoint")
            rows.append(("Best metric (trainer)", f"{fmt_num(st['best_metric'])}"
                         + (f" (`{_last_parts(best)}`)" if best else "")))
    lines += ["| | |", "|---|---|"] + [f"| {k} | {_md_escape(v)} |" for k, v in rows] + [""]
    return lines


def _evaluation_section(inp: CardInputs) -> list[str]:
    lines = ["## Evaluation", ""]
    m = inp.metrics
    if not m:
        lines += ["No `evaluation/metrics.json` was found for this run, so only the trainer's "
                  "validation loss (above) is reported. Run the evaluation stage (`05_evaluation/`) "
                  "and publish again to add held-out perplexity, bits per byte and probe accuracy.", ""]
        return lines
    head = [(name, fmt_num(v)) for _t, v, name in headline_results(m)]
    if head:
        lines += ["Held-out results measured by the londonlm evaluation stage on the corpus's "
                  "validation split (documents never seen in training):", "",
                  "| Metric | Value |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in head] + [""]
    v = lookup(m, "lm.validation") or {}
    if isinstance(v, dict) and v.get("tokens") is not None:
        lines += [f"Evaluation mode `{m.get('mode', 'unknown')}`: {fmt_num(v.get('tokens'))} "
                  f"validation tokens scored"
                  + (" (capped; run `--mode comprehensive` for the whole split)"
                     if v.get("truncated") else "") + ".", ""]
    flat = flatten_numeric(m)
    if flat:
        lines += ["<details><summary>All numeric results in metrics.json "
                  f"({len(flat)} values)</summary>", "", "| Key | Value |", "|---|---:|"]
        lines += [f"| `{_md_escape(k)}` | {fmt_num(v)} |" for k, v in flat.items()]
        lines += ["", "</details>", ""]
    lines += ["The full `metrics.json` is included in this repository.", ""]
    return lines


def _samples_section(inp: CardInputs) -> list[str]:
    lines = ["## Sample generations", ""]
    if not inp.samples:
        return lines + ["No samples were recorded.", ""]
    if inp.samples_source:
        lines += [inp.samples_source, ""]
    for s in inp.samples[:5]:
        text = str(s.get("text", ""))
        if len(text) > 700:
            text = text[:700] + " …"
        settings = s.get("settings")
        lines += [f"**Prompt:** `{_md_escape(s.get('prompt', ''))}`"
                  + (f" ({_md_escape(settings)})" if settings else ""), "",
                  "```text", text.replace("```", "'''"), "```", ""]
    return lines


def _data_section(inp: CardInputs) -> list[str]:
    lines = ["## Training data", ""]
    c, ri = inp.corpus, inp.run_info or {}
    cache = ri.get("cache") or {}
    if c:
        span = _years(c["year_min"], c["year_max"])
        lines += [f"A corpus of historical London texts ({span}) assembled by the londonlm pipeline: "
                  f"**{c['documents']:,} documents** ({c['train_documents']:,} train, "
                  f"{c['validation_documents']:,} validation, split by a hash of the document id), "
                  f"{c['words']:,} words, {c['chars']:,} characters; "
                  f"{c['london_documents']:,} documents are London-related."]
    else:
        lines += ["The corpus manifest was not available when this card was written, so per-source "
                  "figures are omitted."]
    if cache:
        lines += ["", f"Tokens after tokenization: **{fmt_num(cache.get('tokens_train'))} train**, "
                      f"{fmt_num(cache.get('tokens_validation'))} validation"
                      + (" (each document prefixed with its half-century era token)"
                         if cache.get("era_tokens") else "") + "."]
    if inp.dataset_repo_id:
        lines += ["", f"The corpus (manifest and cleaned texts) is published as "
                      f"[{inp.dataset_repo_id}](https://huggingface.co/datasets/{inp.dataset_repo_id})."]
    if inp.corpus_note:
        lines += ["", f"> Note: {inp.corpus_note}"]
    lines.append("")
    if c:
        lines += ["### Sources", ""] + _source_table(c) + ["", "### Period coverage", ""] \
                 + _decade_table(c) + [""]
    return lines


def render_model_card(inp: CardInputs) -> str:
    f, ri = inp.model_facts, inp.run_info or {}
    model_id = inp.repo_id or inp.model_name
    eras = f.get("era_tokens") or []
    params = ri.get("parameters") or f.get("parameters")
    lic_name = LICENSES.get(inp.license, (inp.license, ""))[0]
    year = _dt.date.today().year
    parts = ["---", _front_matter(inp).rstrip("\n"), "---", "",
             f"# {inp.model_name}", "",
             f"A GPT-2-style causal language model trained **from scratch** on historical London "
             f"texts ({_span(inp.corpus)}) with the londonlm pipeline. It "
             f"continues text in the style of its sources: early modern and Georgian prose, "
             f"trial records, diaries and plays. It is a small research and teaching model, "
             f"not an instruction-following assistant.", "",
             "## Model details", "",
             "| | |", "|---|---|",
             f"| Architecture | `GPT2LMHeadModel` (decoder-only transformer, tied embeddings) |",
             f"| Layers × heads × width | {f.get('n_layer')} × {f.get('n_head')} × {f.get('n_embd')} |",
             f"| Context length | {f.get('n_positions')} tokens |",
             f"| Parameters | {fmt_num(params)} |",
             f"| Tokenizer | byte-level BPE, {fmt_num(f.get('tokenizer_size'))} tokens "
             f"(embedding padded to {fmt_num(f.get('vocab_size'))} rows) |",
             f"| Special tokens | `<\\|endoftext\\|>` = bos/eos (id {f.get('eos_token_id')}), "
             f"pad id {f.get('pad_token_id')} |",
             f"| Era tokens | {', '.join(f'`{_md_escape(e)}`' for e in eras) if eras else 'none'} |",
             f"| Licence (weights and code) | {lic_name} (`{inp.license}`) |", ""]
    if eras:
        parts += [f"Era tokens: during training each document was prefixed with the token of its "
                  f"half-century, so putting e.g. `{eras[0]}` before a prompt nudges the style "
                  f"toward that period.", ""]
    parts += _data_section(inp) + _training_section(inp) + _evaluation_section(inp) \
        + _samples_section(inp)
    parts += ["## How to use", "", "```python",
              usage_snippet(model_id, inp.usage_prompt, eras[-1] if eras else None,
                            f.get("snippet_max_new_tokens", 40)).rstrip("\n"),
              "```", "",
              "The snippet above was executed against the exact files in this repository before "
              "they were uploaded.", "",
              "## Intended use", "",
              "- Studying how small language models absorb historical language, spelling and style.",
              "- Teaching and demonstrations of training a GPT-2 from scratch on a custom corpus.",
              "- Generating period-flavoured text for creative or exploratory work, with a human "
              "reading the output.", "",
              "Out of scope: factual question answering, historical research claims, legal or "
              "medical advice, or any automated decision about people. The model's statements "
              "about the past are not evidence about the past.", "",
              "## Limitations and biases", "",
              "- **Period attitudes.** The sources reflect the views of their time: racism, "
              "colonialism, antisemitism, misogyny, class contempt, religious sectarianism and "
              "harsh attitudes to crime and poverty (e.g. in trial records). The model reproduces "
              "them and no filtering or alignment was applied.",
              "- **OCR and transcription noise.** Many texts come from digitised print: long s "
              "(`ſ`), ligatures, broken hyphenation, page headers and transcription errors remain "
              "and are learnt as if they were language.",
              "- **London and English only.** The corpus is English-language and centred on "
              "London; other places, languages and voices (especially people who did not write or "
              "were not recorded) are under-represented or absent.",
              "- **Uneven coverage.** Some decades and genres dominate the token count (see the "
              "period table); output quality differs by era.",
              "- **Small model.** It produces fluent-looking but frequently incoherent or false "
              "text, invents names, dates and events, and can repeat itself.", "",
              "## Licence", "",
              f"The model weights and code are released under the {lic_name} (`{inp.license}`); "
              f"see `LICENSE`. The training texts keep their own licences, listed per source in "
              f"the Sources table above and in `LICENSE`.", "",
              "## Citation", "", "```bibtex",
              f"@misc{{{_bibkey(inp.model_name)}_{year},",
              f"  title        = {{{{{inp.model_name}}}: a GPT-2 language model of historical London texts}},",
              "  author       = {{londonlm contributors}},",
              f"  year         = {{{year}}},",
              f"  howpublished = {{\\url{{https://huggingface.co/{model_id}}}}},",
              "  note         = {Trained with the londonlm pipeline}",
              "}", "```", ""]
    return "\n".join(parts)


def _span(corpus: dict | None) -> str:
    if corpus and corpus.get("year_min") is not None:
        return _years(corpus["year_min"], corpus["year_max"])
    return "roughly 1500–1900"


def _bibkey(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_").lower() or "londonlm"


# ---------------------------------------------------------------- LICENSE file
def license_text(license_id: str, holder: str = "the londonlm contributors",
                 corpus: dict | None = None, year: int | None = None) -> str:
    """The LICENSE file: the weights/code licence plus the corpus licences per source."""
    year = year or _dt.date.today().year
    name, url = LICENSES[license_id]
    if license_id == "mit":
        head = MIT_TEXT.format(year=year, holder=holder)
    elif license_id == "other":
        head = (f"Copyright (c) {year} {holder}\n\nThe model is released under custom terms "
                f"described in README.md.\n")
    else:
        head = (f"Copyright (c) {year} {holder}\n\nThe model weights and code in this repository "
                f"are licensed under the {name} ({license_id}).\nThe full licence text is at "
                f"{url}\n")
    lines = [head.rstrip("\n"), "", "-" * 72, "Training corpus licences", "-" * 72, "",
             "The licence above covers the model weights and code. The texts the model was "
             "trained on keep their own terms:", ""]
    if corpus and corpus.get("sources"):
        for src, s in corpus["sources"].items():
            lines.append(f"- {src} ({s['kind']}, {s['documents']} documents): "
                         f"{', '.join(s['licenses'])}")
    else:
        lines.append("- (corpus manifest not available when this file was written)")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- dataset card
def dataset_license(corpus: dict) -> str:
    """One Hub licence id for the dataset: the shared one when every source agrees and it
    is a known id, else ``other`` (the card then lists licences per source)."""
    lic = {l.lower() for s in corpus["sources"].values() for l in s["licenses"]}
    known = {"public-domain": "cc0-1.0", "pd": "cc0-1.0", "cc0": "cc0-1.0"}
    mapped = {known.get(l, l) for l in lic}
    if len(mapped) == 1 and next(iter(mapped)) in LICENSES:
        return next(iter(mapped))
    return "other"


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def render_dataset_card(corpus: dict, repo_id: str, pretty_name: str = "London historical texts",
                        model_repo_id: str | None = None) -> str:
    from huggingface_hub import DatasetCardData

    lic = dataset_license(corpus)
    data = DatasetCardData(
        language=["en"], license=lic, pretty_name=pretty_name,
        task_categories=["text-generation"], size_categories=[_size_category(corpus["documents"])],
        tags=["history", "historical-english", "london", "londonlm"],
        configs=[{"config_name": "default", "data_files": "manifest.jsonl"}],
    )
    span = _years(corpus["year_min"], corpus["year_max"])
    parts = ["---", data.to_yaml().rstrip("\n"), "---", "", f"# {pretty_name}", "",
             f"Historical London texts ({span}) cleaned by the londonlm pipeline: "
             f"{corpus['documents']:,} documents, {corpus['words']:,} words, "
             f"{corpus['chars']:,} characters ({corpus['train_documents']:,} train / "
             f"{corpus['validation_documents']:,} validation).", ""]
    if model_repo_id:
        parts += [f"Used to train [{model_repo_id}](https://huggingface.co/{model_repo_id}).", ""]
    parts += ["## Files", "",
              "- `manifest.jsonl`: one JSON object per document: `id`, `source`, `source_kind`, "
              "`title`, `author`, `year`, `decade`, `license`, `url`, `sha256` (of the text), "
              "`chars`, `words`, `split` (train/validation, from a hash of the id), `path`, "
              "`london`.",
              "- `texts/<id>.txt`: the cleaned UTF-8 text of each document (`path` in the "
              "manifest).", "",
              "```python",
              "import json",
              "from huggingface_hub import hf_hub_download",
              "",
              f"repo = {repo_id!r}",
              "manifest = hf_hub_download(repo, \"manifest.jsonl\", repo_type=\"dataset\")",
              "rows = [json.loads(line) for line in open(manifest, encoding=\"utf-8\")]",
              "text = open(hf_hub_download(repo, rows[0][\"path\"], repo_type=\"dataset\"), "
              "encoding=\"utf-8\").read()",
              "```", "",
              "## Sources and licences", ""] + _source_table(corpus) + [""]
    if lic == "other":
        parts += ["The sources carry different licences (see the table); check each source's "
                  "terms before redistribution.", ""]
    parts += ["## Period coverage", ""] + _decade_table(corpus) + [""]
    parts += ["## Processing", "",
              "Texts were decoded to UTF-8, cleaned of markup and boilerplate (e.g. Project "
              "Gutenberg headers), de-duplicated and filtered to the 1500–1900 period. Historical "
              "spelling is kept; OCR errors were not corrected.", "",
              "## Limitations and biases", "",
              "The texts reflect the attitudes of their time (racism, colonialism, misogyny, class "
              "and religious prejudice), contain OCR and transcription noise, and cover English "
              "and London only; the voices of people who did not write or were not recorded are "
              "missing.", ""]
    return "\n".join(parts)


def read_samples(path, limit: int = 5) -> list[dict]:
    """Samples from an evaluation ``samples.jsonl`` whatever its exact keys: the prompt
    from ``prompt`` and the text from the first of the usual generation keys."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict):
                continue
            text = next((row[k] for k in ("generated", "generated_text", "generation", "completion",
                                          "continuation", "output", "text", "sample")
                         if isinstance(row.get(k), str)), None)
            if text is None:
                continue
            settings = row.get("settings") or (f"{row['mode']} decoding, evaluation stage"
                                               if isinstance(row.get("mode"), str) else None)
            if isinstance(settings, dict):
                settings = ", ".join(f"{k}={v}" for k, v in settings.items())
            out.append({"prompt": row.get("prompt", ""), "text": text,
                        "settings": settings if isinstance(settings, str) else ""})
            if len(out) >= limit:
                break
    return out
