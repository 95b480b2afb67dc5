"""Any answer a server might give, not only the faults a test thought of: hypothesis scripts a
loopback server (``tests/hostile_http.py``) to answer the real request paths of the downloading
sources with any status (3xx loops and redirects elsewhere, 204, 206 with a wrong or partial
Content-Range, 304, 4xx with and without Retry-After, 5xx), bodies cut at any byte, a wrong or
huge Content-Length, damaged gzip, HTML where JSON is expected, JSON of another shape or nested
100,000 deep, other encodings, empty bodies and resets; then the honest file. Four nets: one
file (``Downloader.fetch`` from any prior state: nothing, a part, a part of another version,
complete), a collection of a Gutenberg book, archive.org items and web pages (fresh, and over a
complete corpus), the collector's main as its user runs it, and (slow) ``bl_books`` streamed
from a hostile Hub datasets API.

Asserted: a download is taken only when whole (the true file, or a body the server presented as
the whole file), never a part as if whole; a file complete before is untouched; a part left
behind is resumed or discarded, so an honest server afterwards gives the true file. A
collection either builds a corpus whose manifest and texts agree or stops with one
LondonLMError (the collector: exit 2 and one ``error:`` line, never a traceback), and a corpus
and download cache complete before are byte-for-byte the same after a run against answers that
are not the API's own.
Retries are bounded and never sleep (the downloader's ``sleep`` and backoff knobs)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import micro_texts, tree_digest
from hostile_http import HostileServer, Reply
from londonlm.corpus.download import DownloadTask, Downloader, is_complete

# examples per run of the one-file net (0.05 s each); the collections run a tenth as many (1 s
# each), the collector's main a twentieth, the Hub's (slow) too. LONDONLM_FUZZ_EXAMPLES=1000
# searches longer (about 25 minutes on 2 cores)
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 100))
# past one 64 KiB read (the downloader's), so that an answer cut short leaves a part behind
BODY = ("\n\n".join(micro_texts(3, 4000)) * 7).encode("utf-8")
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def downloader(**kw) -> Downloader:
    """Bounded and fast: two retries, no backoff, Retry-After capped at 10 ms, and no real sleep."""
    opts = dict(workers=1, connect_timeout=1, read_timeout=3, max_retries=2, backoff_base=0, backoff_max=0,
                max_retry_after=0.01, per_host_interval=0, progress=False, sleep=lambda s: None)
    opts.update(kw)
    return Downloader(**opts)


# --- what a hostile server sends ----------------------------------------------------------
STATUSES = [200] * 6 + [203, 204, 206, 206, 300, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 410, 416,
                        418, 429, 429, 500, 502, 503, 504, 599]
RETRY_AFTER = ["0", "1", "99999", "-5", "soon", "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
               "9" * 400]
OTHER_BODIES = [b"", b"<html><body><h1>503 Service Unavailable</h1></body></html>",
                b'{"error": "rate limited"}', b"[]", b"null", b"[" * 100_000, b"{\"a\":" * 50_000,
                "Ye olde shoppe, façade £5 — naïve".encode("latin-1", "replace"),
                "London Bridge is falling down".encode("utf-16"), b"\xff\xfe\x00\x00\x80\x81" * 100]
LOCATIONS = ["{self}", "/elsewhere", "/mirror", "http://127.0.0.1:1/x", "", "ftp://127.0.0.1/x", "//evil/x"]
LENGTHS = ["true"] * 4 + ["none", "short", "long", "huge", "chunked"]  # how Content-Length tells the body
ENCODINGS = ["identity"] * 5 + ["gzip", "gzip_cut", "gzip_flipped", "deflate_bad", "br"]
CONTENT_RANGES = ["bytes 0-99/{total}", "bytes 7-{last}/{total}", "bytes */{total}", "garbage", "bytes 0-1/2",
                  "bytes 0-{last}/{bigger}", "bytes -5-3/x"]


JSON_VALUES = st.one_of(st.sampled_from([None, [], {}, "", "x", 0, -1, 1e308, True, [None], {"docs": None}]),
                        st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                          max_size=3), max_leaves=6))
DEEP = object()  # a value nested 100,000 lists deep, written as text (json.dumps would recurse)


@st.composite
def json_variants(draw, value):
    """The honest JSON with one value anywhere in it replaced, or a key dropped."""
    if isinstance(value, (dict, list)) and value and draw(st.booleans()):
        keys = list(value) if isinstance(value, dict) else list(range(len(value)))
        k = draw(st.sampled_from(keys))
        out = dict(value) if isinstance(value, dict) else list(value)
        if isinstance(out, dict) and draw(st.integers(0, 4)) == 0:
            del out[k]
        else:
            out[k] = draw(json_variants(value[k]))
        return out
    return draw(st.one_of(JSON_VALUES, st.just(DEEP)))


def _dumps(value) -> bytes:
    text = json.dumps(value, default=lambda o: "@DEEP@")
    return text.replace('"@DEEP@"', "[" * 100_000 + "]" * 100_000).encode()


@st.composite
def bodies(draw, whole: bytes) -> bytes:
    try:
        honest_json = json.loads(whole)
    except ValueError:
        honest_json = None
    kind = draw(st.sampled_from(["whole", "prefix", "suffix", "other", "other", "changed"]
                                + ["json"] * (4 if honest_json is not None else 0)))
    if kind == "json":
        return _dumps(draw(json_variants(honest_json)))
    if kind == "whole":
        return whole
    if kind == "changed":  # another version of the file, of the same size
        return whole.swapcase()
    if kind in ("prefix", "suffix"):
        n = draw(st.integers(0, len(whole)))
        return whole[:n] if kind == "prefix" else whole[n:]
    return draw(st.sampled_from(OTHER_BODIES))


@st.composite
def replies(draw, path: str, whole: bytes) -> Reply:
    if draw(st.booleans()):  # a plain 200 whose body alone is hostile
        return Reply(200, draw(bodies(whole)))
    status = draw(st.sampled_from(STATUSES))
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["Retry-After"] = draw(st.sampled_from(RETRY_AFTER))
    if 300 <= status < 400:
        loc = draw(st.sampled_from(LOCATIONS)).replace("{self}", path)
        if loc:
            headers["Location"] = loc
    etag = draw(st.sampled_from([None, None, '"honest"', '"other"', 'W/"weak"']))
    if etag:
        headers["ETag"] = etag
    body = draw(bodies(whole))
    piece_of = piece = None
    if status == 206:
        how = draw(st.sampled_from(["rest", "piece", "header", "none"]))
        if how in ("rest", "piece"):
            piece_of = whole
            piece = draw(st.integers(0, 4000)) if how == "piece" else None
        elif how == "header":
            headers["Content-Range"] = draw(st.sampled_from(CONTENT_RANGES)).format(
                total=len(whole), last=len(whole) - 1, bigger=len(whole) + 10)
    cut = draw(st.one_of(st.none(), st.none(), st.integers(0, max(0, len(body)))))
    return Reply(status, body, headers, length=draw(st.sampled_from(LENGTHS)),
                 encoding=draw(st.sampled_from(ENCODINGS)), cut=cut, reset=draw(st.booleans()) and draw(st.booleans()), piece_of=piece_of, piece=piece)


def script(path: str, whole: bytes, max_size: int = 4):
    return st.lists(replies(path, whole), min_size=1, max_size=max_size)


# --- one file -----------------------------------------------------------------------------
BEFORE = ["nothing", "part_of_file", "part_of_another_file", "complete"]


def _set_up(dest: Path, before: str, srv: HostileServer, cut: int) -> None:
    """The download's state before the hostile run: nothing, a part (with its record), or complete."""
    if before == "complete":
        assert downloader().fetch(DownloadTask([srv.url + "/book.txt"], dest)).ok
    elif before == "part_of_file":
        dest.with_name(dest.name + ".part").write_bytes(BODY[:cut])
        dest.with_name(f".{dest.name}.part.json").write_text(json.dumps(
            {"url": srv.url + "/book.txt", "etag": '"honest"', "last_modified": None, "total": len(BODY)}))
    elif before == "part_of_another_file":  # cut from a file since replaced upstream
        dest.with_name(dest.name + ".part").write_bytes(os.urandom(cut))
        dest.with_name(f".{dest.name}.part.json").write_text(json.dumps(
            {"url": srv.url + "/book.txt", "etag": '"old"', "last_modified": None, "total": len(BODY) + 1}))


