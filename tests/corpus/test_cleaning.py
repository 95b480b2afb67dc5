"""Cleaning: every Gutenberg marker variant, encodings, markers, transcriber notes, OCR page
furniture, and hyphenation joined only when attested. OCR fixes never damage valid words."""
from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings, strategies as st

from londonlm.corpus.cleaning import (clean_text, drop_soft_hyphens, fix_mojibake, join_hyphenation, strip_gutenberg_boilerplate,
                               strip_markers, strip_page_furniture, strip_transcriber_notes, wrap_long_lines)

BODY = "It was a foggy night in Cheapside, and the watch cried the hour.\n"
LICENCE_WORDS = ("Project Gutenberg", "SMALL PRINT", "gutenberg.org", "START OF TH", "END OF TH", "licence text")


def no_boilerplate(text: str) -> bool:
    return not any(w.lower() in text.lower() for w in LICENCE_WORDS)


@pytest.mark.parametrize("raw", [
    # modern markers
    "The Project Gutenberg EBook of X\r\n\r\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\r\n\r\n" + BODY +
    "\r\nEnd of the Project Gutenberg EBook of X\r\n\r\n*** END OF THIS PROJECT GUTENBERG EBOOK X ***\r\nlicence text\r\n",
    # no space after the asterisks, THE instead of THIS
    "header\n***START OF THE PROJECT GUTENBERG EBOOK X***\n" + BODY + "***END OF THE PROJECT GUTENBERG EBOOK X***\nlicence text",
    # comma variant, old small print AFTER the end marker (as in Evelina)
    "header\n*** START OF THE PROJECT GUTENBERG EBOOK, X ***\n" + BODY + "*** END OF THE PROJECT GUTENBERG EBOOK, X ***\n"
    "***START**THE SMALL PRINT!**FOR PUBLIC DOMAIN EBOOKS**START***\nlicence text\n"
    "*END THE SMALL PRINT! FOR PUBLIC DOMAIN EBOOKS*Ver.02/11/02*END*\n",
    # 1990s etext: small print first, text after "*END*THE SMALL PRINT!", friendly end line
    "**The Project Gutenberg Etext of X**\n**This file should be named x.txt**\nlicence text\n"
    "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\n" + BODY +
    "\nEnd of Project Gutenberg's X, by Y\n",
    # curly apostrophe in the end line
    "*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n" + BODY + "End of Project Gutenberg’s X, by Y\nlicence text\n",
    # credits paragraph and an editorial note with a URL right after the start marker
    "*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n\nProduced by A. Reader and the Online Distributed\n"
    "Proofreading Team at http://www.pgdp.net\n\n\nImages of the original pages are available through\n"
    "Internet Archive. See http://archive.org/details/x\n\n" + BODY + "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\n",
])
def test_gutenberg_marker_variants(raw):
    out = clean_text(raw)
    assert out == BODY
    assert no_boilerplate(out)


def test_files_without_markers_are_untouched():
    assert strip_gutenberg_boilerplate(BODY) == BODY
    assert clean_text(BODY) == BODY


def test_bom_crlf_nfc():
    raw = "\ufeffCafe\u0301 in the Strand\r\nline two\r\n"
    out = clean_text(raw)
    assert out == "Café in the Strand\nline two\n"
    assert unicodedata.is_normalized("NFC", out)


def test_mojibake_repaired_but_historical_characters_kept():
    assert fix_mojibake("Itâ€™s a cafÃ© by the Thames") == "It’s a café by the Thames"
    keep = "Thou haſt ſeen the Cheapſide ſtalls; “æther” and — œconomy, £1 10s."
    assert fix_mojibake(keep) == keep
    assert clean_text(keep + "\n") == keep + "\n"


def test_illustration_and_similar_markers():
    raw = ("Before.\n\n[Illustration]\n\n[Illustration: MEETING OF TICKET-OF-LEAVE MEN.\n\n[_From a Sketch._]]\n\n"
           "[Music: Transcribers note See HTML version for music]\n\nAfter.\n")
    assert clean_text(raw) == "Before.\n\nAfter.\n"
    unclosed = "Before.\n\n[Illustration: A caption that never\ncloses\n\nAfter.\n"
    assert strip_markers(unclosed).split() == ["Before.", "After."]
    footnote = "Text.[Footnote 1: a real note, which is content.]\n"
    assert strip_markers(footnote) == footnote


def test_transcriber_notes_removed_three_ways():
    bracket = "He showed me [Transcriber's\nnote: special symbol] a rarity.\n"
    assert "showed me" in clean_text(bracket) and "a rarity." in clean_text(bracket)
    assert "Transcriber" not in clean_text(bracket)
    block = ("Transcriber's Note\n\nItalics are shown with _underscores_.\n\nPage numbers were removed.\n\n\n\n\n"
             "CHAPTER I.\n\nThe story begins.\n")
    assert clean_text(block) == "CHAPTER I.\n\nThe story begins.\n"
    para = ("Transcribers Note: Obvious typesetter errors corrected.\nMore of the note.\n\n"
            "The story begins.\n")
    assert clean_text(para) == "The story begins.\n"
    tail = "Story. " * 200 + "\n\nThe End.\n\n\nTranscriber's Note\n\n\nFootnote 51 is referenced twice.\n\n\n\n\nMore notes.\n"
    out = strip_transcriber_notes(tail)
    assert "Footnote 51" not in out and "More notes" not in out and "The End." in out


