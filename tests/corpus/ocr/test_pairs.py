"""Paired OCR data: the ICDAR 2017 format read (and a file that is not one refused), word pairs
cut where both sides have a space, and the CER scored as ../shared/ocr/README.md says: the gold's
``#`` spans left out, ``@`` gaps dropped, a repair's changes put in the piece they belong to."""
from __future__ import annotations

import pytest

from londonlm.corpus.ocr.pairs import (PairedDataError, aligned_words, char_errors, fold_glyphs, gold_pieces,
                                       read_aligned_pair, repaired_pieces)

OCR_IN = "tbe cat fat on ### the mat"
OCR_AL = "tbe cat fat on ### the mat@"
GOLD_AL = "the cat ſat on ####The mats"


def icdar_file(tmp_path, ocr_in=OCR_IN, ocr_al=OCR_AL, gold_al=GOLD_AL):
    p = tmp_path / "1.txt"
    p.write_text(f"[OCR_toInput] {ocr_in}\n[OCR_aligned] {ocr_al}\n[ GS_aligned] {gold_al}\n", encoding="utf-8")
    return p


def test_reads_the_format_and_refuses_what_is_not(tmp_path):
    assert read_aligned_pair(icdar_file(tmp_path)) == (OCR_IN, OCR_AL, GOLD_AL)
    with pytest.raises(PairedDataError, match="not an ICDAR 2017 file"):
        read_aligned_pair(icdar_file(tmp_path, gold_al="short"))
    with pytest.raises(PairedDataError, match="not an ICDAR 2017 file"):
        read_aligned_pair(icdar_file(tmp_path, ocr_in="something else"))


def test_word_pairs_leave_out_what_has_no_gold():
    assert list(aligned_words(OCR_AL, GOLD_AL)) == [("tbe", "the"), ("cat", "cat"), ("fat", "ſat"), ("on", "on"),
                                                   ("mat", "mats")]  # "### the" / "####The" has no gold


def test_cer_leaves_the_unreadable_out_and_counts_a_repair_where_it_belongs():
    owner, gold = gold_pieces(OCR_AL, GOLD_AL)
    assert gold == ["the cat ſat on ", "The mats"]
    assert [owner[i] for i in (0, 14, 15, 18, 19)] == [0, 0, -1, -1, 1]
    before = repaired_pieces(OCR_IN, owner, len(gold))
    assert before == ["tbe cat fat on ", "the mat"]
    assert char_errors(before, gold) == (2 + 2, 23)    # b/h, f/ſ; t/T, s missing
    after = repaired_pieces(OCR_IN, owner, len(gold), [(0, 3, "the"), (8, 11, "ſat"), (15, 18, "XXX")])
    assert after == ["the cat ſat on ", "the mat"]     # a change inside a # span is scored nowhere
    assert char_errors(after, gold) == (2, 23)


def test_the_letters_score_folds_the_golds_typography():
    assert fold_glyphs("ﬁre‐ﬂy ſet") == "fire-fly ſet"
    assert fold_glyphs("ſet", long_s=True) == "set"
    assert char_errors(["fire set"], ["ﬁre ſet"]) == (3, 7)
    assert char_errors(["fire set"], ["ﬁre ſet"], fold=True) == (0, 8)


def test_overproof_articles_are_read_whole_with_their_year(tmp_path):
    from londonlm.corpus.ocr.pairs import read_overproof

    f = tmp_path / "op.txt"
    f.write_text("*$*OVERPROOF*$* 123 year 1843 type Article title X\n"
                 "tbe Lnnd||@@||the Land||@@||the Land\nsold||@@||sold||@@||sold\n"
                 "*$*OVERPROOF*$* 9 year 1871 type Article\nami||@@||and||@@||and\n", encoding="utf-8")
    a, b = read_overproof(f)
    assert (a["id"], a["year"], a["ocr"], a["gold"]) == ("123", 1843, "tbe Lnnd\nsold", "the Land\nsold")
    assert (b["id"], b["year"], b["theirs"]) == ("9", 1871, "and")
    f.write_text("no header\n", encoding="utf-8")
    with pytest.raises(PairedDataError, match="not an overProof file"):
        read_overproof(f)


def test_texts_given_line_by_line_are_paired_word_by_word():
    from londonlm.corpus.ocr.pairs import align, line_word_pairs

    o, g = align("respecta ely", "respectively")
    assert len(o) == len(g) and o.replace("@", "") == "respecta ely" and g.replace("@", "") == "respectively"
    pairs = list(line_word_pairs("j ( LAND SALE\nof Tune, tbe", "LAND SALE\nof June, the"))
    assert pairs[-3:] == [("of", "of"), ("Tune,", "June,"), ("tbe", "the")]
    assert ("SALE", "SALE") in pairs
