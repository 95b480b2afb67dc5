"""The real downloader against a loopback server with faults: 500, 429 + Retry-After,
connection reset mid-body, slow response, truncated body. It must end with complete,
checksummed files and never take a partial file as complete."""
from __future__ import annotations

import hashlib
import json
import time

import pytest

from londonlm.download import DownloadTask, Downloader, failure_summary, is_complete, parse_retry_after
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
