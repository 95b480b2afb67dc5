"""A polite, resumable HTTP downloader.

Politeness: a descriptive User-Agent, bounded concurrency (threads), a minimum interval
between requests to the same host, timeouts, and retries with exponential backoff plus
jitter on timeouts, connection errors, 429 and 5xx, honouring ``Retry-After``.

Safety: bytes go to ``<dest>.part``; only a body whose length matches the server's promise
is renamed into place (atomic ``os.replace``), so a partial file is never taken as complete:
a 200 (or the 206 rest of a part, reaching the file's end), a compressed body only when its
stream ended whole; any other answer is no file.
An interrupted ``.part`` is resumed with an HTTP Range request when the server supports it,
with ``If-Range`` so a file that changed upstream is fetched anew, never spliced.
A ``<dest>.sha256`` sidecar (written last) records the checksum; a re-run skips files whose
sidecar matches, and a run continues past failures and summarises them at the end. A fetch that
failed leaves ``.<dest>.failed`` saying why (every URL tried, each with its error), so the
document's rejection row names the cause (:func:`download_failure`); a later success removes it.
"""
from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import random
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import requests
import urllib3

from ..core import read_json_object, write_json_atomic, write_text_atomic
from .partial_download import (changed_upstream, content_length, content_range_start, content_range_total,
                               discard_part, if_range_value, part_info, part_info_path, read_part_info)

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = (
    "londonlm-corpus/0.1 (historical London language model research; polite bulk downloader; "
    "+https://github.com/londonlm)"
)
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
# answers that carry the file (203: a proxy's 200) or its rest (206); 416 is handled apart
FILE_STATUS = {200, 203, 206}


@dataclass
class DownloadTask:
    """One file to fetch: ``urls`` are tried in order (fallbacks) until one answers 2xx."""

    urls: list[str]
    dest: Path
    expected_sha256: str | None = None
    key: str = ""
    # a file that is never a web page (a plain text, an XML edition): an answer whose
    # Content-Type says HTML is a page about it (a block, a login wall, an error), not it
    refuse_html: bool = False

    def __post_init__(self):
        if isinstance(self.urls, str):
            self.urls = [self.urls]
        self.dest = Path(self.dest)


@dataclass
class DownloadResult:
    key: str
    dest: str
    ok: bool
    status: str            # downloaded | resumed | skipped | failed
    url: str = ""
    sha256: str = ""
    bytes: int = 0
    attempts: int = 0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Permanent(Exception):
    """A failure retrying cannot fix (404, 403, ...): move to the next fallback URL."""


