"""The Hub dataset source (``hf_dataset``) and the registry's ``bl_books``, on tiny parquet files in
the British Library books' layout written here: books from pages, the catalogue rules, the
date evidence, damaged inputs as rejection rows, shards, and a resumed run."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest

from blbooks_fixture import SCHEMA, Book, as_timestamps, page_row, write_file, write_repo
from londonlm.core import UsageError
from londonlm.corpus.collect import CollectionOptions, run_collection
from londonlm.corpus.ocr import OcrOptions
from londonlm.corpus.manifest import read_jsonl
from londonlm.corpus.sources import load_registry, make_source
from londonlm.corpus.sources.hub import hub_entries
from londonlm.corpus.sources.page_store import PageStore

REPO = Path(__file__).resolve().parents[2]
REGISTRY = REPO / "02_data_collection" / "data_sources.yaml"


def bl_entry(local_dir: Path, **flags) -> dict:
    """The project registry's bl_books entry, reading ``local_dir`` (as --hf_dataset_dir does)."""
    entry = next(e for e in load_registry(REGISTRY) if e["id"] == "bl_books")
    return hub_entries([entry], str(local_dir), **flags)[0]


def collect(tmp: Path, entry: dict, name: str = "out", **options) -> tuple[dict, dict, dict]:
    """(manifest rows by id, rejection rows by id, stats) of one in-process collection."""
    out = tmp / name
    stats = run_collection([entry], out / "dl", out / "processed", out / "meta",
                           options=CollectionOptions(workers=1, min_chars=50, log=lambda *_: None, **options))
    processed = out / "processed"
    return ({r["id"]: r for r in read_jsonl(processed / "manifest.jsonl")},
            {r["id"]: r for r in read_jsonl(processed / "rejections.jsonl")}, stats)


def text_of(tmp: Path, row: dict, name: str = "out") -> str:
    return (tmp / name / "processed" / row["path"]).read_text()


def page_marks(text: str) -> list[str]:
    return re.findall(r"\[(\d+ p\d+)\]", text)


BOOKS = [Book("000000001", pages=5, empty=(3,), title="A Survey of London", name="Stow, John", date=1720),
         Book("000000002", place="Edinburgh"),
         Book("000000003", languages=("French",)),
         Book("000000004", date=1843, raw_date="1843-1845", place="London : Longman"),
         Book("000000005", date=1950, raw_date="1950"),
         Book("000000006", place="Westminster", pages=6, confidence=0.35),
         Book("000000007", pages=3, empty=(1, 2, 3))]


def test_bl_books_become_one_document_per_london_english_book_in_range(tmp_path):
    write_repo(tmp_path / "repo", BOOKS)
    kept, rejected, stats = collect(tmp_path, bl_entry(tmp_path / "repo"))
    assert set(kept) == {"bl_books-000000001", "bl_books-000000004", "bl_books-000000006"}
    assert {k: r["reason"] for k, r in rejected.items()} == {
        "bl_books-000000002": "not_london_imprint", "bl_books-000000003": "not_english",
        "bl_books-000000005": "out_of_period", "bl_books-000000007": "empty"}
    assert "Edinburgh" in rejected["bl_books-000000002"]["detail"]
    assert "French" in rejected["bl_books-000000003"]["detail"]
    stow = kept["bl_books-000000001"]
    # its pages in order, the empty page skipped; year from the date column
    assert page_marks(text_of(tmp_path, stow)) == ["000000001 p1", "000000001 p2", "000000001 p4", "000000001 p5"]
    assert (stow["year"], stow["year_rule"], stow["title"], stow["author"]) == (1720, "catalogue date",
                                                                                 "A Survey of London", "Stow, John")
    assert stow["place"] == "London" and stow["record_id"] == "000000001" and stow["source_kind"] == "hf_dataset"
    assert stow["pages"] == {"read": 5, "text": 4, "empty": 1, "null_text": 0, "duplicates": 0}
    assert stow["ocr_confidence"] == pytest.approx(0.9, abs=1e-4)
    # raw_date is evidence too: the latest trace decides
    longman = kept["bl_books-000000004"]
    assert (longman["year"], longman["year_rule"]) == (1845, "catalogue date as printed")
    assert longman["date_evidence"]["catalogue date"] == 1843 and longman["date"] == "1843-1845"
    assert stats["counts"]["documents"] == 3


