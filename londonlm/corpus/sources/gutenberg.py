"""Project Gutenberg: one plain-text UTF-8 file per ebook id.

URL patterns, tried in order (the first is the current canonical one; the others cover
older layouts and mirrors): ``/cache/epub/<id>/pg<id>.txt``, ``/files/<id>/<id>-0.txt``,
``/files/<id>/<id>.txt``, ``/ebooks/<id>.txt.utf-8``. Gutenberg asks robots to be gentle:
the downloader's per-host interval applies.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .base import Document, Source, SourceError, not_downloaded, safe_id, source_dir, wanted

URL_PATTERNS = (
    "{base}/cache/epub/{id}/pg{id}.txt",
    "{base}/files/{id}/{id}-0.txt",
    "{base}/files/{id}/{id}.txt",
    "{base}/ebooks/{id}.txt.utf-8",
)


def gutenberg_urls(ebook_id: int, base: str = "https://www.gutenberg.org") -> list[str]:
    return [p.format(base=base.rstrip("/"), id=int(ebook_id)) for p in URL_PATTERNS]


class GutenbergSource(Source):
    kind = "gutenberg"
    default_base_url = "https://www.gutenberg.org"

    def ebook_id(self) -> int:
        try:
            return int(self.spec["gutenberg_id"])
        except (KeyError, TypeError, ValueError) as e:
            raise SourceError("bad_registry", f"source {self.id!r} needs an integer gutenberg_id") from e

    def _dest(self, downloads_dir: Path) -> Path:
        return source_dir(downloads_dir, self.kind, self.id) / f"pg{self.ebook_id()}.txt"

    def fetch(self, downloader, downloads_dir: Path, keep=None) -> list:
        from ..download import DownloadTask

        if not wanted(keep, self.id):
            return []
        urls = list(self.spec.get("urls") or []) + gutenberg_urls(self.ebook_id(), self.base_url)
        return [downloader.fetch(DownloadTask(urls, self._dest(Path(downloads_dir)), key=self.id, refuse_html=True))]

    def documents(self, downloads_dir: Path, keep=None) -> Iterator[Document]:
        if not wanted(keep, self.id):
            return
        dest = self._dest(Path(downloads_dir))
        doc_id, changed = safe_id(self.id)
        doc = Document(id=doc_id, url=gutenberg_urls(self.ebook_id(), self.base_url)[0],
                       extra={"gutenberg_id": self.ebook_id(), "raw_path": str(dest), "raw_format": "text"}, **self.meta())
        if changed:
            doc.repairs.append("id_sanitised")
        if not dest.exists():
            not_downloaded(doc, dest)
        yield doc

