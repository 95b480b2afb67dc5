"""The OCR confusion model: how print becomes OCR, learned from paired data (OCR beside a human
transcription), and the candidates it proposes for an OCR word.

A rule says "printed ``G`` was read as ``O``" with probability ``P(O | G)`` (Brill and Moore's
substring error model): ``ſ -> f`` (the long s read as f), ``e -> c``, ``h -> li``, ``m -> rn``,
``s -> 9``, a letter dropped after its neighbour (``ll -> l``), a stray mark added
(``e -> e'``). Rules are learned from character alignments of word pairs (``learn``); reading
them backwards turns an OCR word into the printed words it may have come from
(``candidates``), each with the log-probability of the OCR misreading it that way.

The gold transcriptions this is learned from record typography (``ﬁ``, ``ﬀ``, the U+2010
hyphen): :func:`fold_glyphs` writes those as the letters they join, so a rule says what a
reader sees, and ``ſ`` stays a letter of its own (only texts printed with it can be misread
that way). Paired data comes in the ICDAR 2017 post-OCR format (:mod:`.pairs`);
the shipped model, ``data/confusions.json``, was learned from three archives' paired OCR in
``../shared/ocr`` (ICDAR 2017's training part; the letters' rules, debris and space rates of
overProof's two sets) by ``benchmarks/ocr_repair.py learn`` and records how in its ``made_by``.
"""
from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Container, Iterable, Mapping

from rapidfuzz.distance import Levenshtein

from ...core import write_text_atomic
from ..manifest import CorpusError
from .pairs import fold_glyphs

try:  # the walk compiled (setup.py builds it where there is a C compiler); the same walk in Python otherwise
    from ._walk import Walker as _CompiledWalker
    _WALK_ERROR = ""
except ImportError as e:
    _CompiledWalker = None
    _WALK_ERROR = str(e)
_walk_announced = False  # the log says once per process which walk the search runs

CONFUSIONS_FILE = "data/confusions.json"
FORMAT = 1
LONG_S = "ſ"
MAX_SPAN = 3            # longest printed or OCR string a rule covers
# the printed side of a rule is letters (a word's repair never invents digits or punctuation)
_PRINTED = re.compile(r"[A-Za-zſ']+")


class ConfusionError(CorpusError):
    """A confusion-model file or a paired-data file that cannot be used; the message says why."""


