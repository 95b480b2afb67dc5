"""Leakage probes: does a model trained on text up to a cutoff year know what came after it?

A time-locked model is only as honest as its corpus dating. A document misdated by a century,
a modern preface or an editor's footnote lets post-cutoff knowledge in, and nothing in the
training loss would show it. These probes look at the model's behaviour instead:

- **Facts** (``data/leakage_facts.jsonl``): dated multiple-choice items about London and England
  1500-1900, the native probe schema of :mod:`.probes` plus ``year`` (when the fact came to be
  or became knowable) and ``source`` (a public reference). Distractors are real names and things
  of the same kind, mostly from before the fact, so a model that never read about the fact has
  no reason to prefer the answer. Accuracy is split at the cutoff: above chance after it means
  the model has probably read post-cutoff text (the flag); above chance before it shows the
  probe can see knowledge in this model at all.
- **New words** (``data/leakage_words.jsonl``): words first recorded in a known year, each
  against four older control words of similar length. A model that never met a word finds it
  stranger than its controls; the report gives each side's mean *share* (the fraction of
  controls more surprising than the word) with an interval. It is reported, not flagged on:
  spelling and tokenization move a share as well as knowledge does (a word the tokenizer never
  saw is cut into more pieces, which costs bytes even in an untrained model: the test suite's
  random model with its toy tokenizer puts the shipped after-1750 words near 0.25), so the
  sides are read against each other and against other models, not against 0.5.

User files with the same schema replace either set. Scores come from the same log-likelihood
machinery as the probes, so numbers agree with ``05_evaluation`` and lm-eval's
``london_leakage`` task.

A result is only worth something with its uncertainty beside it: a few dozen four-way items
put a 95% interval of ±15 points around any accuracy, so every accuracy here carries a Wilson
interval (it stays inside [0, 1] and behaves at 0 and n, where the normal interval does not)
and an exact one-sided p-value against chance, computed from the binomial (Poisson-binomial
when items have different numbers of choices) tail rather than a normal approximation that is
poor in the small-n, far-tail cases that matter most. How a result reads (its Markdown and
one-line summary) is the report's: :mod:`londonlm.evaluation.report`.
"""
from __future__ import annotations

import argparse
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ...core import LondonLMError
from ...core import year as cli_year
from .probes import (MCItem, ProbeFormatError, continuation_logprobs, jsonl_objects, parse_item,
                     require_keys, score_items)

DATA = Path(__file__).resolve().parents[1] / "data"  # evaluation/data/
LEAKAGE_FACTS = DATA / "leakage_facts.jsonl"
LEAKAGE_WORDS = DATA / "leakage_words.jsonl"
CATEGORIES = ("events", "inventions", "people", "places", "prices", "institutions")
WORD_KEYS = ("id", "word", "year", "controls", "context")
ALPHA = 0.05       # a one-sided p below this counts as "above chance"
Z95 = 1.959963984540054  # the standard normal's 97.5% point: two-sided 95% intervals
RULES = ("per_byte", "sum")  # per_byte decides (tokenizer-independent); sum is kept beside it
PRIMARY = RULES[0]

__all__ = ["CATEGORIES", "DatedFact", "DatedWord", "LEAKAGE_FACTS", "LEAKAGE_WORDS", "LeakageError",
           "load_leakage_facts", "load_leakage_words", "run_leakage_probes"]


class LeakageError(LondonLMError, ValueError):
    """A malformed leakage file (the message names the file and line) or a bad argument."""


@dataclass
class DatedFact:
    item: MCItem
    year: int
    source: str = ""


@dataclass
class DatedWord:
    id: str
    word: str
    year: int
    controls: list[str]
    context: str
    source: str = ""


# --------------------------------------------------------------------------- files