def _splice_of_a_part(got: bytes, part: bytes) -> bool:
    """Whether ``got`` is a part left by a hostile answer with the honest rest appended: a
    resume no client can refuse when the hostile answer named the honest file's version (ETag)
    and size for other bytes."""
    return len(part) < len(BODY) and got == part + BODY[len(part):]


@FUZZ
@given(before=st.sampled_from(BEFORE), cut=st.integers(1, len(BODY) - 1), book=script("/book.txt", BODY),
       mirror=st.one_of(st.none(), script("/mirror", BODY, 2)))
def test_a_file_is_taken_only_whole_whatever_the_server_answers(before, cut, book, mirror):
    with tempfile.TemporaryDirectory() as tmp, HostileServer({"/book.txt": BODY, "/mirror": BODY}) as srv:
        dest = Path(tmp) / "pg1.txt"
        _set_up(dest, before, srv, cut)
        state = tree_digest(tmp)
        srv.queue["/book.txt"] = list(book)
        if mirror is not None:
            srv.queue["/mirror"] = list(mirror)
        urls = [srv.url + "/book.txt"] + ([srv.url + "/mirror"] if mirror is not None else [])
        res = downloader().fetch(DownloadTask(urls, dest))
        if before == "complete":
            assert res.ok and res.status == "skipped" and tree_digest(tmp) == state
            return
        if res.ok:
            got = dest.read_bytes()
            sent = srv.sent.get("/book.txt", []) + srv.sent.get("/mirror", [])
            assert is_complete(dest) and (got == BODY or got in sent), (res, len(got))
            assert not dest.with_name(dest.name + ".part").exists()
            return
        assert not dest.exists() and not is_complete(dest), res
        part_path = dest.with_name(dest.name + ".part")
        part = part_path.read_bytes() if part_path.exists() else b""
        srv.queue.clear()  # now the server is honest: what was left behind resumes or is discarded
        again = downloader().fetch(DownloadTask(urls, dest))
        assert again.ok, again
        got = dest.read_bytes()
        assert got == BODY or _splice_of_a_part(got, part), (again, len(got), len(part))


