"""The OCR quality score: words the period knows times characters that are not debris; its
distribution; the filter that rejects too damaged a scan, and passes transcribed text."""
from __future__ import annotations

import unicodedata
from types import SimpleNamespace as C

from ocr_fixtures import OCR, PERIOD, period_lexicon

from londonlm.corpus.filters import OcrQualityFilter, default_filters, run_filters
from londonlm.corpus.ocr.confusions import load_confusions
from londonlm.corpus.ocr.quality import ocr_quality, ocr_summary, quality_counts, quality_distribution, repaired_counts
from londonlm.corpus.ocr.repair import OcrRepairer, RepairSettings

KNOWN = period_lexicon().vocabulary(2)[0]


def test_clean_text_scores_above_its_ocr_and_debris_counts():
    clean, ocr = ocr_quality(PERIOD, KNOWN), ocr_quality(OCR, KNOWN)
    assert clean.score > 0.97 and clean.debris == 0.0
    assert ocr.score < clean.score and ocr.known < 1
    junk = ocr_quality("■■ t9n •• lOd the ~ ^ | ®", KNOWN)
    assert junk.debris > 0.4 and junk.score < 0.5
    # numbers with their suffixes are not debris
    assert ocr_quality("the 27th, 10s. 6d. and 4to in 1744", KNOWN).debris == 0.0


def test_without_a_lexicon_the_score_is_the_debris_alone():
    q = ocr_quality("Qwzx vbnm, the Court.", None)
    assert q.known is None and q.score == 1.0
    assert ocr_quality("", KNOWN).score == 0.0


def test_distribution_and_summary():
    assert quality_distribution([0.3, 0.55, 0.97, 0.95, None]) == {
        "<0.5": 1, "0.5-0.6": 1, "0.6-0.7": 0, "0.7-0.8": 0, "0.8-0.9": 0, "0.9-0.95": 0, ">=0.95": 2}
    rows = [{"ocr": True, "ocr_quality_before": 0.8, "ocr_quality": 0.9, "ocr_repairs": 5}, {"id": "transcribed"}]
    rejected = [{"ocr": True, "ocr_quality_before": 0.3, "ocr_quality": 0.4, "reason": "ocr_too_damaged"}]
    s = ocr_summary(rows, rejected)
    assert (s["documents"], s["rejected_too_damaged"], s["repairs"]) == (1, 1, 5)
    assert s["mean_quality_before"] == 0.55 and s["quality_after"]["<0.5"] == 1
    assert ocr_summary([{"id": "transcribed"}]) is None


def test_the_filter_rejects_too_damaged_ocr_and_passes_the_rest():
    f = OcrQualityFilter(0.6)
    kept, reason, verdicts = run_filters(PERIOD * 3, 1750, [f], ocr_quality=0.4)
    assert not kept and reason == "ocr_too_damaged" and verdicts[0].value == 0.4
    assert run_filters(PERIOD * 3, 1750, [f], ocr_quality=0.7)[0]
    assert run_filters(PERIOD * 3, 1750, [f], ocr_quality=None)[0]  # transcribed
    # only a collection with OCR documents has the filter, after min_length
    assert "ocr_quality" not in [x.name for x in default_filters()]
    assert [x.name for x in default_filters(ocr_min_quality=0.5)][:3] == ["language", "min_length", "ocr_quality"]


def test_a_repaired_texts_counts_from_the_tokens_its_changes_touched_are_its_whole_count():
    """The score after repair is counted where the changes are, not over the whole text again:
    it must be what counting the whole repaired text gives, for every kind of change the repairer
    makes (a word, a join across a line, a deleted stray or line edge, a lost space, a sum), with
    and without a lexicon. A change list that does not make the text is not trusted."""
    text = "tbe Court ¦ said\nI the w ill of £1 Is. 6d. ■ t9n ends.Then it went 3rd-class"
    made = [("tbe", "the"),                 # a word
            (" ¦", ""),                     # a stray, with the space before it
            ("I ", ""),                     # a line edge, with the space after it
            ("w ill", "will"),              # a join
            ("Is.", "1s."),                 # a sum
            ("ends.Then", "ends. Then"),    # a lost space
            ("3rd-class", "third-class")]   # a word with a digit, longer
    changes = [C(start=text.index(before), before=before, after=after) for before, after in made]
    for c in changes:
        assert text[c.start:c.start + len(c.before)] == c.before
    out, pos = [], 0
    for c in changes:
        out += [text[pos:c.start], c.after]
        pos = c.start + len(c.before)
    repaired = "".join(out) + text[pos:]
    for lexicon in (KNOWN, None):
        before = quality_counts(text, lexicon)
        assert repaired_counts(before, text, changes, repaired, lexicon) == quality_counts(repaired, lexicon)
        # each change alone, and none
        for c in changes:
            one = text[:c.start] + c.after + text[c.start + len(c.before):]
            assert repaired_counts(before, text, [c], one, lexicon) == quality_counts(one, lexicon)
        assert repaired_counts(before, text, [], text, lexicon) == before
        # out of order, or not the text's: counted whole
        assert repaired_counts(before, text, changes[::-1], repaired, lexicon) == quality_counts(repaired, lexicon)
        assert repaired_counts(before, text, changes[:1], repaired, lexicon) == quality_counts(repaired, lexicon)
    # a change inside a word (its letters counted whole again), and two that meet (counted as one)
    for text, changes in (("a t9n b", [C(start=3, before="9", after="o")]),
                          ("the Lords of tbe Court", [C(start=14, before="b", after="h")]),
                          ("x I  f y", [C(start=2, before="I ", after="o"), C(start=4, before=" f", after="f")])):
        out, pos = [], 0
        for c in changes:
            out += [text[pos:c.start], c.after]
            pos = c.start + len(c.before)
        repaired = "".join(out) + text[pos:]
        assert repaired_counts(quality_counts(text, KNOWN), text, changes, repaired, KNOWN) \
            == quality_counts(repaired, KNOWN)


def test_the_repairers_changes_give_the_whole_count_on_its_own_repairs():
    """The same on what the repairer itself changes in period OCR, in print with the long s
    written modern, and in decomposed (NFD) text, whose changes are mapped back to its own form."""
    engine = PERIOD.replace("the ", "tho ").replace("he ", "ho ")  # (another engine's misreadings)
    texts = [OCR, engine, OCR.replace(" ", "\n", 40), unicodedata.normalize("NFD", "Café tbe Court é " + OCR),
             "the fuch ftreet of Lonidon ¦ in hisfelf 1 " * 5]
    for settings in (RepairSettings(), RepairSettings(long_s_output="modern")):
        repairer = OcrRepairer(period_lexicon(), load_confusions(), settings)
        made = 0
        for text in texts:
            done = repairer.repair(text, 1700)
            made += len(done.changes)
            assert repaired_counts(quality_counts(text, KNOWN), text, done.changes, done.text, KNOWN) \
                == quality_counts(done.text, KNOWN)
        assert made > 20