def _year(obj: dict, where: str) -> int:
    if "year" not in obj:
        raise LeakageError(f"{where}: missing key 'year' (the year the item became knowable)")
    year = obj["year"]
    # a bool is an int to Python; a string year would sort wrongly against the cutoff
    if isinstance(year, bool) or not isinstance(year, int):
        raise LeakageError(f"{where}: 'year' must be an integer, got {year!r}")
    try:  # the project's year rule (the --cutoff_year type): a year outside it is a typo
        return cli_year(str(year))
    except argparse.ArgumentTypeError as e:
        raise LeakageError(f"{where}: 'year' {e}") from None


def _source(obj: dict, where: str) -> str:
    source = obj.get("source", "")
    if not isinstance(source, str):
        raise LeakageError(f"{where}: 'source' must be a string, got {source!r}")
    return source


def _checked(items: list, path: Path) -> list:
    if not items:
        raise LeakageError(f"{path}: no items")
    return items


def load_leakage_facts(path: str | Path | None = None) -> list[DatedFact]:
    """Read and validate a dated multiple-choice file (the shipped one by default)."""
    path = Path(path) if path is not None else LEAKAGE_FACTS
    facts, seen = [], set()
    for where, obj in jsonl_objects(path, LeakageError, "leakage file"):
        try:
            item = parse_item(obj, where)
        except ProbeFormatError as e:  # one error type for every leakage file problem
            raise LeakageError(str(e)) from None
        fact = DatedFact(item, _year(obj, where), _source(obj, where))
        if item.id in seen:
            raise LeakageError(f"{where}: duplicate id {item.id!r}")
        seen.add(item.id)
        facts.append(fact)
    return _checked(facts, path)


def _word(obj: dict, where: str) -> DatedWord:
    require_keys(obj, WORD_KEYS, ("id", "word", "context"), where, LeakageError)
    word, controls = obj["word"].strip(), obj["controls"]
    if not isinstance(controls, list) or not controls or \
            not all(isinstance(c, str) and c.strip() for c in controls):
        raise LeakageError(f"{where}: 'controls' must be a non-empty list of non-empty strings")
    controls = [c.strip() for c in controls]
    if len(set(controls)) != len(controls) or word in controls:
        raise LeakageError(f"{where}: 'controls' must be distinct and must not contain the word")
    return DatedWord(obj["id"], word, _year(obj, where), controls, obj["context"],
                     _source(obj, where))


def load_leakage_words(path: str | Path | None = None) -> list[DatedWord]:
    """Read and validate a first-attestation word file (the shipped one by default)."""
    path = Path(path) if path is not None else LEAKAGE_WORDS
    words, seen = [], set()
    for where, obj in jsonl_objects(path, LeakageError, "leakage file"):
        w = _word(obj, where)
        if w.id in seen:
            raise LeakageError(f"{where}: duplicate id {w.id!r}")
        seen.add(w.id)
        words.append(w)
    return _checked(words, path)


# --------------------------------------------------------------------------- statistics

def wilson_interval(k: int, n: int, z: float = Z95) -> list[float] | None:
    """The Wilson score interval for ``k`` successes in ``n`` trials (None when n is 0)."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def tail_probability(k: int, probs: Sequence[float]) -> float:
    """P(X >= k) where X is the number of successes of independent trials with success
    probabilities ``probs`` (the exact binomial tail when they are all equal)."""
    if k <= 0:
        return 1.0
    if k > len(probs):
        return 0.0
    dist = [1.0]  # dist[j] = P(j successes among the trials so far)
    for p in probs:
        nxt = [0.0] * (len(dist) + 1)
        for j, q in enumerate(dist):
            nxt[j] += q * (1 - p)
            nxt[j + 1] += q * p
        dist = nxt
    return min(1.0, math.fsum(dist[k:]))


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the one-sided p-value of k right answers out of n
    when each is right by chance with probability p."""
    return tail_probability(k, [p] * n)


