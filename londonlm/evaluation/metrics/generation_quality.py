"""Continuation quality: how a model continues held-out passages.

For passages cut from validation documents (spread over as many documents as there are,
then several per document from different stretches of it, so a split of one long document
still gives the passages asked for; the counts are recorded beside every figure), the model
continues the first ``prompt_tokens`` tokens (greedy and/or sampled, via ``model.generate``) and the
continuation is compared with the text that really followed:

Decoding uses the project's one set of sampling defaults
(:class:`londonlm.generation.GenerationSettings`), greedy mode the same settings at
temperature 0, passed in full so a model folder's own generation_config.json cannot change
them: every model compared is decoded alike. Passage text is encoded as plain text.

- ROUGE-1/2/L F1 (``rouge-score``) against the true continuation. This is a weak but honest
  signal: it compares with the real next text, never with the prompt itself.
- repetition: distinct-n (unique n-grams / n-grams) and the repeated n-gram rate (share of
  n-grams already seen earlier in the same text), the classic degenerate-loop detector.
- anachronism rate: share of generated words found in ``londonlm/evaluation/data/anachronisms.txt``
  (post-1900 coinages without older senses), with the same rate on the true continuations
  as the reference level.
- period-style markers per 1,000 words (archaic pronouns and verb forms, -eth verbs,
  'tis/'twas, long s), also beside the true continuations' rate.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import torch

from ...generation import GenerationSettings, encode_prompt, encode_text, to_generation_config

WORD = re.compile(r"[A-Za-zſ][A-Za-zſ']*")
ARCHAIC_WORDS = frozenset({
    "thou", "thee", "thy", "thine", "ye", "hath", "doth", "dost", "hast", "wilt",
    "shalt", "canst", "wouldst", "couldst", "shouldst", "didst", "hadst", "tis", "twas",
    "twere", "methinks", "prithee", "whilst", "betwixt", "ere", "oft", "nay",
    "wherefore", "hither", "thither", "whither", "thence", "whence", "anon", "forsooth",
    "verily", "quoth", "mayhap", "perchance", "albeit", "fain"})
# ("art" and "hence" are left out: too common in modern English to mark period style)
# -eth words that are not archaic verb forms
ETH_STOP = frozenset({"beneath", "teeth", "seth", "elizabeth", "breath", "death", "heath",
                      "meth", "bequeath", "sheath", "wreath", "underneath", "kenneth", "macbeth",
                      "japheth", "nazareth", "lilith", "teth", "beth"})


def default_anachronism_path() -> Path:
    return Path(__file__).resolve().parents[1] / "data" / "anachronisms.txt"  # evaluation/data/


def load_wordlist(path: str | Path | None = None) -> frozenset[str]:
    """Lower-case words from a list file; ``#`` starts a comment."""
    path = Path(path) if path else default_anachronism_path()
    words = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        w = line.split("#", 1)[0].strip().lower()
        if w:
            words.add(w)
    return frozenset(words)


def words_of(text: str) -> list[str]:
    return [w.lower().strip("'") or w.lower() for w in WORD.findall(text)]


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(tokens: Sequence[str], n: int) -> float | None:
    grams = ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else None


def repeated_ngram_rate(tokens: Sequence[str], n: int) -> float | None:
    """Share of n-grams that already occurred earlier in the same text."""
    grams = ngrams(tokens, n)
    if not grams:
        return None
    seen, rep = set(), 0
    for g in grams:
        rep += g in seen
        seen.add(g)
    return rep / len(grams)


def anachronisms(text: str, wordlist: frozenset[str]) -> tuple[int, int, list[str]]:
    """(hits, words, the words hit) for ``text``."""
    ws = words_of(text)
    hits = [w for w in ws if w in wordlist]
    return len(hits), len(ws), hits


def style_markers(text: str) -> dict[str, int]:
    """Counts of period-style markers in ``text``."""
    ws = words_of(text)
    return {
        "words": len(ws),
        "archaic_words": sum(w in ARCHAIC_WORDS for w in ws),
        "eth_verbs": sum(len(w) > 4 and w.endswith("eth") and w not in ETH_STOP
                         and not w.endswith("tieth") for w in ws),  # not ordinals (twentieth)
        "long_s": text.count("ſ"),
    }


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (``rouge-score``, no stemming) over pairs."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    totals = Counter()
    for p, r in zip(predictions, references):
        s = scorer.score(r, p)  # (target, prediction)
        for k, v in s.items():
            totals[k] += v.fmeasure
    n = max(1, len(predictions))
    return {k: totals[k] / n for k in ("rouge1", "rouge2", "rougeL")}


def _snap_to_word(text: str, c: int) -> int:
    """The first character after whitespace at or after ``c`` (so a passage never opens on
    half a word); ``c`` itself at the start or when no whitespace follows soon."""
    if c == 0:
        return 0
    m = re.search(r"\s", text[c:c + 200])
    return c + m.end() if m else c


