"""London Lives 1690-1800: XML transcriptions of manuscripts (parish, hospital, criminal
records). Each XML file becomes one document; markup is dropped as for the Old Bailey, and
the date comes from the ``<interp type="date">`` value or the file name."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from .base import Document, SourceError, not_downloaded, safe_id, source_dir, wanted
from .old_bailey import OldBaileySource, tei_interp, parse_tei, _text_of, format_date


def london_lives_to_text(data: bytes) -> tuple[str, dict[str, Any], list[str]]:
    root, repairs = parse_tei(data)
    text = _text_of(root)
    if not text:
        raise SourceError("xml_no_text", "no readable text in the XML")
    raw_date = re.sub(r"\D", "", tei_interp(root, "date") or "")[:8]
    meta: dict[str, Any] = {"date": format_date(raw_date) or ""}
    if len(raw_date) >= 4:
        meta["year"] = int(raw_date[:4])
    return text, meta, repairs


class LondonLivesSource(OldBaileySource):
    """Registry fields: ``urls`` of XML files (or zips of them)."""

    kind = "london_lives"

    def documents(self, downloads_dir: Path, keep=None) -> Iterator[Document]:
        for url, path in self._files(Path(downloads_dir)):
            if not wanted(keep, f"{self.id}/{path.name}"):
                continue
            doc = Document(id=safe_id(f"{self.id}-{path.stem}")[0], url=self._resolve(url), **self.meta())
            doc.extra.update(raw_path=str(path), raw_format="london_lives")
            if not path.exists():
                not_downloaded(doc, path)
            yield doc


__all__ = ["LondonLivesSource", "london_lives_to_text", "source_dir"]
