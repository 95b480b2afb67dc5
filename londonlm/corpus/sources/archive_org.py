"""Internet Archive: the advanced-search API (paged), then each item's OCR text.

1. ``GET {base}/advancedsearch.php?q=...&fl[]=identifier...&rows=R&page=P&output=json``
   pages through the hits (``response.numFound``), ``mediatype:texts`` and the date range
   added to the registry query; the hit list is cached in ``search.json``.
2. ``GET {base}/metadata/<identifier>`` gives the item metadata (kept in ``metadata.json``)
   and its file list; the ``*_djvu.txt`` file is the OCR plain text.
3. ``GET {base}/download/<identifier>/<file>`` fetches it.
OCR text is cleaned with the OCR steps (page numbers, running heads).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterator

from ...core import write_text_atomic
from ..dating import ARCHIVE_ORG
from .base import Document, Source, SourceError, not_downloaded, safe_id, source_dir, wanted

SEARCH_FIELDS = ("identifier", "title", "creator", "date", "year", "subject", "licenseurl", "language")


def build_query(spec: dict[str, Any]) -> str:
    q = str(spec.get("query", "")).strip()
    parts = [f"({q})"] if q else []
    parts.append("mediatype:texts")
    yr = spec.get("year_range")
    if yr:
        parts.append(f"date:[{int(yr[0])}-01-01 TO {int(yr[1])}-12-31]")
    if spec.get("language", "eng"):
        parts.append(f"language:({spec.get('language', 'eng')} OR English)")
    return " AND ".join(parts)


def _year_of(meta: dict[str, Any]) -> int | None:
    for key in ("year", "date", "publicdate"):
        v = meta.get(key)
        if isinstance(v, list):
            v = v[0] if v else None
        m = re.search(r"\b(1[0-9]{3})\b", str(v or ""))
        if m:
            return int(m.group(1))
    return None


def _first(v: Any) -> str:
    if isinstance(v, list):
        return str(v[0]) if v else ""
    return "" if v is None else str(v)


class ArchiveOrgSource(Source):
    kind = "archive_org"
    default_base_url = "https://archive.org"

    def all_ocr(self) -> bool:
        return True     # archive.org's text is always its scans' OCR

    def _dir(self, downloads_dir: Path) -> Path:
        return source_dir(downloads_dir, self.kind, self.id)

    def search(self, downloader) -> list[dict[str, Any]]:
        rows = int(self.spec.get("rows", 100))
        max_items = int(self.spec.get("max_items", 50))
        params: dict[str, Any] = {"q": build_query(self.spec), "fl[]": list(SEARCH_FIELDS), "rows": rows,
                                  "output": "json", "sort[]": "identifier asc"}
        hits: list[dict[str, Any]] = []
        page = 1
        while len(hits) < max_items:
            data = downloader.get_json(f"{self.base_url}/advancedsearch.php", params={**params, "page": page})
            resp = _mapping(_mapping(data).get("response"))
            docs = resp.get("docs")
            if not isinstance(docs, list):
                # an error's JSON, a list, a null: no answer of the search, and not "no hits", which
                # replaced the cached hit list (search.json) and lost every item of the source
                raise SourceError("bad_answer", f"{self.base_url}/advancedsearch.php page {page} is not a search "
                                                f"answer (no response.docs list): {_glimpse(data)}; try again later")
            # a hit that is no record (a string, a null) names no item: left out, not the end of the source
            hits.extend(h for h in docs if isinstance(h, dict))
            try:
                pages = math.ceil(int(resp.get("numFound", 0)) / rows) if rows else 1
            except (TypeError, ValueError, OverflowError):
                pages = page
            if not docs or page >= pages:
                break
            page += 1
        return hits[:max_items]

    def fetch(self, downloader, downloads_dir: Path, keep=None) -> list:
        from ..download import DownloadResult, DownloadTask

        d = self._dir(Path(downloads_dir))
        d.mkdir(parents=True, exist_ok=True)
        hits = self.search(downloader)
        _write_json(d / "search.json", hits)
        results = []
        for hit in hits:
            ident = str(hit.get("identifier", ""))
            key = f"{self.id}/{ident}"
            if not ident or not wanted(keep, key):
                continue
            item_dir = d / safe_id(ident)[0]
            try:
                meta = downloader.get_json(f"{self.base_url}/metadata/{ident}")
                if not isinstance(_mapping(meta).get("files"), list):
                    # ({} for an unknown item, an error's JSON): the item record kept from an
                    # earlier run must not be replaced by it
                    raise SourceError("bad_answer", f"not an item record (no files list): {_glimpse(meta)}")
            except Exception as e:  # noqa: BLE001 - one item must not stop the source
                results.append(DownloadResult(key, str(item_dir), False, "failed", error=f"metadata: {e}"))
                continue
            item_dir.mkdir(parents=True, exist_ok=True)
            _write_json(item_dir / "metadata.json", meta)
            files = _mapping(meta).get("files")
            names = [str(f.get("name", "")) for f in (files if isinstance(files, list) else [])
                     if isinstance(f, dict) and str(f.get("name", "")).endswith("_djvu.txt")]
            if not names:
                results.append(DownloadResult(key, str(item_dir), False, "failed", error="no *_djvu.txt file"))
                continue
            name = sorted(names)[0]
            task = DownloadTask([f"{self.base_url}/download/{ident}/{name}"], item_dir / "text_djvu.txt", key=key,
                                refuse_html=True)
            results.append(downloader.fetch(task))
        return results

    def documents(self, downloads_dir: Path, keep=None) -> Iterator[Document]:
        d = self._dir(Path(downloads_dir))
        search = d / "search.json"
        if not search.exists():
            return
        for hit in json.loads(search.read_text(encoding="utf-8")):
            if not isinstance(hit, dict):  # (a search.json written before hits were checked)
                continue
            ident = str(hit.get("identifier", ""))
            if not ident or not wanted(keep, f"{self.id}/{ident}"):
                continue
            item_dir = d / safe_id(ident)[0]
            meta_path = item_dir / "metadata.json"
            meta = _mapping(_mapping(json.loads(meta_path.read_text(encoding="utf-8"))).get("metadata")) \
                if meta_path.exists() else {}
            merged = {**hit, **meta}
            base = self.meta()
            dates = dict(base["dates"])
            if _year_of(merged) is not None:
                dates[ARCHIVE_ORG] = _year_of(merged)
            doc = Document(
                id=safe_id(f"{self.id}-{ident}")[0], source=self.id, source_kind=self.kind,
                title=_first(merged.get("title")) or base["title"], author=_first(merged.get("creator")),
                dates=dates, license=_first(merged.get("licenseurl")) or base["license"],
                url=f"{self.base_url}/details/{ident}", london=base["london"],
                extra={"identifier": ident, "raw_path": str(item_dir / "text_djvu.txt"), "raw_format": "text",
                       "ocr": self.all_ocr(), "ia_subject": merged.get("subject"), "ia_date": _first(merged.get("date"))},
            )
            if not (item_dir / "text_djvu.txt").exists():
                not_downloaded(doc, item_dir / "text_djvu.txt")
            yield doc


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` when the API gave a JSON object there, else {} (a list, a string, a null: an
    answer this code cannot read is an item without metadata, not the end of the source)."""
    return value if isinstance(value, dict) else {}


def _glimpse(value: Any, n: int = 80) -> str:
    """The start of a JSON answer, for an error line."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(type(value))
    return text if len(text) <= n else text[:n] + "..."


def _write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False))
