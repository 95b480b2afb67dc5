"""The corpus artifact: cleaned texts + ``manifest.jsonl`` + sidecar, and ``build_corpus``,
the entry point of the corpus stage.

Layout under ``processed_dir``::

    texts/<doc_id>.txt     cleaned UTF-8 text, one file per document
    manifest.jsonl         one JSON object per document (id, path, split, year, title, source, ...)
    rejections.jsonl       one JSON object per rejected input, with its reason code
    shards/                staged work of each shard (resumable)
    sidecar.json           written last: inputs' hashes, settings, counts

There is one code path: ``build_corpus`` turns its arguments (embedded sample, local folder,
registry entries) into source entries and runs ``londonlm.collect.run_collection``.
The train/validation split is a pure function of the document id, so it is stable
across re-runs, machines and shards.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from .artifacts import require_input

MANIFEST = "manifest.jsonl"
SIDECAR = "sidecar.json"
COLLECT_CMD = "python 02_data_collection/historical_data_collector.py"
SAMPLE_SOURCE_ID = "first_folio"
LOCAL_SOURCE_ID = "local"


class CorpusError(RuntimeError):
    """A corpus problem the user can fix; the message says how."""


def assign_split(doc_id: str, validation_percent: float) -> str:
    """Deterministic split from a hash of the id (independent of order and sharding)."""
    bucket = int(hashlib.sha256(doc_id.encode("utf-8")).hexdigest()[:8], 16) % 10000
    return "validation" if bucket < validation_percent * 100 else "train"


# ---------------------------------------------------------------- source entries
def sample_entry(limit_chars: int | None = None, source_id: str = SAMPLE_SOURCE_ID) -> dict[str, Any]:
    """Registry entry of the embedded offline sample (1623 First Folio)."""
    from .sources import SampleMissing, sample_dir

    try:
        sample_dir()
    except SampleMissing as e:
        raise CorpusError(str(e)) from e
    return {"id": source_id, "kind": "sample", "limit_chars": limit_chars, "title": "First Folio (1623)",
            "year": 1623, "license": "public-domain", "london": True}


def local_entry(source_dir: str | Path, default_year: int | None = None,
                source_id: str = LOCAL_SOURCE_ID) -> dict[str, Any]:
    """Registry entry of a local folder of .txt (.xml/.html/.gz) files, checked to exist."""
    from .sources import LocalSource

    folder = Path(source_dir).expanduser().resolve()
    if not folder.is_dir():
        raise CorpusError(f"source folder {source_dir} does not exist; pass --source_dir with a "
                          f"folder of .txt files")
    entry = {"id": source_id, "kind": "local", "path": str(folder), "id_prefix": "local_",
             "license": "unknown (user supplied)", "london": True, "default_year": default_year}
    if not LocalSource(entry).files():
        raise CorpusError(f"source folder {source_dir} holds no .txt files (nor .xml/.html/.gz); add some "
                          f"or omit --source_dir to use the embedded sample")
    return entry


def sample_dir() -> Path:
    """Folder of the embedded sample's texts (CorpusError when not installed)."""
    from .sources import SampleMissing
    from .sources import sample_dir as _sample_dir

    try:
        return _sample_dir()
    except SampleMissing as e:
        raise CorpusError(str(e)) from e


def iter_sample(limit_chars: int | None = None):
    """Documents (text not yet loaded) of the embedded sample, as the collector reads them."""
    from .sources import make_source

    return make_source(sample_entry(limit_chars)).documents()


# ---------------------------------------------------------------- manifest I/O
def read_manifest(processed_dir: str | Path) -> list[dict]:
    path = require_input(Path(processed_dir) / MANIFEST, COLLECT_CMD, "corpus manifest")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise CorpusError(f"{path}:{n}: bad JSON ({e}); rebuild with `{COLLECT_CMD} "
                                      f"--overwrite`")
    return rows


