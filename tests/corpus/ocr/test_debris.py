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


# a newspaper column whose rule the OCR read as a letter at its lines' ends and starts; the
# lexicon's I is followed by "am" and "believe", and twice by "in" (a word a tenth of its words:
# a pair the period sets after I less often than anywhere)
EDGE_LEX = build_lexicon([PERIOD] * 3 + ["I am sure, and I believe it. " * 40,
                                         "in the Hall, in the Street, in the Court, in the Morning. " * 30,
                                         "as I in my youth did, and I in my age. The Bread was read. "])
COLUMN = ("The Court met at Guildhall, where tbe Lord Mayor did shew the Petition which\n"
          "I in the Hall was read. The Price of Bread was tbe same as the Court said I\n"
          "By the Mayor, and the Merchants met and\n"
          "i stood in the Street, Qzxv vwqt. |\n"
          "j The Bread was read. j\n"
          "I am sure the Court will sit; as we\n"
          "1 believe the Hall is of 1 in 76 feet, and the\n"
          "Index: Stephanides, 1\n"
          "Fitzwalter, tbe Mayor. '\n"
          ", the Court said. ,\n"
          "' the Hall met, Street. .\n"
          ". . . the Court met; and\n"
          ". 5 Bread. ")


def _edges(text: str, **settings) -> str:
    from londonlm.corpus.ocr.confusions import load_confusions

    return OcrRepairer(EDGE_LEX, load_confusions(), RepairSettings(**settings)).repair(text).text


def test_a_column_rule_read_as_a_letter_at_a_line_edge_is_deleted():
    done = _edges(COLUMN)
    assert "which\nin the Hall" in done                    # "I in": the pair the period sets after I least
    assert "the Court said\nBy the Mayor" in done          # a capital after it: not the pronoun
    assert "met and\nstood in the Street" in done           # a small i alone: never a word
    assert "vwqt.\nThe Bread was read.\nI am sure" in done  # the rules; "I am": the pronoun stays
    assert "as we\n1 believe" in done                      # "1 believe": the pronoun misread, not debris
    assert "of 1 in 76 feet" in done                       # a number on its line
    assert "Stephanides, 1\n" in done                      # a number after a comma (an index)
    assert "Mayor.\nthe Court said.\nthe Hall met, Street.\n" in done  # a line begun with a mark, a
    # quote ending one, a stop or comma alone after a stop at its end: no compositor's
    assert "\n. . . the Court met; and\n5 Bread." in done     # (an ellipsis goes on with a stop)


def test_line_edges_are_left_where_the_text_is_not_noisy_is_flattened_or_edges_are_off():
    quiet = _edges(COLUMN, stray_noise=1.0)  # (no text is that noisy: the noise is at most 0)
    assert "which\nI in the" in quiet and "met and\ni stood" in quiet and "vwqt. |\n" in quiet
    flat = COLUMN.replace("\n", " ")  # (no lines: a space may be where a line ended)
    assert "which I in the" in _edges(flat * 3) and "said I By" in _edges(flat * 3)
    assert "which\nI in the" in _edges(COLUMN, edges=False) and "met and\ni stood" in _edges(COLUMN, edges=False)


def test_line_edges_are_found_as_one_pattern_of_both_would_find_them():
    """The edges are looked for with two patterns, a line's start and its end, each tried only
    where a line starts or ends; together they find what one pattern of both finds (its first
    alternative first where both match at one place, none overlapping), on every short text of
    edge letters, marks, spaces and lines."""
    import random
    import re

    from londonlm.corpus.ocr.repair import _edge_matches

    both = re.compile(r"(?:^|(?<=\n))([Il1ij|!¦]|[,.;:'](?= [^\W_])) (?=\S)"
                      r"|(?<=\S) ([Il1ij|¦']|(?<=[.,;:] )[.,])(?=\n|$)")
    rng = random.Random(7)
    texts = ["I I", "a I\nI b", "x .\n, y", "I\nI", *(
        "".join(rng.choice("Il1j|!¦,.;:' \n\nab.A") for _ in range(rng.randint(0, 12))) for _ in range(20_000))]
    found = 0
    for text in texts:
        one = [(m.span(), m.group(1) or m.group(2), m.start(1) if m.group(1) else m.start(2)) for m in both.finditer(text)]
        assert [(m.span(), m.group(1), m.start(1)) for m in _edge_matches(text)] == one, text
        found += len(one)
    assert found > 500