# --- a collection of downloading sources ---------------------------------------------------
PROSE = micro_texts(5, 2500)
PG = ("The Project Gutenberg eBook of A Journal\n\n*** START OF THE PROJECT GUTENBERG EBOOK A JOURNAL ***\n\n"
      f"{PROSE[0]}\n\n*** END OF THE PROJECT GUTENBERG EBOOK A JOURNAL ***\nlicence\n").encode()
ITEMS = {"ia1": (PROSE[1], 1751), "ia2": (PROSE[2], 1752)}
PAGES = {"/a.html": PROSE[3], "/b.html": PROSE[4]}


def honest_files() -> dict[str, bytes]:
    """Every path the sources ask for, as the real services answer it."""
    files = {"/cache/epub/11/pg11.txt": PG}
    hits = [{"identifier": i, "title": f"Item {i}", "creator": "Anon", "date": f"{y}-01-01T00:00:00Z", "year": y}
            for i, (_, y) in ITEMS.items()]
    files["/advancedsearch.php"] = json.dumps({"responseHeader": {"status": 0}, "response": {
        "numFound": len(hits), "start": 0, "docs": hits}}).encode()
    for hit, (text, _) in zip(hits, ITEMS.values()):
        i = hit["identifier"]
        files[f"/metadata/{i}"] = json.dumps({"metadata": {**hit, "mediatype": "texts"},
                                              "files": [{"name": f"{i}.pdf"}, {"name": f"{i}_djvu.txt"}]}).encode()
        files[f"/download/{i}/{i}_djvu.txt"] = text.encode()
    for path, text in PAGES.items():
        paras = "".join(f"<p>{p}</p>" for p in text.split(". ") if p.strip())
        files[path] = f"<html><body><article>{paras}</article></body></html>".encode()
    return files


