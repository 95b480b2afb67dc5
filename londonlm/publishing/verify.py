"""Offline verification of a staged folder, before anything is uploaded.

The folder is loaded through the project's one model interface (``londonlm.generation``:
``load_model``, ``encode_prompt``, ``generate``), then checked the way a Hub user would meet
it: every weight present in the saved file, special-token ids that agree between the configs
and the tokenizer, an embedding that covers the vocabulary, a greedy continuation of a fixed
prompt, and the card's own usage snippet (``transformers.pipeline``) executed as written.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..generation import GenerationSettings, encode_prompt, generate, load_model
from .cards.model_card import DEFAULT_PROMPT, SNIPPET_MAX_NEW_TOKENS, usage_snippet
from .staging import MODEL_FILES, SAFETENSORS_FILES, SPECIAL_IDS

REQUIRED_DOCS = ("README.md", "LICENSE")


@dataclass
class VerificationReport:
    passed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    prompt: str = DEFAULT_PROMPT
    generation: str | None = None
    snippet_output: str | None = None
    facts: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def check(self, ok: bool, what: str, why: str = "") -> bool:
        (self.passed if ok else self.failures).append(what if ok else f"{what}: {why}")
        return ok


def verify_model_folder(folder: Path, prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 20,
                        run_snippet: bool = True) -> VerificationReport:
    """Load ``folder`` offline and collect every problem found (nothing raises)."""
    folder = Path(folder)
    rep = VerificationReport(prompt=prompt)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        rep.check((folder / name).exists(), f"{name} present", "missing from the staged folder")
    rep.check(any((folder / w).exists() for w in SAFETENSORS_FILES), "model.safetensors present",
              "no safetensors weights in the staged folder")
    try:
        lm = load_model(str(folder), device="cpu")
        rep.check(True, "AutoModelForCausalLM loads with its AutoTokenizer")
    except Exception as e:
        rep.check(False, "AutoModelForCausalLM loads with its AutoTokenizer", f"{type(e).__name__}: {e}")
        return rep
    _check_weights(folder, lm.model, rep)
    _check_vocabulary(folder, lm, rep)
    ids = encode_prompt(lm.tokenizer, prompt)  # [EOT] + the prompt's text, as generation sees it
    back = lm.tokenizer.decode(ids[1:], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    rep.check(back == prompt, "tokenizer round-trips the prompt", f"decoded {back!r}")
    n_pos, tok, cfg = lm.context_length, lm.tokenizer, lm.model.config
    snippet_tokens = max(1, min(SNIPPET_MAX_NEW_TOKENS, n_pos - len(ids) - 1))  # room for an era token
    rep.facts = {"n_layer": getattr(cfg, "n_layer", None), "n_head": getattr(cfg, "n_head", None),
                 "n_embd": getattr(cfg, "n_embd", None), "n_positions": n_pos,
                 "vocab_size": cfg.vocab_size, "tokenizer_size": len(tok), "parameters": lm.n_params,
                 "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                 "pad_token_id": tok.pad_token_id, "era_tokens": lm.eras,
                 "era_width": lm.era_width,
                 "snippet_max_new_tokens": snippet_tokens}
    if rep.failures:  # generating with mismatched ids would only add noise to the report
        return rep
    try:
        greedy = GenerationSettings(max_new_tokens=max(1, min(max_new_tokens, n_pos - len(ids))),
                                    temperature=0.0, seed=0)
        sample = generate(lm, prompt, greedy)[0]
        rep.check(sample.new_tokens >= 1, "generates from the fixed prompt (greedy)", "no new tokens")
        rep.generation = prompt + sample.text
    except Exception as e:
        rep.check(False, "generates from the fixed prompt (greedy)", f"{type(e).__name__}: {e}")
    if run_snippet:
        _run_snippet(usage_snippet(str(folder), prompt, lm.eras[-1] if lm.eras else None, snippet_tokens), rep)
    return rep


def _saved_tensor_names(folder: Path) -> set[str]:
    if (folder / "model.safetensors").exists():
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            return set(f.keys())
    return set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"])


def _check_weights(folder: Path, model, rep: VerificationReport) -> None:
    """Every parameter comes from the saved file: transformers fills a missing one with random
    values and only warns. A tied copy (lm_head = wte) shares its storage with a saved tensor."""
    try:
        saved = _saved_tensor_names(folder)
    except Exception as e:
        rep.check(False, "every weight loads from model.safetensors", f"unreadable: {type(e).__name__}: {e}")
        return
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    bare = lambda name: name.removeprefix(prefix)  # noqa: E731 - files saved from the base model lack it
    state = model.state_dict()
    saved_bare = {bare(n) for n in saved}
    loaded = {t.data_ptr() for n, t in state.items() if bare(n) in saved_bare}
    missing = sorted(n for n, t in state.items() if bare(n) not in saved_bare and t.data_ptr() not in loaded)
    state_bare = {bare(n) for n in state}
    unexpected = sorted(n for n in saved if bare(n) not in state_bare)
    bad = {k: v[:5] for k, v in (("missing_keys", missing), ("unexpected_keys", unexpected)) if v}
    rep.check(not bad, "every weight loads from model.safetensors",
              "; ".join(f"{k}: {', '.join(v)}" for k, v in bad.items())
              + " (a model with randomly initialised parts must not be published)")


def _check_vocabulary(folder: Path, lm, rep: VerificationReport) -> None:
    cfg, tok = lm.model.config, lm.tokenizer
    check_special_ids(folder, tok, rep)
    rows = lm.model.get_input_embeddings().weight.shape[0]
    rep.check(cfg.vocab_size >= len(tok), "config vocab_size >= len(tokenizer)",
              f"vocab_size {cfg.vocab_size} < {len(tok)} tokenizer entries; token ids past the "
              f"embedding would crash")
    rep.check(rows == cfg.vocab_size, "embedding rows == config vocab_size",
              f"{rows} embedding rows but config says {cfg.vocab_size}")


def _ids_match(value, expected: int) -> bool:
    return expected in value if isinstance(value, list) else value == expected


def check_special_ids(folder: Path, tokenizer, report: VerificationReport) -> None:
    """bos/eos/pad ids in config.json and generation_config.json (raw JSON, so library
    defaults cannot hide a missing key) must equal the tokenizer's."""
    for fname in MODEL_FILES:
        try:
            cfg = json.loads((folder / fname).read_text())
        except Exception as e:
            report.check(False, f"{fname} readable", str(e))
            continue
        for key in SPECIAL_IDS:
            expected = getattr(tokenizer, key, None)
            if expected is None:
                continue
            got = cfg.get(key)
            report.check(got is not None and _ids_match(got, expected),
                         f"{fname} {key} matches the tokenizer",
                         f"{fname} has {key}={got!r} but the tokenizer's is {expected} "
                         f"({getattr(tokenizer, key.replace('_id', ''), '?')!r})")


