"""Paired OCR data: an OCR text beside its human transcription, aligned character by character
(the ICDAR 2017 post-OCR competition's format), and the character error rate of a repair
against it.

An ICDAR file has three lines: ``[OCR_toInput]`` (the OCR as a corrector gets it),
``[OCR_aligned]`` and ``[ GS_aligned]`` (OCR and gold, one column per character, ``@`` where one
side has none, ``#`` in the gold where none exists). The score leaves the ``#`` spans out
(``../shared/ocr/README.md``): CER = edit distance(repaired, gold) / gold characters, summed
over the pieces between them. The gold is diplomatic: it writes ligatures (``ﬁ``), the long s
and the U+2010 hyphen as printed; :func:`fold_glyphs` gives the letters a reader sees, for a
second score that counts letters only.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator

from rapidfuzz.distance import Levenshtein

from ..manifest import CorpusError

GAP, NO_GOLD = "@", "#"
_TAGS = ("[OCR_toInput] ", "[OCR_aligned] ", "[ GS_aligned] ")
# typographic glyphs of a diplomatic transcription, as the letters a reader sees
_GLYPHS = {"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st", "ﬆ": "st", "‐": "-", "‑": "-"}
_GLYPH_RE = re.compile("|".join(map(re.escape, _GLYPHS)))


class PairedDataError(CorpusError):
    """A paired-data file that cannot be used; the message says why."""


def fold_glyphs(text: str, long_s: bool = False) -> str:
    """Ligatures as their letters, the typographic hyphen as ``-``; ``ſ`` as ``s`` too with ``long_s``."""
    if not text.isascii():
        text = _GLYPH_RE.sub(lambda m: _GLYPHS[m.group(0)], text)
        if long_s:
            text = text.replace("ſ", "s")
    return text


def read_aligned_pair(path: str | Path) -> tuple[str, str, str]:
    """(OCR as input, OCR aligned, gold aligned) of one ICDAR 2017 file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise PairedDataError(f"{path}: cannot read paired data ({e})") from e
    found = {tag: line[len(tag):] for line in lines for tag in _TAGS if line.startswith(tag)}
    if len(found) != 3 or len(found[_TAGS[1]]) != len(found[_TAGS[2]]) \
            or found[_TAGS[1]].replace(GAP, "") != found[_TAGS[0]]:
        raise PairedDataError(f"{path}: not an ICDAR 2017 file (three tagged lines; the aligned two of one "
                              f"length, the OCR one the input with its gaps)")
    return found[_TAGS[0]], found[_TAGS[1]], found[_TAGS[2]]


def aligned_words(ocr_aligned: str, gold_aligned: str) -> Iterator[tuple[str, str]]:
    """(OCR word, gold word) pairs: the alignment cut where both sides have a space; pieces
    with no gold (``#``) are left out."""
    o: list[str] = []
    g: list[str] = []
    for x, y in zip(ocr_aligned + " ", gold_aligned + " "):
        if x == " " and y == " ":
            if (o or g) and NO_GOLD not in g:
                yield "".join(c for c in o if c != GAP), "".join(c for c in g if c != GAP)
            o, g = [], []
            continue
        o.append(x)
        g.append(y)


def gold_pieces(ocr_aligned: str, gold_aligned: str) -> tuple[list[int], list[str]]:
    """For each character of the OCR input, the piece of gold it belongs to (-1: a ``#`` span),
    and the gold pieces (the text between ``#`` spans, gaps removed)."""
    owner: list[int] = []
    pieces: list[str] = []
    cur: list[str] | None = None
    for x, y in zip(ocr_aligned, gold_aligned):
        if y == NO_GOLD:
            if cur is not None:
                pieces.append("".join(cur))
                cur = None
            if x != GAP:
                owner.append(-1)
            continue
        if cur is None:
            cur = []
        if x != GAP:
            owner.append(len(pieces))
        if y != GAP:
            cur.append(y)
    if cur is not None:
        pieces.append("".join(cur))
    return owner, pieces


