"""The collection's OCR step: OCR documents repaired with a period lexicon learned from the
collection's own transcribed documents (or a corpus the user names), their quality recorded
before and after, the too damaged rejected with a reason, transcribed text never touched, and
the lexicon learned once while its inputs stay the same."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO
from ocr_fixtures import OCR, PERIOD, period_lexicon

from londonlm.core import UsageError
from londonlm.corpus.cleaning import clean_text
from londonlm.corpus.collect import CollectionOptions, run_collection
from londonlm.corpus.manifest import read_jsonl
from londonlm.corpus.ocr.step import DocumentRepair, OcrOptions, load_period_lexicon

# English enough for the language filter (a fifth of its words are "the" and "of"), too damaged to train on;
# no line repeats (a repeated short line is a running head, removed as furniture)
GARBAGE = "".join(f"the ■ qzv t9n xjw{a} •• kp{b}q ®® of zzk\n" for a in "bcdfghjk" for b in "lmnpr")


def chronicle() -> str:
    """The period text three times, wrapped three ways (a repeated line is no evidence of quality)."""
    flat = " ".join(PERIOD.split())
    return PERIOD + "\n" + flat + "\n\n" + textwrap.fill(flat, 50) + "\n"


def folders(tmp_path: Path) -> tuple[dict, dict]:
    books, scans = tmp_path / "books", tmp_path / "scans"
    books.mkdir()
    scans.mkdir()
    (books / "chronicle_1740.txt").write_text(chronicle(), encoding="utf-8")
    (scans / "gazette_1744.txt").write_text(OCR, encoding="utf-8")
    (scans / "ruined_1744.txt").write_text(GARBAGE, encoding="utf-8")
    return ({"id": "books", "kind": "local", "path": str(books)},
            {"id": "scans", "kind": "local", "path": str(scans), "ocr": True})


def collect(tmp_path: Path, entries: list[dict], **options) -> tuple[dict, dict, list[str]]:
    logs: list[str] = []
    run_collection(entries, tmp_path / "dl", tmp_path / "p", tmp_path / "m",
                   options=CollectionOptions(offline=True, workers=1, log=logs.append, **options))
    rows = {r["id"] + ".txt": r for r in read_jsonl(tmp_path / "p" / "manifest.jsonl")}
    rejected = {r["id"] + ".txt": r for r in read_jsonl(tmp_path / "p" / "rejections.jsonl")}
    return rows, rejected, logs


def test_ocr_is_repaired_with_the_collections_own_period_words(tmp_path, monkeypatch):
    books, scans = folders(tmp_path)
    rows, rejected, logs = collect(tmp_path, [books, scans])
    gazette = rows["gazette_1744.txt"]
    text = (tmp_path / "p" / gazette["path"]).read_text(encoding="utf-8")
    assert text.startswith("Yeſterday the Lords of the Admiralty commiſſioned")
    assert gazette["ocr"] and gazette["ocr_repairs"] >= 10 and gazette["ocr_long_s"]
    assert gazette["ocr_quality"] > gazette["ocr_quality_before"]
    # transcribed text: cleaned as ever, never repaired, no OCR facts
    transcribed = rows["chronicle_1740.txt"]
    assert (tmp_path / "p" / transcribed["path"]).read_text(encoding="utf-8") == clean_text(chronicle())
    assert not any(k.startswith("ocr") for k in transcribed)
    assert rejected["ruined_1744.txt"]["reason"] == "ocr_too_damaged"
    assert rejected["ruined_1744.txt"]["ocr_quality"] < 0.5
    stats = json.loads((tmp_path / "m" / "corpus_stats.json").read_text())
    assert stats["ocr"]["documents"] == 1 and stats["ocr"]["rejected_too_damaged"] == 1
    assert "## OCR quality" in (tmp_path / "m" / "corpus_report.md").read_text()
    assert any("period lexicon of" in m for m in logs)
    # the same inputs again (--overwrite): the lexicon is not learned twice
    logs2: list[str] = []
    run_collection([books, scans], tmp_path / "dl", tmp_path / "p", tmp_path / "m",
                   options=CollectionOptions(offline=True, workers=1, log=logs2.append, overwrite=True))
    assert any("is current" in m for m in logs2) and not any("period lexicon of" in m for m in logs2)
    # the builder's counting rules changed since: the kept lexicon is learned again
    import londonlm.corpus.ocr.step as step

    monkeypatch.setattr(step, "RULES", step.RULES + 1)
    logs3: list[str] = []
    run_collection([books, scans], tmp_path / "dl", tmp_path / "p", tmp_path / "m",
                   options=CollectionOptions(offline=True, workers=1, log=logs3.append, overwrite=True))
    assert any("period lexicon of" in m for m in logs3) and not any("is current" in m for m in logs3)


def test_sources_are_read_once_for_the_lexicon_and_not_at_all_without_ocr(tmp_path, monkeypatch):
    """Whether a collection has OCR is its sources' word: transcribed sources are read once for
    the lexicon when a source is OCR, and never beyond the staging when none is."""
    from londonlm.corpus.sources import LocalSource

    reads = []
    documents = LocalSource.documents
    monkeypatch.setattr(LocalSource, "documents", lambda self, *a, **k: reads.append(self.id) or documents(self, *a, **k))
    books, scans = folders(tmp_path)
    collect(tmp_path, [books, scans])
    assert sorted(reads) == ["books", "books", "scans"]   # books: lexicon and staging; scans: staging only
    reads.clear()
    collect(tmp_path, [books], overwrite=True)
    assert reads == ["books"]


def test_a_named_period_corpus_a_lower_threshold_and_no_repair(tmp_path):
    _, scans = folders(tmp_path)
    saved = period_lexicon().save(tmp_path / "lexicon.json.gz")
    rows, rejected, _ = collect(tmp_path, [scans], ocr=OcrOptions(period_corpus=str(saved), min_quality=0.0))
    assert "ruined_1744.txt" in rows and not rejected  # min_quality 0 keeps all
    assert rows["gazette_1744.txt"]["ocr_repairs"] > 0
    rows, _, _ = collect(tmp_path, [scans], ocr=OcrOptions(period_corpus=str(saved), repair=False),
                        overwrite=True)
    gazette = rows["gazette_1744.txt"]
    assert "ocr_repairs" not in gazette and gazette["ocr_quality"] == gazette["ocr_quality_before"]


def test_ocr_with_no_period_text_to_learn_from_is_repaired_with_the_shipped_lexicon(tmp_path):
    _, scans = folders(tmp_path)
    rows, _, logs = collect(tmp_path, [scans])
    assert any("from the shipped period lexicon ->" in m for m in logs)
    gazette = rows["gazette_1744.txt"]
    assert gazette["ocr_repairs"] >= 5 and gazette["ocr_quality"] > gazette["ocr_quality_before"]
    text = (tmp_path / "p" / gazette["path"]).read_text(encoding="utf-8")
    assert text.startswith("Yeſterday the Lords of the Admiralty commiſſioned")


def test_a_little_transcribed_text_is_added_to_the_shipped_lexicon(tmp_path):
    books, scans = folders(tmp_path)
    _, _, logs = collect(tmp_path, [books, scans])
    assert any("from the shipped period lexicon with" in m and "the collection's transcribed documents" in m
               for m in logs)


def test_a_period_corpus_is_a_lexicon_file_a_collected_corpus_or_a_folder(tmp_path):
    books, scans = folders(tmp_path)
    from_folder = load_period_lexicon(books["path"])
    collect(tmp_path, [books, scans])
    from_corpus = load_period_lexicon(tmp_path / "p")       # its transcribed rows only
    assert from_folder.unigrams == from_corpus.unigrams and "yefterday" not in from_corpus
    with pytest.raises(Exception, match="neither a period lexicon file"):
        load_period_lexicon(tmp_path / "nowhere")


def test_sidecar_settings_name_only_what_differs():
    assert OcrOptions().settings() == {}
    assert OcrOptions(min_quality=0.7).settings() == {"min_quality": 0.7}
    with pytest.raises(UsageError, match=r"--ocr_min_quality must be in \[0, 1\] \(got 1.5\)"):
        OcrOptions(min_quality=1.5)


def test_a_collection_leaves_the_options_it_was_given_as_they_were(tmp_path):
    """What a collection finds (OCR documents, the lexicon it built) is its own: the options a
    caller built once and passes to several collections say only what the caller asked."""
    books, scans = folders(tmp_path)
    ocr = OcrOptions(min_quality=0.4)
    options = CollectionOptions(offline=True, workers=1, log=lambda *_: None, ocr=ocr)
    run_collection([books, scans], tmp_path / "dl", tmp_path / "p", tmp_path / "m", options)
    assert ocr == OcrOptions(min_quality=0.4) and options.ocr is ocr
    # the same options for a collection without OCR documents: nothing left over from the first
    run_collection([books], tmp_path / "dl", tmp_path / "p2", tmp_path / "m2", options)
    assert (tmp_path / "p2" / "manifest.jsonl").is_file() and not (tmp_path / "p2" / "ocr").exists()


def test_document_repair_reports_every_change():
    repair = DocumentRepair(period_lexicon())
    text, facts = repair.repair_text("tbe Lords of tbe Admiralty", 1744)
    assert text == "the Lords of the Admiralty" and len(facts["changes"]) == 2
    assert "changes" not in repair("tbe Lords", 1744)[1]
    # the quality before and after counted only where asked for; the repair the same either way
    assert 0 < facts["ocr_quality_before"] < facts["ocr_quality"] == 1
    for join in (True, False):
        bare = DocumentRepair(period_lexicon(), join_hyphens=join)
        quiet_text, quiet = bare.repair_text("tbe Lords of tbe Ad-\nmiralty", 1744, quality=False)
        assert "ocr_quality" not in quiet and "ocr_quality_before" not in quiet and quiet["ocr_repairs"] == 2
        assert quiet_text == bare.repair_text("tbe Lords of tbe Ad-\nmiralty", 1744)[0]


def test_the_collector_marks_a_folder_as_ocr(tmp_path):
    _, scans = folders(tmp_path)
    saved = period_lexicon().save(tmp_path / "lexicon.json.gz")
    script = REPO / "02_data_collection" / "historical_data_collector.py"
    res = subprocess.run([sys.executable, str(script), "--root", str(tmp_path / "root"), "--source_dir",
                          scans["path"], "--ocr", "--period_corpus", str(saved), "--ocr_min_quality", "0.6"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = tmp_path / "root" / "data" / "london_historical" / "processed" / "manifest.jsonl"
    assert [json.loads(x)["ocr_repairs"] > 0 for x in manifest.read_text().splitlines()] == [True]
    bad = subprocess.run([sys.executable, str(script), "--root", str(tmp_path / "r2"), "--ocr"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and len(bad.stderr.splitlines()) == 1
