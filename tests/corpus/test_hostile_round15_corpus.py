"""Hostile round 15, the corpus stage: downloads whose answer is not what the source serves,
OCR repair of odd files, the British Library books source again."""
from __future__ import annotations

from pathlib import Path

from hostile_http import HostileServer, Reply
from londonlm.corpus.download import Downloader, DownloadTask
from londonlm.corpus.sources import make_source

REPO = Path(__file__).resolve().parents[2]

BOOK = b"It was about the beginning of September 1664 that I, among the rest of my neighbours, heard. " * 400
BLOCKED = (b"<!DOCTYPE html><html><head><title>Access denied</title></head><body><p>Project Gutenberg is "
           b"not available in your country.</p></body></html>")
HTML = {"Content-Type": "text/html; charset=utf-8"}


def dl() -> Downloader:
    return Downloader(max_retries=1, backoff_base=0, backoff_max=0, per_host_interval=0, progress=False,
                      read_timeout=3, sleep=lambda s: None)


def test_a_web_page_in_place_of_a_gutenberg_book_is_not_the_book(tmp_path):
    """Was: a block page (200, text/html) at the first URL was saved as pg370.txt, the next URL,
    which had the book, never tried, and every rerun skipped the page as the complete download."""
    with HostileServer({"/cache/epub/370/pg370.txt": BOOK, "/files/370/370-0.txt": BOOK}) as srv:
        srv.queue["/cache/epub/370/pg370.txt"] = [Reply(200, BLOCKED, HTML)]
        src = make_source({"id": "defoe", "kind": "gutenberg", "gutenberg_id": 370, "base_url": srv.url})
        [res] = src.fetch(dl(), tmp_path)
        assert res.ok and res.url.endswith("/files/370/370-0.txt"), res
        assert (tmp_path / "gutenberg" / "defoe" / "pg370.txt").read_bytes() == BOOK


def test_a_redirect_to_a_login_page_is_no_file_and_a_later_run_gets_it(tmp_path):
    """An archive.org item behind a login, an Old Bailey file moved: the redirect ends at a web
    page, which was kept as the file (and skipped as complete ever after)."""
    xml = b'<?xml version="1.0"?><TEI><text><body><p>' + b"The prisoner was indicted. " * 50 + b"</p></body></text></TEI>"
    with HostileServer({"/ob/s17820410.xml": xml, "/login": b"<html><form>Log in</form></html>"}) as srv:
        srv.queue["/ob/s17820410.xml"] = [Reply(302, b"", {"Location": "/login"})]
        srv.queue["/login"] = [Reply(200, b"<html><form>Log in</form></html>", HTML)]
        src = make_source({"id": "ob", "kind": "old_bailey", "base_url": srv.url, "urls": ["ob/s17820410.xml"]})
        [res] = src.fetch(dl(), tmp_path)
        dest = tmp_path / "old_bailey" / "ob" / "s17820410.xml"
        assert not res.ok and "web page (text/html" in res.error and not dest.exists(), res
        [doc] = src.documents(tmp_path)
        assert doc.error == "not_downloaded" and "web page" in doc.extra["error_detail"]
        [res] = src.fetch(dl(), tmp_path)  # the file served again: fetched, not skipped
        assert res.ok and res.status == "downloaded" and dest.read_bytes() == xml


def test_a_web_page_is_still_the_file_of_an_html_source_and_a_file_of_no_type_is_taken(tmp_path):
    """Only files that are never web pages refuse one: the html kind's pages are its files, and
    an answer with no Content-Type (or text/plain) is a text as before."""
    page = b"<html><body><article><p>" + BOOK + b"</p></article></body></html>"
    with HostileServer({"/a.html": page, "/b.txt": BOOK}) as srv:
        srv.queue["/a.html"] = [Reply(200, page, HTML)]
        srv.queue["/b.txt"] = [Reply(200, BOOK, {"Content-Type": "text/plain; charset=utf-8"})]
        src = make_source({"id": "p", "kind": "html", "urls": [srv.url + "/a.html"]})
        assert [r.ok for r in src.fetch(dl(), tmp_path)] == [True]
        res = dl().fetch(DownloadTask([srv.url + "/b.txt"], tmp_path / "b.txt", refuse_html=True))
        assert res.ok and Path(res.dest).read_bytes() == BOOK



def _page(who: bytes) -> bytes:
    return b"<html><body><article><p>" + (who + b" walked down to the river by the old bridge. ") * 40 + \
        b"</p></article></body></html>"


def test_a_url_put_before_the_others_of_an_html_entry_is_fetched_and_each_page_stays_its_urls(tmp_path):
    """An html entry names its pages by position (page-000.html, ...): with a URL put first, its
    page-000 (the old first page) was found complete and skipped, the new page never fetched,
    each later page read under the URL before it, the last fetched again: a page lost, two
    attributed to the wrong URL, one twice."""
    from londonlm.corpus.sources import materialise

    with HostileServer({"/a.html": _page(b"Alice"), "/b.html": _page(b"Bob"), "/x.html": _page(b"Xavier")}) as srv:
        url = {n: f"{srv.url}/{n}.html" for n in "abx"}
        make_source({"id": "p", "kind": "html", "urls": [url["a"], url["b"]]}).fetch(dl(), tmp_path)
        src = make_source({"id": "p", "kind": "html", "urls": [url["x"], url["a"], url["b"]]})
        assert [(r.ok, r.url) for r in src.fetch(dl(), tmp_path)] == [(True, url[n]) for n in "xab"]
        docs = list(src.documents(tmp_path))
        for doc in docs:
            materialise(doc)
        assert [(d.url, d.text.split()[0]) for d in docs] == [(url["x"], "Xavier"), (url["a"], "Alice"), (url["b"], "Bob")]
        assert [r.status for r in src.fetch(dl(), tmp_path)] == ["skipped"] * 3  # (its own URLs: skipped)


