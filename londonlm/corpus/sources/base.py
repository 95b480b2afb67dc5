"""The one interface every source kind implements, the ``Document`` record, and the
decoding rules shared by all kinds (bytes -> text, with a reason for every repair).

A source has two halves so that downloading and parsing can run apart:
``fetch(downloader, downloads_dir)`` needs the network and writes raw files under
``downloads_dir/<kind>/<source id>/``; ``documents(downloads_dir)`` is offline and turns what
is on disk into ``Document`` records (text still raw: cleaning happens downstream).
"""
from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import re
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ...core import LondonLMError
from ..dating import REGISTRY_RANGE, REGISTRY_YEAR, SOURCE_YEAR, decide_year

SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")
MAX_ID_LEN = 150
MAX_RAW_BYTES = 512 * 1024 * 1024  # the most one raw document may unpack to


class SourceError(LondonLMError, ValueError):
    """A raw input cannot become text; ``reason`` is the rejection code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Document:
    """One text with its bibliographic metadata, as it flows from a source to the corpus.

    ``text`` may be None with ``extra['raw_path']`` set: the worker process loads it, so the
    parent never holds a whole corpus. ``error`` set means the input was rejected while reading
    (binary, empty, ...): the pipeline logs it and moves on.

    ``dates`` is every date the source saw, by rule name (``londonlm.corpus.dating``); ``year``
    is always the year they decide, so give dates through ``dates`` or :meth:`add_date`."""

    id: str
    source: str
    source_kind: str
    title: str = ""
    author: str = ""
    year: int | None = None
    license: str = ""
    url: str = ""
    text: str | None = None
    london: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    repairs: list[str] = field(default_factory=list)
    dates: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # an own copy: the documents of one source are built from one shared metadata dict
        self.dates = {str(rule): int(y) for rule, y in (self.dates or {}).items()}
        if self.year is not None and not self.dates:
            self.dates[SOURCE_YEAR] = int(self.year)
        self.year = decide_year(self.dates)[0]

    def add_date(self, rule: str, year: int | None) -> None:
        """Record one piece of date evidence and re-decide ``year``."""
        if year is None:
            return
        self.dates[rule] = int(year)
        self.year = decide_year(self.dates)[0]

    @property
    def year_rule(self) -> str | None:
        """The rule that decided ``year`` (None when undated)."""
        return decide_year(self.dates)[1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def safe_id(raw: str) -> tuple[str, bool]:
    """A filename-safe document id ([A-Za-z0-9._-], no '..', no leading dot) and whether
    it had to change. Path separators and '..' can never escape ``texts/``."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", raw.strip())
    s = re.sub(r"\.{2,}", "_", s).strip("._-") or "doc"
    if len(s) > MAX_ID_LEN:
        s = s[: MAX_ID_LEN - 13] + "-" + hashlib.sha256(raw.encode()).hexdigest()[:12]
    return s, s != raw


def distinct_id(raw: str) -> tuple[str, bool]:
    """:func:`safe_id`, but an id that had to change carries a hash of the raw one, so raw ids
    that clean alike (``a/b``, ``a b``, ``a_b``) stay distinct documents: the corpus keeps one
    document per id, and a clash silently dropped all but the first."""
    s, changed = safe_id(raw)
    if not changed:
        return s, False
    h = hashlib.sha256(raw.encode()).hexdigest()[:12]
    if s.endswith("-" + h):  # a long id: safe_id gave it its hash already
        return s, True
    return s[: MAX_ID_LEN - 13] + "-" + h, True


def _binary_share(data: bytes) -> float:
    """Share of bytes that never occur in text (NUL and most C0 controls)."""
    sample = data[:65536]
    if not sample:
        return 0.0
    bad = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13, 27))
    return bad / len(sample)


def gunzip(data: bytes, max_bytes: int = MAX_RAW_BYTES) -> bytes:
    """gzip ``data`` unpacked (every member, as ``gzip.decompress``), refused as ``too_large``
    past ``max_bytes``, the limit a raw file's own size is held to. Unpacked whole, a gzip bomb
    (a few hundred KB of zeros that unpack to gigabytes) took all the machine's memory: the limit
    was checked on the packed bytes only. Read 1 MiB at a time, so no more than the limit is held."""
    parts, total = [], 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    raise SourceError("too_large", f"unpacks to more than the limit of {max_bytes} bytes")
                parts.append(chunk)
    except (OSError, EOFError, zlib.error) as e:  # (zlib.error: damaged deflate data, no OSError)
        raise SourceError("bad_gzip", str(e)) from e
    if not total:
        raise SourceError("empty", "the gzip member is empty")
    return b"".join(parts)


