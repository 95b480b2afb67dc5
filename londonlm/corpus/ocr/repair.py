"""OCR repair: a noisy-channel word corrector whose every change is justified by the period.

For each word of an OCR text the confusion model (:mod:`.confusions`) proposes the printed
words it may have been misread from (``Yefterday`` <- ``Yeſterday``, ``tbe`` <- ``the``), each
with the probability of that misreading; the period lexicon (:mod:`.lexicon`), learned
from transcribed text of the period, says how likely each is in its place (word and word-pair
counts). A word changes only when

    w_lm * [log P(candidate | neighbours) - log P(word | neighbours)] + log P(word | candidate)

clears a margin: a word the period used stays unless its neighbours speak strongly against it,
and a capitalised word in mid-sentence (a name) needs a wider margin. Numbers and dates are never
touched; a sum of money only where the sum around it says its digits were read as letters
(``£1 Is.`` -> ``£1 1s.``, :mod:`.sums`), and a ``1`` only where it stands for the pronoun I
(``of which 1 am``). Two words the OCR split (``pre vailed``, its line-end hyphen lost)
are joined when the language model prefers the joined word; a word run into the next
(``TheShoreham``) is split when both halves are the period's. A mark or letter no word of the
period holds, against letters (``th»``, ``peí``), is a letter misread; and a candidate the text
itself prints often is likelier there (a cache of the document: ``acies`` is ``acres`` in a sale
of land).

Three things keep clean text clean (BENCHMARKS.md: 0.008% of clean prose changed): a misreading
is as likely as the document is noisy (its share of words the period does not know); a word the
document uses too often to be misreadings of its neighbours is the document's own (``Carrie``,
Stow's ``fleete``); and an unknown word that looks like the period's words (a character trigram
model of them) is likelier than debris.

The long s: a text printed with ``ſ`` (the year, when known, and the text's own
evidence, ``fuch``, ``fome``, ``himfelf``, decide) lets the ``ſ -> f`` rules count; the repaired
word is written as the page printed it (``Yeſterday``), or with ``s`` with ``long_s="modern"``.
"""
from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import accumulate, compress, count, repeat
from typing import Any, Container

from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from .confusions import LONG_S, ConfusionModel, announce_walk
from .forms import SearchText
from .lexicon import BACKOFF, STRAY, PeriodLexicon, word_key
from .sums import MONEY, repaired_sum

try:  # the near-word search's scan, compiled with the walk (where it is not: rapidfuzz's, the same words in the same order)
    from ._walk import near as _compiled_near, near_masks as _near_masks
except ImportError:
    _compiled_near = _near_masks = None

# marks the period's print never set against a letter (foreign quotes, inverted marks, a caret,
# the brackets of tables, a backslash): glued to letters, they are letters the OCR misread ("th»",
# "official«", "«nd", "u<e", "\\Villoughby", "pro\\ed"), so they belong to the word the search repairs
LETTER_MARKS = "«»¡¿^{}<>\\"
_M = re.escape(LETTER_MARKS)
# a word as the corrector sees it: letters, with digits the OCR may have put for letters, and
# marks that stand for letters
TOKEN = re.compile(rf"[{_M}]?[A-Za-zſ0-9\u00c0-\u024f]+(?:(?:['’]|[{_M}])[A-Za-zſ\u00c0-\u024f]+)*[{_M}]?")
_TOKEN_SPLIT = re.compile(f"({TOKEN.pattern})")  # (the text between tokens, and each token)
# a word of letters, and of marks read for letters, that the near-word search may take
_NEAR_WORD = re.compile(rf"[A-Za-zſ\u00c0-\u024f{_M}]+")
_PLAIN = re.compile(r"[A-Za-zſ]+")  # (a word of plain letters: the rules know each one)
_PLAIN_KEY = frozenset("abcdefghijklmnopqrstuvwxyz")
# numbers, ordinals, sums (5s, 10d, 3l), years, times: never changed
_NUMBER = re.compile(r"\d+(?:st|nd|rd|th|d|s|l|[ap]m)?|[0-9]*\d[0-9]*\d[0-9A-Za-z]*", re.IGNORECASE)
# a digit among letters may be a misread letter ("9treet", "VALU8"); "10d", "4a", "lOd" are sums and numbers
_LETTERS_WITH_A_DIGIT = re.compile(r"[A-Za-zſ]{2,}[0-9][A-Za-zſ]*|[A-Za-zſ]*[0-9][A-Za-zſ]{2,}")
# a word the period does not know with a mark inside may be a letter read as the mark ("regu'ar",
# "En.land"): searched only when unknown, so the period's elisions ("hop'd") never are
_LETTERS_WITH_A_MARK = re.compile(r"[A-Za-zſ]+(?:[.,'’ -][A-Za-zſ]+)+")
_GLUE = ".,- "  # a mark (or a space) that cuts a token in two ("En.land", "noi e": two tokens)
_SENTENCE_END = ".!?\n"
_MISSING = object()
PIECE = 1_000_000  # characters repaired at once (a longer text goes in pieces)
# the longest token searched: two of the period's longest words and a mark between (a word run
# into the next, two halves glued); a longer one (letters run together for pages) is no word,
# and the searches' time grows faster than its length
MAX_SEARCHED = 100
_STOPS = (",", ";", ":", ".", "!", "?")
_STOP_CHARS = "".join(_STOPS)
_MID = re.compile(r"[A-Za-zſ,;] ")  # what comes before a word in mid-sentence
# capitals whose small letter differs by a dot or a stroke the OCR loses: the only case repairs.
# Others ("Well", "Wanted") are mostly sentences whose stop the OCR lost (measured on ../shared/ocr).
_CASE_SHAPES = frozenset("I")
# what may follow a one-letter word a misreading made ("m the", "t, the"), not an abbreviation's stop
_LETTER_ENDS = ("", " ", "\n", ",", ";", ":")
# what the OCR reads for the pronoun I standing alone
_PRONOUN_SHAPES = frozenset({"1", "l"})
_ONE_WORD = frozenset({"word", "pronoun", "sum"})  # changes of one token into one
_PRONOUN_GAPS = frozenset({" ", ", ", ". ", "! ", "? ", "; ", ": "})  # mid-sentence, or a sentence begun