def test_hyphenation_joined_only_when_attested():
    text = "The exam-\nple shows an example. The neigh-\nbourhood. A well-\nknown well-known man. Foo-\nbar.\n"
    out = join_hyphenation(text)
    assert "example\nshows" in out                   # "example" occurs elsewhere
    assert "neigh-\nbourhood" in out                 # "neighbourhood" is not attested: untouched
    assert "well-known\nwell-known" in out           # hyphenated form attested: hyphen kept
    assert "Foo-\nbar" in out


def test_ocr_steps_never_damage_valid_words():
    words = "modern skiing burn turn corn 1666 O0 rn ii cliff office ﬁne\n"
    assert clean_text(words, ocr=True) == words


def test_ocr_page_numbers_and_running_heads():
    pages = []
    for i in range(1, 7):
        pages.append(f"THE SURVEY OF LONDON.\n\nThe ward of Cheap{i} hath many fair houses and a great market for {i} days.\n\n{i + 10}\n")
    out = strip_page_furniture("\f".join(pages))
    assert "SURVEY OF LONDON" not in out
    assert not any(line.strip().isdigit() for line in out.split("\n"))
    assert out.count("hath many fair houses") == 6
    # a running head is only removed in OCR mode
    assert "THE SURVEY OF LONDON." in clean_text("\f".join(pages))


def test_long_lines_wrapped_without_losing_text():
    line = ("word " * 30000).strip()
    out = wrap_long_lines(line, limit=1000)
    assert max(len(x) for x in out.split("\n")) <= 1000
    assert out.split() == line.split()


def test_scan_stamps_are_removed_from_ocr_only():
    from londonlm.corpus.cleaning import strip_scan_stamps

    raw = ("The watch cried the hour.\nDigitized by VjOOQlC\nThe Tower stood dark.\n"
           "Digitized by the Internet Archive in 2008 with funding from Microsoft Corporation\n"
           "Original from UNIVERSITY OF MICHIGAN\nDigitized by Google The Strand was quiet.\n")
    out = clean_text(raw, ocr=True)
    assert out == "The watch cried the hour.\n\nThe Tower stood dark.\n\nThe Strand was quiet.\n"
    assert "Digitized" in clean_text(raw)  # transcribed text keeps every word it has
    # a sentence that merely uses the words is no stamp
    assert strip_scan_stamps("It was digitized by hand.") == "It was digitized by hand."


def test_catchwords_repeating_the_next_pages_first_word_are_removed():
    page1 = "The Lord Mayor went to the Tower, and there\nhe saw the Lions in their dens, and\nthe\n"
    raw = page1 + "  12  \nthe Keepers fed them.\nThey roared.\nmore\n\fless was said.\n"
    out = strip_page_furniture(raw)
    assert out.splitlines()[:3] == ["The Lord Mayor went to the Tower, and there",
                                    "he saw the Lions in their dens, and", "the Keepers fed them."]
    assert "more" in out  # not the next page's first word: kept


def test_hyphenated_line_ends_join_on_the_period_lexicons_evidence():
    known = {"example", "to", "morrow", "tomorrow"}.__contains__
    text = "an exam-\nple of to-\nmorrow"
    assert join_hyphenation(text) == text                     # the document alone attests neither
    assert join_hyphenation(text, known=lambda w: known(w.lower())) == "an example\nof to-\nmorrow"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list(" \t\f\x00ΣσΑaB1٣_.İ\u0345\u00a0")), max_size=8), max_size=6),
       st.integers(0, 8))
def test_running_head_keys_all_at_once_are_each_lines_own(lines, max_chars):
    from londonlm.corpus.cleaning import _head_key, _head_keys

    assert _head_keys(lines, max_chars) == [_head_key(x) if 0 < len(x.strip()) <= max_chars else None for x in lines]
    # a line's key: its digits one mark, each run of white space (as \s reads it) one space
    assert [_head_key(x) for x in lines] == [re.sub(r"\s+", " ", re.sub(r"\d+", "#", x.strip().lower())) for x in lines]


def test_soft_hyphens_are_dropped_and_a_word_broken_at_one_is_joined():
    # a soft hyphen marks a possible break, no part of the word: kept, the tokenizer saw "co" and
    # "operate" as two pieces, and "co\xad\noperate" stayed two lines (join_hyphenation joins "-\n")
    text = "We co\u00ad\n  operate with the ex\u00adample, an end\u00ad\n\nNew part.\n"
    assert clean_text(text) == "We cooperate with the example, an end\n\nNew part.\n"
    assert drop_soft_hyphens("plain - text\n") == "plain - text\n"
