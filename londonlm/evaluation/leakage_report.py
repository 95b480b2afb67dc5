"""The arithmetic and the prose of the leakage probes: how sure a before/after split is, and
how it reads in a report.

A time-locked model's probe result is only worth something with its uncertainty beside it: a
few dozen four-way items put a 95% interval of ±15 points around any accuracy, so every
accuracy here carries a Wilson interval (it stays inside [0, 1] and behaves at 0 and n, where
the normal interval does not) and an exact one-sided p-value against chance, computed from
the binomial (Poisson-binomial when items have different numbers of choices) tail rather
than a normal approximation that is poor in the small-n, far-tail cases that matter most.
Nothing here touches a model, so :mod:`.leakage` scores and this module only counts.
"""
from __future__ import annotations

import math
from typing import Sequence

ALPHA = 0.05       # a one-sided p below this counts as "above chance"
Z95 = 1.959963984540054  # the standard normal's 97.5% point: two-sided 95% intervals
RULES = ("per_byte", "sum")  # per_byte decides (tokenizer-independent); sum is kept beside it
PRIMARY = RULES[0]


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


def verdict(before: dict, after: dict, cutoff_year: int | None) -> tuple[bool, str]:
    """(flag, one line): flagged when after-cutoff accuracy is significantly above chance."""
    if cutoff_year is None:
        return False, "no cutoff year: every item counts as before the cutoff, so nothing tests leakage"
    if not after["n"]:
        return False, f"no fact dated after {cutoff_year}, so nothing tests leakage"
    p = after[PRIMARY]["p_value"]
    if after[PRIMARY]["above_chance"]:
        return True, f"WARNING: after-cutoff accuracy is above chance (p={_p(p)})"
    return False, "no sign of post-cutoff knowledge"


# --------------------------------------------------------------------------- Markdown

def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _ci(ci) -> str:
    return "–" if not ci else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%"


def _p(p) -> str:
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


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
                     f"{_pct(side['chance'])} | {_p(s['p_value'])} | {_pct(side['sum']['accuracy'])} |")
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
            lines.append(f"| {cat} | {b['n']} | {_pct(b[PRIMARY]['accuracy'])} | {a['n']} | "
                         f"{_pct(a[PRIMARY]['accuracy'])} |")
        lines.append("")
    lines += [f"**Verdict:** {result['verdict']}.", ""]
    before = facts["before"][PRIMARY]
    if before["above_chance"]:
        lines.append("Before-cutoff accuracy is above chance, so the model does answer from what it "
                     "read; after-cutoff accuracy at chance is then evidence that it did not read "
                     "about the later years.")
    else:
        lines.append(f"Before-cutoff accuracy is not above chance either (p={_p(before['p_value'])}): "
                     "a small model may not recall even the facts it did read, so for this model "
                     "the probe cannot bound leakage. It only does so when the before-cutoff "
                     "accuracy is above chance.")
    return lines
