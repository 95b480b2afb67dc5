"""The real downloader against a loopback server with faults: 500, 429 + Retry-After,
connection reset mid-body, slow response, truncated body. It must end with complete,
checksummed files and never take a partial file as complete."""
from __future__ import annotations

import hashlib
import json
import time

import pytest

from londonlm.corpus.download import DownloadTask, Downloader, failure_summary, is_complete, parse_retry_after
from tests.fakeservers import FakeServer

BODY = ("It was the best of times, it was the worst of times. " * 4000).encode()


def make_dl(sleeps: list[float] | None = None, **kw) -> Downloader:
    rec = sleeps if sleeps is not None else []

    def sleep(s: float) -> None:  # record the requested wait, but keep the test fast
        rec.append(s)
        time.sleep(min(s, 0.02))

    opts = dict(workers=2, read_timeout=0.5, connect_timeout=2, max_retries=6, backoff_base=0.01,
                backoff_max=0.05, per_host_interval=0, progress=False, sleep=sleep)
    opts.update(kw)
    return Downloader(**opts)


def test_every_fault_then_complete_checksummed_file(tmp_path):
    with FakeServer(slow_seconds=1.5, retry_after=3) as srv:
        srv.files["/book.txt"] = BODY
        srv.faults["/book.txt"] = ["500", "429", "reset", "slow", "truncate"]
        sleeps: list[float] = []
        dest = tmp_path / "book.txt"
        res = make_dl(sleeps).fetch(DownloadTask([srv.url + "/book.txt"], dest))
        assert res.ok, res.error
        assert dest.read_bytes() == BODY
        assert res.sha256 == hashlib.sha256(BODY).hexdigest()
        side = json.loads((tmp_path / "book.txt.sha256").read_text())
        assert side["sha256"] == res.sha256 and side["bytes"] == len(BODY)
        assert not (tmp_path / "book.txt.part").exists()
        assert is_complete(dest)
        assert max(sleeps) >= 3, "Retry-After was not honoured"
        # after the reset/truncation the client resumed with a Range request
        assert any("Range" in h for p, h in srv.requests if p == "/book.txt")
        assert all(h.get("User-Agent", "").startswith("londonlm") for _, h in srv.requests)


def test_partial_file_is_never_taken_as_complete_and_resumes(tmp_path):
    with FakeServer() as srv:
        srv.files["/t.txt"] = BODY
        srv.faults["/t.txt"] = ["truncate"] * 3
        dest = tmp_path / "t.txt"
        res = make_dl(max_retries=2).fetch(DownloadTask([srv.url + "/t.txt"], dest))
        assert not res.ok and res.status == "failed"
        assert not dest.exists() and not is_complete(dest)
        part = tmp_path / "t.txt.part"
        assert part.exists() and 0 < part.stat().st_size < len(BODY)
        before = srv.count("/t.txt")
        res2 = make_dl().fetch(DownloadTask([srv.url + "/t.txt"], dest))
        assert res2.ok and res2.status == "resumed"
        assert dest.read_bytes() == BODY
        last_headers = [h for p, h in srv.requests if p == "/t.txt"][before]
        assert last_headers.get("Range", "").startswith("bytes=")


def test_rerun_skips_complete_files_and_redownloads_corrupted(tmp_path):
    with FakeServer() as srv:
        srv.files["/a.txt"] = BODY
        dest = tmp_path / "a.txt"
        dl = make_dl()
        assert dl.fetch(DownloadTask([srv.url + "/a.txt"], dest)).status == "downloaded"
        n = srv.count("/a.txt")
        assert dl.fetch(DownloadTask([srv.url + "/a.txt"], dest)).status == "skipped"
        assert srv.count("/a.txt") == n
        dest.write_bytes(BODY[:100])  # damaged after the fact: checksum no longer matches
        assert dl.fetch(DownloadTask([srv.url + "/a.txt"], dest)).status == "downloaded"
        assert dest.read_bytes() == BODY