def _run_snippet(code: str, rep: VerificationReport) -> None:
    """Execute the card's usage snippet as written (pointed at the staged folder)."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(code, "<model card usage snippet>", "exec"), {"__name__": "__snippet__"})
        rep.snippet_output = buf.getvalue().strip()
        rep.check(bool(rep.snippet_output), "model card usage snippet runs", "printed nothing")
    except Exception as e:
        rep.check(False, "model card usage snippet runs", f"{type(e).__name__}: {e}")


def check_docs(folder: Path, license_id: str, report: VerificationReport) -> None:
    """README.md has parseable YAML metadata with the keys the Hub needs; LICENSE exists."""
    import yaml

    for name in REQUIRED_DOCS:
        report.check((Path(folder) / name).exists(), f"{name} present", "missing")
    readme = Path(folder) / "README.md"
    if not readme.exists():
        return
    text = readme.read_text(encoding="utf-8")
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    if not report.check(m is not None, "README.md has YAML front matter", "no '---' block"):
        return
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as e:
        report.check(False, "README.md metadata parses", str(e).replace("\n", " "))
        return
    for key, want in (("license", license_id), ("library_name", "transformers"),
                      ("pipeline_tag", "text-generation"), ("language", "en")):
        got = meta.get(key)
        report.check(got == want or (isinstance(got, list) and want in got),
                     f"README.md metadata {key}", f"expected {want!r}, found {got!r}")
