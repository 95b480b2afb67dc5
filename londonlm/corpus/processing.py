"""The streaming core of the corpus stage: documents -> cleaned, filtered, signed rows in a shard.

Documents arrive lazily (a path, not a text), worker processes load, parse, clean, filter and
sign them, and the parent only writes results; at most ``2 * workers`` documents are in
flight, so peak memory depends on the largest document, not on the corpus size.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..core import die_with_parent
from .cleaning import MAX_LINE_CHARS, clean_text
from .dedup import hash_words, norm_words, signature
from .filters import default_filters, preview, run_filters
from .ocr import DocumentRepair, OcrOptions, WorkerDied
from .shards import ShardWriter
from .sources import Document, materialise

# metadata keys copied from Document.extra into the manifest (small, useful for historians)
_EXTRA_KEYS = ("gutenberg_id", "identifier", "session_date", "date", "relpath", "notes", "ia_date", "member",
               "record_id", "place", "ocr_confidence", "pages")


def _decade(year: int | None) -> int | None:
    return None if year is None else (int(year) // 10) * 10


def _word_count(text: str) -> int:
    return len(text.split())


# --- worker side ------------------------------------------------------------------------------
_FILTERS = None
_SETTINGS: dict[str, Any] = {}
_OCR: DocumentRepair | None = None


def _init_worker(settings: dict[str, Any], parent_pid: int | None = None) -> None:
    global _FILTERS, _SETTINGS, _OCR
    if parent_pid is not None:  # a worker process: it ends with the collection (kill -9 included)
        die_with_parent(parent_pid)
    _SETTINGS = settings
    ocr, lexicon = OcrOptions(**settings.get("ocr", {})), settings.get("ocr_lexicon")
    # the OCR quality filter runs where the collection has OCR documents (it built a lexicon for them)
    _FILTERS = default_filters(settings["year_range"], settings["min_chars"], settings.get("cutoff_year"),
                               ocr.min_quality if lexicon else None)
    _OCR = DocumentRepair.from_options(ocr, lexicon)


def process_one(doc: Document) -> tuple[dict[str, Any], str | None]:
    """Load, clean, filter and sign one document. Returns (row, cleaned text or None)."""
    if _FILTERS is None:
        _init_worker({"year_range": (1500, 1900), "min_chars": 200})
    base = {"id": doc.id, "source": doc.source, "source_kind": doc.source_kind, "title": doc.title,
            "author": doc.author, "url": doc.url, "license": doc.license, "london": bool(doc.london)}
    materialise(doc)
    # the date evidence goes on every row, kept or rejected, so a dating can be checked later
    base.update(year=doc.year, year_rule=doc.year_rule, date_evidence=dict(doc.dates))
    base["repairs"] = list(doc.repairs)
    if doc.error:
        return ({**base, "status": "rejected", "reason": doc.error, "reasons": [doc.error],
                 "detail": doc.extra.get("error_detail", ""), "preview": ""}, None)
    raw = doc.text or ""
    if len(raw) > MAX_LINE_CHARS and max(map(len, raw.split("\n"))) > MAX_LINE_CHARS:
        base["repairs"].append("long_lines_wrapped")
    ocr = bool(doc.extra.get("ocr"))
    text = clean_text(raw, ocr=ocr)
    del raw
    doc.text = None
    facts: dict[str, Any] = {}
    if ocr and _OCR is not None:  # repaired with the period's evidence, its quality measured before and after
        text, facts = _OCR(text, doc.year)
        base.update(facts)
    if not text.strip():
        return ({**base, "status": "rejected", "reason": "empty_after_cleaning", "reasons": ["empty_after_cleaning"],
                 "detail": "nothing left after cleaning", "preview": ""}, None)
    kept, reason, verdicts = run_filters(text, doc.year, _FILTERS, london=doc.london, year_rule=doc.year_rule,
                                         ocr_quality=facts.get("ocr_quality"))
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
                             initargs=(settings, os.getpid())) as pool:
        pending: set[Future] = set()
        it = iter(docs)
        exhausted = False
        try:
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
        except BrokenProcessPool:  # (the pool says only that it broke: a traceback, the run's cause unsaid)
            raise WorkerDied(WORKER_DIED) from None


WORKER_DIED = ("a cleaning worker process died (killed from outside it: the system's out-of-memory killer, or "
               "kill -9); the documents staged before it are kept: run the same command again to go on from "
               "them (with fewer --workers if memory ran short)")


def _duplicate_id(doc: Document) -> Document:
    """A document whose id an earlier one of this run has, as the rejection row it becomes
    (said before it reaches a worker: with several, the first to finish is not the first read)."""
    where = doc.extra.get("relpath") or doc.extra.get("record_id") or doc.url
    doc.error, doc.text = "duplicate_id", None
    doc.extra.pop("raw_bytes", None)
    doc.extra["error_detail"] = (f"another input of this collection has the id {doc.id}"
                                 + (f"; {where} is left out" if where else ""))
    return doc


def _input_size(d: Document) -> int:
    """Bytes of a document's input (its raw file, raw bytes or text), for the progress bar."""
    p = d.extra.get("raw_path")
    if p and os.path.exists(p):
        return os.path.getsize(p)
    if d.extra.get("raw_bytes") is not None:
        return len(d.extra["raw_bytes"])
    return len(d.text.encode("utf-8")) if d.text is not None else 0