def accuracy_summary(correct: Sequence[bool], chances: Sequence[float]) -> dict:
    """n, correct, accuracy, 95% Wilson interval, p-value of "better than chance"."""
    n, k = len(correct), sum(bool(c) for c in correct)
    if n == 0:
        return {"correct": 0, "accuracy": None, "ci95": None, "p_value": None,
                "above_chance": False}
    p_value = tail_probability(k, list(chances))
    return {"correct": k, "accuracy": k / n, "ci95": wilson_interval(k, n), "p_value": p_value,
            "above_chance": p_value < ALPHA}


def side_summary(rows: Sequence[dict]) -> dict:
    """Per-rule summaries of scored fact rows (each with ``correct`` per rule and ``chance``)."""
    chances = [r["chance"] for r in rows]
    out = {"n": len(rows), "chance": sum(chances) / len(rows) if rows else None}
    for rule in RULES:
        out[rule] = accuracy_summary([r["correct"][rule] for r in rows], chances)
    return out


def mean_interval(values: Sequence[float], z: float = Z95) -> dict:
    """Mean with a normal-approximation 95% interval (sample standard deviation), clipped to
    [0, 1] because the values averaged here are shares; no interval below two values."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "ci95": None}
    mean = math.fsum(values) / n
    if n < 2:
        return {"n": n, "mean": mean, "ci95": None}
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "ci95": [max(0.0, mean - half), min(1.0, mean + half)]}


def format_p(p) -> str:
    """A p-value as the verdict and the report write it."""
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def verdict(before: dict, after: dict, cutoff_year: int | None) -> tuple[bool, str]:
    """(flag, one line): flagged when after-cutoff accuracy is significantly above chance."""
    if cutoff_year is None:
        return False, "no cutoff year: every item counts as before the cutoff, so nothing tests leakage"
    if not after["n"]:
        return False, f"no fact dated after {cutoff_year}, so nothing tests leakage"
    p = after[PRIMARY]["p_value"]
    if after[PRIMARY]["above_chance"]:
        return True, f"WARNING: after-cutoff accuracy is above chance (p={format_p(p)})"
    return False, "no sign of post-cutoff knowledge"


# --------------------------------------------------------------------------- scoring

def spread(items: Sequence, limit: int | None) -> list:
    """At most ``limit`` items, evenly spaced through the file: the shipped files run in date
    order, so a small limit still spans 1500-1900 (the first N would all be Tudor)."""
    if limit is None:
        return list(items)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise LeakageError(f"limit must be a positive integer or None, got {limit!r}")
    if limit >= len(items):
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


def side_of(year: int, cutoff_year: int | None) -> str:
    """``before`` (the year is at or before the cutoff, or there is none) or ``after``."""
    return "before" if cutoff_year is None or year <= cutoff_year else "after"


def half_century(year: int) -> str:
    start = year // 50 * 50
    return f"{start}-{start + 49}"


def score_facts(lm, facts: Sequence[DatedFact], cutoff_year: int | None, *,
                batch_size: int = 32) -> dict:
    """Each fact scored by :func:`.probes.score_items`, split at the cutoff, summarised."""
    scored = score_items(lm.model, lm.tokenizer, [f.item for f in facts], batch_size=batch_size,
                         device=getattr(lm, "device", "cpu"))
    rows = []
    for fact, row in zip(facts, scored["items"]):
        rows.append({"id": fact.item.id, "category": fact.item.category, "year": fact.year,
                     "side": side_of(fact.year, cutoff_year), "answer": fact.item.answer,
                     "chance": 1 / len(fact.item.choices),
                     "pred": {r: row["pred"][r] for r in RULES},
                     "correct": {r: bool(row["correct"][r]) for r in RULES}})
    sides = {s: side_summary([r for r in rows if r["side"] == s]) for s in ("before", "after")}
    by_cat: dict[str, dict] = defaultdict(dict)
    for cat in sorted({r["category"] for r in rows}):
        for s in ("before", "after"):
            by_cat[cat][s] = side_summary([r for r in rows if r["category"] == cat and r["side"] == s])
    by_half: dict[str, dict] = {}
    for label in sorted({half_century(r["year"]) for r in rows}):
        part = [r for r in rows if half_century(r["year"]) == label]
        kinds = {r["side"] for r in part}
        by_half[label] = {"side": kinds.pop() if len(kinds) == 1 else "both", **side_summary(part)}
    return {"n": len(rows), **sides, "by_category": dict(by_cat), "by_half_century": by_half,
            "items": rows}


def score_words(lm, words: Sequence[DatedWord], cutoff_year: int | None, *,
                batch_size: int = 32) -> dict:
    """Each word's surprise (negative log-probability per byte of `` word`` after its
    context) against its controls', and each side's mean share."""
    pairs = [(w.context, " " + t) for w in words for t in [w.word, *w.controls]]
    scores = continuation_logprobs(lm.model, lm.tokenizer, pairs, batch_size=batch_size,
                                   device=getattr(lm, "device", "cpu"))
    surprise = [-lp / len(cont.encode("utf-8")) for (_, cont), (lp, _) in zip(pairs, scores)]
    rows, k = [], 0
    for w in words:
        own, controls = surprise[k], surprise[k + 1:k + 1 + len(w.controls)]
        k += 1 + len(w.controls)
        # ties (rare with float scores) count half, so an indifferent model sits at 0.5
        share = sum(1.0 if c > own else 0.5 if c == own else 0.0 for c in controls) / len(controls)
        rows.append({"id": w.id, "word": w.word, "year": w.year,
                     "side": side_of(w.year, cutoff_year), "surprise": round(own, 4),
                     "control_surprise": [round(c, 4) for c in controls], "share": share})
    sides = {s: mean_interval([r["share"] for r in rows if r["side"] == s])
             for s in ("before", "after")}
    return {"n": len(rows), **sides, "items": rows}


def run_leakage_probes(lm, cutoff_year: int | None, *, facts_path: str | Path | None = None,
                       words_path: str | Path | None = None, limit: int | None = None,
                       batch_size: int = 32) -> dict:
    """The leakage probes on a loaded model (:class:`londonlm.generation.LoadedModel`, or
    anything with ``model``, ``tokenizer`` and ``device``), split at ``cutoff_year`` (None:
    every item is "before"). ``limit`` keeps at most that many items of each file, evenly
    spread over the period. Returns a JSON-serialisable dict: ``facts`` (``before``/``after``
    with per-rule accuracy, Wilson interval and p-value against chance, by category and by
    half-century, per item), ``words`` (mean share per side, per word), ``flag`` (after-cutoff
    accuracy significantly above chance by the per-byte rule), ``p_value``, ``informative``
    (before-cutoff accuracy above chance) and ``verdict``."""
    if cutoff_year is not None and (isinstance(cutoff_year, bool) or not isinstance(cutoff_year, int)):
        raise LeakageError(f"cutoff_year must be an integer year or None, got {cutoff_year!r}")
    facts_file = Path(facts_path) if facts_path is not None else LEAKAGE_FACTS
    words_file = Path(words_path) if words_path is not None else LEAKAGE_WORDS
    facts = spread(load_leakage_facts(facts_file), limit)
    words = spread(load_leakage_words(words_file), limit)
    fact_result = {"file": facts_file.name, **score_facts(lm, facts, cutoff_year, batch_size=batch_size)}
    word_result = {"file": words_file.name, **score_words(lm, words, cutoff_year, batch_size=batch_size)}
    flag, line = verdict(fact_result["before"], fact_result["after"], cutoff_year)
    return {"cutoff_year": cutoff_year, "rule": PRIMARY, "limit": limit, "facts": fact_result,
            "words": word_result, "flag": flag,
            "p_value": fact_result["after"][PRIMARY]["p_value"],
            "informative": fact_result["before"][PRIMARY]["above_chance"], "verdict": line}
