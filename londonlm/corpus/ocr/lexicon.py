"""The period lexicon: the words of a corpus of the period, with how often each stands alone
and after another (unigram and bigram counts), learned from transcribed text, never from a
modern dictionary. OCR repair (:mod:`.repair`) takes it as its evidence of what the
period wrote (``shew``, ``connexion``, ``to-morrow`` are words because the corpus uses them)
and as the language model of its noisy channel; the OCR quality score (:mod:`.quality`)
counts the words a document has outside it.

Words are compared by their key: lower case, the long s as ``s``, a curly apostrophe as
``'``. The lexicon is built from the collected corpus's transcribed documents at collection
time, or from a corpus the user names (a folder of texts or a collected corpus), and saved
as gzip'd JSON beside the corpus.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ...core import LondonLMError, write_bytes_atomic
from .lexicon_cache import cached_tables

FORMAT = 1
# A saved lexicon's JSON is at most a few tens of MB (:meth:`LexiconBuilder.build` keeps 400,000
# words and 2,000,000 pairs); a file said to be one is unpacked no further than this: a gzip
# bomb given as --lexicon (a few hundred KB that unpack to gigabytes) took all the memory
MAX_LEXICON_BYTES = 256 << 20
# what the builder counts, bumped when that changes (2: tokens with a digit left out), so a
# collection's kept lexicon learned by the older rules is learned again
RULES = 3  # (3: marks standing alone counted)
LEXICON_FILE = "period_lexicon.json.gz"
# a word: letters (the long s among them), inner apostrophes ("order'd", "o'clock")
WORD = re.compile(r"[A-Za-zſ\u00c0-\u024f]+(?:['’][A-Za-zſ\u00c0-\u024f]+)*")
# a token with a digit ("4th", "5s", "10d", "3l", "1744"): no word, and no word's neighbour; its
# letters would make "th", "s" and "d" words of the period and hide the OCR's "of th laws"
_WITH_A_DIGIT = re.compile(r"[A-Za-zſ\u00c0-\u024f]*[0-9][0-9A-Za-zſ\u00c0-\u024f]*")
_BROKEN = re.compile(r"([A-Za-zſ])-(?:[ \t]*\n[ \t]*|[ \t]+)([a-zſ])")
_MID_CAPITAL = re.compile(r"(?<=[A-Za-zſ,;])[ \t]+([A-Z][A-Za-zſ]*(?:['’][A-Za-zſ]+)*)")
# a token of marks standing alone between spaces (`` - ``, `` ^ ``, `` ,, ``; not a sum's £ or $, not
# an ampersand, not a printer's mark: an asterisk, a dagger, a section or paragraph sign, a brace
# of a table): how often the period sets each mark so is the measure of debris (``marks``)
STRAY = re.compile(r"(?<!\S)[^\w\s£$&%*†‡§¶{}]+(?!\S)")
BACKOFF = math.log(0.4)  # stupid backoff (Brants et al. 2007): an unseen pair costs this on top


class LexiconError(LondonLMError, ValueError):
    """A period lexicon that cannot be built or read; the message says why."""


def word_key(word: str) -> str:
    """How the lexicon knows a word: lower case, ``ſ`` as ``s``, ``’`` as ``'``."""
    # two replaces, not str.translate: a table that maps a non-ASCII character sends translate
    # down its per-character path, 3x slower, and the quality score keys every word of a text
    return word.replace("ſ", "s").replace("’", "'").lower()