@dataclass
class RepairSettings:
    """The evidence a change needs, tuned by 3-fold cross-validation on the training part of
    ``../shared/ocr`` (see BENCHMARKS.md). Scores are log-probabilities.

    - ``margin``: what a candidate must beat the word by; ``name_margin`` for a capitalised word
      in mid-sentence (a name), ``short_margin`` for a word of two letters, ``join_margin`` for a
      join whose halves are both words ("any body"), ``known_margin`` added for a word the
      period knows (0.5: CV +0.05 raw once word rules came), ``case_margin`` for a capital read for a small letter.
    - ``lm_weight``: the language model's weight against the confusion model; ``unknown``: the
      prior of a word the lexicon lacks, moved by ``char_weight`` x letters x (its per-letter
      character-model score - ``char_reference``): "Tiverton" is likelier than "tbe".
    - ``doc_min_count``, ``doc_slack``, ``doc_boost``, ``doc_penalty``: a word the document uses too
      often to be misreadings gets its own prior (``_add_document_evidence``) if it looks like the
      period's words (per-letter character-model score above ``own_min_char``).
    - ``noise_weight``, ``noise_reference``, ``noise_cap``: misreadings scaled by how noisy the
      document is (``_noise_adjustment``).
    - ``max_edits``, ``floor``, ``known_floor``, ``beam``, ``fanout``, ``candidates``,
      ``max_deficit``: how far the candidate search goes (``ConfusionModel.candidates``).
    - ``near``, ``near_edit``, ``near_min_count``: an unknown word for which that search finds
      nothing (``sdsmands``) takes the period's words (seen ``near_min_count`` times) within an
      edit per two letters, ``near`` at most; a difference no rule has costs ``near_edit`` per
      letter (``_near``): +1.05 points of CER cross-validated, for twice the time on words not
      seen before; ``thorough`` searches every word seen 5 times, the default only the period's
      common words (seen 50 times: the garbled are mostly common words, ``Pieasury``, ``intle``
      for ``mile``; across archives +1.2 points on SMH, +1.8 on CA, +0.9 on ICDAR held out, for
      a quarter of the pool's time); 0 leaves it off. ``near_plain``: False searches near words only
      for a word with a letter or a mark the rules do not know (``th»``, ``peí``, ``official«``):
      what the adaptation's first pass searches, so that its pairs teach how this OCR reads them.
    - ``cache_penalty``, ``cache_min_count``: a candidate for an unknown word that the text itself
      uses ``cache_min_count`` times or more (``acres`` for ``acies`` in a sale of land, ``Creek``
      for ``Cieek`` in a report of creeks) takes as its prior at least its share of the text's
      words, plus ``cache_penalty`` (a cache model of the document; None: off). Chosen on ICDAR's
      tuning part (CER lower by 24.90% without; -4, -2, 0, +2: 24.94, 25.00, 25.15, 24.92%);
      held out +0.4 point, SMH +0.7, CA 0, clean prose 0.0135 -> 0.015% changed. A known word's
      candidates are not raised: a book's ``owners`` turned its ``owner`` into them.
    - ``unit_letters``: a word of at most this many letters after a number is a unit or a sum
      ("440 gs", "3 yrs"), never changed.
    - ``sums``: a sum of money whose digits the OCR read as letters (``£1 Is.``, ``2s. fid.``) is
      repaired where a sum stands beside it (:mod:`.sums`; CV +0.35 raw).
    - ``pronoun``: ``1`` or ``l`` between two words, in mid-sentence or a sentence's first
      (``which 1 am``, ``cold. 1 saw``), is the pronoun I when the next word follows I this many
      (log) times likelier than it stands anywhere (None: never; CV +0.09, +0.05 more with the
      sentence's first).
    - ``single_letters``: a small letter standing alone (not ``a``, not before a stop or
      apostrophe: ``p. m.``, ``o'clock``) is searched like a word (``m the`` -> ``in the``; CV +0.08).
    - ``word_channel``: a whole word the paired data saw misread as another often enough
      (``ConfusionModel.words``: ``he`` for ``be``) takes that misreading's own probability where
      it is above the letters' rules' (CV +0.13 raw).
    - ``glued``: a word a letter misread as a stop, comma, hyphen or space cut in two is repaired
      whole (``_glued``); ``glued_space``: a space is searched only where a piece has at most this
      many letters (``Bak rs``; ``thorough``: any, ``Patrona e``): two long pieces are a search
      per word pair of a noisy text, a seventh of a first pass's time, for 0.09 points of CER
      cross-validated.
    - ``strays``, ``stray_share``, ``stray_min_count``: a token of marks alone between words is
      debris where the document sets its marks so far more often than the period (``_strays``),
      in a document noisy enough (its ``noise`` at least ``stray_noise``: about half the paired
      data's share of unknown words) for marks to be misreadings.
    - ``edges``: in such a noisy text with lines, a letter or rule standing alone at a line's
      start or end (``which/I in the``, ``ground I/for``, ``and/i worked``, ``|``) is a column's
      rule the OCR read, and a stop, comma or quote alone before a line's first word
      (``/, Miss Philp``), a quote alone at its end, or a stop or comma alone after a stop there
      (``dealt with. ,/``) is debris no compositor set: each is deleted with its space
      (``_edges``; the pronoun and numbers are kept: ``I/am``, ``1 in 76``). Found by reading
      SMH's errors (SMH adapted 18.56 -> 20.10%, CA 25.13 -> 25.51%); ICDAR's texts have no lines.
    - ``long_s``: ``auto`` (the year and the text's evidence), ``on``, ``off``; ``long_s_output``:
      ``print`` (write ``ſ`` where the page had it) or ``modern`` (``s``)."""

    margin: float = 0.0
    name_margin: float = 3.0
    short_margin: float = 2.0
    join_margin: float = 2.0
    known_margin: float = 0.5
    case_margin: float = 0.0
    lm_weight: float = 1.0
    unknown: float = -20.0
    char_weight: float = 1.0
    char_reference: float = -2.5
    known_min_count: int = 1
    doc_min_count: int = 3
    doc_penalty: float = -4.0
    doc_slack: float = 3.0
    doc_boost: float = 20.0
    own_min_char: float = -3.0
    noise_weight: float = 4.0
    noise_reference: float = 0.07
    noise_cap: float = 0.0
    max_edits: int = 2
    max_deficit: float = 6.0
    floor: float = -14.0
    known_floor: float = -10.0
    beam: float = -8.0
    fanout: int = 20
    candidates: int = 4
    joins: bool = True
    glued: bool = True
    glued_space: int = 2
    unit_letters: int = 4
    sums: bool = True
    pronoun: float | None = 1.5
    single_letters: bool = True
    word_channel: bool = True
    splits: bool = True
    near: int = 4
    near_edit: float = -6.0
    near_min_count: int = 50
    near_plain: bool = True
    cache_penalty: float | None = 0.0
    cache_min_count: int = 2
    strays: bool = True
    stray_share: float = 0.75
    stray_min_count: int = 3
    stray_noise: float = -3.0
    edges: bool = True
    long_s: str = "auto"
    long_s_output: str = "print"
    long_s_before: int = 1800

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def thorough(cls, **overrides: Any) -> "RepairSettings":
        """A deeper candidate search (three undoings per word, a lower floor, a wider beam), the
        near-word search for unknown words the rules cannot reach, and a space searched between
        any two pieces: about 1.6 points more of CER cross-validated on newspapers than the
        default (2.0 held out: 20.1% against 18.1%), for 3-4 times its time on words not seen
        before (BENCHMARKS.md)."""
        return cls(**{"max_edits": 3, "floor": -18.0, "beam": -12.0, "fanout": 40, "near": 4, "near_min_count": 5, "glued_space": 99,
                      **overrides})


@dataclass
class Change:
    """One repair: where (character offset in the input), what, into what, and why."""

    start: int
    before: str
    after: str
    kind: str             # word | join | split | glued | case (I read for i) | space (after a stop) | sum | pronoun | debris
    gain: float           # how far the change cleared the word's own score
    channel: float        # log P(OCR | printed) of the misreading it undoes

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.start, "from": self.before, "to": self.after, "kind": self.kind,
                "gain": round(self.gain, 2), "channel": round(self.channel, 2)}


@dataclass
class Doubt:
    """A choice the repairer's evidence left close (``OcrRepairer(doubts=...)``): the span of the
    input it covers, the texts it could stand as there (the first: as it stands, kept), the
    repairer's score of each (keeping it scores the margin a change had to clear), the
    misreading's log-probability, the one taken, and the kind of change each is (``keep`` for
    the first). A judge with more context may settle it otherwise (:mod:`.judge`)."""

    start: int
    end: int
    options: list[str]
    scores: list[float]
    channels: list[float]
    chosen: int
    kinds: list[str]


@dataclass
class Repaired:
    text: str
    changes: list[Change] = field(default_factory=list)
    long_s: bool = False
    doubts: list[Doubt] = field(default_factory=list)