def test_every_bl_book_is_ocr_and_a_minimum_confidence_rejects(tmp_path):
    from londonlm.corpus.sources.hub import HubDatasetSource

    write_repo(tmp_path / "repo", BOOKS)
    src = make_source(bl_entry(tmp_path / "repo"))
    docs = {d.id: d for d in src.documents(tmp_path / "dl")}
    assert isinstance(src, HubDatasetSource)
    assert all(d.extra.get("ocr") is True for d in docs.values())
    kept, rejected, _ = collect(tmp_path, bl_entry(tmp_path / "repo", min_ocr_confidence=0.5))
    assert rejected["bl_books-000000006"]["reason"] == "low_ocr_confidence"
    assert "0.350" in rejected["bl_books-000000006"]["detail"]
    assert "bl_books-000000006" not in kept


def test_all_britain_widens_the_imprint(tmp_path):
    books = [Book("000000001", place="Edinburgh"), Book("000000002", place="Paris"),
             Book("000000003", place="New York"), Book("000000004", place="Southwark")]
    write_repo(tmp_path / "repo", books)
    kept, rejected, _ = collect(tmp_path, bl_entry(tmp_path / "repo", all_britain=True))
    assert set(kept) == {"bl_books-000000001", "bl_books-000000004"}
    assert kept["bl_books-000000001"]["london"] is False and kept["bl_books-000000004"]["london"] is True
    assert {r["reason"] for r in rejected.values()} == {"not_british_imprint"}


def test_pages_out_of_order_over_files_and_twice_give_one_book_in_page_order(tmp_path):
    book = Book("000000001", pages=6)
    other = Book("000000002", pages=2)
    files = [[("000000001", 5), ("000000001", 2), ("000000002", 1)],
             [("000000001", 1), ("000000001", 6), ("000000001", 2), ("000000002", 2)],
             [("000000001", 4), ("000000001", 3), ("000000001", 5)]]
    write_repo(tmp_path / "repo", [book, other], files, row_group_size=2)
    kept, rejected, _ = collect(tmp_path, bl_entry(tmp_path / "repo"))
    row = kept["bl_books-000000001"]
    assert page_marks(text_of(tmp_path, row)) == [f"000000001 p{n}" for n in range(1, 7)]
    assert row["pages"]["duplicates"] == 2 and row["pages"]["read"] == 8
    assert {"pages_reordered", "duplicate_pages_dropped"} <= set(row["repairs"])
    assert "duplicate_pages_differed" not in row["repairs"]
    assert not rejected


def test_a_page_whose_text_is_null_is_counted_not_lost(tmp_path):
    write_repo(tmp_path / "repo", [Book("000000001", pages=4, null_text=(2,))])
    kept, rejected, _ = collect(tmp_path, bl_entry(tmp_path / "repo"))
    row = kept["bl_books-000000001"]
    assert page_marks(text_of(tmp_path, row)) == ["000000001 p1", "000000001 p3", "000000001 p4"]
    assert row["pages"]["null_text"] == 1 and "null_text_pages" in row["repairs"]