def test_server_without_range_support_restarts_cleanly(tmp_path):
    with FakeServer() as srv:
        srv.files["/r.txt"] = BODY
        srv.range_support = False
        (tmp_path / "r.txt.part").write_bytes(b"garbage that is not the start")
        res = make_dl().fetch(DownloadTask([srv.url + "/r.txt"], tmp_path / "r.txt"))
        assert res.ok and (tmp_path / "r.txt").read_bytes() == BODY


def test_fallback_urls_and_run_continues_past_failures(tmp_path):
    with FakeServer() as srv:
        srv.files["/files/7/7-0.txt"] = BODY
        srv.faults["/always500"] = ["500"] * 50
        tasks = [DownloadTask([srv.url + "/cache/7.txt", srv.url + "/files/7/7-0.txt"], tmp_path / "7.txt", key="ok"),
                 DownloadTask([srv.url + "/missing"], tmp_path / "m.txt", key="missing"),
                 DownloadTask([srv.url + "/always500"], tmp_path / "b.txt", key="broken")]
        results = make_dl(max_retries=2).fetch_all(tasks)
        by_key = {r.key: r for r in results}
        assert by_key["ok"].ok and by_key["ok"].url.endswith("/files/7/7-0.txt")
        assert not by_key["missing"].ok and "404" in by_key["missing"].error
        assert not by_key["broken"].ok and "500" in by_key["broken"].error
        summary = failure_summary(results)
        assert "FAILED missing" in summary and "FAILED broken" in summary
        assert not (tmp_path / "b.txt").exists()


def test_checksum_mismatch_is_a_failure(tmp_path):
    with FakeServer() as srv:
        srv.files["/x.txt"] = BODY
        res = make_dl().fetch(DownloadTask([srv.url + "/x.txt"], tmp_path / "x.txt", expected_sha256="0" * 64))
        assert not res.ok and "mismatch" in res.error
        assert not (tmp_path / "x.txt").exists()


def test_per_host_rate_limit_spaces_requests():
    waits: list[float] = []
    dl = Downloader(per_host_interval=0.5, progress=False, sleep=waits.append)
    for _ in range(3):
        dl.limiter.wait("http://example.org/a", dl.sleep)
    dl.limiter.wait("http://other.org/a", dl.sleep)
    assert len(waits) == 2 and waits[-1] == pytest.approx(1.0, abs=0.1)


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


# --- resuming a file that changed upstream ------------------------------------------------
# A server of one file that can change between requests, with validators (ETag and/or
# Last-Modified) and RFC 9110 If-Range semantics: a Range request whose If-Range does not
# name the current file gets the whole new file (200). ``honour_if_range=False`` plays a
# server that ignores If-Range; ``truncate_next`` cuts the next body short (a lost connection).