def repaired_pieces(ocr: str, owner: list[int], n_pieces: int,
                    changes: Iterable[tuple[int, int, str]] = ()) -> list[str]:
    """The repaired text cut where the gold is: ``changes`` are (start, end, replacement) in
    OCR input offsets, in order and apart; a replacement goes to the piece of its first character."""
    out: list[list[str]] = [[] for _ in range(n_pieces)]
    pos = 0
    for start, end, after in [*changes, (len(ocr), len(ocr), "")]:
        for k in range(pos, start):
            if owner[k] >= 0:
                out[owner[k]].append(ocr[k])
        if after and start < len(ocr) and owner[start] >= 0:
            out[owner[start]].append(after)
        pos = max(pos, end)
    return ["".join(p) for p in out]


def char_errors(repaired: list[str], gold: list[str], fold: bool = False) -> tuple[int, int]:
    """(edit distance, gold characters) summed over the pieces; ``fold``: letters only (glyphs folded)."""
    if fold:
        repaired = [fold_glyphs(p, long_s=True) for p in repaired]
        gold = [fold_glyphs(p, long_s=True) for p in gold]
    return sum(Levenshtein.distance(r, g) for r, g in zip(repaired, gold)), sum(len(g) for g in gold)


# ---------------------------------------------------------------- overProof's format
OVERPROOF_HEADER = "*$*OVERPROOF*$*"
_OVERPROOF_SEP = "||@@||"
_OVERPROOF_YEAR = re.compile(r"\byear (\d{4})\b")


def read_overproof(path: str | Path) -> list[dict]:
    """The articles of an overProof evaluation file (``*$*OVERPROOF*$* ID year YYYY ...`` then one
    ``raw OCR||@@||gold||@@||overProof's correction`` line per printed line): per article its
    ``id``, ``year`` and the three texts, lines joined (the format's authors say to score whole
    articles: a corrector sometimes moved text across lines)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise PairedDataError(f"{path}: cannot read paired data ({e})") from e
    articles: list[dict] = []
    for line in lines:
        if line.startswith(OVERPROOF_HEADER):
            year = _OVERPROOF_YEAR.search(line)
            articles.append({"id": line.split()[1] if len(line.split()) > 1 else str(len(articles)),
                             "year": int(year.group(1)) if year else None, "ocr": [], "gold": [], "theirs": []})
        elif line and articles:
            parts = line.split(_OVERPROOF_SEP)
            if len(parts) >= 2:
                articles[-1]["ocr"].append(parts[0])
                articles[-1]["gold"].append(parts[1])
                articles[-1]["theirs"].append(parts[2] if len(parts) > 2 else parts[0])
    if not articles:
        raise PairedDataError(f"{path}: not an overProof file (no {OVERPROOF_HEADER} article headers)")
    for a in articles:
        for k in ("ocr", "gold", "theirs"):
            a[k] = "\n".join(a[k])
    return articles


def align(ocr: str, gold: str) -> tuple[str, str]:
    """OCR and gold aligned character by character by their cheapest edit script, ``@`` where
    one side has none (the ICDAR format's ``[OCR_aligned]`` / ``[ GS_aligned]``), so that
    :func:`aligned_words` pairs their words."""
    o: list[str] = []
    g: list[str] = []
    for op in Levenshtein.opcodes(ocr, gold):
        a, b = ocr[op.src_start:op.src_end], gold[op.dest_start:op.dest_end]
        n = max(len(a), len(b))
        o.append(a.ljust(n, GAP))
        g.append(b.ljust(n, GAP))
    return "".join(o), "".join(g)


def line_word_pairs(ocr: str, gold: str) -> Iterator[tuple[str, str]]:
    """(OCR word, gold word) pairs of two texts given line by line (overProof's), each line
    aligned on its own."""
    for o, g in zip(ocr.split("\n"), gold.split("\n")):
        if GAP not in o and GAP not in g:
            yield from aligned_words(*align(o, g))
