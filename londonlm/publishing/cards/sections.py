"""The measured sections of a model card: training data, training procedure, evaluation and
sample generations. Each states only what its inputs recorded; a missing input becomes an
explicit "not recorded" line rather than an invented value."""
from __future__ import annotations

from .format import (decade_table, era_period, flatten_numeric, fmt_num, fmt_seconds, last_parts, lookup, md_escape,
                     source_table, split_count, year_span)
from .inputs import CardInputs
from .metrics import headline_results


def hardware(run_info: dict) -> str:
    hw = run_info.get("hardware") or {}
    if hw.get("gpus"):
        gpus = hw["gpus"]
        names = sorted(set(gpus))
        return ", ".join(f"{gpus.count(n)}× {n}" for n in names)
    if hw:
        return (f"CPU only ({hw.get('cpu_cores_physical', '?')} physical cores, "
                f"{hw.get('platform', 'unknown platform')})")
    return "not recorded"


def training_section(inp: CardInputs) -> list[str]:
    ri, st = inp.run_info, inp.trainer_state
    lines = ["## Training procedure", ""]
    if not ri and not st:
        return lines + ["No `run_info.json` or `trainer_state.json` was found for this model, so "
                        "training details were not recorded.", ""]
    rows = (_run_info_rows(ri, inp.checkpoint) if ri else []) + \
        (_trainer_state_rows(st, inp.trainer_state_source) if st else [])
    return lines + ["| | |", "|---|---|"] + [f"| {k} | {md_escape(v)} |" for k, v in rows] + [""]


def _run_info_rows(ri: dict, checkpoint: str) -> list[tuple[str, str]]:
    rows = [("Preset", str(ri.get("preset") or "custom")),
            ("Published weights", f"`{checkpoint}`"),
            ("Optimizer steps", f"{fmt_num(ri.get('global_step'))} of {fmt_num(ri.get('max_steps'))}"),
            ("Tokens seen", fmt_num(ri.get("tokens_seen"))),
            ("Tokens per step", fmt_num(ri.get("tokens_per_step"))),
            ("Batch size × grad. accumulation × devices",
             f"{ri.get('batch_size')} × {ri.get('gradient_accumulation_steps')} × {ri.get('world_size', 1)}"),
            ("Peak learning rate", fmt_num(ri.get("learning_rate"))),
            ("Precision", str(ri.get("precision", "not recorded"))),
            ("Hardware", hardware(ri)),
            ("Training wall time", fmt_seconds(ri.get("train_wall_seconds"))),
            ("Throughput", f"{fmt_num(ri.get('tokens_per_second'))} tokens/s"
             if ri.get("tokens_per_second") is not None else "not recorded"),
            ("Final training loss", fmt_num(ri.get("final_train_loss"))),
            ("Final validation loss", fmt_num(ri.get("final_eval_loss"))),
            ("Final validation perplexity", fmt_num(ri.get("final_eval_perplexity"))),
            ("Seed", str(ri.get("seed")))]
    if ri.get("best_eval_loss") is not None:
        where = (f"`{last_parts(ri['best_checkpoint'])}`" if ri.get("best_checkpoint")
                 else f"step {ri['best_step']}" if ri.get("best_step") else "")
        rows.append(("Best validation loss", f"{fmt_num(ri['best_eval_loss'])}" + (f" ({where})" if where else "")))
    kept = ri.get("final_weights_step")
    if checkpoint == "final" and kept is not None and kept != ri.get("global_step"):
        # --load_best_model_at_end: final/ holds an earlier evaluation's weights
        rows.append(("Weights published", f"step {fmt_num(kept)}: the lowest validation loss "
                     f"(training went on to step {fmt_num(ri.get('global_step'))})"))
    if ri.get("resumed_from"):
        rows.append(("Resumed from", f"`{last_parts(ri['resumed_from'])}`"))
    if ri.get("parent"):
        parent = ri["parent"] if isinstance(ri["parent"], dict) else {"init_from": ri["parent"]}
        rows.append(("Initialised from (continued pre-training)",
                     f"`{last_parts(parent.get('init_from') or parent.get('path'))}`"))
    if ri.get("interrupted"):
        rows.append(("Stopped early", str(ri["interrupted"])))
    return rows


