"""The text the OCR repair searches, whatever the Unicode form of its input (issue 60): the same
repairs for composed (NFC) and decomposed (NFD) accents, invisible characters inside a word read
as part of it, and everything not repaired kept exactly as it came."""
from __future__ import annotations

import sys
import unicodedata

import pytest
from ocr_fixtures import period_lexicon

from londonlm.corpus.ocr import OcrRepairer, load_confusions
from londonlm.corpus.ocr.forms import INVISIBLE, SearchText

SENTENCE = ("The Merchants met at the café of Monsieur Lefèvre in tbe Château, and the naïve Señor's rôle "
            "was debated; tbe Court of Aldermen heard the Petition of Mr. Müller, déjà vu.")


@pytest.fixture(scope="module")
def repairer() -> OcrRepairer:
    return OcrRepairer(period_lexicon(), load_confusions())


def as_made(done) -> list[tuple[str, str, str]]:
    return [(unicodedata.normalize("NFC", c.before), c.after, c.kind) for c in done.changes]


def test_composed_and_decomposed_accents_get_the_same_repairs(repairer):
    nfc, nfd = (unicodedata.normalize(f, SENTENCE) for f in ("NFC", "NFD"))
    a, b = repairer.repair(nfc), repairer.repair(nfd)
    assert as_made(a) == as_made(b) == [("tbe", "the", "word")] * 2
    assert unicodedata.normalize("NFC", b.text) == a.text
    assert "Lefe\u0300vre" in b.text and "Cha\u0302teau" in b.text  # not repaired: kept decomposed, as it came
    for c in b.changes:  # each change names its place in the text as it came
        assert nfd[c.start:c.start + len(c.before)] == c.before


def test_an_invisible_character_inside_a_word_is_part_of_it_and_kept_outside_changes(repairer):
    done = repairer.repair("Tl\u200bie Court of Aldermen")
    assert done.text == "The Court of Aldermen" and [(c.before, c.after) for c in done.changes] == [("Tl\u200bie", "The")]
    kept = repairer.repair("tbe\u200b Court of\u00ad Aldermen \ufeffmet")
    assert kept.text == "the\u200b Court of\u00ad Aldermen \ufeffmet"  # the invisible characters beside stay
    assert repairer.repair("the Court of Alder\u200bmen").text == "the Court of Alder\u200bmen"


def test_the_search_text_maps_back_to_the_original():
    original = "e\u0301 x\u200b\u0301 \u200bq A\u030a\u0323 \u212b"
    view = SearchText.of(original)
    assert view.text == unicodedata.normalize("NFC", original.replace("\u200b", ""))
    assert view.restore([]) == (original, [])
    assert SearchText.of("café, plain and composed") is None  # (most texts: searched as they are)


def test_the_invisible_characters_are_unicodes_format_characters():
    import re
    cls = re.compile(f"[{INVISIBLE}]")
    missing = [hex(c) for c in range(sys.maxunicode + 1)
               if unicodedata.category(chr(c)) == "Cf" and not cls.match(chr(c))]
    assert not missing


def test_a_change_inside_a_cluster_takes_all_of_it_and_an_invisible_after_a_word_stays():
    from londonlm.corpus.ocr.repair import Change
    original = "q\u0307x\u200b y"   # q with a dot above (no composed form), x, a zero-width space
    view = SearchText.of(original)
    assert view.text == "q\u0307x y"
    text, moved = view.restore([Change(0, "q", "g", "word", 1.0, -1.0), Change(2, "x", "z", "word", 1.0, -1.0)])
    assert text == "g\u0307z\u200b y"
    assert [(c.start, c.before, c.after) for c in moved] == [(0, "q\u0307", "g\u0307"), (2, "x", "z")]
