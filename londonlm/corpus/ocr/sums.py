"""Sums of money the OCR misread: ``£1 Is.`` is ``£1 1s.``, ``2s. fid.`` is ``2s. 6d.``.

A word corrector must leave numbers and money alone (a wrong digit is a wrong fact, and no
lexicon knows ``1s``), so a sum whose digits the OCR read as letters stays broken: in the
newspapers of ``../shared/ocr`` these are the largest class of errors the word search cannot
reach (``Is`` for ``1s``, ``fid`` for ``6d``, ``lOd`` for ``10d``, ``Od`` for ``0d``). Their
evidence is the sum around them, and it is overwhelming or nothing:

- the token is shillings or pence (``s`` or ``d`` after one to three characters), and each
  character before the unit is a digit or a shape the OCR reads for one (``DIGIT_SHAPES``);
- the value is one a sum can hold: shillings below 20, pence below 12 (pre-decimal money);
- a sum stands beside it: pounds before shillings (``£1 Is``, ``3l. Is.``), shillings before
  pence (``2s. fid.``), pence after shillings (``Is. 6d.``); or the words of a price: ``per`` or
  ``each`` after its stop (``Jam Is, per``), ``price``/``at``/``from`` before it and a stop
  after (``price Is.``), a printed sum and ``and``/``or``/``to`` before it (``7s. to lOs.``).

``is`` is the verb unless sums stand on both sides (``£10 is offered``, ``it is, each`` stay);
a lone ``Is.`` stays as the page has it.
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
    if len(word) > 4 or word[-1] not in "sd" or word[:-1].isdigit():
        return None  # (first: most words are no sum, and a printed one needs nothing)
    got = sum_value(word)
    if got is None:
        return None
    value, unit = got
    (joined, prev), nxt, mark = _neighbours(text, start, start + len(word))
    pounds = _POUNDS_BEFORE.search(text[max(0, start - _LOOK_BACK):start]) is not None
    if word == "is":  # the verb, unless sums stand on both sides: "£1 is 6d."
        return value + unit if pounds and _unit(nxt) == "d" else None
    if unit == "s":
        beside = pounds or _unit(nxt) == "d"
    else:
        beside = _unit(prev) == "s"
    price = mark in (".", ",") and nxt.lower() in _PER or mark == "." and (
        prev.lower() in _PRICE_WORDS or prev.lower() in _JOINING and _printed_sum(joined))
    return value + unit if beside or price else None


def _unit(token: str) -> str | None:
    """``s`` or ``d`` when ``token`` is shillings or pence (printed or misread), else None."""
    got = sum_value(token)
    return None if got is None else got[1]


def _printed_sum(token: str) -> bool:
    """A sum as printed, digits and all (``6d``, ``10s``): the firmest evidence beside a word."""
    return token[:-1].isdigit() and sum_value(token) is not None
