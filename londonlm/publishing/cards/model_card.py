"""The model card (README.md): YAML metadata with the model-index, the model's facts, the
measured sections (``sections``), a usage snippet that the publisher runs before uploading,
intended use, limitations, licence and citation.

Everything here is pure text rendering from facts gathered elsewhere (``run_info.json``,
``trainer_state.json``, ``evaluation/metrics.json``, the corpus summary, the verified model
folder), so a card can only state numbers that were actually measured.
"""
from __future__ import annotations

import datetime as _dt

from ...evaluation import could_not_know_section
from ...generation import GenerationSettings
from .format import era_period, fmt_num, md_escape, year_span
from .inputs import DEFAULT_PROMPT, CardInputs
from .licenses import LICENSES
from .metrics import model_index_results
from .sections import data_section, evaluation_section, samples_section, training_section

SNIPPET_MAX_NEW_TOKENS = 40


def usage_snippet(model_id: str, prompt: str = DEFAULT_PROMPT, era_token: str | None = None,
                  max_new_tokens: int = SNIPPET_MAX_NEW_TOKENS) -> str:
    """Python that loads ``model_id`` and samples with the project's defaults
    (``GenerationSettings``); the publisher runs this exact code against the staged folder
    before uploading, so the card's snippet is known to work."""
    text = prompt if era_token is None else era_token + prompt
    s = GenerationSettings()
    return (
        "from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline, set_seed\n"
        "\n"
        f"model_id = {model_id!r}\n"
        "tokenizer = AutoTokenizer.from_pretrained(model_id)\n"
        "model = AutoModelForCausalLM.from_pretrained(model_id)\n"
        "generator = pipeline(\"text-generation\", model=model, tokenizer=tokenizer)\n"
        "set_seed(42)\n"
        f"out = generator({text!r}, max_new_tokens={max_new_tokens}, do_sample=True,\n"
        f"                temperature={s.temperature}, top_p={s.top_p}, "
        f"repetition_penalty={s.repetition_penalty})\n"
        "print(out[0][\"generated_text\"])\n"
    )


def render_model_card(inp: CardInputs) -> str:
    eras = inp.model_facts.get("era_tokens") or []
    parts = ["---", _front_matter(inp).rstrip("\n"), "---", "", *_details(inp)]
    parts += data_section(inp) + could_not_know_section((inp.run_info or {}).get("corpus_time"), inp.leakage)
    parts += training_section(inp) + evaluation_section(inp) + samples_section(inp)
    model_id = inp.repo_id or inp.model_name
    parts += ["## How to use", "", "```python",
              usage_snippet(model_id, inp.usage_prompt, eras[-1] if eras else None,
                            inp.model_facts.get("snippet_max_new_tokens", SNIPPET_MAX_NEW_TOKENS)).rstrip("\n"),
              "```", "",
              "The snippet above was executed against the exact files in this repository before "
              "they were uploaded.", ""]
    parts += INTENDED_USE + LIMITATIONS + _licence(inp) + _citation(inp.model_name, model_id)
    return "\n".join(parts)


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


def _licence_name(inp: CardInputs) -> str:
    return LICENSES.get(inp.license, (inp.license, ""))[0]


def _details(inp: CardInputs) -> list[str]:
    f, ri = inp.model_facts, inp.run_info or {}
    eras = f.get("era_tokens") or []
    span = year_span(inp.corpus["years"]) if inp.corpus and inp.corpus["years"][0] is not None \
        else "roughly 1500–1900"
    lines = [f"# {inp.model_name}", "",
             f"A GPT-2-style causal language model trained **from scratch** on historical London "
             f"texts ({span}) with the londonlm pipeline. It "
             f"continues text in the style of its sources: early modern and Georgian prose, "
             f"trial records, diaries and plays. It is a small research and teaching model, "
             f"not an instruction-following assistant.", "",
             "## Model details", "",
             "| | |", "|---|---|",
             "| Architecture | `GPT2LMHeadModel` (decoder-only transformer, tied embeddings) |",
             f"| Layers × heads × width | {f.get('n_layer')} × {f.get('n_head')} × {f.get('n_embd')} |",
             f"| Context length | {f.get('n_positions')} tokens |",
             f"| Parameters | {fmt_num(ri.get('parameters') or f.get('parameters'))} |",
             f"| Tokenizer | byte-level BPE, {fmt_num(f.get('tokenizer_size'))} tokens"
             + (f" (embedding padded to {fmt_num(f.get('vocab_size'))} rows)"  # older saves kept padded rows
                if (f.get('vocab_size') or 0) > (f.get('tokenizer_size') or 0) else "") + " |",
             f"| Special tokens | `<\\|endoftext\\|>` = bos/eos (id {f.get('eos_token_id')}), "
             f"pad id {f.get('pad_token_id')} |",
             f"| Era tokens | {', '.join(f'`{md_escape(e)}`' for e in eras) if eras else 'none'} |",
             f"| Licence (weights and code) | {_licence_name(inp)} (`{inp.license}`) |", ""]
    if eras:
        lines += [f"Era tokens: during training each document was prefixed with the token of its "
                  f"{era_period(f.get('era_width'))}, so putting e.g. `{eras[0]}` before a prompt nudges the style "
                  f"toward that period.", ""]
    return lines


INTENDED_USE = [
    "## Intended use", "",
    "- Studying how small language models absorb historical language, spelling and style.",
    "- Teaching and demonstrations of training a GPT-2 from scratch on a custom corpus.",
    "- Generating period-flavoured text for creative or exploratory work, with a human "
    "reading the output.", "",
    "Out of scope: factual question answering, historical research claims, legal or "
    "medical advice, or any automated decision about people. The model's statements "
    "about the past are not evidence about the past.", ""]
LIMITATIONS = [
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
    "text, invents names, dates and events, and can repeat itself.", ""]


def _licence(inp: CardInputs) -> list[str]:
    return ["## Licence", "",
            f"The model weights and code are released under the {_licence_name(inp)} (`{inp.license}`); "
            f"see `LICENSE`. The training texts keep their own licences, listed per source in "
            f"the Sources table above and in `LICENSE`.", ""]


def _citation(model_name: str, model_id: str) -> list[str]:
    year = _dt.date.today().year
    key = "".join(ch if ch.isalnum() else "_" for ch in model_name).strip("_").lower() or "londonlm"
    return ["## Citation", "", "```bibtex",
            f"@misc{{{key}_{year},",
            f"  title        = {{{{{model_name}}}: a GPT-2 language model of historical London texts}},",
            "  author       = {{londonlm contributors}},",
            f"  year         = {{{year}}},",
            f"  howpublished = {{\\url{{https://huggingface.co/{model_id}}}}},",
            "  note         = {Trained with the londonlm pipeline}",
            "}", "```", ""]
