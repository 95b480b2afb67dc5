"""Sums of money the OCR misread: ``£1 Is.`` is ``£1 1s.``, ``2s. fid.`` is ``2s. 6d.``.

A word corrector must leave numbers and money alone (a wrong digit is a wrong fact, and no
lexicon knows ``1s``), so a sum whose digits the OCR read as letters stays broken: in the
newspapers of ``../shared/ocr`` these are the largest class of errors the word search cannot
reach (``Is`` for ``1s``, ``fid`` for ``6d``, ``lOd`` for ``10d``, ``Od`` for ``0d``). Their
evidence is the sum around them, and it is overwhelming or nothing:

- the token is shillings or pence (``s`` or ``d`` after one or two characters), and each
  character before the unit is a digit or a shape the OCR reads for one (``DIGIT_SHAPES``);
- the value is one a sum can hold: shillings below 20, pence below 12 (pre-decimal money);
- a sum stands beside it: pounds before shillings (``£1 Is``, ``3l. Is.``), shillings before
  pence (``2s. fid.``), pence after shillings (``Is. 6d.``), or ``per``/``each`` after it with
  its stop (``Jam Is, per``).

``it is, each`` has no sum beside it, and ``£1 is`` ... is a sum only where ``is`` stands
between a pound and what follows a sum; a lone ``Is.`` stays as the page has it.
"""
from __future__ import annotations

import re

# what the OCR reads for each digit in a sum (measured on ../shared/ocr: "Is" 1s, "fid" 6d,
# "lOd" 10d, "Od" 0d, "Cd" 6d, "lid" 11d, "fis" 6s); two characters may stand for one digit
DIGIT_SHAPES = {"I": "1", "l": "1", "i": "1", "|": "1", "!": "1", "O": "0", "o": "0", "Q": "0",
                "f": "6", "b": "6", "C": "6", "G": "6", "fi": "6", "S": "5", "Z": "2", "B": "8"}
LIMITS = {"s": 20, "d": 12}  # shillings and pence a sum can hold
_SHAPES = "".join(sorted({c for k in DIGIT_SHAPES for c in k} | set("0123456789")))
_SUM_TOKEN = re.compile(rf"([{re.escape(_SHAPES)}]{{1,3}})([sd])")
# a sum before: pounds ("£1 ", "£ 12. ", "3l. "), or shillings before pence ("2s. ", "10s ")
_POUNDS_BEFORE = re.compile(r"(?:£ ?\d[\d,]*|\b\d+l)[.,]? ?$")
_SHILLINGS_BEFORE = re.compile(r"\b\d{1,2}s[.,]? ?$")
# a sum after: pence after shillings ("Is. 6d"), or the price's "per"/"each" after the stop
_PENCE_AFTER = re.compile(r"[.,]? ?\d{1,2}d\b")
_PER_AFTER = re.compile(r"[.,] ?(?:per|each)\b")
_LOOK_BACK = 16
# a text with a sum in it (a digit's shillings or pence, or a pound sign): only such a text is searched
MONEY = re.compile(r"£|\d[sd]\b")
# pounds before shillings: "£1 ", "£ 12. ", "3l. "
_POUNDS_BEFORE = re.compile(r"(?:£ ?\d[\d,]*|\b\d+l)[.,]? ?$")
# the word a price follows ("price Is.", "at fid. each", "from lOd.")
_PRICE_WORDS = frozenset({"price", "at", "from", "paying"})
_PER = frozenset({"per", "each"})
# "4s. 6d. and lis.", "from 7s. to lOs.": a sum, a word that joins two, and this one
_JOINING = frozenset({"and", "or", "to"})


def digits(shapes: str) -> str | None:
    """The digits ``shapes`` stands for, or None when a character is no digit's shape."""
    out, j = [], 0
    while j < len(shapes):
        two = DIGIT_SHAPES.get(shapes[j:j + 2]) if j + 1 < len(shapes) else None
        if two is not None:
            out.append(two)
            j += 2
            continue
        c = shapes[j]
        one = c if c.isdigit() else DIGIT_SHAPES.get(c)
        if one is None:
            return None
        out.append(one)
        j += 1
    return "".join(out)


def sum_value(token: str) -> tuple[str, str] | None:
    """(digits, unit) when ``token`` is shillings or pence as printed or as the OCR may read them
    (``1s``, ``Is``, ``fid``), with a value a sum can hold; None otherwise."""
    m = _SUM_TOKEN.fullmatch(token)
    if m is None:
        return None
    shapes, unit = m.groups()
    value = digits(shapes)
    if value is None or not 1 <= len(value) <= 2 or int(value) >= LIMITS[unit] or len(value) == 2 and value[0] == "0":
        return None
    return value, unit


def _neighbours(text: str, start: int, end: int) -> tuple[list[str], str, str]:
    """The two tokens before and the one after (their stops and commas left out), and the mark
    that follows the word (a sum's stop: ``Is.``, ``fid,``)."""
    before = [t.rstrip(".,") for t in text[max(0, start - 2 * _LOOK_BACK):start].split()[-2:]]
    after = text[end:end + _LOOK_BACK]
    following = after.lstrip(".,").split()
    return ["", ""][len(before):] + before, (following[0].rstrip(".,") if following else ""), after[:1]


def repaired_sum(text: str, start: int, word: str) -> str | None:
    """``word`` (at ``start`` in ``text``) as the sum it stands for (``1s``, ``6d``), or None
    when it is no misread sum or the sum around it does not say so."""
    got = sum_value(word)
    if got is None or word[:-1].isdigit():
        return None
    value, unit = got
    (joined, prev), nxt, mark = _neighbours(text, start, start + len(word))
    pounds = _POUNDS_BEFORE.search(text[max(0, start - _LOOK_BACK):start]) is not None
    if unit == "s":
        pence = sum_value(nxt)
        beside = pence is not None and pence[1] == "d" or pounds
    else:
        shillings = sum_value(prev)
        beside = shillings is not None and shillings[1] == "s"
    if word == "is":  # "£10 is offered", "it is, each": the verb, unless sums stand on both sides
        beside = beside and (pounds or unit == "d") and pence is not None if unit == "s" else beside
    else:
        beside = beside or mark in ".," and nxt.lower() in _PER or mark == "." and (
            prev.lower() in _PRICE_WORDS or prev.lower() in _JOINING and _printed_sum(joined))
    return value + unit if beside else None


def _printed_sum(token: str) -> bool:
    """A sum as printed, digits and all (``6d``, ``10s``): the firmest evidence beside a word."""
    return token[:-1].isdigit() and sum_value(token) is not None