@dataclass
class PeriodLexicon:
    """Unigram and bigram counts of word keys; ``logp`` / ``logp_after`` are their log-probabilities
    (bigrams back off to unigrams, unseen words get ``unseen``)."""

    unigrams: dict[str, int]
    bigrams: dict[str, int] = field(default_factory=dict)
    made_from: dict[str, Any] = field(default_factory=dict)
    capitals: dict[str, int] = field(default_factory=dict)  # times a word began with a capital mid-sentence
    marks: dict[str, int] = field(default_factory=dict)  # times a mark stood in a token of marks alone (STRAY)

    def __post_init__(self) -> None:
        self.total = max(1, sum(self.unigrams.values()))
        log_total = math.log(self.total)
        self.unseen = -log_total - math.log(10)  # a tenth of a word seen once
        self._vocab: dict[int, tuple[frozenset[str], frozenset[str]]] = {}
        self._chars: tuple[dict[str, float], dict[str, float]] | None = None
        # log-probabilities once, not per lookup: the corrector asks millions of times. A pair's
        # is worked out when asked (logp_after): the corrector caches what it asks, a pair is
        # asked for a few times a run, and a table of 312 k was a third of a lexicon's first load
        self._lp = {k: math.log(n) - log_total for k, n in self.unigrams.items()}
        if self.bigrams and min(self.bigrams.values()) <= 0:
            raise ValueError("a pair counted no times")

    def vocabulary(self, min_count: int = 1) -> tuple[frozenset[str], frozenset[str]]:
        """(the keys seen at least ``min_count`` times, every prefix of them), cached: what a
        candidate must be, and what its beginning must be on the way."""
        got = self._vocab.get(min_count)
        if got is None:
            known = frozenset(k for k, n in self.unigrams.items() if n >= min_count)
            got = self._vocab[min_count] = (known, frozenset(k[:i] for k in known for i in range(len(k) + 1)))
        return got

    def __contains__(self, key: str) -> bool:
        return key in self.unigrams

    def __len__(self) -> int:
        return len(self.unigrams)

    def count(self, key: str) -> int:
        return self.unigrams.get(key, 0)

    def char_logp(self, key: str) -> float:
        """log P(key) under a character trigram model of the period's words (each word type once,
        add-one smoothed): how much a word the lexicon lacks looks like a word of the period
        (``Tiverton``) rather than OCR debris (``tbc``, ``Bakcr``). Per character, so length does
        not decide."""
        if self._chars is None:
            self._chars = _char_model(self.unigrams)
        seen, unseen = self._chars
        padded = "^^" + key + "$"
        total = 0.0
        for i in range(2, len(padded)):
            lp = seen.get(padded[i - 2:i + 1])
            total += lp if lp is not None else unseen.get(padded[i - 2:i], unseen[""])
        return total / (len(padded) - 2)

    def capital_share(self, key: str) -> float:
        """How often the period wrote ``key`` with a capital in mid-sentence (a name: ~1; "in": ~0)."""
        return (self.capitals.get(key, 0) + 0.5) / (self.unigrams.get(key, 0) + 1.0)

    def logp(self, key: str) -> float:
        return self._lp.get(key, self.unseen)

    def logp_after(self, prev: str | None, key: str) -> float:
        """log P(key | prev) with stupid backoff to the unigram: a pair's count over its first
        word's (the word before the pair's first space), 1 at most."""
        if prev:
            pair = f"{prev} {key}"
            n = self.bigrams.get(pair)
            if n is not None:
                first = self.unigrams.get(pair.split(" ", 1)[0])
                if first:
                    return math.log(min(1.0, n / first))
        return BACKOFF + self._lp.get(key, self.unseen)

    # -- persistence
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps([sorted(self.unigrams.items()), sorted(self.bigrams.items())]).encode()).hexdigest()

    def save(self, path: str | Path) -> Path:
        data = {"format": FORMAT, "made_from": self.made_from, "unigrams": self.unigrams, "bigrams": self.bigrams,
                "capitals": self.capitals, "marks": self.marks}
        # level 6, not gzip's 9: on the shipped lexicon's 6.8 MB of JSON 0.47 s against 2.05 s
        # (Zen 3), for 0.08% more bytes; every collection with OCR sources writes one
        raw = gzip.compress(json.dumps(data, ensure_ascii=False, sort_keys=True).encode("utf-8"),
                            compresslevel=6, mtime=0)
        return write_bytes_atomic(path, raw)

    @classmethod
    def load(cls, path: str | Path, log: Callable[[str], None] | None = None) -> "PeriodLexicon":
        """The lexicon saved at ``path``, its tables (those :meth:`__post_init__` derives, the
        character model and the known words) read from the user's cache where a process already
        built them from these bytes (:mod:`.lexicon_cache`; ``log``: where a warning goes)."""
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise LexiconError(f"{path}: not a period lexicon ({e}); rebuild it") from e
        # (__file__: this module derives the tables, so its source is in the copy's key)
        return cls.from_tables(cached_tables(raw, lambda: cls.decode(raw, path).tables(), str(path), __file__, log))

    @classmethod
    def decode(cls, raw: bytes, path: str | Path) -> "PeriodLexicon":
        """The lexicon of a saved file's bytes (``path`` names it in errors)."""
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
                text = f.read(MAX_LEXICON_BYTES + 1)
        except (OSError, EOFError, zlib.error) as e:
            raise LexiconError(f"{path}: not a period lexicon ({e}); rebuild it") from e
        if len(text) > MAX_LEXICON_BYTES:
            raise LexiconError(f"{path}: unpacks to more than {MAX_LEXICON_BYTES >> 20} MiB, more than any period "
                               f"lexicon holds (a gzip bomb?); rebuild it")
        try:
            data = json.loads(text.decode("utf-8"))
        except (ValueError, RecursionError) as e:
            raise LexiconError(f"{path}: not a period lexicon ({e}); rebuild it") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("unigrams"), dict):
            raise LexiconError(f"{path}: not a period lexicon of format {FORMAT}; rebuild it")
        try:
            return cls(_counts(data["unigrams"]), _counts(data.get("bigrams") or {}), dict(data.get("made_from") or {}),
                       _counts(data.get("capitals") or {}), _counts(data.get("marks") or {}))
        except (TypeError, ValueError, AttributeError) as e:
            raise LexiconError(f"{path}: malformed period lexicon ({e}); rebuild it") from e

    def tables(self) -> dict[str, Any]:
        """Everything this lexicon holds and derives, with what a repairer asks for first built
        now (the known words at the repairer's default count, 1, and the character model), so a
        lexicon made again by :meth:`from_tables` skips that work. All its attributes, so a table
        added to :meth:`__post_init__` is kept too."""
        self.vocabulary(1)
        self.char_logp("")
        return dict(vars(self))

    @classmethod
    def from_tables(cls, tables: dict[str, Any]) -> "PeriodLexicon":
        """The lexicon :meth:`tables` describes, nothing derived again."""
        lexicon = cls.__new__(cls)
        lexicon.__dict__.update(tables)
        return lexicon


