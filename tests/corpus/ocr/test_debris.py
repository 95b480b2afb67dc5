"""Debris as an edit of its own: a letter the page never had inside a word, learned over every
anchor at once (``ConfusionModel.debris``), and a token of marks alone between words deleted
where the document sets its marks so far more often than the period does (``_strays``)."""
from __future__ import annotations

import math

import pytest
from ocr_fixtures import PERIOD, period_lexicon

from londonlm.corpus.ocr.confusions import ConfusionModel, learn
from londonlm.corpus.ocr.lexicon import PeriodLexicon, build_lexicon, word_key
from londonlm.corpus.ocr.repair import OcrRepairer, RepairSettings


def test_a_spurious_letter_is_learned_over_every_anchor_and_undone_beside_any_letter():
    # an "i" the page never had, once each beside a different letter: no anchored rule reaches
    # min_count, the debris edit counts all 12 (over the 12 * 6 + 40 * 5 printed letters)
    words = ["London", "orders", "master", "silver", "pretty", "butter", "hammer", "houses", "parcel", "jacket",
             "copper", "bigger"]
    pairs = [(w[:3] + "i" + w[3:], w) for w in words] + [("court", "court")] * 40
    m = learn(pairs, min_count=2, debris_min_count=10)
    assert not any(g == w[2] for w in words for g, _ in m.learned_rules.get(w[2] + "i", ()))
    assert m.debris == {"i": pytest.approx(math.log(12 / (12 * 6 + 40 * 5)))}
    known = frozenset({"london", "lond"})
    prefixes = frozenset(k[:i] for k in known for i in range(len(k) + 1))
    assert "London" in m.candidates("Lonidon", known, prefixes, word_key, floor=-20, beam=-20)
    assert "London" not in learn(pairs, min_count=2, debris_min_count=0).candidates(
        "Lonidon", known, prefixes, word_key, floor=-20, beam=-20)


def test_debris_is_saved_as_learned_not_as_expanded():
    m = ConfusionModel({"b": [("h", -1.0)]}, debris={"i": -9.0})
    assert ("a", -9.0) in m.rules["ai"] and ("a", -9.0) in m.rules["ia"]
    data = m.to_json()
    assert set(data["rules"]) == {"b"} and data["debris"] == {"i": -9.0}
    back = ConfusionModel.from_json(data)
    assert back.rules == m.rules and back.debris == m.debris
    # a learned rule likelier than the debris edit for the same string stays as it is
    assert ConfusionModel({"ai": [("a", -2.0)]}, debris={"i": -9.0}).rules["ai"] == [("a", -2.0)]


def test_the_period_lexicon_counts_marks_standing_alone():
    lex = build_lexicon(["the watch - the hour ; the * * * night", "a £ 5 note & a ' stray ^ § 3"])
    assert lex.marks == {"-": 1, ";": 1, "'": 1, "^": 1}  # (a printer's mark, a sum's, an ampersand: never debris)


def test_marks_are_saved(tmp_path):
    lex = build_lexicon(["the watch - the hour ; the * * * night"])
    assert PeriodLexicon.load(lex.save(tmp_path / "lex.json.gz")).marks == lex.marks


LEX = build_lexicon([PERIOD + " The Court - as the Mayor said - will sit. " * 2] * 3)
# an OCR page: marks alone, and words the period does not know (a clean page keeps its marks)
NOISY = ("The Court of Aldermen ^ met at Guildhall, ^ where tbe Lord Mayor did ¦ shew the Petition ^ of the "
         "Merchants , and the Price of Bread ¦ was tbe same - as last Week, Qzxv vwqt. ")


def test_a_page_of_stray_marks_loses_them_and_a_dash_at_the_periods_rate_stays():
    from londonlm.corpus.ocr.confusions import load_confusions

    done = OcrRepairer(LEX, load_confusions(), RepairSettings()).repair(NOISY * 3)
    assert "^" not in done.text and "¦" not in done.text
    assert done.text.startswith("The Court of Aldermen met at Guildhall, where the Lord Mayor did shew the Petition of")
    assert "same - as last" in done.text      # one dash in 60 words: the period's rate
    assert "Merchants , and" in done.text     # a comma alone is more often a space added before it
    debris = [c for c in done.changes if c.kind == "debris"]
    assert len(debris) == 15 and all(c.after == "" and c.before in (" ^", " ¦") for c in debris)
    off = OcrRepairer(LEX, load_confusions(), RepairSettings(strays=False)).repair(NOISY * 3)
    assert "^" in off.text


def test_a_clean_page_keeps_its_marks():
    from londonlm.corpus.ocr.confusions import load_confusions

    clean = NOISY.replace("tbe", "the").replace("Qzxv vwqt", "the Court")
    assert "^" in OcrRepairer(LEX, load_confusions(), RepairSettings()).repair(clean * 3).text


def test_no_marks_in_the_lexicon_no_strays():
    from londonlm.corpus.ocr.confusions import load_confusions

    bare = period_lexicon()
    bare.marks = {}
    assert "^" in OcrRepairer(bare, load_confusions(), RepairSettings()).repair(NOISY * 3).text
