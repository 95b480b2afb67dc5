"""OCR repair on real data, when ../shared is here: newspapers of 1744 and 1843 with their human
gold (../shared/ocr) come out with fewer character errors, and a clean book the lexicon never
saw is all but untouched. The full measurement is benchmarks/ocr_repair.py."""
from __future__ import annotations

import pytest

from londonlm.corpus.cleaning import clean_text
from londonlm.corpus.ocr.confusions import load_confusions
from londonlm.corpus.ocr.lexicon import build_lexicon
from londonlm.corpus.ocr.pairs import char_errors, gold_pieces, read_aligned_pair, repaired_pieces
from londonlm.corpus.ocr.repair import OcrRepairer

from conftest import SHARED
ICDAR = SHARED / "ocr" / "icdar2017_eng_periodical"
BOOKS = ["gutenberg_moll_flanders.txt", "gutenberg_oliver_twist.txt", "gutenberg_bleak_house.txt",
         "gutenberg_amelia.txt", "gutenberg_sketches_by_boz.txt", "oldbailey_ordinarys_account_1741-05-04.txt",
         "oldbailey_ordinarys_account_1753-08-06.txt"]
pytestmark = pytest.mark.skipif(not ICDAR.is_dir() or not (SHARED / "corpus").is_dir(),
                                reason="../shared/ocr or ../shared/corpus absent: no real OCR with gold to measure")


@pytest.fixture(scope="module")
def repairer() -> OcrRepairer:
    texts = [clean_text((SHARED / "corpus" / b).read_text(encoding="utf-8", errors="replace")) for b in BOOKS]
    return OcrRepairer(build_lexicon(texts), load_confusions())


@pytest.mark.parametrize("name,year", [("3.txt", 1744), ("47.txt", 1843)])
def test_real_newspaper_ocr_comes_out_with_fewer_errors(repairer, name, year):
    ocr, ocr_aligned, gold_aligned = read_aligned_pair(ICDAR / name)
    owner, gold = gold_pieces(ocr_aligned, gold_aligned)
    done = repairer.repair(ocr, year)
    after = repaired_pieces(ocr, owner, len(gold), [(c.start, c.start + len(c.before), c.after) for c in done.changes])
    before = char_errors(repaired_pieces(ocr, owner, len(gold)), gold, fold=True)[0]
    assert char_errors(after, gold, fold=True)[0] < 0.92 * before


def test_a_clean_book_the_lexicon_never_saw_is_all_but_untouched(repairer):
    text = clean_text((SHARED / "corpus" / "gutenberg_study_in_scarlet.txt").read_text(encoding="utf-8"))
    done = repairer.repair(text, 1887)
    assert sum(max(len(c.before), len(c.after)) for c in done.changes) < 0.001 * len(text)  # the goal: <= 0.1%


def test_a_documents_repair_does_not_depend_on_the_documents_before_it():
    """13.txt uses a word often enough for its own evidence to raise that word's prior there; its
    candidate search, once cached by the word alone, decided 8.txt's repair too when the two met
    in one process (in --workers N, by which worker took which row)."""
    from londonlm.corpus.ocr.step import shipped_lexicon

    lexicon, confusions = shipped_lexicon(), load_confusions()
    first, later = (read_aligned_pair(ICDAR / n)[0] for n in ("13.txt", "8.txt"))
    alone = OcrRepairer(lexicon, confusions).repair(later).text
    after = OcrRepairer(lexicon, confusions)
    after.repair(first)
    assert after.repair(later).text == alone
