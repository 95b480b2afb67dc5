"""Corpus stage orchestration: registry -> downloads -> documents -> cleaned, filtered,
deduplicated texts + manifest + rejection log + report.

``process_documents`` is the streaming core. Documents arrive lazily (a path, not a text),
worker processes load, parse, clean, filter and sign them, and the parent only writes results;
at most ``2 * workers`` documents are in flight, so peak memory depends on the largest
document, not on the corpus size.
"""
from __future__ import annotations

import hashlib
import json
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
from .shards import PLAN_FILE, ShardWriter, in_shard, merge_shards, prepare_shard, read_jsonl, shard_dir, split_for
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
    kept, reason, verdicts = run_filters(text, doc.year, _FILTERS, london=doc.london)
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


class CollectionError(RuntimeError):
    """The collection produced nothing usable, or shards disagree; the message says why."""


SIDECAR = "sidecar.json"
# kinds read straight from a folder on disk; every other kind reads files it downloaded
_LOCAL_KINDS = ("local", "sample")
_MAX_LOGGED_REJECTIONS = 20


def _hash_files(files: Iterable[Path], root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(files):
        h.update(p.relative_to(root).as_posix().encode("utf-8") + b"\0")
        fh = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                fh.update(block)
        h.update(fh.digest())
    return h.hexdigest()


def source_fingerprint(src, downloads_dir: Path) -> str:
    """Hash of the raw bytes a source reads: its folder (local), the sample's files, or what it
    downloaded. A changed byte anywhere makes the corpus stale."""
    from .sources import sample_files
    from .sources.base import source_dir

    if src.kind == "local":
        return _hash_files(src.files(), src.folder())
    if src.kind == "sample":
        files = sample_files(src.spec.get("limit_chars"))
        return _hash_files(files, files[0].parent) if files else "empty"
    d = source_dir(downloads_dir, src.kind, src.id)
    if not d.is_dir():
        return "none"
    return _hash_files((p for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")
                        and not p.name.endswith((".part", ".tmp", ".sha256"))), d)


def _json_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _write_sidecar(path: Path, inputs: dict[str, str], settings: dict[str, Any], counts: dict[str, Any]) -> None:
    """``artifacts.write_sidecar``'s format, with the versions of the libraries this stage uses
    (``artifacts.versions`` imports torch and transformers: seconds a CPU-only corpus run need not spend)."""
    import platform
    import sys

    from .artifacts import SIDECAR_FORMAT, now_iso, write_json_atomic

    vers = {"python": platform.python_version()}
    for mod in ("londonlm", "numpy", "datasketch", "ftfy", "trafilatura", "lxml"):
        m = sys.modules.get(mod)
        if m is not None and getattr(m, "__version__", None):
            vers[mod] = str(m.__version__)
    write_json_atomic(path, {"format_version": SIDECAR_FORMAT, "stage": "corpus", "created": now_iso(),
                             "versions": vers, "inputs": inputs, "settings": settings, "counts": counts})


def summary_counts(merge: dict[str, Any], processed_dir: Path) -> dict[str, Any]:
    """The corpus counts every caller gets (also stored in the sidecar)."""
    rows = list(read_jsonl(processed_dir / "manifest.jsonl"))
    return {"documents": len(rows), "train_documents": sum(r["split"] == "train" for r in rows),
            "validation_documents": sum(r["split"] == "validation" for r in rows),
            "chars": sum(int(r.get("chars", 0)) for r in rows), "words": sum(int(r.get("words", 0)) for r in rows),
            "rejected": dict(sorted(merge.get("rejections_by_reason", {}).items())),
            "duplicate_clusters": merge.get("duplicate_clusters", 0)}


def run_collection(entries: Sequence[dict[str, Any]], downloads_dir: str | Path, processed_dir: str | Path,
                   metadata_dir: str | Path, *, offline: bool = False, workers: int = 1,
                   year_range: Sequence[int] = (1500, 1900), shard: int | None = None, num_shards: int = 1,
                   merge_only: bool = False, base_urls: dict[str, str] | None = None, progress: bool = False,
                   validation_percent: float = 5.0, min_chars: int = 200, overwrite: bool = False,
                   downloader=None, download_options: dict[str, Any] | None = None, log=print) -> dict[str, Any]:
    """The corpus stage, the one code path for every source (registry, local folder, sample).

    1. download (unless ``offline``; files already complete are skipped);
    2. skip when ``sidecar.json`` says the outputs are current for these inputs and settings;
    3. clean, filter and sign documents into shard(s) (resuming staged work of the same plan);
    4. merge: dedup, split, ``manifest.jsonl`` + ``texts/`` + ``rejections.jsonl``, report and
       ``corpus_stats.json`` in ``metadata_dir``, then the sidecar, last and atomically.

    ``shard=None`` runs every shard then merges; ``shard=K`` runs shard K only (merge later with
    ``merge_only=True``). Returns stats with ``counts`` (documents, words, rejected by reason, ...)."""
    from .artifacts import read_json, sidecar_current
    from .download import Downloader, DownloadResult, failure_summary

    t0 = time.time()
    downloads_dir, processed_dir, metadata_dir = Path(downloads_dir), Path(processed_dir), Path(metadata_dir)
    if not entries:
        raise CollectionError("no sources selected; pass --sources, --source_dir or --sample")
    if num_shards < 1 or (shard is not None and not 0 <= int(shard) < num_shards):
        raise ValueError(f"--shard must be in [0, {num_shards - 1}] for --num_shards {num_shards}")
    srcs = [make_source(dict(e), base_urls) for e in entries]
    stats: dict[str, Any] = {"sources": len(srcs), "shards": {}, "downloads": {}, "skipped": False}
    finishing = shard is None or merge_only or num_shards == 1  # this run writes the merged corpus

    keep = None if shard is None else (lambda key, k=int(shard): in_shard(key, k, num_shards))
    remote = [s for s in srcs if s.kind not in _LOCAL_KINDS]
    if remote and not offline and not merge_only:
        dl = downloader or Downloader(workers=workers, progress=progress, **(download_options or {}))

        def fetch(src):
            try:
                return src.fetch(dl, downloads_dir, keep)
            except Exception as e:  # noqa: BLE001 - a broken source must not stop the run
                return [DownloadResult(src.id, "", False, "failed", error=f"{type(e).__name__}: {e}")]

        results = []
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(remote)))) as pool:
            for res in pool.map(fetch, remote):
                results.extend(res)
        summary = failure_summary(results)
        log(f"corpus: {summary}")
        stats["downloads"] = {"summary": summary, "failed": [r.to_dict() for r in results if not r.ok],
                              "ok": sum(r.ok for r in results)}

    settings = {"validation_percent": float(validation_percent), "min_chars": int(min_chars),
                "year_range": [int(y) for y in year_range]}
    entries_hash = _json_hash([dict(e) for e in entries])
    local_inputs = {f"source:{s.id}": source_fingerprint(s, downloads_dir) for s in srcs if s.kind in _LOCAL_KINDS}
    # the staging plan leaves downloads out, so shards run on machines with different
    # downloads still merge; a changed download is picked up with --overwrite
    plan = _json_hash({"sources": entries_hash, **local_inputs, "settings": settings})
    sidecar = processed_dir / SIDECAR
    inputs: dict[str, str] = {}
    if finishing:
        inputs = {"sources": entries_hash, **local_inputs,
                  **{f"source:{s.id}": source_fingerprint(s, downloads_dir) for s in remote}}
        current, why = sidecar_current(sidecar, inputs, settings)
        if current and not overwrite:
            log(f"corpus: outputs are current ({processed_dir}); skipping (use --overwrite to rebuild)")
            stats.update(skipped=True, counts=read_json(sidecar).get("counts", {}))
            return stats
        if sidecar.exists():
            log(f"corpus: rebuilding ({'--overwrite' if overwrite else why})")
            sidecar.unlink()  # the old outputs are no longer vouched for

    for k in ([] if merge_only else (range(num_shards) if shard is None else [int(shard)])):
        state = prepare_shard(processed_dir, k, num_shards, plan, fresh=overwrite)
        if num_shards > 1 or state.startswith("resumed"):
            log(f"corpus: shard {k} of {num_shards}: {state}")
        keep_k = (lambda key, k=k: in_shard(key, k, num_shards))

        def docs(keep_k=keep_k) -> Iterator[Document]:
            for src in srcs:
                try:
                    yield from src.documents(downloads_dir, keep_k)
                except Exception as e:  # noqa: BLE001
                    yield Document(id=f"{src.id}-source-error", source=src.id, source_kind=src.kind,
                                   error="source_error", extra={"error_detail": f"{type(e).__name__}: {e}"})

        stats["shards"][k] = process_documents(docs(), processed_dir, year_range=year_range, min_chars=min_chars,
                                               workers=workers, shard=k, num_shards=num_shards, merge=False,
                                               progress=progress)
    if not finishing:
        log(f"corpus: shard {shard} of {num_shards} done ({stats['shards'][int(shard)]['accepted']} accepted); "
            f"merge with --merge --num_shards {num_shards} once every shard is done")
        return stats

    for k in range(num_shards):
        marker = shard_dir(processed_dir, k, num_shards) / PLAN_FILE
        if marker.exists() and json.loads(marker.read_text(encoding="utf-8")).get("plan") != plan:
            raise CollectionError(f"shard {k} of {num_shards} was staged with other sources or settings; "
                                  f"re-run it with --shard {k} --num_shards {num_shards} --overwrite")
    merge = merge_shards(processed_dir, num_shards, validation_percent)
    stats["merge"] = merge
    counts = summary_counts(merge, processed_dir)
    rejected = list(read_jsonl(processed_dir / "rejections.jsonl"))
    for r in rejected[:_MAX_LOGGED_REJECTIONS]:
        where = r.get("relpath") or r.get("url") or r.get("source", "")
        log(f"rejected {r.get('id')} [{r.get('reason')}] {where} {r.get('detail', '')}".rstrip())
    if len(rejected) > _MAX_LOGGED_REJECTIONS:
        log(f"... and {len(rejected) - _MAX_LOGGED_REJECTIONS} more rejections: see {processed_dir / 'rejections.jsonl'}")
    if not counts["documents"]:
        raise CollectionError(f"no usable documents: every input was empty, unreadable or rejected "
                              f"({counts['rejected'] or 'no input'}); see {processed_dir / 'rejections.jsonl'}")
    from .corpus_report import format_summary, write_report

    stats["seconds"] = round(time.time() - t0, 2)
    counts["seconds"] = stats["seconds"]
    stats["counts"] = counts
    registry_entries = [e for e in entries if e["kind"] not in _LOCAL_KINDS] or None
    report = write_report(processed_dir, metadata_dir, registry_entries=registry_entries,
                          extra={"collection": {k: v for k, v in stats.items() if k not in ("report",)}})
    stats["report"] = str(report)
    _write_sidecar(sidecar, inputs, settings, counts)  # last: vouches for everything above
    log(format_summary(json.loads((metadata_dir / "corpus_stats.json").read_text(encoding="utf-8"))))
    log(f"corpus: {counts['documents']} documents ({counts['train_documents']} train, "
        f"{counts['validation_documents']} validation), {counts['words']:,} words, {counts['chars']:,} chars, "
        f"{sum(counts['rejected'].values())} rejected, {stats['seconds']:.1f}s -> {processed_dir}")
    return stats


def collect_from_registry(registry_path: str | Path, downloads_dir: str | Path, processed_dir: str | Path,
                          metadata_dir: str | Path, *, sources: Sequence[str] | None = None,
                          max_sources: int | None = None, offline: bool = False, workers: int = 4,
                          year_range: Sequence[int] = (1500, 1900), shard: int | None = None, num_shards: int = 1,
                          base_urls: dict[str, str] | None = None, progress: bool = True,
                          validation_percent: float = 5.0, min_chars: int = 200, downloader=None,
                          download_options: dict[str, Any] | None = None, overwrite: bool = False,
                          merge_only: bool = False, log=None) -> dict[str, Any]:
    """``run_collection`` for the registry file's sources (see ``select_sources``)."""
    entries = select_sources(load_registry(registry_path), sources, max_sources)
    return run_collection(entries, downloads_dir, processed_dir, metadata_dir, offline=offline, workers=workers,
                          year_range=year_range, shard=shard, num_shards=num_shards, merge_only=merge_only,
                          base_urls=base_urls, progress=progress, validation_percent=validation_percent,
                          min_chars=min_chars, overwrite=overwrite, downloader=downloader,
                          download_options=download_options, log=log or log_info)


def log_info(msg: str) -> None:
    log.info(msg)
