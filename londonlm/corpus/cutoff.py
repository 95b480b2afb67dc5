"""A corpus with a cutoff year, and the time facts of any corpus.

:func:`cutoff_view` makes, from a collected corpus, the corpus a model time-locked to a year
trains on, without collecting again: the documents dated up to the cutoff, by the rule the
collection's cutoff filter applies (``dating.cutoff_verdict``), in a folder every reader of a
processed corpus accepts (``manifest.jsonl``, ``texts/`` hard-linked, ``rejections.jsonl``,
each kept document in the split it had) with its own sidecar, written last.

:func:`corpus_time_facts` is what later stages record about a corpus's time: its cutoff, its
first and last year and its words by decade (the manifest and the sidecar only, no texts).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

from ..core import (SIDECAR, flock_holder, folder_lock, make_exclusive, read_json_object, record_field,
                    sidecar_current, write_sidecar, write_text_atomic)
from .dating import cutoff_verdict, row_year
from .manifest import (COLLECT_CMD, CORPUS_OUTPUTS, CUTOFF_STAGE, MANIFEST, REJECTIONS, TEXTS, TEXTS_FINGERPRINT,
                       CorpusError, jsonl_text, manifest_sha256, place_texts, read_manifest, reading_corpus,
                       require_finished_corpus, summarize, texts_fingerprint, texts_not_as_made)
from .report import CORPUS_STATS

# what a rejection row of the view keeps of the manifest row (the rest describes the text kept)
_REJECT_KEYS = ("id", "source", "source_kind", "title", "author", "year", "year_rule", "date_evidence", "url",
                "license", "london", "chars", "words", "split")


# ---------------------------------------------------------------- time facts
def time_facts(rows: Iterable[dict], cutoff_year: int | None = None) -> dict[str, Any]:
    """The cutoff, first and last year, documents and words per decade (``"1660"``) and the
    undated documents of manifest ``rows``."""
    return time_facts_of(summarize(rows), cutoff_year)


def time_facts_of(stats: dict[str, Any], cutoff_year: int | None = None) -> dict[str, Any]:
    """:func:`time_facts` read off a :func:`.manifest.summarize` result already at hand."""
    decades = {d: v for d, v in stats["by_decade"].items() if d != "undated"}
    undated = stats["by_decade"].get("undated", {"documents": 0, "words": 0})
    order = sorted(decades, key=int)
    return {"cutoff_year": cutoff_year, "years": stats["years"],
            "words_by_decade": {d: decades[d]["words"] for d in order},
            "documents_by_decade": {d: decades[d]["documents"] for d in order},
            "undated_documents": undated["documents"], "undated_words": undated["words"]}


def _recorded_cutoff(processed_dir: Path) -> int | None:
    """The cutoff a corpus was built with, from its sidecar's settings (None when none)."""
    value = record_field(read_json_object(processed_dir / SIDECAR), "settings", "cutoff_year", kind=int)
    return None if isinstance(value, bool) else value


def corpus_time_facts(processed_dir: str | Path) -> dict[str, Any]:
    """``{"cutoff_year": int | None, "years": [first, last], "words_by_decade": {"1660": n},
    "documents_by_decade": {...}, "undated_documents": n, "undated_words": n}`` of a collected
    corpus or a cutoff view (the manifest and the sidecar only). A missing manifest names the
    command that makes it."""
    processed_dir = Path(processed_dir)
    return time_facts(read_manifest(processed_dir), _recorded_cutoff(processed_dir))


# ---------------------------------------------------------------- the view
def _rejection(row: dict, reason: str, detail: str) -> dict[str, Any]:
    return {**{k: row[k] for k in _REJECT_KEYS if k in row}, "reason": reason, "reasons": [reason],
            "detail": detail, "filters": {"cutoff": row_year(row)}}


def _text_path(processed_dir: Path, row: dict) -> Path:
    rel = Path(str(row.get("path") or f"{TEXTS}/{row['id']}.txt"))
    if rel.is_absolute() or ".." in rel.parts:  # never read or write outside the two folders
        raise CorpusError(f"{processed_dir / MANIFEST}: document {row.get('id')!r} has path {rel}, outside the "
                          f"corpus; rebuild it with `{COLLECT_CMD} --overwrite`")
    return rel


