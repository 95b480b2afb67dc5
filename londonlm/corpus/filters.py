"""Document filters in the datatrove style: each filter applies ONE rule and, when it rejects,
names a reason code. ``run_filters`` applies them in order and returns every verdict, so the
manifest can record them and the rejection log can say exactly why a document was dropped.

Order (first failure is the rejection reason): language, min_length, ocr_quality (a collection
with OCR documents), quality, modernity, london, period, then cutoff when the corpus has a
cutoff year. Modernity runs before period so
that a modern manual is reported as *modern* even when its date alone would also exclude it;
london (the source's metadata says the work is not London-related) runs before period for the
same reason; cutoff runs last, so a text outside the period is reported as such.

All rules are offline heuristics: no model downloads.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Sequence

from .dating import cutoff_verdict

# --- language ----------------------------------------------------------------------------
# The most frequent function words of each language. Early Modern English spellings
# (hath, doth, thou, thee, ye) count as English.
STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset("""the of and to a in that is was he for it with as his on be at by i this had not are but
        from or have an they which one you were her all she there would their we him been has when who will
        more no if out so said what up its about into than them can only other new some could time these two
        may then do first any my now such like our over man me even most made after also did many before must
        through back years where much your way well down should because each just those people mr how too
        little state good very make world still own see men work long get here between both life being under
        never day same another know while last might us great old year off come since against go came right
        used take three hath doth thou thee thy ye upon unto shall whom""".split()),
    "nl": frozenset("""de en van het een is dat die in te zijn op met voor niet aan er om ook als dan maar bij of
        uit nog wat door naar werd zo hij zij ze was haar hem mijn zich wel al geen deze worden wordt heeft
        hebben tot onder over kan""".split()),
    "de": frozenset("""der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch es
        an werden aus er hat dass sie nach wird bei einer um am sind noch wie einem über einen so zum war haben
        nur oder aber vor zur bis mehr durch man""".split()),
    "fr": frozenset("""le de la les et des en un du une que est pour qui dans par plus pas au sur ne se ce il
        sont avec ou son été aux nous mais comme elle ont lui leur sa ses tout cette fait""".split()),
    "la": frozenset("""et in est non ad cum quod ut qui quae sed si per ex de esse sunt enim nec atque quam vel
        autem etiam ab tamen hoc eius sit ac quoque""".split()),
    "es": frozenset("""de la que el en y los del se las por un para con no una su al lo como más pero sus le ya
        o fue este ha sí porque esta entre cuando muy sin sobre también""".split()),
    "it": frozenset("""di e il la che in a per un del non è una le si con da i al dei sono come alla più ma ha
        nel anche della questo gli ci""".split()),
}
_NO_DIGITS = str.maketrans("", "", "0123456789")
_WORD_RE = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


@dataclass
class Verdict:
    filter: str
    passed: bool
    reason: str = ""          # reason code when rejected
    value: Any = None         # the measured quantity
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DocInfo:
    """What the filters look at: the cleaned text plus metadata, with cached measurements."""

    text: str
    year: int | None = None
    london: bool | None = None
    year_rule: str | None = None     # the date evidence that decided ``year`` (for the cutoff's detail)
    ocr_quality: float | None = None  # an OCR document's quality after repair (None: not OCR)
    _words: list[str] | None = field(default=None, repr=False)

    @property
    def words(self) -> list[str]:
        if self._words is None:
            self._words = self.text.split()
        return self._words


def _sample(text: str, window: int = 60_000) -> str:
    """Three windows (start, middle, end) so that long books cost the same as short ones."""
    if len(text) <= 3 * window:
        return text
    mid = len(text) // 2
    return text[:window] + " " + text[mid - window // 2: mid + window // 2] + " " + text[-window:]


class Filter:
    name = "filter"
    reason = "rejected"

    def __call__(self, doc: DocInfo) -> Verdict:
        raise NotImplementedError

    def _v(self, ok: bool, value: Any, detail: str = "") -> Verdict:
        return Verdict(self.name, ok, "" if ok else self.reason, value, detail)


class LanguageFilter(Filter):
    """English by stopword share: English stopwords must be at least ``min_ratio`` of the words
    and outnumber every other listed language's stopwords."""

    name, reason = "language", "not_english"

    def __init__(self, min_ratio: float = 0.15):
        self.min_ratio = min_ratio

    def __call__(self, doc: DocInfo) -> Verdict:
        words = [w.lower() for w in _WORD_RE.findall(_sample(doc.text))]
        if not words:
            return self._v(False, 0.0, "no words")
        counts = Counter(words)
        ratios = {lang: sum(counts[w] for w in sw) / len(words) for lang, sw in STOPWORDS.items()}
        best = max(ratios, key=ratios.get)
        en = ratios["en"]
        ok = en >= self.min_ratio and best == "en"
        return self._v(ok, round(en, 4), f"best={best} ({ratios[best]:.3f})")


