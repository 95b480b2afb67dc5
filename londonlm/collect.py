"""Corpus stage orchestration: registry -> downloads -> documents -> cleaned, filtered,
deduplicated texts + manifest + rejection log + report.

``process_documents`` is the streaming core. Documents arrive lazily (a path, not a text),
worker processes load, parse, clean, filter and sign them, and the parent only writes results;
at most ``2 * workers`` documents are in flight, so peak memory depends on the largest
document, not on the corpus size.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .cleaning import MAX_LINE_CHARS, clean_text
from .dedup import hash_words, norm_words, signature
from .filters import default_filters, preview, run_filters
from .shards import ShardWriter, in_shard, merge_shards, split_for
from .sources import Document, RegistryError, load_registry, make_source, materialise

log = logging.getLogger(__name__)

# metadata keys copied from Document.extra into the manifest (small, useful for historians)
_EXTRA_KEYS = ("gutenberg_id", "identifier", "session_date", "date", "relpath", "notes", "ia_date", "member")


def _decade(year: int | None) -> int | None:
    return None if year is None else (int(year) // 10) * 10


def _word_count(text: str) -> int:
    return len(text.split())


# --- worker side ------------------------------------------------------------------------------
_FILTERS = None
_SETTINGS: dict[str, Any] = {}


def _init_worker(settings: dict[str, Any]) -> None:
    global _FILTERS, _SETTINGS
    _SETTINGS = settings
    _FILTERS = default_filters(settings["year_range"], settings["min_chars"])


def process_one(doc: Document) -> tuple[dict[str, Any], str | None]:
    """Load, clean, filter and sign one document. Returns (row, cleaned text or None)."""
    if _FILTERS is None:
        _init_worker({"year_range": (1500, 1900), "min_chars": 200})
    base = {"id": doc.id, "source": doc.source, "source_kind": doc.source_kind, "title": doc.title,
            "author": doc.author, "url": doc.url, "license": doc.license, "london": bool(doc.london)}
    materialise(doc)
    base["year"] = doc.year
    base["repairs"] = list(doc.repairs)
    if doc.error:
        return ({**base, "status": "rejected", "reason": doc.error, "reasons": [doc.error],
                 "detail": doc.extra.get("error_detail", ""), "preview": ""}, None)
    raw = doc.text or ""
    if len(raw) > MAX_LINE_CHARS and max(map(len, raw.split("\n"))) > MAX_LINE_CHARS:
        base["repairs"].append("long_lines_wrapped")
    text = clean_text(raw, ocr=bool(doc.extra.get("ocr")))
    del raw
    doc.text = None
    if not text.strip():
        return ({**base, "status": "rejected", "reason": "empty_after_cleaning", "reasons": ["empty_after_cleaning"],
                 "detail": "nothing left after cleaning", "preview": ""}, None)
    kept, reason, verdicts = run_filters(text, doc.year, _FILTERS)
    filters = {v.filter: v.value for v in verdicts}
    extra = {k: doc.extra[k] for k in _EXTRA_KEYS if doc.extra.get(k) not in (None, "")}
    if doc.extra.get("trials"):
        extra["trials"] = len(doc.extra["trials"])
    if not kept:
        failed = [v for v in verdicts if not v.passed]
        return ({**base, **extra, "status": "rejected", "reason": reason, "reasons": [v.reason for v in failed],
                 "detail": "; ".join(f"{v.filter}={v.value} {v.detail}".strip() for v in failed),
                 "filters": filters, "preview": preview(text), "chars": len(text)}, None)
    nwords = norm_words(text)
    row = {**base, **extra, "status": "accepted", "decade": _decade(doc.year),
           "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "norm_sha256": hash_words(nwords),
           "chars": len(text), "words": _word_count(text), "filters": filters, "minhash": signature(nwords),
           "preview": preview(text)}
    return row, text


# --- parent side ------------------------------------------------------------------------------
def _bounded_map(docs: Iterable[Document], workers: int, settings: dict[str, Any]) -> Iterator[tuple[dict, str | None]]:
    """Results of ``process_one`` with at most ``2 * workers`` documents in flight (order of
    completion; the merge sorts). ``workers <= 1`` runs in this process."""
    if workers <= 1:
        _init_worker(settings)
        for d in docs:
            yield process_one(d)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn" if os.name == "nt" else "fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(settings,)) as pool:
        pending: set[Future] = set()
        it = iter(docs)
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < 2 * workers:
                try:
                    pending.add(pool.submit(process_one, next(it)))
                except StopIteration:
                    exhausted = True
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()


def process_documents(docs: Iterable[Document], processed_dir: str | Path, *, year_range: Sequence[int] = (1500, 1900),
                      min_chars: int = 200, workers: int = 1, shard: int = 0, num_shards: int = 1,
                      validation_percent: float = 5.0, merge: bool | None = None, progress: bool = False,
                      metadata_dir: str | Path | None = None) -> dict[str, Any]:
    """Clean, filter and sign ``docs`` into shard ``shard`` of ``num_shards`` (resumable: ids
    already staged are skipped), then — for a single shard, or when ``merge=True`` — dedup and
    write ``manifest.jsonl``, ``texts/``, ``rejections.jsonl`` (and the report when
    ``metadata_dir`` is given). Returns counts and timings."""
    t0 = time.time()
    settings = {"year_range": tuple(int(y) for y in year_range), "min_chars": int(min_chars)}
    counts = {"accepted": 0, "rejected": 0, "skipped_resumed": 0, "input_bytes": 0}
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(desc="clean+filter", unit="doc")
        except ImportError:
            bar = None
    with ShardWriter(processed_dir, shard, num_shards) as writer:
        def todo() -> Iterator[Document]:
            for d in docs:
                if d.id in writer.seen:
                    counts["skipped_resumed"] += 1
                    continue
                p = d.extra.get("raw_path")
                if p and os.path.exists(p):
                    counts["input_bytes"] += os.path.getsize(p)
                elif d.extra.get("raw_bytes") is not None:
                    counts["input_bytes"] += len(d.extra["raw_bytes"])
                elif d.text is not None:
                    counts["input_bytes"] += len(d.text.encode("utf-8"))
                yield d

        for row, text in _bounded_map(todo(), workers, settings):
            if row["id"] in writer.seen:  # two inputs mapped to one id: keep the first
                row = {**row, "status": "rejected", "reason": "duplicate_id", "reasons": ["duplicate_id"],
                       "detail": "another document already has this id"}
                text = None
            writer.write(row, text)
            counts[row["status"]] += 1
            if bar is not None:
                bar.update(1)
        elapsed = time.time() - t0
        stats = {**counts, "seconds": round(elapsed, 3), "shard": shard, "num_shards": num_shards,
                 "mb_per_s": round(counts["input_bytes"] / 1e6 / elapsed, 3) if elapsed > 0 else None}
        writer.mark_done(stats)
    if bar is not None:
        bar.close()
    if merge is None:
        merge = num_shards == 1
    if merge:
        stats["merge"] = merge_shards(processed_dir, num_shards, validation_percent)
        if metadata_dir is not None:
            from .corpus_report import write_report

            stats["report"] = str(write_report(processed_dir, metadata_dir))
    return stats



# --- registry -----------------------------------------------------------------------------
def select_sources(entries: list[dict[str, Any]], sources: Sequence[str] | None = None,
                   max_sources: int | None = None) -> list[dict[str, Any]]:
    """Entries named in ``sources`` (ids or kinds; named entries run even when disabled),
    else every enabled entry; then the first ``max_sources``."""
    if sources:
        wanted = set(sources)
        chosen = [e for e in entries if e["id"] in wanted or e["kind"] in wanted]
        unknown = wanted - {e["id"] for e in entries} - {e["kind"] for e in entries}
        if unknown:
            raise RegistryError(f"unknown source id or kind: {', '.join(sorted(unknown))}; "
                                f"see the ids in the registry file")
    else:
        chosen = [e for e in entries if e.get("enabled", True)]
    return chosen[:max_sources] if max_sources else chosen


def collect_from_registry(registry_path: str | Path, downloads_dir: str | Path, processed_dir: str | Path,
                          metadata_dir: str | Path, *, sources: Sequence[str] | None = None,
                          max_sources: int | None = None, offline: bool = False, workers: int = 4,
                          year_range: Sequence[int] = (1500, 1900), shard: int | None = None, num_shards: int = 1,
                          base_urls: dict[str, str] | None = None, progress: bool = True,
                          validation_percent: float = 5.0, min_chars: int = 200, downloader=None,
                          download_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole corpus stage for the registry's sources.

    ``shard=None`` runs every shard here, then merges; ``shard=K`` runs only shard K (merge
    later with ``merge_shards`` or by re-running with ``shard=None`` once all are done: finished
    shards are skipped). ``offline=True`` downloads nothing and uses what is on disk."""
    from .download import Downloader, failure_summary

    downloads_dir, processed_dir, metadata_dir = Path(downloads_dir), Path(processed_dir), Path(metadata_dir)
    entries = select_sources(load_registry(registry_path), sources, max_sources)
    srcs = [make_source(e, base_urls) for e in entries]
    shards = range(num_shards) if shard is None else [int(shard)]
    if shard is not None and not 0 <= int(shard) < num_shards:
        raise ValueError(f"--shard must be in [0, {num_shards - 1}] for --num_shards {num_shards}")
    stats: dict[str, Any] = {"sources": len(srcs), "shards": {}, "downloads": {}}
    for k in shards:
        keep = (lambda key, k=k: in_shard(key, k, num_shards))
        results = []
        if not offline:
            dl = downloader or Downloader(workers=workers, progress=progress, **(download_options or {}))

            def fetch(src):
                try:
                    return src.fetch(dl, downloads_dir, keep)
                except Exception as e:  # noqa: BLE001 - a broken source must not stop the run
                    from .download import DownloadResult

                    return [DownloadResult(src.id, "", False, "failed", error=f"{type(e).__name__}: {e}")]

            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                for res in pool.map(fetch, srcs):
                    results.extend(res)
            summary = failure_summary(results)
            log.info(summary)
            stats["downloads"][k] = {"summary": summary, "failed": [r.to_dict() for r in results if not r.ok],
                                     "ok": sum(r.ok for r in results)}

        def docs() -> Iterator[Document]:
            for src in srcs:
                try:
                    yield from src.documents(downloads_dir, keep)
                except Exception as e:  # noqa: BLE001
                    yield Document(id=f"{src.id}-source-error", source=src.id, source_kind=src.kind,
                                   error="source_error", extra={"error_detail": f"{type(e).__name__}: {e}"})

        stats["shards"][k] = process_documents(docs(), processed_dir, year_range=year_range, min_chars=min_chars,
                                               workers=workers, shard=k, num_shards=num_shards, merge=False,
                                               progress=progress)
    if shard is None or num_shards == 1:
        stats["merge"] = merge_shards(processed_dir, num_shards, validation_percent)
        from .corpus_report import write_report

        stats["report"] = str(write_report(processed_dir, metadata_dir, registry_entries=entries,
                                           extra={"collection": {k: v for k, v in stats.items() if k != "report"}}))
    return stats
