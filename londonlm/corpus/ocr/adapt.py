"""The confusion model adapted to one collection's OCR without paired data: its own confident
repairs are the evidence.

The shipped model was learned from one archive's OCR (ICDAR 2017's British Library newspapers);
another engine misreads other letters more often (ABBYY on the Sydney Morning Herald reads ``e``
as ``o`` several times more often). The repairs a first pass makes with a wide margin (``tho`` ->
``the``, ``bo`` -> ``be``) and the words it leaves as the period's are paired data of that OCR:
rules learned from them (``confusions.learn``) are mixed into the shipped ones (``mix``), and the
collection is repaired with the mixture. Only a sample is read (``max_chars``), so the cost is
fixed whatever the collection's size.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

from .confusions import ConfusionModel, learn, mix
from .jsonl import row_year
from .lexicon import PeriodLexicon, word_key
from .repair import TOKEN, OcrRepairer, RepairSettings

ADAPT_CHARS = 1_000_000   # characters of the collection read to adapt on
MIN_GAIN = 5.0            # a repair this far past its margin is evidence of how this OCR misreads
WEIGHT = 0.9              # the adapted rules' share of the mixture
# Fewer words than this are too little of an OCR to learn how it misreads: a few rows would teach
# rules from a handful of repeated words (a small input repeating one misreading turned it into a
# rule stronger than the shipped model's evidence), so such an input is repaired with the model as it is
MIN_WORDS = 2_000


def confident_pairs(repairer: OcrRepairer, texts: Iterable[tuple[str, int | None]], min_gain: float = MIN_GAIN,
                    max_chars: int = ADAPT_CHARS) -> list[tuple[str, str]]:
    """(OCR word, printed word) pairs of ``texts`` as ``repairer`` reads them: a word it repaired
    with a gain above ``min_gain`` as its repair, a word of the period it left as itself; the
    first ``max_chars`` characters only."""
    pairs: list[tuple[str, str]] = []
    read = 0
    for text, year in texts:
        text = text[:max_chars - read]  # (a huge row is read as far as the sample goes)
        done = repairer.repair(text, year)
        changed = {c.start: c.after for c in done.changes if c.kind == "word" and c.gain > min_gain}
        for m in TOKEN.finditer(text):
            w = m.group(0)
            if m.start() in changed:
                pairs.append((w, changed[m.start()]))
            elif w.isalpha() and word_key(w) in repairer.lex.unigrams:
                pairs.append((w, w))
        read += len(text)
        if read >= max_chars:
            break
    return pairs


def adapt(confusions: ConfusionModel, lexicon: PeriodLexicon, texts: Iterable[tuple[str, int | None]],
          settings: RepairSettings | None = None, weight: float = WEIGHT, min_gain: float = MIN_GAIN,
          max_chars: int = ADAPT_CHARS, min_words: int = MIN_WORDS) -> ConfusionModel:
    """``confusions`` mixed with the rules ``texts``' own confident repairs teach (``weight``
    their share); ``confusions`` itself where they teach none, or where ``texts`` hold fewer than
    ``min_words`` words to learn from (:data:`MIN_WORDS`)."""
    pairs = confident_pairs(OcrRepairer(lexicon, confusions, settings), texts, min_gain, max_chars)
    if len(pairs) < min_words:
        return confusions
    own = learn(pairs, min_count=2, debris_min_count=0)
    if not own.rules:
        return confusions
    return mix(confusions, own, weight, {"adapted_on": {"word_pairs": len(pairs),
                                                        "repairs": sum(o != g for o, g in pairs),
                                                        "rules": own.made_by.get("rules", 0)}})


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def jsonl_texts(path: str | Path, text_key: str = "text", year_key: str = "year",
                max_row_bytes: int = 64 * 1024 * 1024) -> Iterator[tuple[str, int | None]]:
    """(text, year) of the rows of a JSONL file that have a text (others, lines that are not
    JSON and rows over ``max_row_bytes`` are skipped: the repair stage reports them)."""
    with open(path, "rb") as f:
        for raw in f:
            if len(raw) > max_row_bytes:
                continue
            try:
                row = json.loads(raw.decode("utf-8", errors="replace"))
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get(text_key), str):
                text, year = row[text_key], row.get(year_key)
                if not text.isascii() and _lone_surrogate(text):  # passed through by the repair stage
                    continue
                yield text, row_year(year)[0]  # read as the repair stage reads it
