"""londonlm.corpus.manifest: the split rule, reading the manifest, and the one corpus summary."""
import json

import pytest

from londonlm.corpus.manifest import (CorpusError, assign_split, ensure_both_splits, iter_split_texts, place_texts,
                               read_jsonl, read_manifest, summarize)

ROWS = [
    {"id": "a", "source": "oldbailey", "source_kind": "web", "year": 1674, "decade": 1670, "license": "cc-by-4.0",
     "words": 100, "chars": 600, "split": "train", "london": True},
    {"id": "b", "source": "gutenberg", "source_kind": "gutenberg", "year": 1722, "decade": 1720,
     "license": "public-domain", "words": 50, "chars": 300, "split": "validation", "london": True},
    {"id": "c", "source": "gutenberg", "source_kind": "gutenberg", "year": None, "decade": None,
     "license": None, "words": 10, "chars": 60, "split": "train", "london": False},
]


def test_split_is_deterministic():
    assert assign_split("abc", 50) == assign_split("abc", 50)
    shares = sum(assign_split(f"d{i}", 10) == "validation" for i in range(2000)) / 2000
    assert 0.07 < shares < 0.13


def test_both_splits_exist_whatever_the_hash_says():
    rows = [{"id": f"d{i}", "split": "train"} for i in range(3)]
    ensure_both_splits(rows, 5.0)
    assert sorted(r["split"] for r in rows) == ["train", "train", "validation"]
    moved = next(r["id"] for r in rows if r["split"] == "validation")
    again = [{"id": f"d{i}", "split": "train"} for i in reversed(range(3))]
    ensure_both_splits(again, 5.0)
    assert next(r["id"] for r in again if r["split"] == "validation") == moved  # not order-dependent
    rows = [{"id": f"d{i}", "split": "validation"} for i in range(3)]
    ensure_both_splits(rows, 5.0)
    assert sorted(r["split"] for r in rows) == ["train", "validation", "validation"]
    none_held_out = [{"id": "x", "split": "train"}, {"id": "y", "split": "train"}]
    ensure_both_splits(none_held_out, 0)
    assert {r["split"] for r in none_held_out} == {"train"}


def test_summarize_totals_sources_decades_and_rejections():
    s = summarize(ROWS, [{"id": "z", "reason": "too_short"}, {"id": "y", "reason": "too_short"}],
                  registry_entries=[{"kind": "gutenberg"}, {"kind": "gutenberg"}, {"kind": "html"}])
    assert (s["documents"], s["words"], s["chars"], s["london_documents"]) == (3, 160, 960, 2)
    assert s["splits"] == {"train": 2, "validation": 1} and s["years"] == [1674, 1722]
    assert s["by_source"]["gutenberg"] == {"kind": "gutenberg", "documents": 2, "chars": 360, "words": 60,
                                           "licenses": ["public-domain", "unknown"], "years": [1722, 1722]}
    assert s["by_source_kind"]["web"] == {"documents": 1, "chars": 600, "words": 100}
    assert list(s["by_decade"]) == ["1670", "1720", "undated"] and s["by_decade"]["undated"]["words"] == 10
    assert s["rejected"] == 2 and s["rejections_by_reason"] == {"too_short": 2}
    assert s["registry_sources_by_kind"] == {"gutenberg": 2, "html": 1}
    json.dumps(s)  # corpus_stats.json is this dict: no sets
    empty = summarize([])
    assert empty["documents"] == 0 and empty["years"] == [None, None] and empty["by_source"] == {}


def test_place_texts_links_the_kept_and_removes_the_stale(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "a.txt").write_text("A text.", encoding="utf-8")
    place_texts(out, {})
    assert (out / "texts").is_dir()  # an empty corpus still has its texts folder
    for name in ("old.txt", "sub/old.txt"):  # an earlier build's texts, the nested one too
        (out / "texts" / name).parent.mkdir(parents=True, exist_ok=True)
        (out / "texts" / name).write_text("gone", encoding="utf-8")
    place_texts(out, {"texts/a.txt": src / "a.txt"})
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.txt")) == ["texts/a.txt"]
    assert (out / "texts" / "a.txt").read_text(encoding="utf-8") == "A text."


