"""The OCR quality score: words the period knows times characters that are not debris; its
distribution; the filter that rejects too damaged a scan, and passes transcribed text."""
from __future__ import annotations

from ocr_fixtures import OCR, PERIOD, period_lexicon

from londonlm.corpus.filters import OcrQualityFilter, default_filters, run_filters
from londonlm.corpus.ocr.quality import ocr_quality, ocr_summary, quality_distribution

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
