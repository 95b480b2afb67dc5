"""Filters: one rule each, with a reason code."""
from __future__ import annotations

from londonlm.corpus.filters import (LanguageFilter, MinLengthFilter, ModernityFilter, PeriodFilter, QualityFilter,
                              DocInfo, default_filters, duplicate_line_char_fraction, load_modern_words, run_filters)

ENGLISH = ("The prisoner was indicted for stealing a silver watch, value forty shillings, the goods of John Smith. "
           "He said that he found it in the street near the Exchange, and that he had never been in the house. ") * 20
DUTCH = ("De gevangene werd beschuldigd van het stelen van een zilveren horloge, en hij zei dat hij het op straat "
         "had gevonden bij de beurs, maar niemand wilde het geloven. ") * 20
MODERN = ("To install Debian, download the installer image, boot the computer from the USB stick and follow the "
          "menu. The kernel and the software packages are installed to the hard disk partition you configured; "
          "then reboot and log in with your username and password to browse the internet. ") * 20


def test_language():
    assert LanguageFilter()(DocInfo(ENGLISH)).passed
    v = LanguageFilter()(DocInfo(DUTCH))
    assert not v.passed and v.reason == "not_english" and "best=nl" in v.detail


def test_min_length():
    v = MinLengthFilter(min_chars=200)(DocInfo("Too short."))
    assert not v.passed and v.reason == "too_short"
    assert MinLengthFilter()(DocInfo(ENGLISH)).passed


def test_quality_rules():
    assert QualityFilter()(DocInfo(ENGLISH)).passed
    digits = " ".join(str(1000 + i) for i in range(2000))
    assert QualityFilter()(DocInfo(digits)).reason.startswith("low_quality")
    rep = "\n".join(["This very same line is repeated over and over again."] * 50 + ["A different line here."])
    v = QualityFilter()(DocInfo(rep))
    assert not v.passed and v.reason == "low_quality:repeated_lines"
    symbols = "# # # { } ... " * 300
    assert not QualityFilter()(DocInfo(symbols)).passed


def test_duplicate_lines_ignore_short_lines():
    play = "\n".join(["KNO.", "Sir, I will do it presently and be gone.", "WELL.", "Pray you be patient now, good sir."] * 3)
    assert duplicate_line_char_fraction(play) > 0  # long lines repeat here
    assert duplicate_line_char_fraction("\n".join(["KNO.", "WELL."] * 50)) == 0


def test_modernity_rejects_manuals_even_when_dated():
    kept, reason, verdicts = run_filters(MODERN, 1850, default_filters())
    assert not kept and reason == "modern_text"
    assert ModernityFilter()(DocInfo(ENGLISH)).passed
    words = load_modern_words()
    for historical in ("window", "file", "program", "bit", "boot", "highway", "shell"):
        assert historical not in words


def test_period():
    f = PeriodFilter(1500, 1900)
    assert f(DocInfo(ENGLISH, 1666)).passed
    v = f(DocInfo(ENGLISH, 1906))
    assert not v.passed and v.reason == "out_of_period"
    assert f(DocInfo(ENGLISH, None)).passed and f(DocInfo(ENGLISH, None)).detail == "undated"


def test_run_filters_returns_all_verdicts_and_first_reason():
    kept, reason, verdicts = run_filters(DUTCH, 1999, default_filters())
    assert not kept and reason == "not_english"
    assert [v.filter for v in verdicts] == ["language", "min_length", "quality", "modernity", "london", "period"]
    assert {v.reason for v in verdicts if not v.passed} >= {"not_english", "out_of_period"}