def test_a_malformed_file_and_a_missing_column_are_rejection_rows_and_the_rest_is_kept(tmp_path):
    repo = tmp_path / "repo"
    write_repo(repo, [Book("000000001"), Book("000000002")])
    (repo / "data" / "train-00001-of-00003-broken.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    rows = [page_row(Book("000000003"), pg) for pg in (1, 2)]
    no_text = pa.schema([f for f in SCHEMA if f.name != "text"])
    write_file(repo / "data" / "train-00002-of-00003-notext.parquet", [{k: v for k, v in r.items() if k != "text"}
                                                                       for r in rows], schema=no_text)
    kept, rejected, _ = collect(tmp_path, bl_entry(repo))
    assert set(kept) == {"bl_books-000000001", "bl_books-000000002"}
    broken = rejected["bl_books-file-data_train-00001-of-00003-broken.parquet"]
    assert broken["reason"] == "bad_parquet" and "train-00001-of-00003-broken.parquet" in broken["detail"]
    missing = rejected["bl_books-file-data_train-00002-of-00003-notext.parquet"]
    assert missing["reason"] == "missing_column" and "'text'" in missing["detail"]


def test_date_as_timestamp_and_printed_dates(tmp_path):
    books = [Book("000000001", date=1790, raw_date="[1790?]"), Book("000000002", date=1840, raw_date="184-")]
    files = write_repo(tmp_path / "repo", books)
    as_timestamps(files[0])
    kept, _, _ = collect(tmp_path, bl_entry(tmp_path / "repo"))
    assert kept["bl_books-000000001"]["year"] == 1790
    assert (kept["bl_books-000000002"]["year"], kept["bl_books-000000002"]["year_rule"]) == (
        1849, "catalogue date as printed")


def test_shards_by_record_merge_to_the_unsharded_corpus(tmp_path):
    books = [Book(f"{n:09d}", pages=3) for n in range(1, 9)]
    files = [[(b.record_id, pg) for b in books for pg in (1, 2)], [(b.record_id, 3) for b in books]]
    write_repo(tmp_path / "repo", books, files)
    entry = bl_entry(tmp_path / "repo")
    whole, _, _ = collect(tmp_path, entry, "whole")
    quiet = CollectionOptions(workers=1, min_chars=50, num_shards=2, log=lambda *_: None)
    for k in range(2):
        collect_shard = run_collection([entry], tmp_path / "sh" / "dl", tmp_path / "sh" / "processed",
                                       tmp_path / "sh" / "meta", replace(quiet, shard=k))
        assert collect_shard["shards"][k]["accepted"] < len(books)
    run_collection([entry], tmp_path / "sh" / "dl", tmp_path / "sh" / "processed", tmp_path / "sh" / "meta",
                   replace(quiet, merge_only=True))
    merged = (tmp_path / "sh" / "processed" / "manifest.jsonl").read_text()
    assert merged == (tmp_path / "whole" / "processed" / "manifest.jsonl").read_text().replace(
        str(tmp_path / "whole"), str(tmp_path / "sh"))
    assert len(whole) == len(books)


def test_a_run_stopped_while_reading_pages_resumes_at_the_next_row_group(tmp_path, monkeypatch):
    books = [Book(f"{n:09d}", pages=4) for n in range(1, 7)]
    write_repo(tmp_path / "repo", books, row_group_size=2)
    entry = bl_entry(tmp_path / "repo")
    whole, _, _ = collect(tmp_path, entry, "whole")
    stored: list[int] = []
    real_add = PageStore.add_group

    def add_then_stop(self, state, pages, records, notes=()):
        real_add(self, state, pages, records, notes)
        stored.append(len(pages))
        if len(stored) == 5:
            raise KeyboardInterrupt  # killed after five row groups were stored

    monkeypatch.setattr(PageStore, "add_group", add_then_stop)
    with pytest.raises(KeyboardInterrupt):
        collect(tmp_path, entry, "again")
    monkeypatch.setattr(PageStore, "add_group", real_add)
    groups_after: list[int] = []
    monkeypatch.setattr(PageStore, "add_group",
                        lambda self, s, p, *rest: (groups_after.append(len(p)), real_add(self, s, p, *rest)))
    kept, rejected, _ = collect(tmp_path, entry, "again")
    assert groups_after and len(stored) + len(groups_after) == 12  # 24 pages, 2 a group: none read twice
    assert kept.keys() == whole.keys() and not rejected
    for doc_id in kept:
        assert text_of(tmp_path, kept[doc_id], "again") == text_of(tmp_path, whole[doc_id], "whole")
    assert not list((tmp_path / "again" / "dl").rglob("*.sqlite"))  # the page store goes once it is read


def test_a_run_stopped_while_handing_on_books_resumes_without_redoing_them(tmp_path, monkeypatch):
    import londonlm.corpus.processing as processing

    books = [Book(f"{n:09d}", pages=2) for n in range(1, 7)]
    write_repo(tmp_path / "repo", books)
    entry = bl_entry(tmp_path / "repo")
    done: list[str] = []
    real = processing.process_one

    def process_then_stop(doc):
        if len(done) == 3:
            raise KeyboardInterrupt
        done.append(doc.id)
        return real(doc)

    monkeypatch.setattr(processing, "process_one", process_then_stop)
    with pytest.raises(KeyboardInterrupt):
        collect(tmp_path, entry)
    assert list((tmp_path / "out" / "dl").rglob("*.sqlite"))  # kept for the resumed run
    monkeypatch.setattr(processing, "process_one", lambda doc: (done.append(doc.id), real(doc))[1])
    kept, _, _ = collect(tmp_path, entry)
    assert len(kept) == 6 and len(done) == 6  # the three staged books were not processed again


def test_changed_files_make_the_corpus_stale(tmp_path):
    write_repo(tmp_path / "repo", [Book("000000001"), Book("000000002")])
    entry = bl_entry(tmp_path / "repo")
    collect(tmp_path, entry)
    _, _, stats = collect(tmp_path, entry)
    assert stats["skipped"]
    write_repo(tmp_path / "repo", [Book("000000001"), Book("000000002"), Book("000000003")])
    kept, _, stats = collect(tmp_path, entry)
    assert not stats["skipped"] and "bl_books-000000003" in kept


def test_hub_flags_need_a_hub_source_and_offline_needs_a_local_copy(tmp_path):
    entry = next(e for e in load_registry(REGISTRY) if e["id"] == "bl_books")
    with pytest.raises(UsageError, match="--hf_dataset_dir applies to Hub dataset sources"):
        hub_entries([{"id": "x", "kind": "local"}], str(tmp_path))
    with pytest.raises(UsageError, match="--offline: bl_books streams from the Hub"):
        hub_entries([entry], offline=True)
    assert hub_entries([entry], str(tmp_path), offline=True)[0]["local_dir"] == str(tmp_path.resolve())


def test_a_dataset_the_hub_cannot_give_is_one_error(tmp_path, monkeypatch):
    from londonlm.corpus.sources import SourceError

    entry = bl_entry(tmp_path / "nowhere")
    with pytest.raises(SourceError, match="is not a folder"):
        make_source(entry).data_files()
    write_repo(tmp_path / "repo", [Book("000000001")])
    with pytest.raises(SourceError, match="no split 'validation'"):
        make_source({**bl_entry(tmp_path / "repo"), "split": "validation"}).data_files()


def test_pages_without_a_number_or_a_record_are_kept_or_reported(tmp_path):
    book = Book("000000001", pages=3)
    rows = [page_row(book, pg) for pg in (1, 2, 3)]
    rows[1]["pg"] = None  # an unnumbered page: after the numbered ones, in the order read
    orphan = dict(page_row(Book("000000002"), 1), record_id=None)
    write_file(tmp_path / "repo" / "data" / "train-00000-of-00001-0123456789abcdef.parquet", rows + [orphan])
    kept, rejected, _ = collect(tmp_path, bl_entry(tmp_path / "repo"))
    row = kept["bl_books-000000001"]
    assert page_marks(text_of(tmp_path, row)) == ["000000001 p1", "000000001 p3", "000000001 p2"]
    assert "pages_unnumbered" in row["repairs"]
    (orphans,) = rejected.values()
    assert orphans["reason"] == "page_without_record" and "1 pages without a record id" in orphans["detail"]


def test_bl_books_are_repaired_with_the_period_lexicon_and_the_hub_is_read_once(tmp_path, monkeypatch):
    """A bl_books collection with a period corpus repairs its books (the OCR step applies to them);
    the period lexicon never streams the Hub source, which is all OCR, a second time."""
    from ocr_fixtures import OCR, PERIOD, period_lexicon

    from londonlm.corpus.sources.hub import HubDatasetSource

    reads = []
    documents = HubDatasetSource.documents
    monkeypatch.setattr(HubDatasetSource, "documents", lambda self, *a, **k: reads.append(1) or documents(self, *a, **k))
    write_repo(tmp_path / "repo", [Book("000000001", pages=2, date=1744, texts={1: OCR, 2: PERIOD})])
    saved = period_lexicon().save(tmp_path / "lexicon.json.gz")
    kept, _, _ = collect(tmp_path, bl_entry(tmp_path / "repo"), ocr=OcrOptions(period_corpus=str(saved)))
    book = kept["bl_books-000000001"]
    assert book["ocr"] and book["ocr_repairs"] >= 5 and book["ocr_quality"] > book["ocr_quality_before"]
    assert "Yeſterday the Lords of the Admiralty" in text_of(tmp_path, book)
    assert len(reads) == 1
    # without a period corpus, and no transcribed source to learn from: repaired with the shipped lexicon
    kept, _, _ = collect(tmp_path, bl_entry(tmp_path / "repo"), name="bare")
    assert kept["bl_books-000000001"]["ocr_repairs"] >= 5 and "ocr_quality" in kept["bl_books-000000001"]
    assert len(reads) == 2


def test_a_full_disk_under_the_page_store_is_an_os_error_naming_it(tmp_path):
    """The page store is SQLite: a full disk there is reported as the OSError it is (one
    `error:` line from the collector), not as SQLite's own exception with a traceback."""
    import errno

    from londonlm.corpus.sources.page_store import PageStore

    path = tmp_path / "pages" / "all.sqlite"
    with pytest.raises(OSError) as caught:
        with PageStore(path, "identity") as store:
            store.db.execute("PRAGMA max_page_count = 8")  # a disk with room for eight pages
            for _ in range(100):
                store.db.execute("INSERT INTO meta VALUES (?, ?)", (str(_), "x" * 60000))
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)