# ---------------------------------------------------------------- the model
@dataclass
class ConfusionModel:
    """``rules[O]`` = [(G, log P(O | G))]: the printed strings an OCR string ``O`` may stand for.
    ``split`` / ``join``: log-probabilities (per word) of a space added inside a word, and of
    one lost between two; ``hyphen``: of a line-end hyphen lost (the halves stand apart)."""

    rules: dict[str, list[tuple[str, float]]]
    split: float = math.log(0.002)
    join: float = math.log(0.002)
    hyphen: float = math.log(0.002)
    made_by: dict[str, Any] = field(default_factory=dict)
    # ``words[O]`` = [(G, log P(O | G))]: whole words the paired data read one as another often
    # enough to count on their own (``he`` for ``be``: 4.6% of its readings, where the letter rule
    # b -> h, learned from every word, says 1.3%)
    words: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    # ``debris[c]`` = log P(a spurious ``c`` beside a printed letter), per printed letter: a letter
    # or mark the page never had (``Lonidon``, ``o'f``), learned over every anchor at once, since
    # one anchor's count is too small to be a rule; undone beside any letter (``_with_debris``)
    debris: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.learned_rules = self.rules  # (what is saved; ``rules`` adds the debris edits to it)
        if self.debris:
            self.rules = _with_debris(self.rules, self.debris)
        self._lengths = sorted({len(o) for o in self.rules if o}, reverse=True)
        self._by_key: dict[tuple, dict[str, list[tuple[str, str, float]]]] = {}
        self._walkers: dict[tuple, tuple] = {}
        self._rule_lp: dict[tuple[str, str], float] | None = None  # (OCR, printed) -> log P: channel's
        self.compiled = _CompiledWalker is not None  # False: the Python walk (the reference)

    # -- candidates
    def candidates(self, word: str, known: Container[str], prefixes: Container[str], key: Callable[[str], str],
                   long_s: bool = False, max_edits: int = 2, floor: float = -14.0,
                   beam: float = -7.0, fanout: int = 1000) -> dict[str, float]:
        """The words of ``known`` (by ``key``, a letter-for-letter map such as lower case) that
        ``word`` may have been read from, with log P(word | printed): every way of undoing up to
        ``max_edits`` rules, left to right, a second only where the first left a likely string
        (above ``beam``, the ``fanout`` likeliest), nothing less likely than ``floor``. ``prefixes`` (every prefix of a
        known key) prunes early: once the text before the next edit begins no known word, no
        later edit can help (the compiled walk reads them off its trie of ``known``: they must be
        every prefix of a known key, as ``PeriodLexicon.vocabulary`` gives). ``long_s``: the text
        was printed with the long s, so its rules count."""
        wk = key(word)
        if len(wk) != len(word):
            return {}
        if self.compiled:
            out = self._walker(long_s, key, known).candidates(word, wk, max_edits, floor, beam, fanout)
        else:
            out = {}
            self._walk(word, wk, 0, 0.0, max_edits, self._keyed(long_s, key), known, prefixes, floor, beam, out, fanout)
        out.pop(word, None)
        return out

    def channel(self, printed: str, ocr: str, unknown: float) -> float:
        """log P(ocr | printed) by the differences of their alignment, each as likely as its rule
        (an insertion or deletion anchored on a printed letter, as ``learn`` counts them);
        ``unknown`` per letter of a difference no rule has."""
        if self._rule_lp is None:  # (a rule read by its two sides at once: a scan of O's list was a
            # fifth of the near search's time; the first of a pair listed twice, as the scan took)
            self._rule_lp = {}
            for o, alts in self.rules.items():
                for g, lp in alts:
                    self._rule_lp.setdefault((o, g), lp)
        total = 0.0
        for g, o, at in edit_segments(printed, ocr):
            if not g or not o:
                g, o = _anchor(printed, g, o, at) or (g, o)
            lp = self._rule_lp.get((o, g))
            total += lp if lp is not None else unknown * max(len(g), len(o), 1)
        return total

    def word_channel(self, printed: str, ocr: str) -> float | None:
        """log P(ocr | printed) for a whole-word misreading the paired data saw often enough
        (``learn``'s ``word_min_count``), else None."""
        return next((lp for g, lp in self.words.get(ocr, ()) if g == printed), None)

    def scored(self, word: str, known: Container[str], prefixes: Container[str], key: Callable[[str], str],
               logp: Callable[[str], float], own: float, weight: float, least: float, long_s: bool = False,
               max_edits: int = 2, floor: float = -14.0, beam: float = -7.0,
               fanout: int = 1000) -> list[tuple[float, str, str, float, float]]:
        """:meth:`candidates` (the same search arguments) as a corrector ranks them against the
        word itself: ``(weight * (logp(k) - own) + channel, candidate, k, channel, logp(k))``
        for each candidate whose key ``k`` is not the word's, those above ``least`` only, in
        :meth:`candidates`' order. Compiled, a candidate below ``least`` costs no Python object
        (``logp`` is then read once per known key, when the walk is built)."""
        wk = key(word)
        if self.compiled:
            if len(wk) != len(word):
                return []
            return self._walker(long_s, key, known, logp).scored(word, wk, max_edits, floor, beam, fanout,
                                                                 own, weight, least)
        found = self.candidates(word, known, prefixes, key, long_s=long_s, max_edits=max_edits, floor=floor,
                                beam=beam, fanout=fanout)
        return ranked(found, wk, key, logp, own, weight, least)

    def prepare(self, known: Container[str], key: Callable[[str], str],
                logp: Callable[[str], float] | None = None, long_s_too: bool = True) -> None:
        """Build now what the first search would (the compiled walk's tables, for print without
        the long s and, with ``long_s_too``, with it; with ``logp``, the known keys' priors
        :meth:`scored` reads): a worker's start, not its first document, pays for them."""
        for long_s in (False, True)[:1 + long_s_too]:
            if self.compiled:
                self._walker(long_s, key, known, logp)
            else:
                self._keyed(long_s, key)

    def _walker(self, long_s: bool, key: Callable[[str], str], known: Container[str],
                logp: Callable[[str], float] | None = None):
        """The compiled walk over these rules and this lexicon, built once (its trie of the
        lexicon's keys, ~2 MB for 60 k words, whose nodes are the prefixes), with the keys'
        priors by ``logp`` where given (built again if it was built without them)."""
        got = self._walkers.get((long_s, key))
        if got is None or got[0] is not known or (logp is not None and not got[2]):
            keys, priors = _sorted_keys(known, logp)
            walker = _CompiledWalker(self._keyed(long_s, key), keys, priors)
            got = self._walkers[(long_s, key)] = (known, walker, logp is not None)
        return got[1]

    def _keyed(self, long_s: bool, key: Callable[[str], str]) -> dict[str, list[tuple[str, str, float]]]:
        """The rules (long-s ones only for long-s print) with each printed side's key."""
        cache_key = (long_s, key)
        got = self._by_key.get(cache_key)
        if got is None:
            got = self._by_key[cache_key] = {o: [(g, key(g), lp) for g, lp in gs if long_s or LONG_S not in g]
                                             for o, gs in self.rules.items()}
        return got

    def _walk(self, w: str, wk: str, start: int, base: float, edits: int, rules: dict, known: Container[str],
              prefixes: Container[str], floor: float, beam: float, out: dict[str, float], fanout: int) -> None:
        n = len(w)
        deeper: list[tuple[float, str, str, int]] = []
        for i in range(start, n):
            hk = wk[:i]
            if i and hk not in prefixes:
                break  # every later edit keeps this head, which begins no word
            for ln in self._lengths:
                if i + ln > n:
                    continue
                alts = rules.get(w[i:i + ln])
                if not alts:
                    continue
                for g, gk, lp in alts:
                    total = base + lp
                    if total < floor:
                        break  # alternatives come likeliest first
                    nk = hk + gk
                    if nk not in prefixes:
                        continue
                    ck = nk + wk[i + ln:]
                    if ck in known:
                        cand = w[:i] + g + w[i + ln:]
                        if total > out.get(cand, -math.inf):
                            out[cand] = total
                    if edits > 1 and total > beam:
                        deeper.append((total, w[:i] + g + w[i + ln:], ck, i + len(g)))
        if deeper:  # a second undoing, from the likeliest first ones only
            deeper.sort(key=lambda d: -d[0])
            for total, cand, ck, nxt in deeper[:fanout]:
                self._walk(cand, ck, nxt, total, edits - 1, rules, known, prefixes, floor, beam, out, fanout)

    # -- persistence
    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "made_by": self.made_by, "split": round(self.split, 4), "join": round(self.join, 4),
                "hyphen": round(self.hyphen, 4),
                "rules": _table_json(self.learned_rules), "words": _table_json(self.words),
                "debris": {c: round(lp, 4) for c, lp in sorted(self.debris.items())}}

    def save(self, path: str | Path) -> Path:
        return write_text_atomic(Path(path), json.dumps(self.to_json(), ensure_ascii=False, indent=0, sort_keys=True))

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "confusion model") -> "ConfusionModel":
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("rules"), dict):
            raise ConfusionError(f"{where}: not a confusion model of format {FORMAT}")
        try:
            return cls(_table(data["rules"]), float(data.get("split", cls.split)), float(data.get("join", cls.join)),
                       float(data.get("hyphen", cls.hyphen)), dict(data.get("made_by") or {}),
                       _table(data.get("words") or {}),  # (a model from before word rules has none)
                       {str(c): float(lp) for c, lp in (data.get("debris") or {}).items()})
        except (TypeError, ValueError) as e:
            raise ConfusionError(f"{where}: malformed rule ({e})") from e