class MinLengthFilter(Filter):
    name, reason = "min_length", "too_short"

    def __init__(self, min_chars: int = 200, min_words: int = 30):
        self.min_chars, self.min_words = min_chars, min_words

    def __call__(self, doc: DocInfo) -> Verdict:
        n = len(doc.text.strip())
        ok = n >= self.min_chars and len(doc.words) >= self.min_words
        return self._v(ok, n, f"{n} chars, {len(doc.words)} words")


class OcrQualityFilter(Filter):
    """Rejects an OCR document too damaged to train on: its quality after repair (words the
    period knows x characters that are not debris, ``ocr_quality``) below ``min_quality``.
    Transcribed documents pass."""

    name, reason = "ocr_quality", "ocr_too_damaged"

    def __init__(self, min_quality: float = 0.5):
        self.min_quality = min_quality

    def __call__(self, doc: DocInfo) -> Verdict:
        if doc.ocr_quality is None:
            return self._v(True, None, "not OCR")
        return self._v(doc.ocr_quality >= self.min_quality, doc.ocr_quality, f"min {self.min_quality}")


class QualityFilter(Filter):
    """Gopher-style rules (Rae et al. 2021), loosened for historical text (long Latinate
    words, money sums like "4 s. 6 d.", verse with short lines)."""

    name, reason = "quality", "low_quality"

    def __init__(self, min_mean_word: float = 2.5, max_mean_word: float = 10.0, max_symbol_ratio: float = 0.1,
                 max_digit_ratio: float = 0.2, min_alpha_words: float = 0.7, max_dup_line_chars: float = 0.3):
        self.min_mean_word, self.max_mean_word = min_mean_word, max_mean_word
        self.max_symbol_ratio, self.max_digit_ratio = max_symbol_ratio, max_digit_ratio
        self.min_alpha_words, self.max_dup_line_chars = min_alpha_words, max_dup_line_chars

    def __call__(self, doc: DocInfo) -> Verdict:
        words = doc.words
        if not words:
            return Verdict(self.name, False, "low_quality:no_words", 0)
        sample = _sample(doc.text)
        swords = sample.split()
        mean = sum(len(w) for w in swords) / len(swords)
        if not self.min_mean_word <= mean <= self.max_mean_word:
            return Verdict(self.name, False, "low_quality:word_length", round(mean, 2))
        symbols = sample.count("#") + sample.count("...") + sample.count("…") + sample.count("{") + sample.count("}")
        if symbols / len(swords) > self.max_symbol_ratio:
            return Verdict(self.name, False, "low_quality:symbols", round(symbols / len(swords), 4))
        digits = len(sample) - len(sample.translate(_NO_DIGITS))
        non_space = sum(len(w) for w in swords) or 1
        if digits / non_space > self.max_digit_ratio:
            return Verdict(self.name, False, "low_quality:digits", round(digits / non_space, 4))
        alpha = sum(1 for w in swords if any(c.isalpha() for c in w)) / len(swords)
        if alpha < self.min_alpha_words:
            return Verdict(self.name, False, "low_quality:alpha_words", round(alpha, 4))
        dup = duplicate_line_char_fraction(doc.text)
        if dup > self.max_dup_line_chars:
            return Verdict(self.name, False, "low_quality:repeated_lines", round(dup, 4))
        return Verdict(self.name, True, "", round(mean, 2), f"dup_lines={dup:.3f} digits={digits / non_space:.3f}")


def duplicate_line_char_fraction(text: str, min_len: int = 30) -> float:
    """Share of characters in lines (of at least ``min_len`` chars) that occur more than once.
    Short lines (speaker names in plays, "CHAPTER I") are ignored."""
    lines = [x.strip() for x in text.split("\n")]
    lines = [x for x in lines if len(x) >= min_len]
    total = sum(len(x) for x in lines)
    if not total:
        return 0.0
    counts = Counter(lines)
    dup = sum(len(x) * (c - 1) for x, c in counts.items() if c > 1)
    return dup / total