def _retyped(schema: pa.Schema, **types) -> pa.Schema:
    return pa.schema([pa.field(f.name, types[f.name]) if f.name in types else f for f in schema])


def test_a_cell_that_is_no_number_costs_its_own_value_not_its_row_group(tmp_path):
    """pandas writes a missing integer as NaN in a float column; a confidence may be text. Such a
    cell loses its value (the page is kept unnumbered, its confidence left out), never the other
    pages of its row group, which once were all rejected as one unreadable group."""
    books = [Book(f"00000000{n}", pages=20) for n in (1, 2, 3)]
    rows = [page_row(b, pg) for b in books for pg in range(1, 21)]
    for r in rows:
        r["pg"], r["mean_wc_ocr"] = float(r["pg"]), str(r["mean_wc_ocr"])
    rows[4]["pg"] = float("nan")            # book 1, page 5
    rows[25]["mean_wc_ocr"] = "high"        # book 2, page 6
    write_file(tmp_path / "repo" / "data" / "train-00000-of-00001-0123456789abcdef.parquet", rows,
               schema=_retyped(SCHEMA, pg=pa.float64(), mean_wc_ocr=pa.string()), row_group_size=60)
    kept, rejected, _ = collect(tmp_path, bl_entry(tmp_path / "repo"))
    assert set(kept) == {"bl_books-000000001", "bl_books-000000002", "bl_books-000000003"} and not rejected
    first, second, third = (kept[f"bl_books-00000000{n}"] for n in (1, 2, 3))
    assert page_marks(text_of(tmp_path, first)) == [f"000000001 p{n}" for n in (*range(1, 5), *range(6, 21), 5)]
    assert "unreadable_page_number" in first["repairs"] and "pages_unnumbered" in first["repairs"]
    assert len(page_marks(text_of(tmp_path, second))) == 20 and "unreadable_ocr_confidence" in second["repairs"]
    assert second["ocr_confidence"] == pytest.approx(0.9, abs=1e-4)
    assert not {"unreadable_page_number", "unreadable_ocr_confidence"} & set(third["repairs"])