def process_documents(docs: Iterable[Document], processed_dir: str | Path, *, year_range: Sequence[int] = (1500, 1900),
                      min_chars: int = 200, workers: int = 1, shard: int = 0, num_shards: int = 1,
                      progress: bool = False, cutoff_year: int | None = None,
                      ocr: OcrOptions | None = None, ocr_lexicon: str | None = None) -> dict[str, Any]:
    """Clean, filter and sign ``docs`` into shard ``shard`` of ``num_shards`` (resumable: ids
    already staged are skipped); the merge (``shards.merge_shards``) makes the corpus of them.
    ``cutoff_year`` adds the cutoff filter (later and undated documents rejected); ``ocr``: how
    OCR documents are repaired and filtered (:mod:`.ocr`), ``ocr_lexicon``: the period lexicon the
    collection built for them (None: it has none). Returns counts and timings."""
    t0 = time.time()
    settings = {"year_range": tuple(int(y) for y in year_range), "min_chars": int(min_chars),
                "cutoff_year": None if cutoff_year is None else int(cutoff_year),
                "ocr": asdict(ocr or OcrOptions()), "ocr_lexicon": ocr_lexicon}
    counts = {"accepted": 0, "rejected": 0, "skipped_resumed": 0, "input_bytes": 0}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="clean+filter", unit="B", unit_scale=True, unit_divisor=1024)
    in_flight: dict[str, int] = {}  # bytes of each document handed to the workers, for the bar
    with ShardWriter(processed_dir, shard, num_shards) as writer:
        staged_before, handed = set(writer.seen), set()

        def todo() -> Iterator[Document]:
            for d in docs:
                if d.id in staged_before:
                    counts["skipped_resumed"] += 1
                    continue
                if d.id in handed:  # two inputs of this run mapped to one id: the first keeps it
                    d = _duplicate_id(d)
                handed.add(d.id)
                size = _input_size(d)
                counts["input_bytes"] += size
                in_flight[d.id] = in_flight.get(d.id, 0) + size
                yield d

        for row, text in _bounded_map(todo(), workers, settings):
            writer.write(row, text)
            counts[row["status"]] += 1
            if bar is not None:
                bar.update(in_flight.pop(row["id"], 0))
                bar.set_postfix(docs=counts["accepted"] + counts["rejected"], refresh=False)
        elapsed = time.time() - t0
        stats = {**counts, "seconds": round(elapsed, 3), "shard": shard, "num_shards": num_shards,
                 "mb_per_s": round(counts["input_bytes"] / 1e6 / elapsed, 3) if elapsed > 0 else None}
        writer.mark_done(stats)
    if bar is not None:
        bar.close()
    return stats
