"""The confusion model adapted to one collection's OCR without paired data: its own confident
repairs are the evidence.

The shipped model was learned from three archives' OCR (ICDAR 2017's British Library newspapers,
overProof's Sydney Morning Herald and Chronicling America); another engine, another press,
misreads other letters more often (ABBYY on the Sydney Morning Herald read ``e`` as ``o``
several times more often than ICDAR's OCR). The repairs a first pass makes with a wide margin (``tho`` ->
``the``, ``bo`` -> ``be``) and the words it leaves as the period's are paired data of that OCR:
rules learned from them (``confusions.learn``) are mixed into the shipped ones (``mix``), and the
collection is repaired with the mixture. Only a sample is read (``max_chars``), so the cost is
fixed whatever the collection's size; the stage's workers share that first pass (a text's repair
does not depend on the texts before it, so the pairs, and the model, are the same).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Iterator

from .confusions import ConfusionModel, announce_walk, learn, mix
from .jsonl import row_year
from .lexicon import PeriodLexicon, word_key
from .processes import batches, bounded_workers, forked_map
from .repair import TOKEN, OcrRepairer, RepairSettings

# Characters of the collection read to adapt on: what the adaptation gains is flat past ~150 k
# (adapted on a quarter, a half and all of each overProof set: SMH 15.9 / 16.4 / 16.5% on 310 k
# characters, CA 24.4 / 25.0 / 24.8% on 108 k; ICDAR's 1.58 M on 300 k, 500 k, 1 M: 19.1 / 18.7 /
# 19.3%, unadapted 19.2%). With the channel of three archives, each set measured by a channel
# learned without it, 300 k against 500 k: SMH 20.4 / 20.4%, CA 26.4 / 26.4%, ICDAR's held-out
# third 19.7 / 20.0%; the first pass, a fifth of a 3.3 MB run on 2 cores at 500 k, takes 0.6 of that
ADAPT_CHARS = 300_000
MIN_GAIN = 5.0            # a repair this far past its margin is evidence of how this OCR misreads
WEIGHT = 0.9              # the adapted rules' share of the mixture
# Fewer words than this are too little of an OCR to learn how it misreads: a few rows would teach
# rules from a handful of repeated words (a small input repeating one misreading turned it into a
# rule stronger than the shipped model's evidence), so such an input is repaired with the model as it is
MIN_WORDS = 2_000


def adapt_sample(texts: Iterable[tuple[str, int | None]], max_chars: int = ADAPT_CHARS) -> list[tuple[str, int | None]]:
    """The (text, year) pairs the adaptation reads: ``texts``' first ``max_chars`` characters, the
    last text cut there (a huge row is read as far as the sample goes)."""
    sample: list[tuple[str, int | None]] = []
    read = 0
    for text, year in texts:
        text = text[:max_chars - read]
        sample.append((text, year))
        read += len(text)
        if read >= max_chars:
            break
    return sample


def text_pairs(repairer: OcrRepairer, text: str, year: int | None, min_gain: float) -> list[tuple[str, str]]:
    """One text's (OCR word, printed word) pairs (:func:`confident_pairs`)."""
    pairs: list[tuple[str, str]] = []
    done = repairer.repair(text, year)
    changed = {c.start: c.after for c in done.changes if c.kind == "word" and c.gain > min_gain}
    matches = list(TOKEN.finditer(text))
    words = [m.group(0) for m in matches]
    # the words keyed at once, joined (as ocr_quality keys them: a token has no space, and its
    # lower case does not depend on its neighbours): one call, not one a word
    keys = word_key(" ".join(words)).split(" ")
    known = repairer.lex.unigrams
    for m, w, k in zip(matches, words, keys):
        got = changed.get(m.start())
        if got is not None:
            pairs.append((w, got))
        elif w.isalpha() and k in known:
            pairs.append((w, w))
    return pairs


def confident_pairs(repairer: OcrRepairer, texts: Iterable[tuple[str, int | None]], min_gain: float = MIN_GAIN,
                    max_chars: int = ADAPT_CHARS, workers: int = 1) -> list[tuple[str, str]]:
    """(OCR word, printed word) pairs of ``texts`` as ``repairer`` reads them: a word it repaired
    with a gain above ``min_gain`` as its repair, a word of the period it left as itself; the
    first ``max_chars`` characters only. ``workers`` processes (one per CPU at most) share the
    texts: a text's repair does not depend on the texts repaired before it, so the pairs are the
    same, in the same order, however many repair them."""
    sample = adapt_sample(texts, max_chars)
    workers = min(bounded_workers(workers), len(sample))
    if workers <= 1:
        return [p for text, year in sample for p in text_pairs(repairer, text, year, min_gain)]
    return _pairs_in_parallel(repairer, sample, min_gain, workers)