def _doc_passages(tokenizer, text: str, k: int, need: int, rng: random.Random) -> list[list[int]]:
    """Up to ``k`` non-overlapping windows of ``need`` tokens from one document, spread over
    all of it, in document order. A long document is cut into ``k`` equal stretches with one
    window at a random place in each (only that window is tokenized: a document can be a
    whole book); a short one is tokenized whole and ``k`` of its ``need``-token slots picked."""
    window = need * 40 + 2000  # characters: ample for ``need`` tokens of any prose
    if len(text) <= k * window:
        ids = encode_text(tokenizer, text)
        slots = len(ids) // need
        if slots == 0:
            return []
        shift = rng.randrange(0, len(ids) - slots * need + 1)
        picks = sorted(rng.sample(range(slots), min(k, slots)))
        return [ids[shift + i * need:shift + (i + 1) * need] for i in picks]
    out, stretch = [], len(text) / k
    for j in range(k):
        lo = int(j * stretch)
        c = _snap_to_word(text, rng.randrange(lo, max(lo, int((j + 1) * stretch) - window) + 1))
        ids = encode_text(tokenizer, text[c:c + window])
        if len(ids) >= need:
            out.append(ids[:need])
    return out


def _quotas(order: list[int], n: int, got: dict[int, int], full: set[int], quota: dict[int, int]) -> bool:
    """Hand the ``n`` passages still missing to the documents that are not full, fewest
    first (so more documents are covered before any gives a second passage); False when
    none is left."""
    open_docs = sorted((d for d in order if d not in full), key=lambda d: quota.get(d, 0))
    missing = n - sum(got.values())
    if not open_docs or missing <= 0:
        return False
    for i in range(missing):
        d = open_docs[i % len(open_docs)]
        quota[d] = quota.get(d, 0) + 1
    return True


def make_passages(tokenizer, texts: Sequence[str], n: int, prompt_tokens: int = 48,
                  continuation_tokens: int = 48, seed: int = 0) -> list[dict]:
    """Up to ``n`` (prompt, reference) pairs from documents long enough to hold both,
    deterministic for a seed. The passages are spread over as many documents as there are
    (in a random order) and then several per document, from different stretches of it, so
    a validation split of one long document still gives ``n`` passages, not one."""
    rng = random.Random(seed)
    need = prompt_tokens + continuation_tokens
    order = list(range(len(texts)))
    rng.shuffle(order)
    quota: dict[int, int] = {}
    found: dict[int, list] = {}
    full: set[int] = set()
    while _quotas(order, n, {d: len(v) for d, v in found.items()}, full, quota):
        for d, k in quota.items():
            if d in full or len(found.get(d, ())) == k:
                continue
            # each (document, count) has its own generator: the result depends on the quotas
            # reached, not on how many rounds it took to reach them
            found[d] = _doc_passages(tokenizer, texts[d], k, need, random.Random(f"{seed}:{d}:{k}"))
            if len(found[d]) < k:
                full.add(d)
    return [{"doc": d, "passage": i, "prompt": tokenizer.decode(ids[:prompt_tokens]),
             "reference": tokenizer.decode(ids[prompt_tokens:])}
            for d in order if d in found for i, ids in enumerate(found[d])]


def decoding_settings(do_sample: bool, max_new_tokens: int, settings: GenerationSettings | None = None,
                      **overrides) -> GenerationSettings:
    """The settings one evaluation mode decodes with: ``settings`` (default: the project's
    defaults) with ``overrides`` (None = keep), at temperature 0 when not sampling."""
    s = (settings or GenerationSettings()).updated(max_new_tokens=max_new_tokens, **overrides)
    return s if do_sample else replace(s, temperature=0.0)