class ChangingFileServer(FakeServer):
    def __init__(self, body: bytes, etag: bool = True, last_modified: bool = True):
        super().__init__()
        self.version, self.body = 1, body
        self.use_etag, self.use_lm = etag, last_modified
        self.honour_if_range = True
        self.truncate_next = False
        self.bad_start = False
        self.url = self.url + "/book.txt"

    def change(self, body: bytes) -> None:
        self.version += 1
        self.body = body

    def validators(self) -> dict[str, str]:
        out = {}
        if self.use_etag:
            out["ETag"] = f'"v{self.version}"'
        if self.use_lm:
            out["Last-Modified"] = f"Wed, 0{self.version} Jan 2025 00:00:00 GMT"
        return out

    def _handle(self, h) -> None:
        self.requests.append((h.path, dict(h.headers)))
        v = self.validators()
        rng, if_range = h.headers.get("Range"), h.headers.get("If-Range")
        ranged = bool(rng) and (not if_range or not self.honour_if_range or if_range in v.values())
        start = int(rng[6:].split("-")[0]) if ranged else 0
        status, headers = (206 if ranged else 200), dict(v)
        if ranged:
            shown = start + 7 if self.bad_start else start
            headers["Content-Range"] = f"bytes {shown}-{len(self.body) - 1}/{len(self.body)}"
        payload = self.body[start:]
        h.send_response(status)
        for k, val in headers.items():
            h.send_header(k, val)
        h.send_header("Content-Length", str(len(payload)))
        if self.truncate_next:
            self.truncate_next = False
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(payload[: len(payload) // 3])
            h.close_connection = True
            return
        h.end_headers()
        h.wfile.write(payload)


V1 = BODY
V2 = ("It was the age of wisdom, it was the age of foolishness. " * 4000).encode()


def _interrupted_then_changed(srv: ChangingFileServer, dest) -> int:
    """A first download that leaves part of V1 in the .part; then V2 replaces V1. Returns
    the part's size."""
    srv.truncate_next = True
    first = make_dl(max_retries=0).fetch(DownloadTask([srv.url], dest))
    have = dest.with_name(dest.name + ".part").stat().st_size
    assert not first.ok and 0 < have < len(V1)
    srv.change(V2)
    return have


@pytest.mark.parametrize("etag, last_modified", [(True, True), (True, False), (False, True)])
def test_changed_upstream_file_is_fetched_anew_not_spliced(tmp_path, etag, last_modified):
    with ChangingFileServer(V1, etag=etag, last_modified=last_modified) as srv:
        dest = tmp_path / "book.txt"
        have = _interrupted_then_changed(srv, dest)
        res = make_dl().fetch(DownloadTask([srv.url], dest))
        assert res.ok and dest.read_bytes() == V2, "a part of the old file was spliced onto the new"
        resume = srv.requests[1][1]
        assert resume["Range"] == f"bytes={have}-"
        assert resume["If-Range"] == ('"v1"' if etag else "Wed, 01 Jan 2025 00:00:00 GMT")
        assert res.sha256 == hashlib.sha256(V2).hexdigest() and is_complete(dest)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["book.txt", "book.txt.sha256"]


def test_server_ignoring_if_range_is_caught_by_its_validator(tmp_path):
    with ChangingFileServer(V1) as srv:
        srv.honour_if_range = False  # answers 206 with a slice of the NEW file
        dest = tmp_path / "book.txt"
        _interrupted_then_changed(srv, dest)
        res = make_dl().fetch(DownloadTask([srv.url], dest))
        assert res.ok and dest.read_bytes() == V2
        assert "Range" not in srv.requests[-1][1]  # restarted from zero


def test_unchanged_file_resumes_with_if_range(tmp_path):
    with ChangingFileServer(V1) as srv:
        dest = tmp_path / "book.txt"
        srv.truncate_next = True
        assert not make_dl(max_retries=0).fetch(DownloadTask([srv.url], dest)).ok
        res = make_dl().fetch(DownloadTask([srv.url], dest))
        assert res.ok and res.status == "resumed" and dest.read_bytes() == V1
        assert srv.requests[-1][1]["If-Range"] == '"v1"' and len(srv.requests) == 2


def test_206_at_the_wrong_offset_restarts_from_zero(tmp_path):
    with ChangingFileServer(V1) as srv:
        dest = tmp_path / "book.txt"
        srv.truncate_next = True
        assert not make_dl(max_retries=0).fetch(DownloadTask([srv.url], dest)).ok
        srv.bad_start = True
        res = make_dl().fetch(DownloadTask([srv.url], dest))
        assert res.ok and dest.read_bytes() == V1
        assert "Range" not in srv.requests[-1][1]


def test_a_url_requests_cannot_fetch_is_one_failure_and_the_next_url_is_tried(tmp_path):
    """`file:` (or a URL with no host) raised out of fetch and stopped the rest of its source;
    now it is one URL's failure. A failed fetch leaves its reasons for the rejection row, and
    a later success removes them."""
    from londonlm.corpus.download import download_failure

    dest = tmp_path / "a.txt"
    with FakeServer() as srv:
        srv.files["/a.txt"] = BODY
        res = make_dl().fetch(DownloadTask(["file:///etc/passwd", "http://"], dest))
        assert not res.ok and "file:///etc/passwd: InvalidSchema" in res.error and "http://: " in res.error
        assert download_failure(dest) == res.error and not dest.exists()
        res = make_dl().fetch(DownloadTask(["file:///etc/passwd", srv.url + "/a.txt"], dest))
        assert res.ok and dest.read_bytes() == BODY and download_failure(dest) == ""
