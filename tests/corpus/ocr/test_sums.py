"""Sums of money the OCR misread: repaired only where a sum stands beside them, with a value a
pre-decimal sum can hold; the verb "is" and a lone "Is." stay."""
from __future__ import annotations

import pytest

from londonlm.corpus.ocr.sums import digits, repaired_sum, sum_value


def fix(text: str, word: str) -> str | None:
    return repaired_sum(text, text.index(word), word)


@pytest.mark.parametrize("text, word, want", [
    ("paid £1 Is. to the Fund", "Is", "1s"),           # pounds before shillings
    ("the sum of 3l. Is. was", "Is", "1s"),             # pounds written l.
    ("at Is. 6d. a pound", "Is", "1s"),                 # pence after shillings
    ("sold at 2s. fid. the pound", "fid", "6d"),        # shillings before pence (two shapes, one digit)
    ("Cocoa Nut, lOd. per lb.", "lOd", "10d"),          # "per" after the stop
    ("Jam Is, per 2lb glass", "Is", "1s"),
    ("Admission, price Is. Children half", "Is", "1s"),  # a price word before
    ("from 7s. to lOs. a dozen", "lOs", "10s"),          # a sum, a joining word, and this one
    ("£1 is 6d. was paid", "is", "1s"),                 # the verb's shape, with sums on both sides
    ("paid £1 Gs. Sd.", "Gs", "6s"),
])
def test_a_misread_sum_beside_a_sum_is_repaired(text, word, want):
    assert fix(text, word) == want


@pytest.mark.parametrize("text, word", [
    ("a reward of £10 is offered", "is"),      # the verb after a sum
    ("it is, each of them", "is"),             # no sum anywhere
    ("Is it true?", "Is"),                     # no sum beside it
    ("The price Is, a heretofore", "Is"),      # a price word, but no stop after it
    ("at 54s. old red", "old"),                # "01d": no sum is written with a leading nought
])
def test_what_is_no_sum_stays(text, word):
    assert fix(text, word) is None


def test_values_a_sum_cannot_hold_and_printed_sums_are_left_alone():
    assert sum_value("IIs") == ("11", "s") and sum_value("2Od") is None  # 20d is 1s 8d: never written so
    assert sum_value("Gs") == ("6", "s") and sum_value("fid") == ("6", "d") and sum_value("xs") is None
    assert fix("paid £1 25s. for it", "25s") is None and fix("paid £1 1s. 6d.", "1s") is None
    assert digits("lO") == "10" and digits("fi") == "6" and digits("ab") is None
