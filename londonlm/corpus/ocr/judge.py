"""A language model as the judge of the repairs the period lexicon leaves close.

The corrector (:mod:`.repair`) decides each word by the period's word pairs and the confusion
model; where that decision was close (``he``/``be``, debris that leaves a word either way), it
records a :class:`~.repair.Doubt` with the texts the span could stand as. The judge reads each
of them in its sentence: the repaired text's last ``context_chars`` characters before the span
(the corrector's other decisions applied), then each option followed by the next
``right_chars`` characters, scored by a trained londonlm model as the log-probability of that
continuation (all of a document's options in batches). An option's total is

    repairer's score + lm_weight * model's log-probability

and the judge takes another option than the corrector's only where its total beats the
corrector's choice by more than ``lm_margin``. The corrector's later words were decided with
its own choice as their neighbour; the judge does not walk them again.

This package may not import the model interface (:mod:`londonlm.generation` comes later in
the stages' order: docs/architecture.md): the judge is given a function that scores
``(context, continuation)`` texts (``londonlm.generation.ContinuationScorer``, which
``repair_ocr.py --lm`` passes in).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .confusions import LONG_S
from .repair import Change, Doubt, OcrRepairer, Repaired

# scores ``(context, continuation)`` texts: the log-probability of each continuation after its context
Scorer = Callable[[list[tuple[str, str]]], Sequence[float]]


@dataclass
class JudgeSettings:
    """``lm_weight``: the model's log-probability's weight beside the repairer's score;
    ``lm_margin``: what the judge's choice must beat the repairer's by; ``doubt``: how close a
    repairer's decision must be to be judged (``OcrRepairer(doubts=...)``); ``context_chars``
    and ``right_chars``: the text read before and after an option. The weight and margin were
    chosen on ICDAR's tuning part with a CPU-trained ``tiny`` model (BENCHMARKS.md)."""

    lm_weight: float = 0.5
    lm_margin: float = 1.0
    doubt: float = 3.0
    context_chars: int = 300
    right_chars: int = 40


@dataclass(frozen=True)
class Judge:
    """A model judging a repair: its ``score`` (:data:`Scorer`), the ``settings`` it judges
    with, and its ``identity`` (what names the model in each repaired row's facts)."""

    score: Scorer
    settings: JudgeSettings = field(default_factory=JudgeSettings)
    identity: dict[str, Any] = field(default_factory=dict)


class JudgedRepairer:
    """An :class:`OcrRepairer`'s repair with its close decisions settled by a model: the same
    ``repair(text, year)``, a change the judge made of kind ``judged word`` (``judged glued``,
    ``judged split``); one it undid is gone. ``judged`` and ``overruled`` count the doubts read
    and the decisions changed over every text."""

    def __init__(self, repairer: OcrRepairer, score: Scorer, settings: JudgeSettings | None = None):
        self.repairer, self.score = repairer, score
        self.s = settings or JudgeSettings()
        repairer.doubt = self.s.doubt  # (the walk records its close decisions only when asked)
        self.judged = self.overruled = 0

    def repair(self, text: str, year: int | None = None) -> Repaired:
        done = self.repairer.repair(text, year)
        if not done.doubts:
            return done
        picks = self.judge(done)
        self.judged += len(done.doubts)
        changed = [(d, k) for d, k in zip(done.doubts, picks) if k != d.chosen]
        if not changed:
            return done
        self.overruled += len(changed)
        return overrule(text, done, changed)

    def judge(self, done: Repaired) -> list[int]:
        """The option the judge takes at each doubt of ``done``."""
        items = self.items(done)
        return self.picks(done, list(self.score(items)) if items else [])

    def items(self, done: Repaired) -> list[tuple[str, str]]:
        """The ``(context, continuation)`` texts the model scores: each doubt's options in turn."""
        items = []
        for left, right, d in _contexts(done, self.s.context_chars, self.s.right_chars):
            space = left[len(left.rstrip()):]  # (the space before a word is its first token's, in BPE)
            items += [(left.rstrip(), _plain(space + option + right)) for option in d.options]
        return items

    def picks(self, done: Repaired, scores: Sequence[float], weight: float | None = None,
              margin: float | None = None) -> list[int]:
        """The option taken at each doubt, given the model's ``scores`` of ``items(done)``
        (``weight`` and ``margin``: the settings', unless given: a tuning reads them anew)."""
        weight = self.s.lm_weight if weight is None else weight
        margin = self.s.lm_margin if margin is None else margin
        picks, k = [], 0
        for d in done.doubts:
            totals = [s + weight * m for s, m in zip(d.scores, scores[k:k + len(d.options)])]
            k += len(d.options)
            best = max(range(len(totals)), key=lambda j: (totals[j], j == d.chosen))
            picks.append(best if totals[best] - totals[d.chosen] > margin else d.chosen)
        return picks


def _plain(text: str) -> str:
    """The text as the model reads it: the long s as s (the corpus it learned from writes s;
    ``ſhall`` and ``shall`` are one word to it, and the repairer's score keeps the print's)."""
    return text.replace(LONG_S, "s")


def _contexts(done: Repaired, before: int, after: int):
    """Per doubt: (the repaired text's ``before`` characters up to the span, cut at a space; the
    ``after`` characters past it, cut at a space; the doubt). The span stands in the repaired
    text as its option ``chosen``: the input's offsets move by the changes before it."""
    starts = sorted(done.changes, key=lambda c: c.start)
    k = shift = 0
    for d in done.doubts:
        while k < len(starts) and starts[k].start < d.start:
            shift += len(starts[k].after) - len(starts[k].before)
            k += 1
        at = d.start + shift
        end = at + len(d.options[d.chosen])
        left = done.text[max(0, at - before):at]
        if at > before and " " in left:
            left = left[left.index(" ") + 1:]
        right = done.text[end:end + after]
        if end + after < len(done.text) and " " in right:
            right = right[:right.rindex(" ")]
        yield _plain(left), right, d


def overrule(text: str, done: Repaired, changed: list[tuple[Doubt, int]]) -> Repaired:
    """``done`` with the options the judge took: each doubt's span becomes that option (a change
    of the option's kind, marked ``judged``, or none where it keeps the input), the text rebuilt
    from the input and the changes."""
    at = {d.start: (d, k) for d, k in changed}
    changes = [c for c in done.changes if c.start not in at or not _covers(at[c.start][0], c)]
    for d, k in changed:
        if k:
            changes.append(Change(d.start, text[d.start:d.end], d.options[k], f"judged {d.kinds[k]}",
                                  d.scores[k] - d.scores[0], d.channels[k]))
    changes.sort(key=lambda c: c.start)
    out, pos = [], 0
    for c in changes:
        out += [text[pos:c.start], c.after]
        pos = c.start + len(c.before)
    out.append(text[pos:])
    return Repaired("".join(out), changes, done.long_s, done.doubts)


def _covers(d: Doubt, c: Change) -> bool:
    return c.start == d.start and c.start + len(c.before) == d.end