def test_old_bailey_urls_that_end_alike_are_two_files_and_two_documents(tmp_path):
    """Two sessions papers at .../1750/data.xml and .../1751/data.xml were one file: the second
    found "complete" (the first's), both documents read the first's text."""
    from londonlm.corpus.sources import materialise

    def tei(year: int) -> bytes:
        return (f'<?xml version="1.0"?><TEI><text><body><div0 id="{year}0110"><p>'
                + f"The session of the year {year} was held at the Old Bailey. " * 20
                + "</p></div0></body></text></TEI>").encode()
    with HostileServer({"/1750/data.xml": tei(1750), "/1751/data.xml": tei(1751)}) as srv:
        src = make_source({"id": "ob", "kind": "old_bailey", "base_url": srv.url,
                           "urls": ["1750/data.xml", "1751/data.xml", "1752/other.xml"]})
        assert [r.status for r in src.fetch(dl(), tmp_path)][:2] == ["downloaded", "downloaded"]
        docs = list(src.documents(tmp_path))
    assert Path(docs[2].extra["raw_path"]).name == "other.xml"  # a name alone keeps its name
    docs = docs[:2]
    for doc in docs:
        materialise(doc)
    assert len({d.id for d in docs}) == 2 and [d.year for d in docs] == [1750, 1751], [(d.id, d.year) for d in docs]


# ---------------------------------------------------------------- the British Library books again
BL_FILE = "data/train-{n:05d}-of-00002-0123456789abcdef.parquet"


def _bl_documents(tmp_path) -> dict:
    """The registry's bl_books entry over the parquet files under ``tmp_path/repo`` (as
    --hf_dataset_dir reads them): its documents by id, straight from the source."""
    from londonlm.corpus.sources import load_registry
    from londonlm.corpus.sources.hub import hub_entries

    entry = next(e for e in load_registry(REPO / "02_data_collection" / "data_sources.yaml") if e["id"] == "bl_books")
    src = make_source(hub_entries([entry], str(tmp_path / "repo"))[0])
    return {d.id: d for d in src.documents(tmp_path / "dl")}


def test_record_ids_that_are_nan_are_pages_without_a_record_not_one_book(tmp_path):
    """pandas writes a missing id as NaN in a float column: read as the text "nan", the pages of
    books 2 and 3 became one book titled as book 2, book 3's pages dropped as its repeats."""
    import pyarrow as pa
    from blbooks_fixture import SCHEMA, Book, page_row, write_file

    books = [Book(f"{n}", pages=4, title=f"Book {n}") for n in (1, 2, 3)]
    rows = [page_row(b, pg) for b in books for pg in range(1, 5)]
    for r in rows:
        r["record_id"] = float(r["record_id"]) if r["title"] == "Book 1" else float("nan")
    schema = pa.schema([pa.field(f.name, pa.float64()) if f.name == "record_id" else f for f in SCHEMA])
    write_file(tmp_path / "repo" / BL_FILE.format(n=0), rows, schema=schema, row_group_size=60)
    docs = _bl_documents(tmp_path)
    books = [d for d in docs.values() if d.error is None]
    assert [(d.id, d.extra["pages"]["text"]) for d in books] == [("bl_books-1", 4)]  # (1.0 read as the id 1)
    [problem] = [d for d in docs.values() if d.error is not None]
    assert problem.error == "page_without_record" and "8 pages without a record id" in problem.extra["error_detail"]


def test_a_text_column_of_lists_is_a_rejection_naming_it_not_its_repr_as_text(tmp_path):
    """A dataset whose page text is a list of its lines: each book's text was Python's repr of
    the lists ("['[1 p1] For in market', 'To the ...']"), kept as corpus text."""
    import pyarrow as pa
    from blbooks_fixture import SCHEMA, Book, page_row, write_file

    good, listed = Book("000000001", pages=4), Book("000000002", pages=4)
    write_file(tmp_path / "repo" / BL_FILE.format(n=0), [page_row(good, pg) for pg in range(1, 5)])
    rows = [page_row(listed, pg) for pg in range(1, 5)]
    for r in rows:
        r["text"] = r["text"].split(". ")
    schema = pa.schema([pa.field(f.name, pa.list_(pa.string())) if f.name == "text" else f for f in SCHEMA])
    write_file(tmp_path / "repo" / BL_FILE.format(n=1), rows, schema=schema)
    docs = _bl_documents(tmp_path)
    assert "['" not in docs["bl_books-000000001"].text and "bl_books-000000002" not in docs
    [problem] = [d for d in docs.values() if d.error is not None]
    assert problem.error == "bad_column" and "text column 'text' holds list<" in problem.extra["error_detail"]
    assert BL_FILE.format(n=1) in problem.extra["error_detail"]