FILES = honest_files()


def entries(url: str) -> list[dict]:
    return [{"id": "journal", "kind": "gutenberg", "gutenberg_id": 11, "year": 1722, "title": "A Journal",
             "license": "PD", "base_url": url},
            {"id": "ia", "kind": "archive_org", "query": "london", "rows": 10, "max_items": 5, "base_url": url},
            {"id": "pages", "kind": "html", "year": 1800, "title": "Pages", "license": "PD",
             "urls": [url + p for p in PAGES]}]


@st.composite
def hostile_service(draw) -> dict[str, list[Reply]]:
    """Scripts for some of the real paths (and sometimes for every path at once)."""
    paths = draw(st.lists(st.sampled_from(sorted(FILES)), min_size=1, max_size=4, unique=True))
    out = {p: draw(script(p, FILES[p], 3)) for p in paths}
    if draw(st.booleans()) and draw(st.booleans()):
        out["*"] = draw(script("/x", BODY, 2))
    return out


def collect(root: Path, url: str) -> None:
    from londonlm.corpus.collect import CollectionOptions, run_collection
    from londonlm.corpus.ocr.step import OcrOptions

    period = root / "period"  # a tiny period corpus: the shipped lexicon took 4 s a collection
    if not period.is_dir():
        period.mkdir()
        (period / "plague_1722.txt").write_text(PROSE[0], encoding="utf-8")
    run_collection(entries(url), root / "downloads", root / "processed", root / "metadata", CollectionOptions(
        workers=1, min_chars=50, validation_percent=20, log=lambda *_: None,
        ocr=OcrOptions(period_corpus=str(period), min_quality=0),
        download_options=dict(connect_timeout=1, read_timeout=3, max_retries=1, backoff_base=0, backoff_max=0,
                              max_retry_after=0.01, per_host_interval=0, sleep=lambda s: None)))