def _none_to_train(processed_dir: Path, rows: list[dict], cutoff_year: int) -> CorpusError:
    dated = [r for r in rows if row_year(r) is not None]
    if not dated:
        return CorpusError(f"cutoff {cutoff_year}: no document of {processed_dir} is dated, and a cutoff corpus "
                           f"keeps only dated ones; give the sources dates (MANIFEST.tsv, registry year, "
                           f"--default_year) and collect again with `{COLLECT_CMD}`")
    first = min(dated, key=lambda r: (row_year(r), str(r.get("id"))))
    if row_year(first) <= cutoff_year:
        n = sum(row_year(r) <= cutoff_year for r in dated)
        return CorpusError(f"cutoff {cutoff_year} leaves no training documents in {processed_dir}: the {n} "
                           f"document(s) dated by then (the earliest from {row_year(first)}) are all in the "
                           f"validation split; choose a later cutoff or collect more early texts")
    how = f" ({first['year_rule']})" if first.get("year_rule") else ""
    return CorpusError(f"cutoff {cutoff_year} leaves no training documents in {processed_dir}: the earliest "
                       f"dated document, {first.get('id')}, is from {row_year(first)}{how}; choose a cutoff "
                       f"of {row_year(first)} or later, or collect earlier texts")


def _check_dated_by_evidence(processed_dir: Path, rows: list[dict]) -> None:
    """Refuse a manifest written before the collection recorded date evidence: its years were
    decided by older rules (a registry range's start for an undated text), which a time lock
    cannot trust."""
    legacy = [r for r in rows if "date_evidence" not in r]
    if legacy:
        raise CorpusError(f"{processed_dir / MANIFEST}: {len(legacy)} of {len(rows)} documents (first "
                          f"{legacy[0].get('id')}) carry no date evidence (year_rule, date_evidence): the corpus "
                          f"was collected before they were recorded. Collect it again with `{COLLECT_CMD} "
                          f"--overwrite` so a cutoff can trust their years")