def test_fractional_page_numbers_are_ordered_by_their_value_not_dropped_as_repeats(tmp_path):
    book = Book("000000001", pages=20)
    numbers = [1 + i / 2 for i in range(20)]                 # 1, 1.5, 2, 2.5, ...
    rows = [dict(page_row(book, i + 1), pg=n) for i, n in enumerate(numbers)]
    rows = rows[1::2] + rows[0::2]                            # read out of order
    write_file(tmp_path / "repo" / "data" / "train-00000-of-00001-0123456789abcdef.parquet", rows,
               schema=_retyped(SCHEMA, pg=pa.float64()))
    kept, rejected, _ = collect(tmp_path, bl_entry(tmp_path / "repo"))
    row = kept["bl_books-000000001"]
    assert row["pages"]["duplicates"] == 0 and row["pages"]["text"] == 20 and not rejected
    assert page_marks(text_of(tmp_path, row)) == [f"000000001 p{n}" for n in range(1, 21)]


def test_record_ids_that_clean_alike_stay_distinct_books(tmp_path):
    books = [Book("a/b"), Book("a_b"), Book("a b"), Book("x" * 200), Book("x" * 199 + "/")]
    write_repo(tmp_path / "repo", books)
    kept, rejected, _ = collect(tmp_path, bl_entry(tmp_path / "repo"))
    assert len(kept) == 5 and not rejected
    by_record = {r["record_id"]: r for r in kept.values()}
    assert by_record["a_b"]["id"] == "bl_books-a_b"    # an id that needs no cleaning keeps its name
    for record in ("a/b", "a b", "x" * 200, "x" * 199 + "/"):
        assert f"[{record} p1]" in text_of(tmp_path, by_record[record])
        assert "id_sanitised" in by_record[record]["repairs"] and len(by_record[record]["id"]) <= 150
