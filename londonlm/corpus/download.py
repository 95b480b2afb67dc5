"""A polite, resumable HTTP downloader.

Politeness: a descriptive User-Agent, bounded concurrency (threads), a minimum interval
between requests to the same host, timeouts, and retries with exponential backoff plus
jitter on timeouts, connection errors, 429 and 5xx, honouring ``Retry-After``.

Safety: bytes go to ``<dest>.part``; only a body whose length matches the server's promise
is renamed into place (atomic ``os.replace``), so a partial file is never taken as complete.
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
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import requests

from ..core import read_json_object, write_json_atomic, write_text_atomic
from .partial_download import (changed_upstream, content_length, content_range_start, content_range_total,
                               discard_part, if_range_value, part_info, part_info_path, read_part_info)

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = (
    "londonlm-corpus/0.1 (historical London language model research; polite bulk downloader; "
    "+https://github.com/londonlm)"
)
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


@dataclass
class DownloadTask:
    """One file to fetch: ``urls`` are tried in order (fallbacks) until one answers 2xx."""

    urls: list[str]
    dest: Path
    expected_sha256: str | None = None
    key: str = ""

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
        value, _ = self._with_retries(url, go)
        return value

    # --- files ----------------------------------------------------------------------------
    def fetch(self, task: DownloadTask) -> DownloadResult:
        dest = task.dest
        key = task.key or dest.name
        if is_complete(dest):
            meta = json.loads(_sidecar(dest).read_text())
            _failure_note(dest).unlink(missing_ok=True)
            return DownloadResult(key, str(dest), True, "skipped", meta.get("url", ""), meta["sha256"],
                                  meta["bytes"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        errors = []
        for url in task.urls:
            try:
                (status, attempts) = self._with_retries(url, lambda a: self._fetch_once(url, dest))
            except (_Permanent, _Exhausted) as e:
                errors.append(f"{url}: {e}")
                continue
            except requests.RequestException as e:  # a URL no retry mends (file:, no host): the next one
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

    def _fetch_once(self, url: str, dest: Path) -> str:
        """One attempt: stream into ``.part`` (resuming if possible); rename when complete.

        A resumed request carries ``If-Range`` with the validator (ETag or Last-Modified)
        stored beside the ``.part``: a server whose file changed answers 200 with the new
        file, which replaces the part instead of being spliced onto it. A 206 that starts
        elsewhere, or names another validator or total size, restarts the file from zero."""
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
                # our .part is at or past the end; only trust it if the server says so
                total = content_range_total(r.headers.get("Content-Range"))
                if total is not None and total == have and not changed_upstream(stored, r.headers, total):
                    os.replace(part, dest)
                    info_path.unlink(missing_ok=True)
                    return "resumed"
                discard_part(dest)
                raise _Transient("HTTP 416 with a stale partial file; restarting", 0.0)
            resumed = r.status_code == 206 and have > 0
            if resumed and _encoded(r):  # a range of gzip's bytes, decoded: cannot be spliced onto the part
                discard_part(dest)
                raise _Transient("the server compressed a resumed range; restarting from zero", 0.0)
            if r.status_code == 206:
                start = content_range_start(r.headers.get("Content-Range"))
                why = (f"server resumed at {start}, expected {have}" if start != have else
                       changed_upstream(stored, r.headers, content_range_total(r.headers.get("Content-Range"))))
                if why:
                    discard_part(dest)
                    raise _Transient(f"{why}; restarting from zero", 0.0)
            else:
                have = 0  # the server ignored Range, or If-Range said the file changed: start over
                write_json_atomic(info_path, part_info(url, r))
            got, expected_len = _stream_body(r, part, append=resumed)
            if expected_len is not None and got != expected_len:
                raise _Transient(f"truncated body: {got} of {expected_len} bytes", None)
            if not _encoded(r) and expected_len is None \
                    and r.headers.get("Transfer-Encoding", "").lower() != "chunked" and got == 0:
                raise _Transient("empty body without length", None)
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


def _stream_body(r: requests.Response, part: Path, append: bool) -> tuple[int, int | None]:
    """Write the body to ``part`` (appending when resuming); (bytes got, bytes promised)."""
    got = 0
    with open(part, "ab" if append else "wb") as f:
        for chunk in r.iter_content(chunk_size=1 << 16):
            if chunk:
                f.write(chunk)
                got += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    if _encoded(r):  # Content-Length counts the compressed bytes: compare those received on the wire
        wire = getattr(r.raw, "tell", None)
        got = wire() if callable(wire) else got
    return got, content_length(r.headers)


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