def cutoff_view(processed_dir: str | Path, out_dir: str | Path, cutoff_year: int, *, overwrite: bool = False,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write in ``out_dir`` the corpus of ``processed_dir`` cut at ``cutoff_year``: documents
    dated after it or undated are left out (listed, with their reasons, in its
    ``rejections.jsonl``); kept ones keep their split and their text (hard-linked). Skips when
    current (same source manifest and cutoff) unless ``overwrite``. Returns counts
    (documents, train/validation documents, words, chars, rejected by reason, corpus_time),
    with ``skipped``."""
    processed_dir, out_dir, cutoff_year = Path(processed_dir), Path(out_dir), int(cutoff_year)
    if out_dir.resolve() == processed_dir.resolve():
        raise CorpusError(f"the cutoff view must go to another folder than its corpus ({processed_dir})")
    manifest_sha256(processed_dir)  # a missing corpus names COLLECT_CMD (before the view's folder is made)
    # One maker of a view at a time (a pipeline and a family, or two families, with one cutoff):
    # two at once each unlinked and linked the other's texts, and the one that lost a race
    # stopped with a SameFileError or FileNotFoundError traceback (a family: every member after it)
    busy = lambda who: CorpusError(f"{who} is making the corpus view {out_dir} now; wait for it to end, then "
                                   f"run again (the view will be current); nothing was written")
    made = not out_dir.exists()
    # Shared while it only checks the view is current, as its readers hold it (a tokenizer or token
    # cache made from it: :func:`.manifest.reading_corpus`); exclusive once it rebuilds, which a
    # reader refuses: the texts it reads are not pruned or replaced under it.
    with folder_lock(out_dir, busy, shared=True) as fd:
        def alone() -> None:
            if not make_exclusive(fd):
                raise CorpusError(f"{flock_holder(out_dir)} is reading the corpus view {out_dir} now (a tokenizer or "
                                  f"token cache made from it); wait for it to end, then run again (the view will "
                                  f"be made then); nothing was written")
        try:
            with reading_corpus(processed_dir) as unchanged:  # the parent, as every reader of a corpus
                inputs = {"manifest": manifest_sha256(processed_dir)}
                return _make_view(processed_dir, out_dir, cutoff_year, inputs, overwrite, log, alone, unchanged)
        except BaseException:
            if made and not any(out_dir.iterdir()):  # refused before anything was placed: no empty folder left
                out_dir.rmdir()
            raise


def _make_view(processed_dir: Path, out_dir: Path, cutoff_year: int, inputs: dict, overwrite: bool,
               log: Callable[[str], None], alone: Callable[[], None], unchanged: Callable[[], None]) -> dict[str, Any]:
    """:func:`cutoff_view` under its shared lock, ``alone()`` taking it exclusively before anything
    changes, ``unchanged()`` asking that the parent is the one read before the sidecar vouches."""
    settings = {"cutoff_year": cutoff_year}
    sidecar = out_dir / SIDECAR
    current, why = sidecar_current(sidecar, inputs, settings)
    if current:  # (a text edited to its own size is not seen by the sidecar's count and bytes)
        why = texts_not_as_made(out_dir)
        current = why is None
    if current and not overwrite:
        log(f"corpus up to {cutoff_year}: current ({out_dir}); skipping (use --overwrite to rebuild)")
        return {**(record_field(read_json_object(sidecar), "counts", kind=dict) or {}), "skipped": True}
    alone()
    if sidecar.exists():
        log(f"corpus up to {cutoff_year}: rebuilding ({'--overwrite' if overwrite else why})")
        sidecar.unlink()  # the old files are no longer vouched for
    rows = read_manifest(processed_dir)
    _check_dated_by_evidence(processed_dir, rows)
    # the view's texts are the corpus's (linked): a text edited there would be vouched for as made
    require_finished_corpus(processed_dir)
    kept, dropped = _cut(rows, cutoff_year)
    if not any(r.get("split") == "train" for r in kept):
        raise _none_to_train(processed_dir, rows, cutoff_year)
    place_texts(out_dir, _kept_texts(processed_dir, kept))
    dropped.sort(key=lambda r: (str(r.get("id")), str(r.get("reason"))))
    write_text_atomic(out_dir / REJECTIONS, jsonl_text(dropped))
    write_text_atomic(out_dir / MANIFEST, jsonl_text(kept))  # after the texts: a manifest means complete
    stats = {**summarize(kept, dropped), "cutoff_year": cutoff_year, "parent": str(processed_dir)}
    write_text_atomic(out_dir / CORPUS_STATS, json.dumps(stats, indent=1, sort_keys=True, default=str))
    counts = {"documents": stats["documents"], "train_documents": stats["splits"].get("train", 0),
              "validation_documents": stats["splits"].get("validation", 0), "chars": stats["chars"],
              "words": stats["words"], "rejected": stats["rejections_by_reason"],
              "corpus_time": time_facts_of(stats, cutoff_year)}
    unchanged()
    write_sidecar(sidecar, CUTOFF_STAGE, inputs, settings, counts, libraries=("londonlm",), outputs=CORPUS_OUTPUTS,
                  extra={"parent": str(processed_dir), TEXTS_FINGERPRINT: texts_fingerprint(out_dir)})  # last
    years = counts["corpus_time"]["years"]
    log(f"corpus up to {cutoff_year}: {counts['documents']} of {len(rows)} documents ({counts['train_documents']} "
        f"train, {counts['validation_documents']} validation), {counts['words']:,} words, years "
        f"{years[0]}-{years[1]}; left out {counts['rejected'] or 'none'} -> {out_dir}")
    if not counts["validation_documents"]:
        log(f"corpus up to {cutoff_year}: no validation document is dated by the cutoff; evaluation "
            f"of a model trained on it has nothing held out")
    return {**counts, "skipped": False}


def _cut(rows: list[dict], cutoff_year: int) -> tuple[list[dict], list[dict]]:
    """The manifest rows a cutoff keeps, and a rejection row for each it leaves out."""
    kept, dropped = [], []
    for row in rows:
        ok, reason, detail = cutoff_verdict(row_year(row), row.get("year_rule"), cutoff_year)
        if ok:
            kept.append(row)
        else:
            dropped.append(_rejection(row, reason, detail))
    return kept, dropped


def _kept_texts(processed_dir: Path, kept: list[dict]) -> dict[str, Path]:
    """Each kept document's manifest path and its text in the parent corpus, all checked
    before any is placed: a missing text names the rebuild."""
    texts = {}
    for row in kept:
        rel = _text_path(processed_dir, row)
        src = processed_dir / rel
        if not src.is_file():
            raise CorpusError(f"{src} is listed in {processed_dir / MANIFEST} but missing; rebuild the corpus "
                              f"with `{COLLECT_CMD} --overwrite`")
        texts[str(rel)] = src
    return texts


__all__ = ["CUTOFF_STAGE", "corpus_time_facts", "cutoff_view", "time_facts", "time_facts_of"]