def mix(base: ConfusionModel, other: ConfusionModel, weight: float, note: dict[str, Any] | None = None,
        unseen: Callable[[str, str], bool] | None = None) -> ConfusionModel:
    """``base``'s model with each rule's probability ``(1 - weight) P_base + weight P_other`` (a
    rule one lacks counts 0 there); the word rules, debris and join rates stay ``base``'s, and so
    does a rule ``unseen(ocr, printed)`` says ``other`` could not have observed."""
    rules: dict[str, list[tuple[str, float]]] = {}
    keep = unseen or (lambda o, g: False)
    for o in set(base.learned_rules) | set(other.learned_rules):
        a, b = dict(base.learned_rules.get(o, ())), dict(other.learned_rules.get(o, ()))
        alts = [(g, a[g] if g in a and keep(o, g) else
                 math.log((1 - weight) * math.exp(a.get(g, -math.inf)) + weight * math.exp(b.get(g, -math.inf))))
                for g in set(a) | set(b)]
        rules[o] = sorted(alts, key=lambda x: (-x[1], x[0]))
    return ConfusionModel(rules, base.split, base.join, base.hyphen, dict(base.made_by, **(note or {})),
                          base.words, base.debris)


_ANCHORS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _with_debris(rules: dict[str, list[tuple[str, float]]], debris: dict[str, float]) -> dict[str, list]:
    """``rules`` with a debris edit beside every letter: OCR ``xc`` and ``cx`` may be a printed
    ``x`` with a spurious ``c``, as likely as ``debris[c]``, where no learned rule for that
    string says it likelier (the learned anchored rules are the same edit, counted for one anchor)."""
    out = {o: list(alts) for o, alts in rules.items()}
    for c, lp in debris.items():
        for x in _ANCHORS:
            for o in (x + c, c + x):
                alts = out.setdefault(o, [])
                if not any(g == x and old >= lp for g, old in alts):
                    alts[:] = [(g, old) for g, old in alts if g != x] + [(x, lp)]
                    alts.sort(key=lambda a: -a[1])
    return out