def _trainer_state_rows(st: dict, source: str | None) -> list[tuple[str, str]]:
    logs = st.get("log_history") or []
    tr = [(h.get("step"), h["loss"]) for h in logs if "loss" in h]
    ev = [(h.get("step"), h["eval_loss"]) for h in logs if "eval_loss" in h]
    src = f" ({source})" if source else ""
    rows = [(f"Trainer state{src}", f"step {fmt_num(st.get('global_step'))} of {fmt_num(st.get('max_steps'))}")]
    if tr:
        rows.append(("Logged training loss", f"{fmt_num(tr[0][1])} at step {tr[0][0]} → "
                                             f"{fmt_num(tr[-1][1])} at step {tr[-1][0]}"))
    if ev:
        rows.append(("Logged validation loss", ", ".join(f"{fmt_num(v)} (step {s})" for s, v in ev[-5:])))
    if st.get("best_metric") is not None:
        best = st.get("best_model_checkpoint")
        rows.append(("Best metric (trainer)", f"{fmt_num(st['best_metric'])}"
                     + (f" (`{last_parts(best)}`)" if best else "")))
    return rows


def evaluation_section(inp: CardInputs) -> list[str]:
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
    lines += _continuation_lines(m.get("generation"))
    sha = lookup(m, "model.weights_sha256")
    if sha:
        lines += [f"These figures were measured on exactly the weights published here (weights "
                  f"sha256 `{md_escape(sha)}`); the publisher checked the hash before staging.", ""]
    flat = flatten_numeric(m)
    if flat:
        lines += ["<details><summary>All numeric results in metrics.json "
                  f"({len(flat)} values)</summary>", "", "| Key | Value |", "|---|---:|"]
        lines += [f"| `{md_escape(k)}` | {fmt_num(v)} |" for k, v in flat.items()]
        lines += ["", "</details>", ""]
    lines += ["The full `metrics.json` is included in this repository.", ""]
    return lines


CONTINUATION_ROWS = (("rougeL", "ROUGE-L F1 vs the true continuation"),
                     ("repeated_3gram_rate", "Repeated 3-gram rate"),
                     ("anachronism_rate", "Anachronism rate (share of words)"))


def _continuation_lines(g: dict | None) -> list[str]:
    """Continuation quality with the number of texts beside each figure: a mean over four
    passages of one document is not a mean over sixteen documents."""
    if not isinstance(g, dict) or not g.get("passages"):
        return []
    cols = [c for c in ("greedy", "sampled", "reference") if isinstance(g.get(c), dict)]
    docs = g.get("documents")
    lines = [f"Continuation quality on {g['passages']} held-out passages"
             + (f" from {docs} validation document{'s' if docs != 1 else ''}" if docs is not None else "")
             + " (`reference` = the true continuations):", "",
             "| Metric | " + " | ".join(f"{c} (n={g[c].get('texts', '?')})" for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for key, name in CONTINUATION_ROWS:
        lines.append(f"| {name} | " + " | ".join(fmt_num(g[c].get(key)) if g[c].get(key) is not None
                                                 else "–" for c in cols) + " |")
    return lines + [""]


def samples_section(inp: CardInputs) -> list[str]:
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
        lines += [f"**Prompt:** `{md_escape(s.get('prompt', ''))}`"
                  + (f" ({md_escape(settings)})" if settings else ""), "",
                  "```text", text.replace("```", "'''"), "```", ""]
    return lines


def data_section(inp: CardInputs) -> list[str]:
    lines = ["## Training data", ""]
    c, ri = inp.corpus, inp.run_info or {}
    cache = ri.get("cache") or {}
    if c:
        span = year_span(c["years"])
        lines += [f"A corpus of historical London texts ({span}) assembled by the londonlm pipeline: "
                  f"**{c['documents']:,} documents** ({split_count(c, 'train'):,} train, "
                  f"{split_count(c, 'validation'):,} validation, split by a hash of the document id), "
                  f"{c['words']:,} words, {c['chars']:,} characters; "
                  f"{c['london_documents']:,} documents are London-related."]
    else:
        lines += ["The corpus manifest was not available when this card was written, so per-source "
                  "figures are omitted."]
    if cache:
        lines += ["", f"Tokens after tokenization: **{fmt_num(cache.get('tokens_train'))} train**, "
                      f"{fmt_num(cache.get('tokens_validation'))} validation"
                      + (f" (each document prefixed with its {era_period(cache.get('era_width'))} era token)"
                         if cache.get("era_tokens") else "") + "."]
    if inp.dataset_repo_id:
        lines += ["", f"The corpus (manifest and cleaned texts) is published as "
                      f"[{inp.dataset_repo_id}](https://huggingface.co/datasets/{inp.dataset_repo_id})."]
    if inp.corpus_note:
        lines += ["", f"> Note: {inp.corpus_note}"]
    lines.append("")
    if c:
        lines += ["### Sources", ""] + source_table(c) + ["", "### Period coverage", ""] \
                 + decade_table(c) + [""]
    return lines
