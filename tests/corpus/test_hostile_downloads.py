"""What the download fuzz net (``test_download_fuzz.py``) found, each once a part taken as the
whole file, a cached record replaced by an error's JSON, or one answer ending a whole source:
a 206 that stops short of the end, a 2xx or 3xx that is no file, a gzip stream cut short or
missing its checksum, an encoding the downloader cannot decode, requests' own RuntimeError on a
redirect, and archive.org answers that are not the API's."""
from __future__ import annotations

import gzip
import json

import pytest

from conftest import tree_digest
from hostile_http import HostileServer, Reply
from londonlm.corpus.download import Downloader, DownloadTask, is_complete

BODY = b"The streets of London were full of carts and criers. " * 300


def dl(**kw) -> Downloader:
    return Downloader(**{**dict(max_retries=1, backoff_base=0, backoff_max=0, per_host_interval=0,
                                progress=False, read_timeout=3, sleep=lambda s: None), **kw})


def fetch(tmp_path, replies: list[Reply], body: bytes = BODY):
    with HostileServer({"/book.txt": body}) as srv:
        srv.queue["/book.txt"] = list(replies)
        return dl().fetch(DownloadTask([srv.url + "/book.txt"], tmp_path / "book.txt"))


def test_a_206_that_stops_short_of_the_end_is_not_the_file(tmp_path):
    # "bytes 0-99/16200" to a request for the whole file (or a resumed one): its 100 bytes
    # matched Content-Length and were renamed into place as the whole book
    piece = Reply(206, piece_of=BODY, piece=100)
    res = fetch(tmp_path, [piece, piece])
    assert not res.ok and "100 of the file's" in res.error, res
    assert not (tmp_path / "book.txt").exists() and not (tmp_path / "book.txt.part").exists()
    res = fetch(tmp_path, [piece])  # then the whole rest: the file, from zero
    assert res.ok and (tmp_path / "book.txt").read_bytes() == BODY


@pytest.mark.parametrize("status", [204, 300, 304, 201])
def test_a_2xx_or_3xx_that_carries_no_file_is_not_the_file(tmp_path, status):
    # a 204 (Content-Length: 0) became an empty "complete" file; a 300 without a Location, its
    # HTML page
    res = fetch(tmp_path, [Reply(status, b"" if status in (204, 304) else b"<html>choose</html>")] * 2)
    assert not res.ok and f"HTTP {status} is not the file" in res.error, res
    assert not (tmp_path / "book.txt").exists()


@pytest.mark.parametrize("damage", ["gzip_cut", "short"])
def test_a_gzip_stream_cut_short_or_without_its_checksum_is_not_the_file(tmp_path, damage):
    # requests decodes what arrives and says nothing of a stream that stops before its end: half
    # the book (chunked, or a Content-Length matching the cut), or the book without its CRC
    # trailer, was taken whole
    reply = Reply(200, BODY, encoding="gzip_cut", length="chunked") if damage == "gzip_cut" else \
        Reply(200, BODY, encoding="gzip", length="short")
    res = fetch(tmp_path, [reply, reply])
    assert not res.ok and "stream was cut" in res.error, res
    assert not (tmp_path / "book.txt").exists() and not (tmp_path / "book.txt.part").exists()
    assert fetch(tmp_path, [Reply(200, BODY, encoding="gzip")]).ok  # a whole gzip body still is
    assert (tmp_path / "book.txt").read_bytes() == BODY


def test_an_encoding_the_downloader_cannot_decode_is_not_the_file(tmp_path):
    # Content-Encoding: br without brotli installed: the compressed bytes were the "text"
    res = fetch(tmp_path, [Reply(200, BODY, encoding="br")])
    assert not res.ok and "Content-Encoding 'br'" in res.error, res
    assert not (tmp_path / "book.txt").exists()


def test_requests_own_error_on_a_redirect_fails_that_url_not_the_source(tmp_path):
    # a redirect whose gzip body is damaged: requests' RuntimeError ("Calling read(decode_content
    # =False) is not supported ...") escaped fetch, and an html source's later pages were never
    # asked for
    from londonlm.corpus.sources import make_source

    redirect = Reply(308, BODY, {"Location": "/b.html"}, encoding="gzip_cut", length="long")
    page = b"<html><body><article><p>" + BODY + b"</p></article></body></html>"
    with HostileServer({"/a.html": page, "/b.html": page, "/c.html": page}) as srv:
        srv.queue["/a.html"] = [redirect, redirect]
        src = make_source({"id": "p", "kind": "html", "urls": [srv.url + f"/{n}.html" for n in "abc"]})
        results = src.fetch(dl(), tmp_path)
    assert [r.ok for r in results] == [False, True, True], results
    assert "RuntimeError" in results[0].error


