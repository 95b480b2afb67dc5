"""How readable an OCR text is: one score per document, recorded in the manifest before and
after repair, shown as a distribution in the corpus report, and what the ``ocr_quality`` filter
rejects too damaged a scan on.

The score is the share of its words the period knows (words of two letters or more found in
the period lexicon, :mod:`.lexicon`) times the share of its characters that are not
OCR debris (``■``, ``•``, ``®``, stray ``|``, ``~`` or ``^``, letters and digits run together as
in ``t9n``). Clean period prose scores about 0.95-0.99 against a lexicon of the period (names and
rare words are the rest); the ICDAR 2017 newspapers score 0.78-0.98 before repair. Without a
lexicon the score is the debris share alone.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Container, Iterable, Iterator

from .lexicon import word_key

# what print of the period sets: letters (accented and the long s), digits, space and the marks
# of prose, money and reference; anything else in an OCR text is debris
_DEBRIS = re.compile(r"[^A-Za-z0-9\u00c0-\u024f\ufb00-\ufb06\u2010\sſ.,;:!?'\"‘’“”()\[\]\-–—&£$%/*§†‡¶½¼¾⅓⅔⅛⅜⅝⅞°+=]")
_TOKEN = re.compile(r"\S+")
_WORD = re.compile(r"[A-Za-zſ\u00c0-\u024f]{2,}(?:['’][A-Za-zſ]+)*")
# letters and digits mixed in one word, not a number with its suffix ("21st", "10s", "4to"); tried
# at a word's start only: from every letter of a long word without a digit the look-ahead read to
# its end (300,000 letters run together: hours). The definition: mixed_words finds its matches sooner
_MIXED = re.compile(r"(?<!\w)(?=\w*\d)(?=\w*[A-Za-z]{1})\w+")
_NUMBER_WORD = re.compile(r"\d+(?:st|nd|rd|th|d|s|l|to|vo|mo|[ap]m)?|[A-Za-z]?\d+[A-Za-z]?", re.IGNORECASE)
BINS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass
class OcrQuality:
    """``score`` = ``known`` x (1 - ``debris``); ``known`` is None without a lexicon."""

    score: float
    known: float | None
    debris: float
    words: int

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class QualityCounts:
    """What a text's score is made of: its characters that are not white space, those that are
    debris, its words and the words the lexicon knows (None without one). Each is a sum over the
    text's tokens between white space (no character class, word or run of letters and digits the
    score reads crosses white space), so a repaired text's counts are its original's with the
    tokens a change touched counted again (:func:`repaired_counts`)."""

    chars: int
    debris: int
    words: int
    known: int | None

    def __add__(self, other: "QualityCounts") -> "QualityCounts":
        return QualityCounts(self.chars + other.chars, self.debris + other.debris, self.words + other.words,
                             None if self.known is None else self.known + other.known)

    def __sub__(self, other: "QualityCounts") -> "QualityCounts":
        return QualityCounts(self.chars - other.chars, self.debris - other.debris, self.words - other.words,
                             None if self.known is None else self.known - other.known)

    def quality(self) -> OcrQuality:
        if not self.chars:
            return OcrQuality(0.0, None if self.known is None else 0.0, 0.0, 0)
        debris_share = min(1.0, self.debris / self.chars)
        known = None if self.known is None else (self.known / self.words if self.words else 0.0)
        return OcrQuality((1.0 if known is None else known) * (1.0 - debris_share), known, debris_share, self.words)


def ocr_quality(text: str, lexicon: Container[str] | None = None) -> OcrQuality:
    """The quality of ``text``; ``lexicon`` holds word keys (a period lexicon)."""
    return quality_counts(text, lexicon).quality()


def quality_counts(text: str, lexicon: Container[str] | None = None) -> QualityCounts:
    """:class:`QualityCounts` of ``text``; ``lexicon`` holds word keys (a period lexicon)."""
    chars = sum(map(len, text.split())) if text else 0  # (not white space: split's and isspace's are one)
    if not chars:
        return QualityCounts(0, 0, 0, None if lexicon is None else 0)
    debris = len(_DEBRIS.findall(text)) + sum(len(w) for w in mixed_words(text) if not _NUMBER_WORD.fullmatch(w))
    words = _WORD.findall(text)
    known = None
    if lexicon is not None:
        # the words keyed at once, joined (a key has no space, and lower case in these scripts
        # does not depend on a word's neighbours): one call, not one a word
        known = sum(map(lexicon.__contains__, word_key(" ".join(words)).split(" "))) if words else 0
    return QualityCounts(chars, debris, len(words), known)


def repaired_counts(before: QualityCounts, text: str, changes: Iterable[Any], repaired: str,
                    lexicon: Container[str] | None = None) -> QualityCounts:
    """:func:`quality_counts` of ``repaired``, which is ``text`` (whose counts are ``before``)
    with ``changes`` made (each with ``start``, ``before``, ``after``, in order, none
    overlapping): the tokens the changes touched counted again, the rest of the text not read
    (a second full count was a sixth of a repaired text's time). Changes out of order, or that
    do not make ``repaired``'s length, are not trusted: ``repaired`` is counted whole."""
    changes = list(changes)
    if any(a.start + len(a.before) > b.start for a, b in zip(changes, changes[1:])) \
            or len(text) + sum(len(c.after) - len(c.before) for c in changes) != len(repaired):
        return quality_counts(repaired, lexicon)
    was, now, shift = [], [], 0
    for start, end, grown in _touched(text, changes):
        was.append(text[start:end])
        now.append(repaired[start + shift:end + shift + grown])
        shift += grown
    # (the spans joined by a space, counted at once: a space is no token's part, so it adds nothing)
    return before - quality_counts(" ".join(was), lexicon) + quality_counts(" ".join(now), lexicon)


def _touched(text: str, changes: Iterable[Any]) -> Iterator[tuple[int, int, int]]:
    """The spans of ``text`` the changes touch, widened to the white space either side and
    merged where they meet: (start, end, how much longer the span is repaired)."""
    span: list[int] | None = None
    for c in changes:
        start, end = c.start, c.start + len(c.before)
        while start and not text[start - 1].isspace():
            start -= 1
        while end < len(text) and not text[end].isspace():
            end += 1
        if span is not None and start <= span[1]:
            span[1], span[2] = max(span[1], end), span[2] + len(c.after) - len(c.before)
            continue
        if span is not None:
            yield tuple(span)
        span = [start, end, len(c.after) - len(c.before)]
    if span is not None:
        yield tuple(span)


def mixed_words(text: str) -> list[str]:
    """``_MIXED``'s matches in ``text`` (words of letters and digits), found from their digits in
    a third of its time: a pattern opening with a class (``\\d``) is scanned for in C, one that
    opens with a look-behind is tried at every character. A word's start is read back from its
    first digit on the reversed text (one regex match: a word of 300,000 letters costs its length)."""
    out: list[str] = []
    backwards = None
    for m in _DIGIT_TO_END.finditer(text):  # (each word with a digit once: from its first digit on)
        start, end = m.span()
        if start:
            if backwards is None:
                backwards = text[::-1]
            start -= _WORD_CHARS.match(backwards, len(text) - start).end() - (len(text) - start)
        word = text[start:end]
        if _ASCII_LETTER.search(word):
            out.append(word)
    return out


_DIGIT_TO_END = re.compile(r"\d\w*")
_WORD_CHARS = re.compile(r"\w*")
_ASCII_LETTER = re.compile(r"[A-Za-z]")


def quality_bin(score: float) -> str:
    """The report's bin of a score: ``<0.5``, ``0.5-0.6``, ..., ``>=0.95``."""
    if score < BINS[0]:
        return f"<{BINS[0]}"
    for lo, hi in zip(BINS, BINS[1:]):
        if score < hi:
            return f"{lo}-{hi}"
    return f">={BINS[-1]}"


def quality_distribution(scores: Iterable[float | None]) -> dict[str, int]:
    """Documents per bin, every bin present (in order), None scores left out."""
    out = {quality_bin(b): 0 for b in (0.0, *BINS)}
    for s in scores:
        if s is not None:
            out[quality_bin(float(s))] += 1
    return out


# The fields of a manifest or rejection row that ocr_summary reads (a large corpus is read for these only).
OCR_SUMMARY_KEYS = ("ocr", "ocr_repairs", "ocr_quality_before", "ocr_quality")


def ocr_summary(rows: Iterable[dict[str, Any]], rejections: Iterable[dict[str, Any]] = ()) -> dict[str, Any] | None:
    """The OCR part of the corpus statistics (None when no document was OCR): documents kept and
    rejected as too damaged, the quality distribution before and after repair, repairs made.
    One pass over each, holding counts only (the rows may stream from a corpus of any size)."""
    kept = rejected = too_damaged = repairs = 0
    sums = {"ocr_quality_before": [0.0, 0], "ocr_quality": [0.0, 0]}
    bins = {key: quality_distribution(()) for key in sums}
    for is_kept, group in ((True, rows), (False, rejections)):
        for r in group:
            if not r.get("ocr"):
                continue
            kept += is_kept
            rejected += not is_kept
            too_damaged += not is_kept and r.get("reason") == "ocr_too_damaged"
            repairs += int(r.get("ocr_repairs") or 0)
            for key, acc in sums.items():
                if r.get(key) is not None:
                    acc[0] += float(r[key])
                    acc[1] += 1
                    bins[key][quality_bin(float(r[key]))] += 1
    if not kept and not rejected:
        return None
    mean = {key: round(total / n, 4) if n else None for key, (total, n) in sums.items()}
    return {"documents": kept, "rejected": rejected, "rejected_too_damaged": too_damaged, "repairs": repairs,
            "mean_quality_before": mean["ocr_quality_before"], "mean_quality_after": mean["ocr_quality"],
            "quality_before": bins["ocr_quality_before"], "quality_after": bins["ocr_quality"]}