def test_read_manifest_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="historical_data_collector.py"):
        read_manifest(tmp_path)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("A text.", encoding="utf-8")
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"id": "a", "split": "train", "path": "texts/a.txt"})
                                             + "\n\n")
    assert [(r["id"], t) for r, t in iter_split_texts(tmp_path, "train")] == [("a", "A text.")]
    assert list(iter_split_texts(tmp_path, "validation")) == []
    row = {"id": "a", "split": "train", "path": "texts/a.txt"}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(row) + '\n{"id": \n')
    with pytest.raises(CorpusError, match=r"manifest.jsonl:2: bad JSON.*--overwrite"):
        read_manifest(tmp_path)
    assert list(read_jsonl(tmp_path / "manifest.jsonl")) == [row]  # a torn line is skipped


def _fat_rows(n: int) -> list[dict]:
    return [{"id": f"bl_books-{i:09d}", "path": f"texts/bl_books-{i:09d}.txt", "split": "train", "year": 1700 + i % 200,
             "decade": 1700 + i % 200 // 10 * 10, "source": "bl_books", "source_kind": "hf_dataset", "license": "CC0",
             "chars": 600000, "words": 100000, "london": True, "year_rule": "catalogue date",
             "title": f"A survey of London, volume {i}", "author": "Stow, John", "sha256": f"{i:064x}",
             "norm_sha256": f"{i:064x}", "filters": {"language": 0.4, "quality": 4.6, "period": 1720},
             "date_evidence": {"catalogue date": 1720}, "repairs": [], "url": "https://huggingface.co/datasets/x",
             "pages": {"read": 300, "text": 290, "empty": 10, "null_text": 0, "duplicates": 0}} for i in range(n)]


def test_read_manifest_keeps_only_the_keys_asked_for(tmp_path):
    from londonlm.corpus.manifest import SUMMARY_KEYS, jsonl_text, read_manifest, summarize

    rows = _fat_rows(50)
    (tmp_path / "manifest.jsonl").write_text(jsonl_text(rows))
    lean = read_manifest(tmp_path, keys=SUMMARY_KEYS)
    assert all(set(r) <= set(SUMMARY_KEYS) for r in lean) and read_manifest(tmp_path) == rows
    assert summarize(lean) == summarize(rows)  # the statistics need nothing else


def test_the_corpus_report_holds_a_few_hundred_bytes_a_document(tmp_path):
    import tracemalloc

    import matplotlib.pyplot  # noqa: F401 - a fixed cost, not a document's

    from londonlm.corpus.manifest import jsonl_text
    from londonlm.corpus.report import write_report

    n = 3000
    (tmp_path / "manifest.jsonl").write_text(jsonl_text(_fat_rows(n)))
    (tmp_path / "rejections.jsonl").write_text(jsonl_text(
        {"id": f"r{i}", "reason": "not_london_imprint", "detail": "printed at 'Edinburgh'" * 5} for i in range(n)))
    write_report(tmp_path, tmp_path / "meta")  # warm: matplotlib's first figure
    tracemalloc.start()
    write_report(tmp_path, tmp_path / "meta")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak / n < 1500, f"{peak / n:.0f} bytes a document"  # whole rows: ~4 KB


def test_the_statistics_hold_counts_not_rows():
    """The report streams a corpus's rows through ``summarize`` and ``ocr_summary``: 5x the
    rows cost them nothing more (they once held every row: ~1 KB each)."""
    import tracemalloc

    from londonlm.corpus.ocr.quality import ocr_summary

    def rows(n):
        for i in range(n):
            yield {"id": f"d{i}", "source": f"s{i % 3}", "source_kind": "hf_dataset", "license": "cc0", "year": 1700 + i % 200,
                   "decade": 1700 + i % 200 // 10 * 10, "chars": 1000, "words": 200, "london": True,
                   "split": "train", "year_rule": "catalogue date", "ocr": True, "ocr_repairs": 3,
                   "ocr_quality_before": 0.8, "ocr_quality": 0.9}

    peaks = {}
    for n in (2000, 10000):
        tracemalloc.start()
        stats, ocr = summarize(rows(n)), ocr_summary(rows(n))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert stats["documents"] == ocr["documents"] == n and stats["years"] == [1700, 1899]
    assert (peaks[10000] - peaks[2000]) / 8000 < 50, peaks