# --- archive.org answers that are not the API's ------------------------------------------
ITEM_TEXT = "The river Thames at London Bridge, with the watermen calling. " * 40


def _archive(srv) -> dict:
    hit = {"identifier": "ia1", "title": "Item", "year": 1751}
    return {"/advancedsearch.php": json.dumps({"response": {"numFound": 1, "docs": [hit]}}).encode(),
            "/metadata/ia1": json.dumps({"metadata": hit, "files": [{"name": "ia1_djvu.txt"}]}).encode(),
            "/download/ia1/ia1_djvu.txt": ITEM_TEXT.encode()}


@pytest.mark.parametrize("path, answer", [("/advancedsearch.php", b'{"error": "rate limited"}'),
                                          ("/advancedsearch.php", b"[]"), ("/advancedsearch.php", b"null"),
                                          ("/metadata/ia1", b"{}"), ("/metadata/ia1", b'["x"]')])
def test_an_archive_org_answer_that_is_not_the_apis_keeps_the_cached_records(tmp_path, path, answer):
    # search.json was replaced by [] (every item of the source gone at the next rebuild), and
    # metadata.json by the error's JSON (the item's title, date and licence gone)
    from londonlm.corpus.sources.archive_org import ArchiveOrgSource

    with HostileServer() as srv:
        srv.files = _archive(srv)
        src = ArchiveOrgSource({"id": "ia", "kind": "archive_org", "query": "x"}, base_url=srv.url)
        assert all(r.ok for r in src.fetch(dl(), tmp_path))
        before = tree_digest(tmp_path)
        srv.queue[path] = [Reply(200, answer)] * 4
        try:
            results = src.fetch(dl(), tmp_path)
        except Exception as e:  # the search: the source's fetch stops (the collector reports it)
            assert path == "/advancedsearch.php" and "not a search answer" in str(e), e
        else:
            assert path.startswith("/metadata/") and "not an item record" in results[0].error, results
    assert tree_digest(tmp_path) == before
    (doc,) = src.documents(tmp_path)
    assert doc.title == "Item" and doc.year == 1751 and doc.error is None
    assert is_complete(tmp_path / "archive_org" / "ia" / "ia1" / "text_djvu.txt")


def test_gzip_helper_is_a_real_gzip_stream():
    assert gzip.decompress(Reply(200, BODY, encoding="gzip").wire_body()) == BODY


def test_gzip_members_one_after_another_are_one_whole_body(tmp_path):
    # (gzip allows it; the strict decoder must not take the second member for damage)
    class TwoMembers(Reply):
        def wire_body(self) -> bytes:
            return gzip.compress(BODY[:1000]) + gzip.compress(BODY[1000:])

    res = fetch(tmp_path, [TwoMembers(200, BODY, encoding="gzip")])
    assert res.ok and (tmp_path / "book.txt").read_bytes() == BODY


def test_a_part_cut_from_an_answer_without_a_version_is_not_resumed_from_one_with_a_version(tmp_path):
    # a 200 naming no ETag, cut after its first 64 KiB (another version of the file, of the same
    # size), then the server's 206 for the rest naming one: the part was spliced onto it and the
    # mix recorded complete
    body = BODY * 6  # past one 64 KiB read, so a cut answer leaves a part
    with HostileServer({"/book.txt": body}) as srv:
        srv.queue["/book.txt"] = [Reply(200, body.swapcase(), cut=70_000)] * 2
        first = dl().fetch(DownloadTask([srv.url + "/book.txt"], tmp_path / "book.txt"))
        assert not first.ok and (tmp_path / "book.txt.part").stat().st_size == 1 << 16
        again = dl().fetch(DownloadTask([srv.url + "/book.txt"], tmp_path / "book.txt"))
    assert again.ok and (tmp_path / "book.txt").read_bytes() == body


def test_json_nested_past_the_parsers_depth_is_invalid_json_not_a_recursion_error(tmp_path):
    # get_json let RecursionError out: an archive.org search failed with the parser's words
    with HostileServer() as srv:
        srv.queue["/api"] = [Reply(200, b"[" * 100_000)] * 2
        with pytest.raises(Exception, match=r"gave up after 2 attempts: invalid JSON \(nested too deeply\)"):
            dl().get_json(srv.url + "/api")