def check_corpus(processed: Path) -> None:
    """A finished collection: each manifest row's text is there, whole and in UTF-8."""
    rows = [json.loads(line) for line in (processed / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows
    for row in rows:
        text = (processed / row["path"]).read_text(encoding="utf-8")
        assert text and (row.get("sha256") is None or hashlib.sha256(text.encode()).hexdigest() == row["sha256"])


def check_downloads(downloads: Path, srv: HostileServer) -> None:
    """Every download the cache holds as complete is a file the server presented whole."""
    presented = set(FILES.values()) | {b for bodies in srv.sent.values() for b in bodies}
    for side in downloads.rglob("*.sha256"):
        got = side.with_name(side.name[: -len(".sha256")])
        assert is_complete(got) and got.read_bytes() in presented, got


def api_shaped(path: str, body: bytes) -> bool:
    """Whether ``body`` is an answer of the API's own shape at ``path`` (an archive.org search's
    ``response.docs`` list, an item record's ``files`` list): a change upstream, not damage."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return False
    if path == "/advancedsearch.php":
        return isinstance(value, dict) and isinstance(value.get("response"), dict) \
            and isinstance(value["response"].get("docs"), list)
    return path.startswith("/metadata/") and isinstance(value, dict) and isinstance(value.get("files"), list)


def state(root: Path) -> dict:
    return {"processed": tree_digest(root / "processed"), "downloads": tree_digest(root / "downloads")}


@contextlib.contextmanager
def served(service: dict | None = None):
    """(a scratch root, the server of FILES), the server answering ``service``'s hostile
    replies first when given."""
    with tempfile.TemporaryDirectory() as tmp, HostileServer(FILES) as srv:
        if service is not None:
            srv.queue = {p: list(r) for p, r in service.items()}
        yield Path(tmp), srv


@settings(FUZZ, max_examples=max(2, EXAMPLES // 10))
@given(service=hostile_service())
def test_a_collection_against_a_hostile_service_builds_a_whole_corpus_or_one_error(service):
    from londonlm.core import LondonLMError

    with served(service) as (root, srv):
        try:
            collect(root, srv.url)
        except LondonLMError as e:
            assert "\n" not in str(e).strip(), str(e)
        else:
            check_corpus(root / "processed")
        check_downloads(root / "downloads", srv)
        srv.queue.clear()  # the service mended: what a failed run left resumes or is discarded
        collect(root, srv.url)
        check_corpus(root / "processed")
        check_downloads(root / "downloads", srv)


@settings(FUZZ, max_examples=max(2, EXAMPLES // 10))
@given(service=hostile_service())
def test_a_complete_corpus_and_its_downloads_outlive_a_hostile_service(service):
    """Nothing complete is fetched again, and no answer that is not the API's own shape
    replaces a cached search or item record: the rerun changes no byte, or stops in one line
    and changes no byte."""
    from londonlm.core import LondonLMError

    with served() as (root, srv):
        collect(root, srv.url)
        before = state(root)
        srv.queue = {p: list(r) for p, r in service.items()}
        try:
            collect(root, srv.url)
        except LondonLMError as e:
            assert "\n" not in str(e).strip(), str(e)
        changed_upstream = any(api_shaped(p, b) and b != FILES[p] for p, sent in srv.sent.items() for b in sent)
        if changed_upstream:  # the API said something new: its records may change, the corpus with them
            check_corpus(root / "processed")
        else:
            assert state(root) == before


# --- the collector as its user runs it ----------------------------------------------------
def one_error_line(code: int, err: str) -> bool:
    """What a refused run prints: exit 2, one ``error:`` line, last (above it at most the log's
    own lines, such as the OCR repairer's one line on its walk), and no traceback."""
    lines = [x for x in err.splitlines() if x.strip()]
    return code == 2 and bool(lines) and lines[-1].startswith("error:") \
        and sum(x.startswith("error:") for x in lines) == 1 and "Traceback" not in err


def _collector_main(root: Path, url: str) -> tuple[int, str]:
    """The collector's main, wrapped as the script runs it: (exit code, stderr)."""
    import dataclasses
    import importlib.util
    import io
    from unittest import mock

    import config
    from londonlm.core.errors import run_main

    script = Path(__file__).resolve().parents[2] / "02_data_collection" / "historical_data_collector.py"
    spec = importlib.util.spec_from_file_location("collector_under_fuzz", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    registry = root / "sources.json"
    registry.write_text(json.dumps({"sources": entries(url)}))
    period = root / "period"  # a folder of period texts (a file must be a saved lexicon)
    period.mkdir()
    (period / "plague_1722.txt").write_text(PROSE[0], encoding="utf-8")
    argv = ["--root", str(root), "--registry", str(registry), "--sources", "journal,ia,pages", "--workers", "1",
            "--min_chars", "50", "--download_interval", "0", "--period_corpus", str(period), "--ocr_min_quality", "0"]
    err = io.StringIO()
    # the collector's retries and backoff are its defaults (5, from 1 s): one retry, no wait
    with mock.patch.object(config, "CORPUS", dataclasses.replace(config.CORPUS, download_retries=1)), \
            mock.patch.object(Downloader, "_backoff", lambda self, attempt, retry_after=None: 0.0), \
            contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            run_main(mod.main, argv)
        except SystemExit as e:
            return int(e.code or 0), err.getvalue()
    return 0, err.getvalue()


@settings(FUZZ, max_examples=max(2, EXAMPLES // 20))
@given(service=hostile_service())
def test_the_collector_against_a_hostile_service_exits_0_or_says_one_line(service):
    with served(service) as (root, srv):
        code, err = _collector_main(root, srv.url)
        assert "Traceback" not in err, err
        if code:
            assert one_error_line(code, err), (code, err)
            assert "no usable documents" in err or "/advancedsearch.php" in err, err  # what a service can cause
        else:
            check_corpus(root / "data" / "london_historical" / "processed")


# --- bl_books streamed from a hostile Hub (the collector in a process of its own) -------------
HUB_KINDS = ("info", "tree", "paths-info", "file", "other")


def _hub_kind(method: str, path: str) -> str:
    if path.startswith("/api/datasets/"):
        return "tree" if "/tree/" in path else "paths-info" if "/paths-info/" in path else "info"
    return "file" if "/resolve/" in path else "other"


def _hostile_hub():
    """The loopback Hub of ``tests/fake_hub_datasets.py`` with a queue of hostile replies per kind
    of request (the repository's info, its tree, paths-info, a file's bytes, anything else)."""
    from fake_hub_datasets import FakeDatasetHub

    from hostile_http import _write

    class HostileHub(FakeDatasetHub):
        def __init__(self):
            super().__init__()
            self.queue: dict[str, list[Reply]] = {}
            self.thread.__init__(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

        def _handle(self, h) -> None:
            q = self.queue.get(_hub_kind(h.command, h.path.split("?", 1)[0]))
            if not q:
                return super()._handle(h)
            n = int(h.headers.get("Content-Length") or 0)
            if n:
                h.rfile.read(n)
            _write(h, q.pop(0))

    return HostileHub()


@st.composite
def hostile_hub(draw) -> dict[str, list[Reply]]:
    kinds = draw(st.lists(st.sampled_from(HUB_KINDS), min_size=1, max_size=2, unique=True))
    honest = json.dumps({"id": "biglam/blbooks-parquet", "sha": "0" * 40, "siblings": []}).encode()
    return {k: draw(script("/x", honest if k in ("info", "tree", "paths-info") else b"PAR1" + BODY[:500] + b"PAR1",
                           3)) for k in kinds}


def _collect_bl_books(root: Path, url: str) -> subprocess.CompletedProcess:
    script = Path(__file__).resolve().parents[2] / "02_data_collection" / "historical_data_collector.py"
    period = root.parent / "period"
    period.mkdir(exist_ok=True)
    (period / "plague_1722.txt").write_text(PROSE[0], encoding="utf-8")
    offline = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    env = {k: v for k, v in os.environ.items() if k not in offline}
    env.update(HF_HOME=str(root / "hf_home"), HF_ENDPOINT=url, HF_HUB_ETAG_TIMEOUT="3", HF_HUB_DOWNLOAD_TIMEOUT="3")
    argv = ["--root", str(root), "--sources", "bl_books", "--workers", "1", "--min_chars", "50",
            "--period_corpus", str(period), "--ocr_min_quality", "0"]
    return subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=240, env=env,
                          cwd=root.parent)


@pytest.mark.slow
@settings(FUZZ, max_examples=max(2, EXAMPLES // 20))
@given(service=hostile_hub())
def test_bl_books_from_a_hostile_hub_exit_0_or_one_line_and_keep_the_corpus(service):
    from blbooks_fixture import Book, write_repo

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_repo(tmp / "repo", [Book("000000001", pages=4), Book("000000003", pages=3)], row_group_size=2)
        with _hostile_hub() as hub:
            hub.add_folder("biglam/blbooks-parquet", tmp / "repo")
            root = tmp / "root"
            first = _collect_bl_books(root, hub.url)
            assert first.returncode == 0, first.stderr
            processed = root / "data" / "london_historical" / "processed"
            before = tree_digest(processed)
            hub.queue = {k: list(v) for k, v in service.items()}
            r = _collect_bl_books(root, hub.url)
        assert "Traceback" not in r.stderr, r.stderr
        if r.returncode:
            assert one_error_line(r.returncode, r.stderr), r.stderr
            assert tree_digest(processed) == before
        else:
            check_corpus(processed)