def generate_continuations(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int,
                           do_sample: bool, temperature: float | None = None,
                           top_p: float | None = None, seed: int = 0, batch_size: int = 8,
                           device: str = "cpu", prefix_ids: Sequence[int] = (),
                           settings: GenerationSettings | None = None) -> list[str]:
    """Continuations of ``prompts`` (text after the prompt only), batched with left padding,
    decoded with :func:`decoding_settings`."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    cfg = to_generation_config(
        decoding_settings(do_sample, max_new_tokens, settings, temperature=temperature, top_p=top_p),
        pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    ctx = getattr(model.config, "n_positions", None) or 1024
    keep = max(1, ctx - max_new_tokens)
    model.eval()
    model.to(device)
    outs: list[str] = []
    torch.manual_seed(seed)
    with torch.inference_mode():
        for s in range(0, len(prompts), batch_size):
            enc = [list(prefix_ids) + encode_text(tokenizer, p) for p in prompts[s:s + batch_size]]
            enc = [e[-keep:] for e in enc]
            width = max(len(e) for e in enc)
            ids = torch.full((len(enc), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, e in enumerate(enc):
                ids[i, width - len(e):] = torch.tensor(e)
                mask[i, width - len(e):] = 1
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 generation_config=cfg)
            for row in gen[:, width:]:
                outs.append(tokenizer.decode(row.tolist(), skip_special_tokens=True))
    return outs


def text_statistics(texts: Sequence[str], wordlist: frozenset[str]) -> dict:
    """Repetition, anachronism and style figures pooled over ``texts``."""
    words_total = hits_total = 0
    hit_words: Counter = Counter()
    style = Counter()
    d1, d2, d3, r3, r4 = [], [], [], [], []
    for t in texts:
        h, w, hw = anachronisms(t, wordlist)
        hits_total += h
        words_total += w
        hit_words.update(hw)
        style.update(style_markers(t))
        ws = words_of(t)
        for lst, v in ((d1, distinct_n(ws, 1)), (d2, distinct_n(ws, 2)), (d3, distinct_n(ws, 3)),
                       (r3, repeated_ngram_rate(ws, 3)), (r4, repeated_ngram_rate(ws, 4))):
            if v is not None:
                lst.append(v)

    def mean(x):
        return sum(x) / len(x) if x else None

    per_k = 1000 / words_total if words_total else 0.0
    return {
        "texts": len(texts), "words": words_total,
        "distinct_1": mean(d1), "distinct_2": mean(d2), "distinct_3": mean(d3),
        "repeated_3gram_rate": mean(r3), "repeated_4gram_rate": mean(r4),
        "anachronism_rate": hits_total / words_total if words_total else None,
        "anachronism_hits": dict(hit_words.most_common(20)),
        "archaic_words_per_1k": style["archaic_words"] * per_k,
        "eth_verbs_per_1k": style["eth_verbs"] * per_k,
        "long_s_per_1k_words": style["long_s"] * per_k,
    }


def evaluate_generation(model, tokenizer, texts: Sequence[str], *, n_passages: int = 8,
                        prompt_tokens: int = 48, continuation_tokens: int = 48,
                        modes: Sequence[str] = ("greedy", "sampled"), seed: int = 0,
                        device: str = "cpu", anachronism_path: str | Path | None = None,
                        temperature: float | None = None, top_p: float | None = None,
                        settings: GenerationSettings | None = None) -> tuple[dict, list[dict]]:
    """(metrics, samples). Metrics per decoding mode plus the same text statistics on the true
    continuations (``reference``) so each generated figure has its baseline beside it."""
    ctx = getattr(model.config, "n_positions", None) or 1024
    if prompt_tokens + continuation_tokens > ctx:
        prompt_tokens = max(1, ctx - continuation_tokens)
        if prompt_tokens + continuation_tokens > ctx:
            continuation_tokens = ctx // 2
            prompt_tokens = ctx - continuation_tokens
    wordlist = load_wordlist(anachronism_path)
    passages = make_passages(tokenizer, texts, n_passages, prompt_tokens, continuation_tokens, seed)
    refs = [p["reference"] for p in passages]
    per_doc = Counter(p["doc"] for p in passages)
    metrics: dict = {"passages": len(passages), "passages_requested": n_passages,
                     "documents": len(per_doc), "documents_available": len(texts),
                     "max_passages_per_document": max(per_doc.values(), default=0),
                     "prompt_tokens": prompt_tokens, "continuation_tokens": continuation_tokens,
                     "sampling": _sampling_record(decoding_settings(
                         True, continuation_tokens, settings, temperature=temperature, top_p=top_p)),
                     "reference": text_statistics(refs, wordlist)}
    samples: list[dict] = []
    if not passages:
        return metrics, samples
    start = encode_prompt(tokenizer, "")  # [EOT]: the start of a document, as in training
    for mode in modes:
        gens = generate_continuations(model, tokenizer, [p["prompt"] for p in passages],
                                      max_new_tokens=continuation_tokens,
                                      do_sample=(mode == "sampled"), temperature=temperature,
                                      top_p=top_p, seed=seed, device=device, prefix_ids=start,
                                      settings=settings)
        m = text_statistics(gens, wordlist)
        m.update(rouge(gens, refs))
        metrics[mode] = m
        for p, g in zip(passages, gens):
            samples.append({"kind": "continuation", "mode": mode, "doc": p["doc"],
                            "passage": p["passage"], "prompt": p["prompt"], "reference": p["reference"],
                            "generated": g})
    return metrics, samples


def _sampling_record(s: GenerationSettings) -> dict:
    d = asdict(s)
    return {k: d[k] for k in ("temperature", "top_p", "top_k", "repetition_penalty",
                              "no_repeat_ngram_size")}
