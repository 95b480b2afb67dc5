"""A web page whose main text is extracted with trafilatura (boilerplate: menus, footers,
cookie banners, comments removed)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .base import Document, Source, SourceError, not_downloaded, safe_id, source_dir, wanted


def html_to_text(html: str) -> str:
    import trafilatura

    text = trafilatura.extract(html, include_comments=False, include_tables=False, favor_precision=True,
                               deduplicate=False)
    if not text or not text.strip():
        raise SourceError("html_no_text", "no main text found in the page")
    return text


class HtmlSource(Source):
    """Registry fields: ``urls`` (one document per page)."""

    kind = "html"

    def _files(self, downloads_dir: Path) -> list[tuple[str, Path]]:
        d = source_dir(downloads_dir, self.kind, self.id)
        return [(u, d / f"page-{i:03d}.html") for i, u in enumerate(self.spec.get("urls") or [])]

    def fetch(self, downloader, downloads_dir: Path, keep=None) -> list:
        from ..download import DownloadTask

        return [downloader.fetch(DownloadTask([u], p, key=f"{self.id}/{p.name}"))
                for u, p in self._files(Path(downloads_dir)) if wanted(keep, f"{self.id}/{p.name}")]

    def documents(self, downloads_dir: Path, keep=None) -> Iterator[Document]:
        files = self._files(Path(downloads_dir))
        for u, p in files:
            if not wanted(keep, f"{self.id}/{p.name}"):
                continue
            suffix = f"-{p.stem}" if len(files) > 1 else ""
            doc = Document(id=safe_id(f"{self.id}{suffix}")[0], url=u, **self.meta())
            doc.extra.update(raw_path=str(p), raw_format="html")
            if not p.exists():
                not_downloaded(doc, p)
            yield doc
