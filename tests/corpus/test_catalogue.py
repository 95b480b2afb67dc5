"""The catalogue rules (imprint, language, OCR confidence), each one rule with its reason, and
how a printed date statement becomes date evidence."""
from __future__ import annotations

import pytest

from londonlm.corpus.catalogue import (Catalogue, CatalogueLanguageFilter, ImprintFilter, OcrConfidenceFilter,
                                       catalogue_filters, first_failure)
from londonlm.corpus.dating import latest_year_stated


@pytest.mark.parametrize("place, london, britain", [
    ("London", True, True),
    ("London : printed for J. Johnson, in St. Paul's Church-Yard", True, True),
    ("Westminster", True, True),
    ("Southwark", True, True),
    ("St. Pancras", True, True),
    ("Lond.", True, True),
    ("Londini", True, True),
    ("Edinburgh ; London", True, True),
    ("Edinburgh", False, True),
    ("Newcastle upon Tyne", False, True),
    ("Dublin", False, False),
    ("Paris", False, False),
    ("New York", False, False),
    ("New London, Conn.", False, False),
    ("London, Ontario", False, False),
    ("Boston, Mass.", False, False),
    ("", False, False),
])
def test_imprint_places(place, london, britain):
    assert ImprintFilter("london")(Catalogue(place=place)).passed is london
    assert ImprintFilter("britain")(Catalogue(place=place)).passed is britain


def test_each_rule_names_its_reason_and_what_it_saw():
    v = ImprintFilter()(Catalogue(place="Edinburgh"))
    assert (v.passed, v.reason, v.filter) == (False, "not_london_imprint", "imprint") and "Edinburgh" in v.detail
    assert ImprintFilter("britain")(Catalogue(place="Paris")).reason == "not_british_imprint"
    assert ImprintFilter()(Catalogue(place="")).detail == "no place of publication recorded"
    v = CatalogueLanguageFilter()(Catalogue(languages=["French", "English"]))
    assert (v.passed, v.reason) == (False, "not_english") and "French, English" in v.detail
    assert CatalogueLanguageFilter()(Catalogue(languages=["English", "Latin"])).passed
    assert CatalogueLanguageFilter()(Catalogue(languages=[])).passed  # unrecorded: the text's filter decides
    v = OcrConfidenceFilter(0.6)(Catalogue(ocr_confidence=0.41))
    assert (v.passed, v.reason, v.value) == (False, "low_ocr_confidence", 0.41)
    assert OcrConfidenceFilter(0.6)(Catalogue(ocr_confidence=None)).passed
    with pytest.raises(ValueError):
        ImprintFilter("europe")


def test_the_first_failing_rule_decides():
    rules = catalogue_filters("london", ["English"], 0.5)
    assert first_failure(Catalogue(place="London", languages=["English"], ocr_confidence=0.9), rules) is None
    both = Catalogue(place="Paris", languages=["French"], ocr_confidence=0.1)
    assert first_failure(both, rules).reason == "not_london_imprint"
    assert [f.name for f in catalogue_filters(None, None, 0.0)] == ["ocr_confidence"]


@pytest.mark.parametrize("text, year", [
    ("1790", 1790), ("[1790?]", 1790), ("1843-1845", 1845), ("1843-45", 1845), ("184-", 1849),
    ("184?", 1849), ("18--", 1899), ("printed in 1666 and 1667", 1667), ("MDCCXC", None), ("", None),
    (None, None),
])
def test_a_printed_date_counts_at_its_latest(text, year):
    assert latest_year_stated(text) == year