@lru_cache(maxsize=4)
def load_modern_words(path: str | None = None) -> frozenset[str]:
    if path:
        text = open(path, encoding="utf-8").read()
    else:
        text = resources.files("londonlm.corpus").joinpath("data/modern_words.txt").read_text(encoding="utf-8")
    return frozenset(line.split("#", 1)[0].strip().lower() for line in text.splitlines()
                     if line.split("#", 1)[0].strip())


class ModernityFilter(Filter):
    """Rejects text dense in post-1900 vocabulary (modern words per 1,000 words)."""

    name, reason = "modernity", "modern_text"

    def __init__(self, max_per_thousand: float = 4.0, words_file: str | None = None):
        self.max_per_thousand = max_per_thousand
        self.vocab = load_modern_words(words_file)

    def __call__(self, doc: DocInfo) -> Verdict:
        words = [w.lower() for w in _WORD_RE.findall(_sample(doc.text))]
        if not words:
            return self._v(True, 0.0)
        hits = Counter(w for w in words if w in self.vocab)
        density = 1000 * sum(hits.values()) / len(words)
        top = ", ".join(f"{w}={c}" for w, c in hits.most_common(5))
        return self._v(density <= self.max_per_thousand, round(density, 3), top)


class PeriodFilter(Filter):
    """Rejects documents dated outside [year_min, year_max]; undated documents pass (and
    are flagged in the verdict) because many scans carry no date."""

    name, reason = "period", "out_of_period"

    def __init__(self, year_min: int = 1500, year_max: int = 1900):
        self.year_min, self.year_max = year_min, year_max

    def __call__(self, doc: DocInfo) -> Verdict:
        if doc.year is None:
            return self._v(True, None, "undated")
        ok = self.year_min <= doc.year <= self.year_max
        return self._v(ok, doc.year, f"range {self.year_min}-{self.year_max}")


class LondonFilter(Filter):
    """Rejects documents whose metadata marks them as not London-related (registry entry or
    MANIFEST.tsv ``london_related: no``). Documents with no flag pass: the text alone cannot
    tell a London author's work from anyone else's."""

    name, reason = "london", "not_london"

    def __call__(self, doc: DocInfo) -> Verdict:
        return self._v(doc.london is not False, doc.london, "" if doc.london is not False else "london: false")


class CutoffFilter(Filter):
    """Rejects, in a corpus with a cutoff year, documents dated after it and undated ones (they
    could be from any year). The rule is ``dating.cutoff_verdict``, which the cutoff view of an
    already collected corpus applies too."""

    name = "cutoff"

    def __init__(self, cutoff_year: int):
        self.cutoff_year = int(cutoff_year)

    def __call__(self, doc: DocInfo) -> Verdict:
        kept, reason, detail = cutoff_verdict(doc.year, doc.year_rule, self.cutoff_year)
        return Verdict(self.name, kept, reason, doc.year, detail)


def default_filters(year_range: Sequence[int] = (1500, 1900), min_chars: int = 200,
                    cutoff_year: int | None = None, ocr_min_quality: float | None = None) -> list[Filter]:
    """The filters in their order; ``ocr_min_quality`` (a collection with OCR documents) adds
    the ``ocr_quality`` filter after ``min_length``."""
    ocr = [OcrQualityFilter(ocr_min_quality)] if ocr_min_quality is not None else []
    filters = [LanguageFilter(), MinLengthFilter(min_chars=min_chars), *ocr, QualityFilter(), ModernityFilter(),
               LondonFilter(), PeriodFilter(int(year_range[0]), int(year_range[1]))]
    return filters + ([CutoffFilter(cutoff_year)] if cutoff_year is not None else [])


def run_filters(text: str, year: int | None, filters: Sequence[Filter], london: bool | None = None,
                year_rule: str | None = None, ocr_quality: float | None = None) -> tuple[bool, str, list[Verdict]]:
    """Apply every filter; returns (kept, first reason code or "", verdicts)."""
    info = DocInfo(text, year, london, year_rule, ocr_quality)
    verdicts = [f(info) for f in filters]
    first = next((v.reason for v in verdicts if not v.passed), "")
    return not first, first, verdicts


def preview(text: str, n: int = 300) -> str:
    return re.sub(r"\s+", " ", text[:n * 2]).strip()[:n]