def _table_json(table: dict[str, list[tuple[str, float]]]) -> dict[str, list]:
    return {o: [[g, round(lp, 4)] for g, lp in gs] for o, gs in sorted(table.items())}


def _table(raw: dict) -> dict[str, list[tuple[str, float]]]:
    """A rule table as read from JSON (TypeError or ValueError where it is malformed)."""
    return {str(o): [(str(g), float(lp)) for g, lp in gs] for o, gs in raw.items()}


def ranked(found: dict[str, float], wk: str, key: Callable[[str], str], logp: Callable[[str], float],
           own: float, weight: float, least: float) -> list[tuple[float, str, str, float, float]]:
    """:meth:`ConfusionModel.scored`'s ranking of :meth:`ConfusionModel.candidates`' ``found``
    against a word whose key is ``wk`` (what the compiled ``scored`` does in one go)."""
    out = []
    for cand, ch in found.items():
        k = key(cand)
        if k != wk:
            p = logp(k)
            static = weight * (p - own) + ch
            if static > least:
                out.append((static, cand, k, ch, p))
    return out


def announce_walk(compiled: bool | None = None) -> None:
    """One line on stderr, the first time in a process that a repairer repairs a text: whether
    the compiled walk is in use (not when it is built: a refused input says only its error). It is
    optional (built where install found a C compiler) and the Python walk is several times slower
    on new words, so a slow repair is explained in the log rather than guessed at. ``compiled``:
    a model's walk (None: whether this process has the compiled one). A parent about to fork
    workers says it first, so the workers, forked with it said, do not say it again (two said it
    at once, their lines run together)."""
    global _walk_announced
    if _walk_announced:
        return
    _walk_announced = True
    if compiled is None:
        compiled = _CompiledWalker is not None
    if compiled:
        line = "OCR search: compiled walk in use"
    else:
        why = ("no C compiler at install, or its build failed: bash install.sh says which"
               if not _WALK_ERROR or _WALK_ERROR.startswith("No module named") else f"it does not load: {_WALK_ERROR}")
        line = f"OCR search: compiled walk not built ({why}); using the Python walk (same repairs, slower)"
    sys.stderr.write(line + "\n")  # (one write: a line no other process's can cut)
    sys.stderr.flush()


def load_confusions(path: str | Path | None = None) -> ConfusionModel:
    """The shipped model (``path=None``) or one learned from other paired data."""
    if path is None:
        return _shipped()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ConfusionError(f"{path}: cannot read a confusion model ({e})") from e
    return ConfusionModel.from_json(data, str(path))


_SORTED: list = []  # the last (known, logp, keys, priors) a walk was built over (one lexicon kept alive)


def _sorted_keys(known: Container[str], logp: Callable[[str], float] | None) -> tuple[list[str], list[float] | None]:
    """``known`` sorted, and each key's prior by ``logp``: the same for the walks with and
    without the long s and for every model over one lexicon (the shipped one and the one adapted
    from it), so made once (4 times before: ~0.15 s of the stage's serial start)."""
    if _SORTED and _SORTED[0] is known and _SORTED[1] == logp:
        return _SORTED[2], _SORTED[3]
    keys = sorted(known)
    priors = None if logp is None else [logp(k) for k in keys]
    _SORTED[:] = [known, logp, keys, priors]
    return keys, priors


@lru_cache(maxsize=1)
def _shipped() -> ConfusionModel:
    text = resources.files(__package__).joinpath(CONFUSIONS_FILE).read_text(encoding="utf-8")
    return ConfusionModel.from_json(json.loads(text), CONFUSIONS_FILE)