class _HostLimiter:
    """At most one request start per ``interval`` seconds per host, across threads."""

    def __init__(self, interval: float):
        self.interval = interval
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, url: str, sleep: Callable[[float], None]) -> None:
        if self.interval <= 0:
            return
        host = urlsplit(url).netloc
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + self.interval
        if start > now:
            sleep(start - now)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _sidecar(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _failure_note(dest: Path) -> Path:
    # a dot file: the downloads' fingerprint leaves it out (a new wording of one failure
    # must not make the corpus stale)
    return dest.with_name(f".{dest.name}.failed")


def download_failure(dest: str | Path) -> str:
    """Why the last fetch of ``dest`` failed ('' when it did not fail, or was never tried)."""
    try:
        return _failure_note(Path(dest)).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def is_complete(dest: Path) -> bool:
    """True when ``dest`` exists with a sidecar whose size and checksum match it."""
    side = _sidecar(dest)
    if not dest.exists() or not side.exists():
        return False
    meta = read_json_object(side)  # damaged or of another kind: {}, so fetched again
    return meta.get("bytes") == dest.stat().st_size and meta.get("sha256") == _sha256(dest)


def _fetched_from(dest: Path) -> str | None:
    """The URL a complete ``dest`` was fetched from (its sidecar's). A file of another URL than a
    task's is no download of it: a source that names its files by position (an ``html`` entry's
    ``page-000.html``) found its first page complete when a URL was put before it, and the new page
    was never fetched, each later page read under the URL before it."""
    url = read_json_object(_sidecar(dest)).get("url")
    return url if isinstance(url, str) else None


def _request_headers(have: int, stored: dict | None) -> dict[str, str]:
    """Headers of one attempt: the rest of a ``.part`` of ``have`` bytes, if the file is still
    the one ``stored`` describes. Always the file's own bytes: a Range counts bytes of the
    representation sent (gzip's, under a Content-Encoding), and Content-Length the bytes on the
    wire, not those decoded."""
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    if have and stored and if_range_value(stored):
        headers["If-Range"] = if_range_value(stored)
    return headers


class Downloader:
    def __init__(self, user_agent: str = DEFAULT_USER_AGENT, workers: int = 4,
                 connect_timeout: float = 10.0, read_timeout: float = 60.0, max_retries: int = 5,
                 backoff_base: float = 1.0, backoff_max: float = 60.0, max_retry_after: float = 300.0,
                 per_host_interval: float = 1.0, progress: bool = True,
                 sleep: Callable[[float], None] = time.sleep):
        self.user_agent = user_agent
        self.workers = max(1, workers)
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.progress = progress
        self.sleep = sleep
        self.limiter = _HostLimiter(per_host_interval)
        self._local = threading.local()

    # --- plumbing ----------------------------------------------------------------------
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.headers["User-Agent"] = self.user_agent
            self._local.session = s
        return s

    def _backoff(self, attempt: int, retry_after: float | None = None) -> float:
        delay = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        delay = delay * (0.5 + random.random() / 2)  # jitter: spread retries of many clients
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay

    def _request(self, url: str, headers: dict[str, str] | None = None, stream: bool = False,
                 params: dict[str, Any] | None = None) -> requests.Response:
        self.limiter.wait(url, self.sleep)
        return self._session().get(url, headers=headers or {}, stream=stream, params=params,
                                   timeout=self.timeout, allow_redirects=True)

    def _with_retries(self, url: str, fn: Callable[[int], Any]) -> tuple[Any, int]:
        """Run ``fn(attempt)``; retry transient failures with backoff. Returns (value, attempts)."""
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                return fn(attempt), attempt + 1
            except _Permanent:
                raise
            except _Transient as e:
                last = e
                wait = self._backoff(attempt, e.retry_after)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError, ConnectionError, TimeoutError) as e:
                last = e
                wait = self._backoff(attempt)
            if attempt < self.max_retries:
                log.info("retry %s in %.2fs (attempt %d): %s", url, wait, attempt + 1, last)
                self.sleep(wait)
        raise _Exhausted(f"gave up after {self.max_retries + 1} attempts: {last}")

    def _check_status(self, r: requests.Response) -> None:
        if r.status_code in RETRY_STATUS:
            ra = parse_retry_after(r.headers.get("Retry-After"))
            r.close()
            raise _Transient(f"HTTP {r.status_code}", ra)
        if r.status_code >= 400 and r.status_code != 416:
            r.close()
            raise _Permanent(f"HTTP {r.status_code}")

    # --- small JSON / text requests (search APIs, metadata) -------------------------------
    def get_json(self, url: str, params: dict[str, Any] | None = None) -> Any:
        def go(_attempt: int) -> Any:
            r = self._request(url, params=params)
            self._check_status(r)
            try:
                return r.json()
            except ValueError as e:
                raise _Transient(f"invalid JSON: {e}", None) from e
            except RecursionError as e:  # ``[[[[...`` past the parser's depth: no answer, not a crash
                raise _Transient("invalid JSON (nested too deeply)", None) from e
        value, _ = self._with_retries(url, go)
        return value

    # --- files ----------------------------------------------------------------------------
    def fetch(self, task: DownloadTask) -> DownloadResult:
        dest = task.dest
        key = task.key or dest.name
        if task.refuse_html and dest.is_file() and _sniffs_html(dest):
            # a page kept as the file before bodies were sniffed (sent untyped or as text/plain):
            # no download, or every run skipped it as complete and read it as the book
            dest.unlink()
            _sidecar(dest).unlink(missing_ok=True)
        if is_complete(dest) and _fetched_from(dest) in task.urls:
            meta = json.loads(_sidecar(dest).read_text())
            _failure_note(dest).unlink(missing_ok=True)
            return DownloadResult(key, str(dest), True, "skipped", meta.get("url", ""), meta["sha256"],
                                  meta["bytes"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        errors = []
        for url in task.urls:
            try:
                (status, attempts) = self._with_retries(url, lambda a: self._fetch_once(url, dest, task.refuse_html))
            except (_Permanent, _Exhausted) as e:
                errors.append(f"{url}: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - a URL no retry mends (file:, no host; requests'
                # own RuntimeError on a redirect whose body it cannot read): the next one, never
                # the end of the source's other files
                errors.append(f"{url}: {type(e).__name__}: {e}")
                continue
            digest = _sha256(dest)
            if task.expected_sha256 and digest != task.expected_sha256:
                dest.unlink()
                errors.append(f"{url}: sha256 mismatch ({digest} != {task.expected_sha256})")
                continue
            size = dest.stat().st_size
            write_json_atomic(_sidecar(dest), {"url": url, "sha256": digest, "bytes": size,
                                               "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            _failure_note(dest).unlink(missing_ok=True)
            return DownloadResult(key, str(dest), True, status, url, digest, size, attempts)
        error = "; ".join(errors) or "no URL"
        write_text_atomic(_failure_note(dest), error + "\n")
        return DownloadResult(key, str(dest), False, "failed", task.urls[0] if task.urls else "", error=error)

    def _fetch_once(self, url: str, dest: Path, refuse_html: bool = False) -> str:
        """One attempt: stream into ``.part`` (resuming if possible); rename when complete.

        A resumed request carries ``If-Range`` with the validator (ETag or Last-Modified)
        stored beside the ``.part``: a server whose file changed answers 200 with the new
        file, which replaces the part instead of being spliced onto it. A 206 that starts
        elsewhere, names another validator or total size, or stops short of the end, restarts
        the file from zero."""
        part = dest.with_name(dest.name + ".part")
        info_path = part_info_path(dest)
        have = part.stat().st_size if part.exists() else 0
        stored = read_part_info(info_path, url) if have else None
        if have and stored is None:
            discard_part(dest)  # the part came from another URL: nothing to check it against
            have = 0
        r = self._request(url, headers=_request_headers(have, stored), stream=True)
        with r:
            self._check_status(r)
            if r.status_code == 416:
                return _at_end(r, dest, have, stored)
            resumed = r.status_code == 206 and have > 0
            total = _check_answer(r, dest, have, stored)
            if refuse_html and _is_html(r):  # (kept, it was the file forever: every rerun skipped it)
                raise _Permanent(f"answered with a web page ({r.headers.get('Content-Type')}), not the file")
            if not resumed:
                write_json_atomic(info_path, part_info(url, r))
            got, expected_len = _stream_body(r, part, append=resumed, dest=dest)
            if expected_len is not None and got != expected_len:
                raise _Transient(f"truncated body: {got} of {expected_len} bytes", None)
            made = part.stat().st_size
            if total is not None and made != total:
                # (a 206 whose range or length stops short of the file's end: a part, not the file)
                discard_part(dest)
                raise _Transient(f"the answer made {made} of the file's {total} bytes; restarting from zero", 0.0)
            if not _encoded(r) and expected_len is None \
                    and r.headers.get("Transfer-Encoding", "").lower() != "chunked" and got == 0:
                raise _Transient("empty body without length", None)
        if refuse_html and _sniffs_html(part):  # (a page sent untyped or as text/plain: a mirror, a portal)
            discard_part(dest)
            raise _Permanent("answered with a web page (its body begins as HTML), not the file")
        os.replace(part, dest)
        info_path.unlink(missing_ok=True)
        return "resumed" if resumed else "downloaded"

    def fetch_all(self, tasks: Iterable[DownloadTask], desc: str = "download") -> list[DownloadResult]:
        """Fetch with ``workers`` threads; never raises for one file's failure."""
        tasks = list(tasks)
        results: list[DownloadResult] = []
        bar = _progress(len(tasks), desc, self.progress)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futs = {pool.submit(self._safe_fetch, t): t for t in tasks}
            for fut in as_completed(futs):
                results.append(fut.result())
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        order = {id(t): i for i, t in enumerate(tasks)}
        key_order = {(t.key or t.dest.name, str(t.dest)): order[id(t)] for t in tasks}
        results.sort(key=lambda r: key_order.get((r.key, r.dest), 0))
        return results

    def _safe_fetch(self, task: DownloadTask) -> DownloadResult:
        try:
            return self.fetch(task)
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the run
            return DownloadResult(task.key or task.dest.name, str(task.dest), False, "failed",
                                  task.urls[0] if task.urls else "", error=f"{type(e).__name__}: {e}")


class _Transient(Exception):
    def __init__(self, msg: str, retry_after: float | None):
        super().__init__(msg)
        self.retry_after = retry_after


class _Exhausted(Exception):
    pass


def _at_end(r: requests.Response, dest: Path, have: int, stored: dict | None) -> str:
    """A 416 to a resumed request: our ``.part`` is at or past the end; it is the file only
    when the server says the file has exactly its size (and has not changed)."""
    part = dest.with_name(dest.name + ".part")
    total = content_range_total(r.headers.get("Content-Range"))
    if have and total is not None and total == have and not changed_upstream(stored, r.headers, total):
        os.replace(part, dest)
        part_info_path(dest).unlink(missing_ok=True)
        return "resumed"
    discard_part(dest)
    raise _Transient("HTTP 416 with a stale partial file; restarting", 0.0)


def _check_answer(r: requests.Response, dest: Path, have: int, stored: dict | None) -> int | None:
    """Whether the answer is the file (200) or the rest of it (206), else why not; returns the
    file's total size a 206 names. Any other 2xx or 3xx (204 No Content, 304 Not Modified to a
    request that named no version, a redirect without a usable Location) carries no file: its
    body, empty or not, was once renamed into place as if it were the download."""
    if r.status_code not in FILE_STATUS:
        raise _Permanent(f"HTTP {r.status_code} is not the file")
    if r.status_code != 206:
        return None
    if have and _encoded(r):  # a range of gzip's bytes, decoded: cannot be spliced onto the part
        discard_part(dest)
        raise _Transient("the server compressed a resumed range; restarting from zero", 0.0)
    cr = r.headers.get("Content-Range")
    start, total = content_range_start(cr), content_range_total(cr)
    why = (f"server resumed at {start}, expected {have}" if start != have else
           "a partial answer of no known size" if total is None else changed_upstream(stored, r.headers, total))
    if why:
        discard_part(dest)
        raise _Transient(f"{why}; restarting from zero", 0.0)
    return total


def _stream_body(r: requests.Response, part: Path, append: bool, dest: Path) -> tuple[int, int | None]:
    """Write the body to ``part`` (appending when resuming); (bytes got on the wire, bytes
    promised). A compressed body is decoded here, not by requests: requests took a gzip stream
    cut before its end (or missing its checksum) as whole, and Content-Length counts the
    compressed bytes."""
    decoder = _decoder(r)
    got = 0
    try:
        with open(part, "ab" if append else "wb") as f:
            chunks = r.iter_content(chunk_size=1 << 16) if decoder is None else \
                r.raw.stream(1 << 16, decode_content=False)
            for chunk in chunks:
                got += len(chunk)
                data = chunk if decoder is None else decoder.decompress(chunk)
                if data:
                    f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        if decoder is not None:  # decoded bytes cannot be resumed by a Range of the encoded ones
            discard_part(dest)
        if isinstance(e, (zlib.error, urllib3.exceptions.HTTPError)):
            raise _Transient(f"damaged body: {type(e).__name__}: {e}", None) from e
        raise
    if decoder is not None and not decoder.whole:
        discard_part(dest)
        raise _Transient(f"the {r.headers.get('Content-Encoding')} stream was cut before its end ({got} bytes)", None)
    return got, content_length(r.headers)


class _Inflate:
    """Strict gzip/zlib decoding that knows whether the stream ended whole (its checksum read);
    gzip members may follow one another, as gzip allows; other bytes after one are damage."""

    def __init__(self, wbits: int):
        self.wbits = wbits
        self._d = zlib.decompressobj(wbits)

    def decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            out.append(self._d.decompress(data))
            data = self._d.unused_data if self._d.eof else b""
            if data:
                self._d = zlib.decompressobj(self.wbits)
        return b"".join(out)

    @property
    def whole(self) -> bool:
        return self._d.eof


def _decoder(r: requests.Response) -> _Inflate | None:
    """A strict decoder of the body's Content-Encoding (None for none); an encoding this code
    cannot decode is a permanent failure of the URL, not a file of compressed bytes."""
    enc = (r.headers.get("Content-Encoding") or "identity").strip().lower()
    if enc == "identity":
        return None
    if enc in ("gzip", "x-gzip"):
        return _Inflate(16 + zlib.MAX_WBITS)
    if enc == "deflate":
        return _Inflate(32 + zlib.MAX_WBITS)  # a zlib (or gzip) stream, as RFC 9110 says
    raise _Permanent(f"Content-Encoding {enc!r} is not one this downloader decodes (gzip, deflate)")


def _is_html(r: requests.Response) -> bool:
    """Whether the answer says it is a web page (its Content-Type's media type)."""
    media = (r.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return media in ("text/html", "application/xhtml+xml")


# the openings by which a body is known for a web page whatever its Content-Type says (WHATWG's
# MIME sniffing, less its one-letter tags an OCR text might begin with, plus a portal's refresh
# ``<meta``), each followed by a space or ``>``; a text that mentions one later on is still a text
_HTML_OPENINGS = ("!doctype html", "html", "head", "body", "meta", "script", "iframe", "title", "style")
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_PROLOGUES = (("<?xml", "?>"), ("<!--", "-->"))  # skipped before the first tag


def _sniffs_html(path: Path, head_bytes: int = 4096) -> bool:
    """Whether a downloaded body begins as a web page: after any byte-order mark, whitespace, an
    XML declaration and comments, its first tag is one of :data:`_HTML_OPENINGS`."""
    with open(path, "rb") as f:
        head = f.read(head_bytes)
    codec = next((c for bom, c in _BOMS if head.startswith(bom)), "latin-1")
    text = head.decode(codec, errors="ignore").lstrip("\ufeff").lstrip()
    while (skip := next(((o, c) for o, c in _PROLOGUES if text.startswith(o)), None)) is not None:
        end = text.find(skip[1], len(skip[0]))
        if end < 0:
            return False  # (a head of comments only: nothing to judge by)
        text = text[end + len(skip[1]):].lstrip()
    low = text[:32].lower()
    return any(low.startswith("<" + o) and low[len(o) + 1:len(o) + 2] in (" ", ">", "/", "\t", "\n", "\r", "\f")
               for o in _HTML_OPENINGS)


def _encoded(r: requests.Response) -> bool:
    """Whether the body came compressed (requests hands it over decoded)."""
    return (r.headers.get("Content-Encoding") or "identity").strip().lower() != "identity"


def _progress(total: int, desc: str, enabled: bool):
    if not enabled or total == 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="file")


def failure_summary(results: Iterable[DownloadResult]) -> str:
    """A short human summary: counts by status, then one line per failure."""
    results = list(results)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    lines = ["downloads: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))]
    for r in results:
        if not r.ok:
            lines.append(f"  FAILED {r.key}: {r.error}")
    return "\n".join(lines)