class OcrRepairer:
    """Repairs OCR texts with one period lexicon and one confusion model; per word-type work is
    cached, so a corpus costs its distinct words once."""

    def __init__(self, lexicon: PeriodLexicon, confusions: ConfusionModel, settings: RepairSettings | None = None,
                 cache_size: int = 200_000, doubts: float | None = None):
        self.lex, self.conf = lexicon, confusions
        self.s = settings or RepairSettings()
        # a decision within this much of going the other way is recorded as a Doubt (None: none
        # recorded, and the repair runs as it always did)
        self.doubt = doubts
        self._cache: dict[tuple[str, bool, float | None], tuple] = {}
        self._priors: dict[str, Any] = {}
        self._keys: dict[str, str] = {}
        self._words: dict[str, tuple[str, float | None]] = {}  # a word's key and prior (_keys_and_priors)
        self._unknowns: dict[str, float] = {}
        self._lms: dict[tuple, float] = {}
        self._char_logps: dict[str, float] = {}
        self._misreadings: dict[tuple, tuple] = {}
        self._lower: dict[str, float] | None = None
        self._by_length: dict[int, list[str]] | None = None
        self._letters: frozenset[str] | None = None  # the letters of the period's words but the plain ones
        self._near_masks: dict[int, bytes] = {}  # (the compiled scan's letter kinds of each pool)
        self._cache_size = cache_size
        # searches shared with other processes (share_searches): those made here since they were
        # last taken, and those made elsewhere not yet asked for here
        self._made: list[tuple] | None = None
        self._shared: dict[tuple, tuple] = {}
        self.shared_read = self.shared_used = 0
        # the candidate search's arguments for a known word and an unknown one (built once: hot path)
        self._search_known = dict(max_edits=1, floor=self.s.known_floor, beam=self.s.beam, fanout=self.s.fanout)
        self._search_unknown = dict(max_edits=self.s.max_edits, floor=self.s.floor, beam=self.s.beam,
                                    fanout=self.s.fanout)
        # the tables every repair reads, built now: a worker's start pays for them, not its first text
        self._vocabulary = lexicon.vocabulary(self.s.known_min_count)  # (known keys, their prefixes)
        known = self._vocabulary[0]
        # no misreading is likelier than the print itself (every rule's and near_edit's log-probability
        # at most 0): a near word whose prior alone leaves it below the least is passed over unaligned
        self._channel_at_most_0 = self.s.near_edit <= 0 and \
            all(lp <= 0 for alts in confusions.rules.values() for _, lp in alts)
        self._longest = min(MAX_SEARCHED, 2 * max(map(len, known), default=0) + 1)
        lexicon.char_logp("")
        # (the long s's walk only where it is always read: print without it is most of any
        # collection, and a walk's tables take ~35 ms to build, before the workers fork)
        confusions.prepare(known, word_key, lexicon.logp, long_s_too=self.s.long_s == "on")
        self._period_letters()

    # ---------------------------------------------------------------- searches shared
    def share_searches(self, on: bool = True) -> None:
        """Keep each candidate search made from now on for other processes (``searches_made``)
        and take theirs (``add_searches``); ``on`` False: neither, those taken and not used dropped."""
        self._made = [] if on else None
        if not on:
            self._shared.clear()

    def searches_made(self) -> list[tuple]:
        """The candidate searches made since this was last asked (``share_searches``): (the
        search's key, its candidates) each."""
        made = self._made or []
        if self._made is not None:
            self._made = []
        return made

    def add_searches(self, searches: list[tuple]) -> None:
        """Candidate searches another process made (``searches_made``), used when a word asks
        for them as if searched here: the search is the same function of the same lexicon, model
        and settings, so where it ran changes nothing but the time."""
        self.shared_read += len(searches)
        cache, shared = self._cache, self._shared
        for ck, found in searches:
            if ck not in cache:
                if len(shared) >= self._cache_size:  # (bounded as every cache here)
                    shared.clear()
                shared[ck] = found

    # ---------------------------------------------------------------- the document
    def repair(self, text: str, year: int | None = None) -> Repaired:
        """The repaired text and every change. A text longer than ``PIECE`` characters is repaired
        in pieces cut at a line break (or a space), so memory stays bounded whatever its size.
        Decomposed accents and invisible characters are searched as :mod:`.forms` reads them (the
        same repairs in NFC and NFD), the text not changed kept as it came."""
        announce_walk(self.conf.compiled)
        view = SearchText.of(text)
        if view is not None:  # (its doubts' offsets are the view's: none kept)
            done = self._repair_pieces(view.text, year)
            return Repaired(*view.restore(done.changes), done.long_s)
        return self._repair_pieces(text, year)

    def _repair_pieces(self, text: str, year: int | None) -> Repaired:
        if len(text) <= PIECE:
            return self._repair(text, year)
        out, changes, doubts, long_s, pos = [], [], [], False, 0
        while pos < len(text):
            end = _cut(text, pos)
            done = self._repair(text[pos:end], year)
            out.append(done.text)
            changes += [Change(c.start + pos, c.before, c.after, c.kind, c.gain, c.channel) for c in done.changes]
            doubts += [Doubt(d.start + pos, d.end + pos, d.options, d.scores, d.channels, d.chosen, d.kinds)
                       for d in done.doubts]
            long_s = long_s or done.long_s
            pos = end
        return Repaired("".join(out), changes, long_s, doubts)

    def _repair(self, text: str, year: int | None = None) -> Repaired:
        # the tokens and the text between them in one pass, where they start and end summed from
        # their lengths (a match object each, and three calls on it, took a third longer)
        parts = _TOKEN_SPLIT.split(text)
        found = parts[1::2]
        bounds = list(accumulate(map(len, parts)))
        starts, ends = bounds[0:-1:2], bounds[1::2]
        keys, priors = self._keys_and_priors(found)
        counts = Counter(keys)
        long_s = self.uses_long_s(keys, priors, year)
        if self.s.doc_min_count:
            self._add_document_evidence(found, keys, counts, priors, long_s)
        doc = _Doc(text, found, starts, keys, priors, text.count("\n") * 200 < len(text), long_s,
                   self._noise_adjustment(found, priors), self.s.sums and MONEY.search(text) is not None,
                   self._doc_cache(counts, len(keys)))
        out, changes, pos = self._walk(doc, ends)
        strays = self._strays(doc, changes)
        edges = self._edges(doc, changes, strays)
        if edges:  # (a line edge's letter the walk read as a word is deleted all the same)
            gone = {c.start + (c.before[0] == " ") for c in edges}
            changes = [c for c in changes if c.start not in gone]
            strays += edges
        if strays:  # (rare: the text again, with the strays' deletions among the changes)
            changes = sorted(changes + strays, key=lambda c: c.start)
            out, pos = [], 0
            for c in changes:
                out += [text[pos:c.start], c.after]
                pos = c.start + len(c.before)
        out.append(text[pos:])
        return Repaired("".join(out), changes, long_s, _standing(doc.doubts, changes))

    def _walk(self, doc: "_Doc", ends: list[int]) -> tuple[list[str], list[Change], int]:
        """The words of ``doc`` in order, each repaired as a pair (glued, joined), a sum, the
        pronoun, a word, or a space after it, a repaired word the next one's context: (the text's
        pieces up to ``pos``, the changes, ``pos``)."""
        text, found, starts, keys, priors, long_s = doc.text, doc.words, doc.starts, doc.keys, doc.priors, doc.long_s
        out: list[str] = []
        changes: list[Change] = []
        pos = i = 0
        n = len(found)
        # the tests that end most two-word searches at once, made here (per word, not per call):
        # two words that stand as words are not one glued; a join must be the period's word; a
        # lost space follows a stop
        words_ok = [p is not None and (len(w) > 1 or w in _LONE_WORDS) for w, p in zip(found, priors)]  # (_is_word)
        glued, money = self.s.glued, doc.money
        # the pairs whose keys joined are a word of the period, found at once (the walk changes a
        # key only once past it, so the pair i, i + 1 is as it was when the walk comes to i)
        unigrams = self.lex.unigrams
        joinable = set(compress(count(), map(unigrams.__contains__, map(str.__add__, keys, keys[1:])))) \
            if self.s.joins else ()  # (in C: a comprehension took as long as the test in the loop)
        # each word's candidates as the cache holds them now (None: not searched yet; in C, at once):
        # a search is a function of its key, so one made later in the walk is the same
        searched = list(map(self._cache.get, zip(found, repeat(long_s), priors)))
        while i < n:
            fix = None
            if i + 1 < n:
                if glued and not (words_ok[i] and words_ok[i + 1]) and starts[i + 1] == ends[i] + 1 \
                        and text[ends[i]] in _GLUE:  # (_glued's first test, here: one mark between)
                    fix = self._glued(doc, i)
                if i in joinable:
                    join = self._join(doc, i)  # "w ill": "will" joined may beat "wall" glued (the better wins)
                    if join is not None and (fix is None or join[3] > fix[3]):
                        fix = join
            word = found[i]
            if fix is None and money and len(word) <= 4 and word[-1] in "sd":  # (what a sum can be)
                fix = self._fix_sum(doc, i)
            if fix is None and word in _PRONOUN_SHAPES:
                fix = self._fix_pronoun(doc, i)
            if fix is None:
                cands = searched[i]  # (a word searched in vain: only a capital _fix_case may make small)
                if (cands != () or word[0] in _CASE_SHAPES and priors[i] is not None) \
                        and not _line_end_half(text, starts[i], ends[i]):
                    fix = self._fix_word(doc, i, cands)
            if i + 1 < n and text[ends[i]] in _STOP_CHARS \
                    and (fix is None or fix[2] not in ("join", "glued")):
                fix = self._space_after(doc, i, fix)
            if fix is not None:
                pos = self._apply(doc, i, fix, pos, out, changes)
                i += 2 if fix[2] in ("join", "glued") else 1
                continue
            i += 1
        return out, changes, pos

    def _apply(self, doc: "_Doc", i: int, fix: tuple, pos: int, out: list[str], changes: list[Change]) -> int:
        """Write word ``i``'s ``fix`` after the text from ``pos``, record it, and make the word
        repaired the next one's context; returns the position after the words it replaced."""
        text, start = doc.text, doc.starts[i]
        after, end, kind, gain, ch = fix
        if self.s.long_s_output == "modern":
            after = after.replace(LONG_S, "s")
        out.append(text[pos:start])
        out.append(after)
        changes.append(Change(start, text[start:end], after, kind, gain, ch))
        if kind in _ONE_WORD and " " not in after:  # the next word's context is the word repaired
            doc.keys[i] = self._key(after)
            doc.priors[i] = self._prior(doc.keys[i])
        return end

    def _strays(self, doc: "_Doc", changes: list[Change]) -> list[Change]:
        """Debris between words: a token of marks standing alone (`` ^ ``, `` ¦ ``, `` ,, ``) is
        deleted, with a space beside it, where the document sets each of its marks so alone far more
        often than the period does in a text as long (``stray_share``: the share of them that must
        be excess over the period lexicon's ``marks``; at least ``stray_min_count`` of them): a
        page with forty `` ' `` alone where the period sets one is debris; a dash between clauses
        at the period's rate is not."""
        if not self.s.strays or not self.lex.marks or doc.noise < self.s.stray_noise:
            return []  # (a clean text's marks are its own: Mayhew's tables set " | " thousands of times)
        found = stray_tokens(doc.text)
        if not found:
            return []
        per_mark = Counter(c for m in found for c in set(m.group(0)))
        words = len(doc.words)
        excess = set()
        for c, n in per_mark.items():
            expected = (self.lex.marks.get(c, 0) + 0.5) * words / self.lex.total
            if n >= self.s.stray_min_count and 1 - expected / n > self.s.stray_share:
                excess.add(c)
        if not excess:
            return []
        taken = [(c.start, c.start + len(c.before)) for c in changes]
        out = []
        for m in found:
            if not excess.issuperset(m.group(0)) or m.group(0) in _STOPS:
                continue  # (a stop or comma alone is a space added before it more often: ICDAR's `` ,`` 86 of 111 times)
            start, end = m.span()
            if start and doc.text[start - 1] == " ":
                start -= 1
            elif doc.text[end:end + 1] == " ":
                end += 1
            if _overlaps(taken, start, end):
                continue  # (beside a change: it is that change's)
            out.append(Change(start, doc.text[start:end], "", "debris", 0.0, 0.0))
        return out

    def _edges(self, doc: "_Doc", changes: list[Change], strays: list[Change]) -> list[Change]:
        """A letter or rule alone at a line's start or end (``_edge_matches``) in a text with lines, noisy
        enough for marks to be misreadings (``stray_noise``): a newspaper column's rule read as
        ``I``, ``l``, ``1``, ``i``, ``j``, ``|``, deleted with its space (``which/I in the``,
        ``ground I/for``, ``and/i worked``); so is a mark no compositor set there (a line begun
        with a stop, a comma or a quote, a quote ending one, a stop or comma alone after a stop).
        An ``I`` stays unless the next word is a capital's (``I/By Alderman``: the pronoun is not
        followed by a name or a heading) or a word the period sets after I less often than
        anywhere (``I/the``, ``I/in``; ``I/shortly``, never seen after it, and an unknown word are
        no evidence); a ``1`` or ``l`` stays on a line with a number (``1 in 76``, ``oats 1
        potatoes 1``), after a comma (an index's ``Stephanides, 1``), or where the next word
        follows I as it follows the pronoun (``we/1 believe``: the pronoun misread, not debris).
        ``changes``, ``strays``: the walk's and the strays' deletions; an edge beside one is left,
        unless the change is the edge's letter read as a word (``j`` -> ``i``: the caller drops it)."""
        if not self.s.edges or doc.flattened or doc.noise < self.s.stray_noise:
            return []  # (a flattened text has no line edges: a line break is a space there)
        text, out = doc.text, []
        taken = sorted((c.start, c.start + len(c.before)) for c in (*changes, *strays)
                       if not _EDGE_WORD.fullmatch(c.before))
        for m in _edge_matches(text):
            token, at = m.group(1), m.start(1)
            nxt = bisect.bisect_left(doc.starts, at + 1)  # (the word after the token)
            if token == "I" and not self._not_after_i(doc, nxt) \
                    or token in "1l" and (_line_has_number(text, at) or text[at - 2:at] == ", "
                                          or self._after_i(doc, nxt)):
                continue
            start, end = m.span()
            if _overlaps(taken, start, end):
                continue  # (a change of its own: the walk read it as a word)
            out.append(Change(start, text[start:end], "", "debris", 0.0, 0.0))
        return out

    def _not_after_i(self, doc: "_Doc", i: int) -> bool:
        """Whether word ``i`` begins with a capital, or is a word the period sets after I less
        often than anywhere (a pair it has seen: an unseen pair costs ``BACKOFF``)."""
        if i >= len(doc.words):
            return False
        drawn = self._drawn_by_i(doc, i)
        return doc.words[i][0].isupper() or drawn is not None and drawn < BACKOFF

    def _after_i(self, doc: "_Doc", i: int) -> bool:
        """Whether word ``i`` follows I ``pronoun`` (log) times likelier than it stands anywhere
        (``am``, ``believe``)."""
        drawn = self._drawn_by_i(doc, i) if i < len(doc.words) else None
        return drawn is not None and self.s.pronoun is not None and drawn > self.s.pronoun

    def _drawn_by_i(self, doc: "_Doc", i: int) -> float | None:
        """log P(word ``i`` | I) - log P(word ``i``): how much likelier the word is after the
        pronoun than anywhere; None for a word the period does not know (no evidence)."""
        return None if doc.priors[i] is None else self.lex.logp_after("i", doc.keys[i]) - doc.priors[i]

    def uses_long_s(self, keys: list[str], priors: list[float | None], year: int | None) -> bool:
        """Whether the text was printed with the long s: ``on``/``off`` as set; ``auto``: words
        that are not the period's with ``f`` but are with ``s`` (``fuch``, ``himfelf``) make up
        a share of the words with an ``f`` that only long-s print gives, or the year is early."""
        if self.s.long_s != "auto":
            return self.s.long_s == "on"
        with_f = hits = 0
        for k, p in zip(keys, priors):
            if "f" in k:
                with_f += 1
                hits += p is None and self._prior(k.replace("f", "s")) is not None
        share = hits / with_f if with_f else 0.0
        if year is not None and year < self.s.long_s_before:
            return share > 0.01
        return share > 0.05 and hits >= 3

    def _noise_adjustment(self, words: list[str], priors: list[float | None]) -> float:
        """A misreading is as likely as the document is noisy: the share of its words the period
        does not know (words of letters, and of marks read for letters: ``th»``), against that
        share in the OCR the confusion model was learned from
        (``noise_reference``), scales every misreading's probability, so a clean text (a
        transcription, good print) is hardly touched while a bad scan is repaired freely."""
        if not self.s.noise_weight:
            return 0.0
        counted = [p for w, p in zip(words, priors) if len(w) > 1 and (w.isalpha() or _NEAR_WORD.fullmatch(w))]
        n, unknown = len(counted), counted.count(None)
        share = max(unknown / n if n else 0.0, 1e-3)
        return min(self.s.noise_cap, self.s.noise_weight * math.log(share / self.s.noise_reference))

    # ---------------------------------------------------------------- the evidence
    def _keys_and_priors(self, words: list[str]) -> tuple[list[str], list[float | None]]:
        """Each word's ``_key`` and ``_prior``, read from one cache in place of two calls a word
        (most of a text's words were seen before: the calls were a tenth of the repair's time)."""
        both = list(map(self._words.get, words))
        if None in both:  # (words new to this repairer: a text's first, mostly)
            both = [got or self._key_and_prior(w) for w, got in zip(words, both)]
        return [k for k, _ in both], [p for _, p in both]

    def _key_and_prior(self, word: str) -> tuple[str, float | None]:
        key = self._key(word)
        return self._remember(self._words, word, (key, self._prior(key)))

    def _remember(self, store: dict, key: Any, value: Any) -> Any:
        """``value``, kept in ``store`` under ``key``: every cache of this repairer, each emptied
        when it holds ``cache_size`` entries (a long run's memory stays bounded)."""
        if len(store) >= self._cache_size:
            store.clear()
        store[key] = value
        return value

    def _key(self, word: str) -> str:
        got = self._keys.get(word)
        if got is None:
            got = self._remember(self._keys, word, word_key(word))
        return got

    def _add_document_evidence(self, words: list[str], keys: list[str], counts: Counter,
                               priors: list[float | None], long_s: bool) -> None:
        """A word the document itself uses often is a word of the document (``fleete`` in Stow,
        ``Carrie`` in a diary) when it is too frequent to be misreadings of the words it may
        stand for: more often than those words' own count here plus ``doc_slack`` times what the
        period's frequency expects of them in a text this long, each times the misreading's
        probability (``doc_boost`` times it, at most 1: one scan misreads one glyph far more
        often than OCR on average does). ``tbe`` beside ``the`` is not, nor is a word whose
        letters are unlike the period's (``tiie``, 105 times in one paper: one misreading made
        often), nor one with a letter or mark the period never printed (``th»``: one misreading
        made often); such a word gets its document frequency as its prior (in place in ``priors``).
        ``counts``: ``keys`` counted."""
        total = max(1, len(keys))
        least = self.s.doc_min_count
        frequent = [k for k, n in counts.items() if n >= least]
        first = dict(zip(reversed(keys), reversed(words))) if frequent else {}  # (the last written: the first word)
        own: dict[str, float] = {}
        slack = self.s.doc_slack * total
        for k in frequent:
            could_be = sum((counts.get(ck, 0) + slack * exp_p) * share for ck, exp_p, share in
                           self._misread_from(first[k], k, long_s))
            if counts[k] > could_be and self._char_logp(k) > self.s.own_min_char and not self._unprinted(k):
                own[k] = math.log(counts[k] / total) + self.s.doc_penalty
        if own:  # (one pass over the words, in place: the caller's list)
            priors[:] = [p if (lp := own.get(k)) is None or p is not None and lp <= p else lp
                         for k, p in zip(keys, priors)]

    def _doc_cache(self, counts: Counter, total: int) -> dict[str, float]:
        """The period's words the text itself uses ``cache_min_count`` times or more, each with its
        share of the text's words plus ``cache_penalty`` as a log-probability: a candidate the
        text uses (``acres`` in a sale of land, ``Creek`` in a report of creeks) is likelier here
        than the period's frequency says. Empty with ``cache_penalty`` None. ``counts``: the text's
        keys counted, ``total`` of them."""
        if self.s.cache_penalty is None or not total:
            return {}
        log_total, least = math.log(total), self.s.cache_min_count
        return {k: math.log(n) - log_total + self.s.cache_penalty for k, n in counts.items()
                if n >= least and self._prior(k) is not None}

    def _prior(self, key: str) -> float | None:
        """log P(word) by the period lexicon, None for a word it does not hold. The period's
        elisions ("hop'd", "pass'd", "'tis") count as their full spelling when it is known."""
        got = self._priors.get(key, _MISSING)
        if got is not _MISSING:
            return got
        lex, least = self.lex, self.s.known_min_count
        got = lex.logp(key) if lex.count(key) >= least else None
        if got is None and "'" in key:
            full = next((v for v in (key.replace("'d", "ed"), key.replace("'", "e"), key.replace("'", ""))
                         if lex.count(v) >= least), None)
            got = None if full is None else lex.logp(full)
        return self._remember(self._priors, key, got)

    def _misread_from(self, word: str, key: str, long_s: bool) -> tuple:
        """(key, P(it), min(1, ``doc_boost`` x P(word | it))) of each of the period's words ``word``
        may be a misreading of (its ``_candidates``): what ``_add_document_evidence`` weighs a
        frequent word against, cached (the same words are frequent in document after document)."""
        prior = self._prior(key)
        ck = (word, long_s, prior)
        got = self._misreadings.get(ck)
        if got is None:
            got = self._remember(self._misreadings, ck, tuple(
                (c, math.exp(p), min(1.0, self.s.doc_boost * math.exp(ch)))
                for _, c, ch, p in self._candidates(word, key, prior, long_s) if p is not None))
        return got

    def _unknown(self, key: str) -> float:
        """log P(word) of a word the period lexicon lacks: ``unknown``, raised or lowered by how
        much its letters look like the period's words (``char_weight``; cached)."""
        if not self.s.char_weight:
            return self.s.unknown
        got = self._unknowns.get(key)
        if got is None:
            got = self._remember(self._unknowns, key, self.s.unknown + self.s.char_weight * len(key) * (
                self._char_logp(key) - self.s.char_reference))
        return got

    def _char_logp(self, key: str) -> float:
        """The lexicon's ``char_logp`` of ``key``, cached: a document's frequent words are asked
        for again in every document that uses them."""
        got = self._char_logps.get(key)
        if got is None:
            got = self._remember(self._char_logps, key, self.lex.char_logp(key))
        return got

    def _lm(self, key: str, prior: float | None, prev: str | None, nxt: str | None) -> float:
        """log P(key | prev) + log P(nxt | key) (``_lm_of``), cached: a word and its candidates
        are scored in the same neighbours again and again (``of the``, ``in the``)."""
        ck = (key, prior, prev, nxt)
        got = self._lms.get(ck)
        if got is None:
            got = self._remember(self._lms, ck, self._lm_of(key, prior, prev, nxt))
        return got

    def _lm_of(self, key: str, prior: float | None, prev: str | None, nxt: str | None) -> float:
        """log P(key | prev) + log P(nxt | key): the period's bigrams, backing off to the word's
        prior (the lexicon's, or the document's own evidence)."""
        lex = self.lex
        if prior is None:
            return self._unknown(key) + (lex.logp(nxt) if nxt is not None else 0.0)
        if prev is None:
            lp = prior
        elif key in lex.unigrams:
            lp = lex.logp_after(prev, key)
            if lp < BACKOFF + prior:  # the document knows the word better than the lexicon does
                lp = BACKOFF + prior
        else:
            lp = BACKOFF + prior
        if nxt is not None:
            lp += lex.logp_after(key, nxt)
        return lp

    # ---------------------------------------------------------------- one word
    def _fix_word(self, doc: "_Doc", i: int, cands: tuple | None = None):
        """``cands``: the word's candidates where the caller has them (else searched)."""
        word = doc.words[i]
        if cands is None:
            cands = self._candidates(word, doc.keys[i], doc.priors[i], doc.long_s)
        if not cands:
            return self._fix_case(doc, i) if word[0].isupper() and doc.priors[i] is not None else None
        if len(word) <= self.s.unit_letters and i and _NUMBER.fullmatch(doc.words[i - 1]) \
                and doc.text[doc.starts[i] - 1] == " ":
            return None  # "440 gs", "300 sovs", "3 yrs", "2s Cd": a unit or a sum after a number
        if len(word) == 1 and (doc.text[doc.starts[i] + 1:doc.starts[i] + 2] not in _LETTER_ENDS
                               or doc.text[doc.starts[i] - 1:doc.starts[i]] not in ("", " ", "\n")):
            return None  # "p. m.", "o'clock", "w.s": a letter that stands for a word, or a piece of one
        prev, nxt = doc.context(i)
        if nxt is None and i + 1 < len(doc.words):
            nxt = self._likely(doc, i + 1)
        lm, weight, noise, known = self.lex, self.s.lm_weight, doc.noise, doc.priors[i] is not None
        own = weight * self._lm(doc.keys[i], doc.priors[i], prev, nxt)
        best, best_score, best_ch = None, -math.inf, 0.0
        options = [] if self.doubt is not None else None
        scored_lm = self._lms.get  # (_lm's cache read here: most candidates were scored in this context before)
        for cand, key, ch, prior in cands:
            if prior is None:  # a split: two words
                a, b = key.split(" ", 1)
                score = (lm.logp_after(prev, a) if prev is not None else lm.logp(a)) + lm.logp_after(a, b) + \
                    (lm.logp_after(b, nxt) if nxt is not None else 0.0)
            else:
                # (the text's own use raises a candidate for an unknown word only: against a known
                # word it only ever changed the period's spellings, ``owner`` into the book's ``owners``)
                here = prior if known else doc.prior_here(key, prior)
                score = scored_lm((key, here, prev, nxt))
                if score is None:
                    score = self._lm(key, here, prev, nxt)
            score = weight * score + ch + noise - own
            if options is not None:
                options.append((cand, score, ch, "split" if " " in cand else "word"))
            if score > best_score:
                best, best_score, best_ch = cand, score, ch
        margin = self.s.name_margin if _is_name(word, doc.text, doc.starts[i]) else \
            self.s.short_margin if len(word) < 3 else self.s.margin
        if doc.priors[i] is not None:
            margin += self.s.known_margin
        if options:
            self._note_doubt(doc, doc.starts[i], doc.starts[i] + len(word), options, margin)
        if best is None or best_score <= margin:
            return None
        if word[0].islower() and best[0].isupper() and " " not in best and self._small_here(doc, i, best):
            best = best[0].lower() + best[1:]
        return best, doc.starts[i] + len(word), "split" if " " in best else "word", best_score, best_ch

    def _note_doubt(self, doc: "_Doc", start: int, end: int, options: list[tuple], margin: float) -> None:
        """Records the choice over ``text[start:end]`` as a Doubt when it was close: the best
        candidate within ``doubts`` of the margin (either side), or a change taken with the
        runner-up within ``doubts`` of it. ``options``: (candidate, score, channel, kind)."""
        options = sorted(options, key=lambda o: -o[1])[:3]
        best = options[0][1]
        if abs(best - margin) >= self.doubt and \
                (best <= margin or len(options) < 2 or best - options[1][1] >= self.doubt):
            return
        modern = self.s.long_s_output == "modern"  # (as the walk writes a change: so the judge's are too)
        texts = [o[0].replace(LONG_S, "s") if modern else o[0] for o in options]
        doc.doubts.append(Doubt(start, end, [doc.text[start:end], *texts], [margin, *(o[1] for o in options)],
                                [0.0, *(o[2] for o in options)], int(best > margin),
                                ["keep", *(o[3] for o in options)]))

    def _small_here(self, doc: "_Doc", i: int, cand: str) -> bool:
        """``came ln the``: a rule takes the small ``l`` for a printed capital ``I``, but in mid-sentence the
        period set this word small (most of the times it stood there: not a name), so it was ``in``
        (CV +0.05 raw)."""
        start = doc.starts[i]
        return start >= 2 and _MID.match(doc.text, start - 2) is not None and \
            self.lex.capital_share(word_key(cand)) < 0.5

    def _likely(self, doc: "_Doc", j: int) -> str | None:
        """The key of the period's word an unknown word ``j`` most likely stands for (its first
        candidate), as the context of the word before it: ``will he mado`` reads ``he`` beside
        ``made`` (CV +0.05 raw). None where there is none, or it is two words."""
        word = doc.words[j]
        if doc.priors[j] is not None or not self._searchable(word, False):
            return None
        cands = self._candidates(word, doc.keys[j], None, doc.long_s)
        if not cands or cands[0][3] is None:
            return None
        return cands[0][1]

    def _fix_sum(self, doc: "_Doc", i: int):
        """``£1 Is.`` -> ``£1 1s.``: a sum of money whose digits the OCR read as letters, where
        the sum around it says so (:mod:`.sums`)."""
        word, start = doc.words[i], doc.starts[i]
        after = repaired_sum(doc.text, start, word)
        if after is None:
            return None
        return after, start + len(word), "sum", 0.0, 0.0

    def _fix_pronoun(self, doc: "_Doc", i: int):
        """``of which 1 am``, ``cold. 1 saw``: the pronoun I read as a 1 or an l, between two words
        (a comma or a sentence's stop may stand before it, never one after it), where the next
        word follows I ``pronoun`` (log) times likelier than it stands anywhere (``am``, ``shall``,
        ``thought``; not ``1 and 2``, ``1 year``, ``1 the``)."""
        start, n = doc.starts[i], len(doc.words)
        if self.s.pronoun is None or not 0 < i < n - 1 or doc.text[start - 1:start + 2] != f" {doc.words[i]} " \
                or doc.starts[i + 1] != start + 2:
            return None
        before, nxt = doc.words[i - 1], doc.words[i + 1]
        gap = doc.text[doc.starts[i - 1] + len(before):start]
        if not before.isalpha() or gap not in _PRONOUN_GAPS or not nxt.isalpha() or not nxt.islower() \
                or doc.priors[i + 1] is None:
            return None
        gain = self._drawn_by_i(doc, i + 1)  # (known: asked above)
        if gain <= self.s.pronoun:
            return None
        return "I", start + 1, "pronoun", gain, 0.0

    def _fix_case(self, doc: "_Doc", i: int):
        """``came In from``: a capital the period never set in mid-sentence on this word, and a
        capital the OCR is known to read for the small letter, is the small letter."""
        word, start = doc.words[i], doc.starts[i]
        if len(word) < 2 or not word.istitle() or start < 2 or not _MID.match(doc.text, start - 2) \
                or doc.text[start + len(word):start + len(word) + 1] == ".":
            return None  # "Is. 6d." is a sum (1s.), an abbreviation ends with its stop
        ch = self._lower_rules().get(word[0]) if word[0] in _CASE_SHAPES else None
        if ch is None:
            return None
        share = self.lex.capital_share(doc.keys[i])
        gain = math.log(1 - share) - math.log(share) + ch + doc.noise if share < 1 else -math.inf
        if gain <= self.s.case_margin:
            return None
        return word[0].lower() + word[1:], start + len(word), "case", gain, ch

    def _lower_rules(self) -> dict[str, float]:
        """log P(capital read | small letter printed), by capital."""
        if self._lower is None:
            self._lower = {o: lp for o, alts in self.conf.rules.items() if len(o) == 1 and o.isupper()
                           for g, lp in alts if g == o.lower()}
        return self._lower

    def _candidates(self, word: str, key: str, prior: float | None, long_s: bool) -> tuple:
        """(candidate, key, log P(word | candidate), log P(candidate)) for the period's words
        ``word`` may be a misreading of: the likeliest ``candidates`` by prior and channel
        together, none that no context could bring within ``max_deficit`` of the word. Cached by
        the word as it stands and the prior it is searched with: a document's own evidence raises
        a word's prior there (and a neighbour's search asks with none), so a cache by the word
        alone would let whichever document came first decide for the rest, and a row's repair
        would depend on the rows its worker happened to see before it."""
        ck = (word, long_s, prior)
        got = self._cache.get(ck)
        if got is not None:
            return got
        if self._shared:
            got = self._shared.pop(ck, None)
            if got is not None:  # (searched by another process: add_searches)
                self.shared_used += 1
                return self._remember(self._cache, ck, got)
        known = prior is not None
        if not self._searchable(word, known):
            self._cache[ck] = ()
            return ()
        own = prior if known else self._unknown(key)
        known_keys, prefixes = self._vocabulary
        search = self._search_known if known else self._search_unknown
        least, weight = -self.s.max_deficit, self.s.lm_weight
        near = self.s.near and not known and len(word) >= 3 and _NEAR_WORD.fullmatch(word) is not None \
            and (self.s.near_plain or _PLAIN.fullmatch(word) is None) and self._misread_letters(key)
        scored = self.conf.scored(word, known_keys, prefixes, word_key, self.lex.logp, own, weight, least,
                                  long_s=long_s, **search)
        if self.s.word_channel and word in self.conf.words:
            scored = [self._as_word(word, x) for x in scored]
        if word.islower() or word.istitle() or word.isupper():  # (an odd case, "tHe", may stand for any)
            scored = [x for x in scored if x[1].islower() or x[1].istitle() or x[1].isupper()]
        else:
            scored = _recased(scored, word)
        if self.s.splits and not known and word.isalpha() and len(key) == len(word):
            scored += self._splits(word, key, own, known_keys)
        if near and not scored:  # (only then: beside rules' candidates, worse)
            # the near search passes over every candidate the rules find, the ranked ones or not
            # (searched again for the few words that come here: ranking them all in Python took longer)
            found = self.conf.candidates(word, known_keys, prefixes, word_key, long_s=long_s, **search)
            scored = self._near(word, key, own, found, least)
        scored.sort(key=lambda x: -x[0])
        found = tuple(x[1:] for x in scored[:self.s.candidates])
        if self._made is not None:
            self._made.append((ck, found))
        return self._remember(self._cache, ck, found)

    def _as_word(self, word: str, found: tuple) -> tuple:
        """A candidate the paired data saw read as ``word`` often, whole: its channel is that
        word rule's where the rule says likelier than the letters' rules do."""
        static, cand, key, ch, prior = found
        lp = self.conf.word_channel(cand, word)
        return found if lp is None or lp <= ch else (static + lp - ch, cand, key, lp, prior)

    def _searchable(self, word: str, known: bool) -> bool:
        """A token the candidate search takes: letters (a digit among them may be a misread
        letter; a mark inside, only in a word the period lacks), never a number; one small letter
        other than ``a`` (``m`` for ``in``, ``t`` for ``to``) with ``single_letters``; none longer
        than two of the period's longest words (``MAX_SEARCHED`` at most)."""
        if len(word) < 2 and not (self.s.single_letters and word.islower() and word != "a") \
                or len(word) > self._longest:
            return False
        return not _NUMBER.fullmatch(word) and (word.isalpha() or _LETTERS_WITH_A_DIGIT.fullmatch(word) is not None
                                                or not known and (_LETTERS_WITH_A_MARK.fullmatch(word) is not None
                                                                  or _NEAR_WORD.fullmatch(word) is not None))

    def _misread_letters(self, key: str) -> bool:
        """Whether no letter of ``key`` but the plain ones is one the period's words hold, so its
        near words may stand for it (``peí``, ``th»``: another language's letters, or marks, that
        this OCR reads for letters). A letter they hold is the period's: its loans and names
        (``Cæsar``, ``Mariæ``, ``être``, ``Söller``) are no misreadings of plain words."""
        return self._period_letters().isdisjoint(key)

    def _unprinted(self, key: str) -> bool:
        """Whether ``key`` holds a letter or mark none of the period's words holds (``th»``)."""
        return not self._period_letters().issuperset(set(key) - _PLAIN_KEY)

    def _period_letters(self) -> frozenset[str]:
        """The letters and marks of the period's words but the plain letters (``æ``, ``'``):
        what :meth:`_misread_letters` and :meth:`_unprinted` read, gathered once."""
        if self._letters is None:
            self._letters = frozenset("".join(self.lex.unigrams)) - _PLAIN_KEY  # (in C: a generator took 50 ms)
        return self._letters

    def _near(self, word: str, key: str, own: float, found: Container[str], least: float) -> list[tuple]:
        """A word too garbled for the rules' search (``sdsmands``, ``baahels``): the period's words
        within a few edits of it (``_near_keys``), each difference of the alignment as likely as
        its rule, ``near_edit`` per letter where no rule has it."""
        out = []
        logp, weight = self.lex.logp, self.s.lm_weight
        at_most_0 = self._channel_at_most_0
        for k in self._near_keys(key):
            cand = _cased(k, word)
            if cand in found:
                continue
            prior = weight * (logp(k) - own)
            if at_most_0 and prior <= least:  # (its channel only lowers it: the alignment spared)
                continue
            ch = self.conf.channel(cand, word, self.s.near_edit)
            static = prior + ch
            if static > least:
                out.append((static, cand, k, ch, logp(k)))
        return out

    def _near_keys(self, key: str) -> list[str]:
        """The lexicon's keys (seen ``near_min_count`` times: a word seen once may be OCR the
        period corpus holds) within an edit per two letters of ``key`` (``near`` at most), one
        letter longer or shorter at most (further costs time and gains nothing, cross-validated)."""
        if self._by_length is None:
            self._by_length = {}
            for k, n in self.lex.unigrams.items():
                if n >= self.s.near_min_count and k.isalpha():
                    self._by_length.setdefault(len(k), []).append(k)
            self._near_masks = {n: _near_masks(pool) for n, pool in self._by_length.items()} if _compiled_near else {}
        limit = min(self.s.near, max(1, len(key) // 2))
        out: list[str] = []
        for n in range(len(key) - 1, len(key) + 2):
            pool = self._by_length.get(n)
            if pool and _compiled_near is not None:  # (3x rapidfuzz's time: a third of a cold pass was this scan)
                out += _compiled_near(key, pool, self._near_masks[n], limit)
            elif pool:
                out += [k for k, _, _ in process.extract(key, pool, scorer=Levenshtein.distance, score_cutoff=limit,
                                                          limit=None)]
        return out

    def _splits(self, word: str, key: str, own: float, known: Container[str]) -> list[tuple]:
        """A word run into the next (``TheShoreham``): both halves the period's words."""
        out = []
        for j in range(1, len(word)):
            ka, kb = key[:j], key[j:]
            if ka not in known or kb not in known:
                continue
            a, b = word[:j], word[j:]
            if (len(a) == 1 and a not in "aAI") or (len(b) == 1 and b not in "aAI"):
                continue
            pa, pb = self._prior(ka), self._prior(kb)
            if pa is not None and pb is not None:
                static = self.s.lm_weight * (pa + pb - own) + self.conf.join
                out.append((static, f"{a} {b}", f"{ka} {kb}", self.conf.join, None))
        return out

    # ---------------------------------------------------------------- two words
    def _glued(self, doc: "_Doc", i: int):
        """``En.land``, ``murd-r``, ``h.s``, ``noi e``, ``B nevolent``: a letter read as a stop,
        comma, hyphen or space cuts one word into two tokens, one of them not a word (unknown, or a
        letter other than a, A, I); the whole is repaired as one word when a candidate for it (the
        mark undone as a misread letter) beats the two halves as they stand. Two pieces longer than
        a letter are searched too (``Bak rs``): +0.2 point of CER cross-validated; across a space,
        only where one has at most ``glued_space`` letters (``Patrona e`` is the thorough search's)."""
        a = doc.words[i]
        a_end, b_start = doc.starts[i] + len(a), doc.starts[i + 1]
        if b_start != a_end + 1 or doc.text[a_end] not in _GLUE:
            return None  # (first: most words are not glued, and this is cheap)
        b, pa, pb = doc.words[i + 1], doc.priors[i], doc.priors[i + 1]
        if not a.isalpha() or not b.isalpha() or _is_word(a, pa) and _is_word(b, pb):
            return None
        if doc.text[a_end] == " " and len(a) > self.s.glued_space and len(b) > self.s.glued_space:
            return None
        whole = a + doc.text[a_end] + b
        cands = self._candidates(whole, self._key(whole), None, doc.long_s)
        if not cands:
            return None
        ka, kb = doc.keys[i], doc.keys[i + 1]
        prev = doc.keys[i - 1] if i > 0 and doc.priors[i - 1] is not None else None
        nxt = doc.keys[i + 2] if i + 2 < len(doc.keys) and doc.priors[i + 2] is not None else None
        apart = self._lm(ka, pa, prev, None) + self._lm(kb, pb, ka if pa is not None else None, nxt)
        best, best_score, best_ch = None, -math.inf, 0.0
        options = [] if self.doubt is not None else None
        for cand, key, ch, prior in cands:
            # the mark dropped, not read for a letter, is a line-end hyphen: the join's to decide
            if prior is not None and key != ka + kb:  # (a split is two words, not one)
                score = self.s.lm_weight * (self._lm(key, doc.prior_here(key, prior), prev, nxt) - apart) + ch + doc.noise
                if options is not None:
                    options.append((cand, score, ch, "glued"))
                if score > best_score:
                    best, best_score, best_ch = cand, score, ch
        margin = self.s.name_margin if _is_name(a, doc.text, doc.starts[i]) else self.s.margin
        if options:
            self._note_doubt(doc, doc.starts[i], b_start + len(b), options, margin)
        if best is None or best_score <= margin:
            return None
        return best, b_start + len(b), "glued", best_score, best_ch

    def _join(self, doc: "_Doc", i: int):
        """Words ``i`` and ``i+1`` are one word the OCR split (a space added, or a line-end
        hyphen lost) when the joined word is the period's and the language model prefers it to
        the halves by the margin (a wider one, ``join_margin``, when both halves are words too:
        the period wrote "any body", "my self")."""
        ka, kb = doc.keys[i], doc.keys[i + 1]
        joined = ka + kb
        pj = self._prior(joined) if joined in self.lex.unigrams else None
        if pj is None:
            return None
        a, b = doc.words[i], doc.words[i + 1]
        a_end, b_start = doc.starts[i] + len(a), doc.starts[i + 1]
        gap = doc.text[a_end:b_start]
        if gap not in (" ", "\n", "-") or not a.isalpha() or not b.isalpha():
            return None
        pa, pb = doc.priors[i], doc.priors[i + 1]
        if gap == "-" and (pa is not None and pb is not None or self._prior(f"{ka}-{kb}") is not None):
            return None  # a compound of two words ("to-morrow", "well-known"), as the period wrote it
        margin = self.s.join_margin if pa is not None and pb is not None else self.s.margin
        prev = doc.keys[i - 1] if i > 0 and doc.priors[i - 1] is not None else None
        nxt = doc.keys[i + 2] if i + 2 < len(doc.keys) and doc.priors[i + 2] is not None else None
        apart = self._lm(ka, pa, prev, None) + self._lm(kb, pb, ka if pa is not None else None, nxt)
        # a line-end hyphen breaks between syllables: never after or before a single letter
        hyphen = gap == "\n" or (doc.flattened and self.conf.hyphen > self.conf.split and len(a) > 1 and len(b) > 1)
        ch = self.conf.hyphen if hyphen else self.conf.split
        gain = self.s.lm_weight * (self._lm(joined, pj, prev, nxt) - apart) + ch + doc.noise
        if gain <= margin:
            return None
        end = b_start + len(b)
        if gap == "\n":  # as the cleaning joins a hyphenated line end: the word ends the first line
            return a + b + "\n", end + (doc.text[end:end + 1] == " "), "join", gain, ch
        if gap == "-":  # "Ben-son": a hyphenated line end whose break was lost with the lines
            return (f"{a}- {b}" if doc.flattened else a + b), end, "join", gain, ch
        return (f"{a}- {b}" if hyphen else a + b), end, "join", gain, ch

    def _space_after(self, doc: "_Doc", i: int, fix):
        """``chairman,and``: the space print always set after a comma or stop between two words,
        lost; restored when both words are the period's."""
        start, word = doc.starts[i], doc.words[i]
        a_end, b_start = start + len(word), doc.starts[i + 1]
        gap = doc.text[a_end:b_start]
        if gap not in _STOPS or doc.priors[i + 1] is None or not doc.words[i + 1].isalpha():
            return fix
        after = fix[0] if fix is not None else word
        if word_key(after) not in self.lex.unigrams or not after.isalpha() or len(after) < 2 or \
                (gap in ".!?" and (len(after) < 3 or after.isupper() or not doc.words[i + 1][0].isupper())):
            return fix  # "M.P.", "F.C.": initials are set close
        gain, ch = (fix[3], fix[4]) if fix is not None else (0.0, 0.0)
        return after + gap + " ", b_start, fix[2] if fix is not None else "space", gain, ch


@dataclass
class _Doc:
    """One text as the corrector walks it: its words, where they start, their keys and priors."""

    text: str
    words: list[str]
    starts: list[int]
    keys: list[str]
    priors: list[float | None]
    flattened: bool          # no line breaks: a space may be where a line ended
    long_s: bool
    noise: float             # log of how much likelier a misreading is here than in the paired data
    money: bool              # the text holds sums of money (a misread one may be among them)
    cache: dict[str, float]  # the period's words this text uses often, and their prior here (_doc_cache)
    doubts: list[Doubt] = field(default_factory=list)  # close decisions, with OcrRepairer(doubts=...)

    def prior_here(self, key: str, prior: float) -> float:
        """A candidate's prior in this text: the period's, or the text's own use of it where that
        is higher (``cache``)."""
        here = self.cache.get(key)
        return prior if here is None or here <= prior else here

    def context(self, i: int) -> tuple[str | None, str | None]:
        """The known words either side (an unknown neighbour is no evidence)."""
        prev = self.keys[i - 1] if i > 0 and self.priors[i - 1] is not None else None
        nxt = self.keys[i + 1] if i + 1 < len(self.keys) and self.priors[i + 1] is not None else None
        return prev, nxt


def _standing(doubts: list[Doubt], changes: list[Change]) -> list[Doubt]:
    """The doubts the walk's changes left as they were decided: none other in their span, and
    the change taken (if any) the one decided there, over the span. A word a two-word repair
    took, or whose change a lost space after it widened, was settled otherwise."""
    if not doubts:
        return []
    spans = [(c.start, c.start + len(c.before), c) for c in changes]
    starts = [s for s, _, _ in spans]
    out: list[Doubt] = []
    for d in sorted(doubts, key=lambda d: d.start):
        if out and out[-1].end > d.start:
            continue  # (two words kept whole and each alone: one choice, the first recorded)
        k = bisect.bisect_left(starts, d.start)
        inside = [c for s, e, c in spans[max(0, k - 1):k + 3] if s < d.end and e > d.start]
        if d.chosen == 0 and not inside:
            out.append(d)
        elif d.chosen and len(inside) == 1 and inside[0].start == d.start \
                and inside[0].start + len(inside[0].before) == d.end:
            if inside[0].kind == d.kinds[d.chosen]:
                options = list(d.options)
                options[d.chosen] = inside[0].after  # (as written: the case the walk chose)
                out.append(Doubt(d.start, d.end, options, d.scores, d.channels, d.chosen, d.kinds))
    return out


def stray_tokens(text: str) -> list[re.Match]:
    """``STRAY``'s matches in ``text``, in order (``list(STRAY.finditer(text))``), in half its
    time: tried only where a mark follows white space, and at the text's start."""
    first = STRAY.match(text)
    out = [first] if first else []
    for start in _STRAY_START.finditer(text):
        m = STRAY.match(text, start.start() + 1)  # (its look-behind sees the space before)
        if m:
            out.append(m)
    return out


# where a STRAY may start: one of its marks (its class) after white space. Searched for first, in C:
# a pattern that opens with a class is scanned for, STRAY (a look-behind first) is tried at every
# character. (Here, not in .lexicon: that module's source keys the lexicon's cached tables.)
_STRAY_START = re.compile(r"\s[^\w\s£$&%*†‡§¶{}]")


def _cut(text: str, pos: int) -> int:
    """Where the piece from ``pos`` ends: the last line break (else space) before ``PIECE``."""
    end = pos + PIECE
    if end >= len(text):
        return len(text)
    for sep in ("\n", " "):
        k = text.rfind(sep, pos + PIECE // 2, end)
        if k > 0:
            return k + 1
    return end


def _line_end_half(text: str, start: int, end: int) -> bool:
    """``Mer-\\nchants``: either half of a word a line-end hyphen breaks is no word of its own, so
    no word it is near (``Met``, ``hos`` -> ``has``) is evidence against it."""
    return text.startswith("-\n", end) or start >= 2 and text.startswith("-\n", start - 2)


def _recased(scored: list[tuple], word: str) -> list[tuple]:
    """The candidates of an oddly cased ``word`` (``JameB``), each written as ``_small_after_small``
    has it, once, at its likelier reading (``JameS`` and ``James`` are one candidate)."""
    best: dict[str, tuple] = {}
    for x in scored:
        cand = _small_after_small(x[1], word)
        if cand not in best or x[0] > best[cand][0]:
            best[cand] = (x[0], cand, *x[2:])
    return list(best.values())


def _small_after_small(cand: str, word: str) -> str:
    """``cand`` with each capital it has after a small letter, and ``word`` lacks, small: the walk
    keeps the case of what it read, so ``JameB`` (B for s) came out ``JameS``, ``monthB``
    ``monthS``; a capital the word itself has (``McDonakl``: ``McDonald``) stays."""
    chars = list(cand)
    for j in range(1, len(chars)):
        if chars[j].isupper() and chars[j - 1].islower() and chars[j] not in word:
            chars[j] = chars[j].lower()
    return "".join(chars)


def _cased(key: str, word: str) -> str:
    """``key`` written in ``word``'s case: capitals throughout, a capital first, or small."""
    if len(word) > 1 and word.isupper():
        return key.upper()
    return key[:1].upper() + key[1:] if word[:1].isupper() else key


def _is_word(token: str, prior: float | None) -> bool:
    """A token that stands as a word of its own: the period's, and more than a stray letter."""
    return prior is not None and (len(token) > 1 or token in _LONE_WORDS)


_LONE_WORDS = ("a", "A", "I")  # the letters that stand as words alone
# a letter or rule alone at a line's start (with the space after it) or end (with the space
# before it): where a newspaper's column rule is read (``!`` ends a line after a space in print);
# and a stop, comma or quote alone before a line's first word, or a quote alone at its end (a
# compositor never began a line with a stop or a comma; ``. . .`` goes on with a stop). Two
# patterns, each tried only where a line starts or ends (one of both was tried at every character)
_LINE_START = re.compile(r"(?m)^([Il1ij|!¦]|[,.;:'](?= [^\W_])) (?=\S)")
_LINE_END = re.compile(r"(?m)(?<=\S) ([Il1ij|¦']|(?<=[.,;:] )[.,])$")
_DIGIT = re.compile(r"\d")
_EDGE_WORD = re.compile(r"[Il1ij]")  # (an edge's letter the walk may have read as a word: "j" -> "i")


def _edge_matches(text: str) -> list[re.Match]:
    """The line edges in ``text`` (``_LINE_START``'s and ``_LINE_END``'s matches) in order, as one
    pattern of both would find them: a line's start first where both begin at one place, none
    overlapping the one before (``I I`` alone on a line is one start, not an end too)."""
    found = sorted([(m.start(), 0, m) for m in _LINE_START.finditer(text)]
                   + [(m.start(), 1, m) for m in _LINE_END.finditer(text)], key=lambda x: x[:2])
    out, end = [], 0
    for start, _, m in found:
        if start >= end:
            out.append(m)
            end = m.end()
    return out


def _overlaps(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``text[start:end]`` overlaps one of ``spans`` (sorted ``(start, end)`` pairs)."""
    k = bisect.bisect_left(spans, (start, start))
    return k < len(spans) and spans[k][0] < end or k > 0 and spans[k - 1][1] > start


def _line_has_number(text: str, at: int) -> bool:
    """Whether the line holding ``text[at]`` has a digit elsewhere than at ``at``."""
    start, end = text.rfind("\n", 0, at) + 1, text.find("\n", at)
    end = len(text) if end < 0 else end
    return _DIGIT.search(text, start, at) is not None or _DIGIT.search(text, at + 1, end) is not None


def _is_name(word: str, text: str, start: int) -> bool:
    """A capitalised word not at the start of a sentence: a name, until the evidence is overwhelming."""
    if not word[0].isupper():
        return False
    j = start - 1
    while j >= 0 and text[j] in " \t\"'‘“(":
        j -= 1
    return j >= 0 and text[j] not in _SENTENCE_END