def manifest_sha256(processed_dir: str | Path) -> str:
    from .artifacts import sha256_file

    return sha256_file(require_input(Path(processed_dir) / MANIFEST, COLLECT_CMD, "corpus manifest"))


def iter_split_texts(processed_dir: str | Path, split: str,
                     rows: list[dict] | None = None) -> Iterator[tuple[dict, str]]:
    """(manifest row, text) for every document of one split, in manifest order."""
    processed_dir = Path(processed_dir)
    for row in rows if rows is not None else read_manifest(processed_dir):
        if row["split"] == split:
            yield row, (processed_dir / row["path"]).read_text(encoding="utf-8")


def build_corpus(processed_dir: str | Path, metadata_dir: str | Path, *,
                 source_dir: str | Path | None = None, use_sample: bool | None = None,
                 sample_limit_chars: int | None = None, validation_percent: float = 5.0,
                 min_chars: int = 200, year_range: tuple[int, int] = (1500, 1900),
                 default_year: int | None = None, overwrite: bool = False,
                 entries: Sequence[dict[str, Any]] = (), downloads_dir: str | Path | None = None,
                 offline: bool = False, workers: int = 1, shard: int | None = None, num_shards: int = 1,
                 merge_only: bool = False, base_urls: dict[str, str] | None = None, progress: bool = False,
                 download_options: dict[str, Any] | None = None, log=print) -> dict:
    """Build (or skip, when current) the corpus from the embedded sample, a local folder and
    registry ``entries``; returns counts (documents, train/validation documents, words, chars,
    rejected by reason). ``use_sample`` defaults to True when neither ``source_dir`` nor
    ``entries`` is given. ``downloads_dir`` defaults to ``<processed_dir>/../downloads``."""
    from .collect import CollectionError, run_collection
    from .shards import ShardError
    from .sources import RegistryError

    processed_dir, metadata_dir = Path(processed_dir), Path(metadata_dir)
    if use_sample is None:
        use_sample = source_dir is None and not entries
    chosen: list[dict[str, Any]] = []
    if use_sample:
        chosen.append(sample_entry(sample_limit_chars))
    if source_dir is not None:
        chosen.append(local_entry(source_dir, default_year))
    taken = {e["id"] for e in chosen}
    for e in entries:
        if e["id"] in taken:
            raise CorpusError(f"source id {e['id']!r} is reserved for the built-in sample/local folder; "
                              f"rename it in the registry")
        chosen.append(dict(e))
    if not chosen:
        raise CorpusError("no sources: pass --sources, --source_dir or --sample")
    downloads = Path(downloads_dir) if downloads_dir is not None else processed_dir.parent / "downloads"
    try:
        stats = run_collection(chosen, downloads, processed_dir, metadata_dir, offline=offline, workers=workers,
                               year_range=year_range, shard=shard, num_shards=num_shards, merge_only=merge_only,
                               base_urls=base_urls, progress=progress, validation_percent=validation_percent,
                               min_chars=min_chars, overwrite=overwrite, download_options=download_options,
                               log=log)
    except (CollectionError, ShardError, RegistryError) as e:
        raise CorpusError(str(e)) from e
    return stats.get("counts", {"shard": shard, "shards": stats.get("shards")})


def corpus_stats(rows: list[dict]) -> dict:
    by_source: dict[str, dict] = {}
    by_decade: dict[str, dict] = {}
    for r in rows:
        s = by_source.setdefault(r["source"], {"documents": 0, "chars": 0, "words": 0})
        d = by_decade.setdefault(str(r.get("decade")), {"documents": 0, "chars": 0, "words": 0})
        for agg in (s, d):
            agg["documents"] += 1
            agg["chars"] += r["chars"]
            agg["words"] += r["words"]
    return {"documents": len(rows), "chars": sum(r["chars"] for r in rows),
            "words": sum(r["words"] for r in rows),
            "splits": {sp: sum(r["split"] == sp for r in rows) for sp in ("train", "validation")},
            "by_source": by_source, "by_decade": dict(sorted(by_decade.items()))}