# ---------------------------------------------------------------- learning
def edit_segments(gold: str, ocr: str) -> list[tuple[str, str, int]]:
    """The differences of one word pair as (printed, OCR, position in gold): runs of adjacent
    edits of the cheapest alignment."""
    segs: list[tuple[str, str, int]] = []
    cur: list[int] | None = None  # [gold start, gold end, ocr start, ocr end]
    for op in Levenshtein.opcodes(gold, ocr):
        if op.tag == "equal":
            if cur:
                segs.append((gold[cur[0]:cur[1]], ocr[cur[2]:cur[3]], cur[0]))
                cur = None
            continue
        if cur is None:
            cur = [op.src_start, op.src_end, op.dest_start, op.dest_end]
        else:
            cur[1], cur[3] = op.src_end, op.dest_end
    if cur:
        segs.append((gold[cur[0]:cur[1]], ocr[cur[2]:cur[3]], cur[0]))
    return segs


def _anchor(gold: str, g: str, o: str, at: int) -> tuple[str, str] | None:
    """A rule with an empty side gets one neighbouring printed letter as its anchor, so that
    undoing it is a substitution at a place, not an insertion anywhere."""
    if at > 0:
        c = gold[at - 1]
        return c + g, c + o
    end = at + len(g)
    if end < len(gold):
        c = gold[end]
        return g + c, o + c
    return None


def learn(word_pairs: Iterable[tuple[str, str]], min_count: int = 2, max_distance: float = 0.7,
          made_by: dict[str, Any] | None = None, word_min_count: int = 2,
          debris_min_count: int = 10) -> ConfusionModel:
    """Learn rules from (OCR word, gold word) pairs: each difference of a pair's alignment is
    one observation of "printed G read as O"; ``P(O | G)`` is its count over the times G is
    printed. Pairs too unlike to align (normalised distance above ``max_distance``) and rules
    seen fewer than ``min_count`` times are left out. A short word misread twice over is still
    one misreading of two letters (``ami`` for ``and``: 2 of 3 letters, 24 times in the tuning
    part), so the cap lets two of three letters differ: 0.5 left those rules out, for 0.4 point
    of CER cross-validated. A whole word misread as another at least ``word_min_count`` times
    (stops and quotes around them left out) is also a word rule, ``P(O | G)`` over the times G
    is printed as a word: the letters' rules average over every word, and a short word's own
    misreading can be several times likelier (+0.13 point of CER cross-validated). Each distinct
    pair is aligned once and counted as often as it occurs (the adaptation's 150 k pairs are ~15 k
    distinct: most are a word read right, many times over); the counts, and the order rules are
    first seen in, are those of counting every occurrence."""
    tally = _Tally(max_distance)
    # (a Counter keeps the order pairs first occur in, so rules and ties come out in the same order)
    for (ocr, gold), n in Counter((o, g) for o, g in word_pairs).items():
        tally.add(ocr, fold_glyphs(gold), n)
    rules = _rates(tally.seen, _substring_counts(tally.golds, {g for g, _ in tally.seen}), min_count)
    whole = _rates(tally.word_seen, tally.gold_words, word_min_count)
    letters = max(1, sum(map(len, tally.golds)))
    debris = {c: math.log(n / letters) for c, n in tally.spurious.items()
              if n >= debris_min_count and c not in _NO_DEBRIS} if debris_min_count else {}
    info = dict(made_by or {}, words=tally.words, rules=sum(map(len, rules.values())), min_count=min_count,
                word_rules=sum(map(len, whole.values())), word_min_count=word_min_count, debris=len(debris))
    rate = lambda n: math.log(max(n, 1) / max(tally.words, 1))  # noqa: E731
    return ConfusionModel(rules, rate(tally.splits), rate(tally.joins), rate(tally.lost), info, whole, debris)


def _rates(seen: Counter[tuple[str, str]], printed: Mapping[str, int],
           min_count: int) -> dict[str, list[tuple[str, float]]]:
    """``{OCR: [(printed, log P(OCR | printed)), ...]}`` of the misreadings seen ``min_count``
    times or more, likeliest first (a rate above 1, a span counted where it is printed less
    often than misread across words, is capped at 1)."""
    table: dict[str, list[tuple[str, float]]] = {}
    for (g, o), n in seen.items():
        if n >= min_count and printed.get(g):
            table.setdefault(o, []).append((g, math.log(min(1.0, n / printed[g]))))
    for alts in table.values():
        alts.sort(key=lambda x: -x[1])
    return table