def decode_bytes(data: bytes, max_bytes: int = MAX_RAW_BYTES) -> tuple[str, list[str]]:
    """Bytes -> text. Returns (text, repairs) or raises SourceError with a reason code.

    gzip is unpacked (up to ``max_bytes``: :func:`gunzip`), UTF-16/UTF-32 (by BOM) and UTF-8
    decoded, anything else that is text read as cp1252 (a superset of Latin-1 for printable
    bytes); binary is rejected."""
    repairs: list[str] = []
    if not data:
        raise SourceError("empty", "the file has no bytes")
    if data[:2] == b"\x1f\x8b":
        data = gunzip(data, max_bytes)
        repairs.append("gunzipped")
    for bom, enc in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                     (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(enc), repairs + [f"decoded_{enc.replace('-', '')}"]
            except UnicodeDecodeError as e:
                raise SourceError("bad_encoding", f"{enc} BOM but undecodable: {e}") from e
    if _binary_share(data) > 0.01:
        raise SourceError("binary", "control bytes found; not a text file")
    try:
        return data.decode("utf-8"), repairs
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text, repairs + ["decoded_latin1"]


def read_text_file(path: str | Path, max_bytes: int = MAX_RAW_BYTES) -> tuple[str, list[str]]:
    """Read and decode one file (see ``decode_bytes``); files over ``max_bytes``, packed or
    unpacked, are rejected."""
    p = Path(path)
    size = p.stat().st_size
    if size > max_bytes:
        raise SourceError("too_large", f"{size} bytes > limit {max_bytes}")
    return decode_bytes(p.read_bytes(), max_bytes)


def source_dir(downloads_dir: str | Path, kind: str, source_id: str) -> Path:
    sid, _ = safe_id(source_id)
    return Path(downloads_dir) / kind / sid


class Source:
    """Base class: ``spec`` is one registry entry (dict); ``base_url`` overrides the kind's
    default host so tests can point at 127.0.0.1."""

    kind = "base"
    default_base_url = ""
    progress = False        # show the source's own progress bars (the collector's --progress)

    def __init__(self, spec: dict[str, Any], base_url: str | None = None):
        self.spec = spec
        self.id = str(spec["id"])
        self.base_url = (base_url or spec.get("base_url") or self.default_base_url).rstrip("/")

    # metadata shared by every document of the source
    def meta(self) -> dict[str, Any]:
        s = self.spec
        dates = {}
        if s.get("year") is not None:
            dates[REGISTRY_YEAR] = int(s["year"])
        if s.get("year_range"):
            # the end: any text of the source may be that late (used only for undated texts)
            dates[REGISTRY_RANGE] = int(s["year_range"][1])
        return dict(source=self.id, source_kind=self.kind, title=str(s.get("title", "")),
                    author=str(s.get("author", "")), dates=dates,
                    license=str(s.get("license", "")), london=bool(s.get("london", True)))

    def all_ocr(self) -> bool:
        """Whether the source's documents are OCR (its entry's ``ocr: true``; they carry
        ``extra["ocr"]``): such a source is repaired, and the period lexicon never reads it, so a
        10 GB scanned source is not streamed twice. A source kind marks all its documents or none."""
        return bool(self.spec.get("ocr"))

    def fetch(self, downloader, downloads_dir: Path, keep=None) -> list:
        """Download raw files; returns DownloadResults. Offline kinds return [].

        ``keep(key) -> bool`` selects the units of work of this shard (None: all); a unit's
        key is "<source id>/<item>" (an archive.org identifier, a file name, ...)."""
        return []

    def documents(self, downloads_dir: Path, keep=None) -> Iterator[Document]:
        """Documents from what is on disk (offline); same ``keep`` as ``fetch``."""
        raise NotImplementedError


def not_downloaded(doc: Document, dest: str | Path) -> Document:
    """``doc`` rejected as ``not_downloaded``, with why its fetch failed when one was tried."""
    from ..download import download_failure

    doc.error = "not_downloaded"
    why = download_failure(dest)
    if why:
        doc.extra["error_detail"] = why
    return doc


def wanted(keep, key: str) -> bool:
    return keep is None or keep(key)