# ---------------------------------------------------------------- the first pass on several CPUs
CHUNK_CHARS = 20_000  # a worker's share at a time: ~25 of them in the sample, so the last is short to wait for


def _chunk_pairs(repairer: OcrRepairer, job: tuple[list[tuple[str, int | None]], float]) -> list[tuple[str, str]]:
    chunk, min_gain = job
    return [p for text, year in chunk for p in text_pairs(repairer, text, year, min_gain)]


def _pairs_in_parallel(repairer: OcrRepairer, sample: list[tuple[str, int | None]], min_gain: float,
                       workers: int) -> list[tuple[str, str]]:
    """:func:`confident_pairs` of ``sample`` by ``workers`` forked processes, in the sample's order."""
    announce_walk(repairer.conf.compiled)  # (before the fork: said once, not by each worker)
    jobs = [(chunk, min_gain) for chunk in batches(sample, CHUNK_CHARS, lambda text: len(text[0]))]
    return [p for pairs in forked_map(_chunk_pairs, repairer, jobs, workers) for p in pairs]


def adapt(confusions: ConfusionModel, lexicon: PeriodLexicon, texts: Iterable[tuple[str, int | None]],
          settings: RepairSettings | None = None, weight: float = WEIGHT, min_gain: float = MIN_GAIN,
          max_chars: int = ADAPT_CHARS, min_words: int = MIN_WORDS, workers: int = 1) -> ConfusionModel:
    """``confusions`` mixed with the rules ``texts``' own confident repairs teach (``weight``
    their share); ``confusions`` itself where they teach none, or where ``texts`` hold fewer than
    ``min_words`` words to learn from (:data:`MIN_WORDS`). The first pass runs on ``workers``
    processes (:func:`confident_pairs`): the same model, sooner."""
    # (a stray's or a line edge's deletion is no word's pair, and the walk's repairs are decided
    # before either is looked for: the first pass leaves them, the pairs as they are. It searches
    # near words only for words with letters or marks the shipped rules lack (``th»``, ``peí``):
    # their pairs teach this OCR's own misreadings, where the near search over plain words prices
    # its edits at a flat ``near_edit`` and teaches that price back; without it the first pass
    # takes 0.6 of the time. Nor does it look for repairs of two words or of a sum (glued,
    # joined, split): no pair is made of them, and the words they would take stay words of their
    # own; each set measured by a channel learned without it, SMH 20.4 -> 20.5%, CA 26.4 -> 26.5%,
    # ICDAR's held-out third 19.7 -> 19.7%, in three quarters of the time)
    first_pass = replace(settings or RepairSettings(), strays=False, edges=False, near_plain=False,
                         glued=False, joins=False, splits=False, sums=False)
    pairs = confident_pairs(OcrRepairer(lexicon, confusions, first_pass), texts, min_gain, max_chars, workers)
    if len(pairs) < min_words:
        return confusions
    own = learn(pairs, min_count=2, debris_min_count=0)
    if not own.rules:
        return confusions
    return mix(confusions, own, weight, {"adapted_on": {"word_pairs": len(pairs),
                                                        "repairs": sum(o != g for o, g in pairs),
                                                        "rules": own.made_by.get("rules", 0)}},
               unseen=case_rule)


def case_rule(ocr: str, printed: str) -> bool:
    """A capital read for its own small letter (``In`` for ``in``): the case repair's evidence,
    which the confident pairs never hold (they are whole-word repairs, while every word read
    right counts the capitals it printed), so adapting would only ever dilute it."""
    return len(ocr) == 1 and ocr.isupper() and printed == ocr.lower()


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
            except (ValueError, RecursionError):  # (nested past the parser's depth: no row either)
                continue
            if isinstance(row, dict) and isinstance(row.get(text_key), str):
                text, year = row[text_key], row.get(year_key)
                if not text.isascii() and _lone_surrogate(text):  # passed through by the repair stage
                    continue
                yield text, row_year(year)[0]  # read as the repair stage reads it