def _counts(table: Any) -> dict[str, int]:
    """A saved table of counts as str -> int: as JSON decoded it where it is one already (a copy
    of 312 k pairs was a seventh of a first load), each converted otherwise (``TypeError``,
    ``ValueError`` or ``AttributeError`` where it cannot be)."""
    if isinstance(table, dict) and all(type(v) is int for v in table.values()):
        return table  # (a JSON object's keys are str)
    return {str(k): int(v) for k, v in table.items()}


def _char_model(unigrams: dict[str, int]) -> tuple[dict[str, float], dict[str, float]]:
    """The character trigram model over the word types, add-one smoothed, as log-probabilities
    (computed once: the corrector asks for every new word): of each trigram seen, and of an
    unseen letter after each two-letter context (``""``: after a context never seen)."""
    # (counted in C from the list of every trigram: one Counter update a trigram was most of
    # building a lexicon's tables on a first run; the contexts summed from the distinct trigrams)
    tri = Counter([padded[i:i + 3] for padded in ("^^" + key + "$" for key in unigrams)
                   for i in range(len(padded) - 2)])
    bi: Counter[str] = Counter()
    for t, n in tri.items():
        bi[t[:2]] += n
    size = len(set("$").union(*unigrams))
    seen = {t: math.log((n + 1) / (bi[t[:2]] + size)) for t, n in tri.items()}
    unseen = {ctx: math.log(1 / (n + size)) for ctx, n in bi.items()}
    unseen[""] = math.log(1 / size)
    return seen, unseen


class LexiconBuilder:
    """Counts words and word pairs text by text (:meth:`add`), then keeps what is evidence
    (:meth:`build`): words seen at least ``min_count`` times (once: a rare word of the period is
    still one; cross-validated on ../shared/ocr), pairs at least ``min_pair_count`` times, each
    capped (the most frequent kept) so that a huge corpus gives a bounded model."""

    def __init__(self) -> None:
        self.unigrams: Counter[str] = Counter()
        self.bigrams: Counter[str] = Counter()
        self.capitals: Counter[str] = Counter()
        self.marks: Counter[str] = Counter()
        self.documents = 0

    def add(self, text: str) -> None:
        # a word broken at a line end ("atten-\ntion", or "atten- tion" where lines were
        # flattened) counts once, whole: its halves are not words of the period
        text = _BROKEN.sub(r"\1\2", text)
        for piece in _WITH_A_DIGIT.split(text):
            keys = [word_key(w) for w in WORD.findall(piece)]
            self.unigrams.update(keys)
            self.bigrams.update(f"{a} {b}" for a, b in zip(keys, keys[1:]))
        # a capital after a word (a space or a comma between) is in mid-sentence
        self.capitals.update(word_key(m.group(1)) for m in _MID_CAPITAL.finditer(text))
        for m in STRAY.finditer(text):
            self.marks.update(set(m.group(0)))
        self.documents += 1

    def build(self, min_count: int = 1, min_pair_count: int = 2, max_words: int = 400_000,
              max_pairs: int = 2_000_000, made_from: dict[str, Any] | None = None) -> PeriodLexicon:
        words = dict(_top(self.unigrams, min_count, max_words))
        pairs = dict(_top(self.bigrams, min_pair_count, max_pairs))
        capitals = {k: n for k, n in self.capitals.items() if k in words}
        info = dict(made_from or {}, documents=self.documents, words_read=sum(self.unigrams.values()),
                    kept_words=len(words), kept_pairs=len(pairs), min_count=min_count)
        return PeriodLexicon(words, pairs, info, capitals, dict(self.marks))


def _top(counts: Counter[str], min_count: int, cap: int) -> list[tuple[str, int]]:
    kept = [(k, n) for k, n in counts.items() if n >= min_count]
    if len(kept) > cap:
        kept.sort(key=lambda kv: (-kv[1], kv[0]))
        kept = kept[:cap]
    return kept


def build_lexicon(texts: Iterable[str], made_from: dict[str, Any] | None = None, **limits: Any) -> PeriodLexicon:
    """The period lexicon of ``texts`` (see :class:`LexiconBuilder` for ``limits``)."""
    b = LexiconBuilder()
    for t in texts:
        b.add(t)
    if not b.unigrams:
        raise LexiconError("no words to learn a period lexicon from: the period corpus is empty")
    return b.build(made_from=made_from, **limits)