@dataclass
class _Tally:
    """What ``learn`` counts over the word pairs: each misreading of letters (``seen``) and of
    whole words (``word_seen``), what was printed (``golds``, ``gold_words``), the debris, and
    the spaces gained and lost."""
    max_distance: float
    seen: Counter[tuple[str, str]] = field(default_factory=Counter)
    spurious: Counter[str] = field(default_factory=Counter)
    word_seen: Counter[tuple[str, str]] = field(default_factory=Counter)
    gold_words: Counter[str] = field(default_factory=Counter)
    golds: list[str] = field(default_factory=list)
    words: int = 0
    splits: int = 0
    joins: int = 0
    lost: int = 0

    def add(self, ocr: str, gold: str, n: int) -> None:
        """One distinct (OCR, gold) pair that occurs ``n`` times."""
        if not gold or not ocr or any("\ue000" <= c <= "\uf8ff" for c in gold):
            return
        self.words += n
        o_parts, g_parts = ocr.split(), gold.split()
        one_read_as_two = len(o_parts) == 2 and len(g_parts) == 1
        if one_read_as_two and "".join(o_parts) == gold:
            self.splits += n  # "how ever": a space inside a word
        if len(o_parts) == 1 and gold == ocr + "-" and ocr.isalpha():
            self.lost += n  # "pre" for "pre-": a line-end hyphen lost, the halves left apart
        if len(g_parts) == 2 and len(o_parts) == 1 and "".join(g_parts) == ocr:
            self.joins += n  # "ofthe": the space between two words lost
        if one_read_as_two and _count_letter_read_as_space(gold, " ".join(o_parts), self.seen, n):
            self.golds.extend([gold] * n)  # its letters were printed: they count in P(O | G)
        if len(o_parts) == len(g_parts):
            for o, g in zip(o_parts, g_parts):
                self._add_word(o, g, n)

    def _add_word(self, o: str, g: str, n: int) -> None:
        """An OCR word against the word printed in its place: the word rule, and each letter rule."""
        if g.endswith("-") and not o.endswith("-") and len(g) > 1:
            g = g[:-1]  # a line-end hyphen the OCR dropped: joining words undoes it, not a rule
        self.golds.extend([g] * n)
        _count_word(o, g, self.word_seen, self.gold_words, n)
        if o == g or Levenshtein.normalized_distance(o, g) > self.max_distance:
            return
        for gs, os_, at in edit_segments(g, o):
            if not gs and len(os_) == 1:
                self.spurious[os_] += n  # debris: counted over every anchor
            if not gs or not os_:
                anchored = _anchor(g, gs, os_, at)
                if anchored is None:
                    continue
                gs, os_ = anchored
            if len(gs) <= MAX_SPAN and len(os_) <= MAX_SPAN and _PRINTED.fullmatch(gs):
                self.seen[(gs, os_)] += n


# never debris: a space is a split (``ConfusionModel.split``), and a stop, comma, hyphen or quote
# beside a word is punctuation far more often than noise
_NO_DEBRIS = frozenset(" .,;:!?-\"'()")


_EDGES = ".,;:!?\"'()-"  # the marks around a word that are no part of it


def _count_word(ocr: str, gold: str, seen: Counter, printed: Counter, n: int = 1) -> None:
    """One printed word (its letters) and, where the OCR read another, that misreading (``n`` times)."""
    o, g = ocr.strip(_EDGES), gold.strip(_EDGES)
    if not o or not _PRINTED.fullmatch(g):
        return
    printed[g] += n
    if o != g:
        seen[(g, o)] += n


def _count_letter_read_as_space(gold: str, ocr: str, seen: Counter, n: int = 1) -> bool:
    """``Fr derick`` for ``Frederick``: the letters a space stands for (a space merely added,
    "pre vailed", is the join's business, and a lost hyphen is no letter); whether any was."""
    found = False
    for gs, os_, _ in edit_segments(gold, ocr):
        if " " in os_ and gs and len(gs) <= MAX_SPAN and len(os_) <= MAX_SPAN and _PRINTED.fullmatch(gs):
            seen[(gs, os_)] += n
            found = True
    return found


def _substring_counts(words: list[str], wanted: set[str]) -> dict[str, int]:
    """How often each string of ``wanted`` is printed in ``words`` (none spans two words). The
    distinct words are read once per count they occur with, not each occurrence (the
    adaptation's 46 k words are ~10 k distinct, in ~100 counts: a third of the reading)."""
    by_count: dict[int, list[str]] = {}
    for word, n in Counter(words).items():
        by_count.setdefault(n, []).append(word)
    texts = [(n, "\n".join(group)) for n, group in by_count.items()]
    return {g: sum(n * text.count(g) for n, text in texts) for g in wanted if g}
