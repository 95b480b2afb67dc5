"""Sharding: split the work into N shards that run apart (other machines, other days), each
resumable, and a merge that combines them into the one corpus.

A unit of work (a Gutenberg source, an archive.org item, a local file) belongs to shard
``sha256(key) mod N``. Each shard writes under ``processed/shards/shard-K-of-N/``:
``texts/<id>.txt`` for accepted documents and ``staged.jsonl``, one line per document seen
(accepted or rejected, with its MinHash signature), appended *after* the text is on disk so
a crash loses at most the document in flight; a re-run skips ids already staged. ``done.json``
marks a finished shard.

``merge_shards`` reads every staged row, dedups across all shards (exact + MinHash, see
``dedup``), assigns splits, hard-links the kept texts into ``processed/texts/`` and writes
``manifest.jsonl``, ``rejections.jsonl`` and ``duplicates.json``. Rows are sorted by id and
dedup ties are broken by id, so 2 shards give byte-identical outputs to 1 shard.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from typing import Any, Callable

from ..core import write_text_atomic
from .dedup import THRESHOLD, find_duplicates
from .manifest import (DUPLICATES, MANIFEST, REJECTIONS, TEXTS, CorpusError, assign_split,
                       ensure_both_splits, jsonl_text, place_texts, read_jsonl)

SHARDS_DIR = "shards"
PLAN_FILE = "plan.json"
STAGED_FILE = "staged.jsonl"
DONE_FILE = "done.json"
# rejections that a later run may undo (the file arrives, the source answers): a resumed run
# tries these documents again, and the merge keeps only their newest staged row
RETRYABLE = frozenset({"not_downloaded", "source_error", "unreadable"})
# keys that exist for merging only and stay out of the final manifest
_STAGING_KEYS = ("minhash", "status", "staged_path", "preview")


class ShardError(CorpusError):
    """A merge was asked for while a shard is missing or unfinished; the message names the fix."""


def in_shard(key: str, shard: int, num_shards: int) -> bool:
    if num_shards <= 1:
        return True
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:16], 16) % num_shards == shard


@dataclass(frozen=True)
class ShardKeep:
    """The ``keep(key)`` a source is given: the units of work of one shard, with the shard's
    name, so a source that keeps work files of its own (a page store) keeps one per shard."""

    shard: int
    num_shards: int

    def __call__(self, key: str) -> bool:
        return in_shard(key, self.shard, self.num_shards)

    @property
    def name(self) -> str:
        return f"shard-{self.shard:03d}-of-{self.num_shards:03d}"


def retryable(row: dict[str, Any]) -> bool:
    return row.get("status") != "accepted" and row.get("reason") in RETRYABLE


def prepare_shard(processed_dir: str | Path, shard: int, num_shards: int, plan: str, fresh: bool = False) -> str:
    """Make shard ``shard`` ready for a run with inputs+settings hash ``plan``: its staged work
    is kept (the run resumes) only when it was staged under the same plan; otherwise, or with
    ``fresh``, it is removed. Returns "resumed", "new" or why it was reset."""
    d = shard_dir(processed_dir, shard, num_shards)
    marker = d / PLAN_FILE
    old = None
    if marker.exists():
        try:
            old = json.loads(marker.read_text(encoding="utf-8")).get("plan")
        except ValueError:
            old = None
    state = "new" if not d.exists() else ("resumed" if old == plan and not fresh else
                                         "reset (--overwrite)" if fresh else "reset (inputs or settings changed)")
    if d.exists() and state != "resumed":
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    write_text_atomic(marker, json.dumps({"plan": plan}))
    return state


def shard_dir(processed_dir: str | Path, shard: int, num_shards: int) -> Path:
    return Path(processed_dir) / SHARDS_DIR / f"shard-{shard:03d}-of-{num_shards:03d}"


class ShardWriter:
    """Append-only, crash-safe output of one shard."""

    def __init__(self, processed_dir: str | Path, shard: int = 0, num_shards: int = 1):
        self.dir = shard_dir(processed_dir, shard, num_shards)
        self.texts = self.dir / TEXTS
        self.texts.mkdir(parents=True, exist_ok=True)
        self.staged = self.dir / STAGED_FILE
        self.done_marker = self.dir / DONE_FILE
        self.seen: set[str] = {r["id"] for r in read_jsonl(self.staged) if not retryable(r)}
        self._f = None

    def __enter__(self) -> "ShardWriter":
        # a torn last line from a crash is dropped so the next append starts on a fresh line
        if self.staged.exists():
            data = self.staged.read_bytes()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                with open(self.staged, "r+b") as f:
                    f.truncate(cut)
        self._f = open(self.staged, "a", encoding="utf-8")
        if self.done_marker.exists():
            self.done_marker.unlink()
        return self

    def __exit__(self, *exc) -> None:
        if self._f:
            self._f.close()
            self._f = None

    def write(self, row: dict[str, Any], text: str | None) -> None:
        if text is not None:
            path = self.texts / f"{row['id']}.txt"
            write_text_atomic(path, text)
        self._f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        self._f.flush()
        self.seen.add(row["id"])

    def mark_done(self, stats: dict[str, Any]) -> None:
        write_text_atomic(self.done_marker, json.dumps(stats, indent=1, sort_keys=True))


def list_shards(processed_dir: str | Path, num_shards: int) -> list[Path]:
    return [shard_dir(processed_dir, k, num_shards) for k in range(num_shards)]


def merge_shards(processed_dir: str | Path, num_shards: int = 1, validation_percent: float = 5.0,
                 threshold: float = THRESHOLD, split_fn: Callable[[str, float], str] | None = None,
                 require_done: bool = True) -> dict[str, Any]:
    """Combine the shard outputs into ``manifest.jsonl`` + ``texts/`` + ``rejections.jsonl``."""
    processed = Path(processed_dir)
    accepted, rejected = _read_staged(processed, num_shards, require_done)
    decisions, clusters = find_duplicates((e.key for e in accepted.values()), threshold=threshold)
    for dec in decisions:
        row = accepted.pop(dec.id).row()
        rejected.append(_Rejected(dec.id, dec.reason, _pack({
            **_reject_view(row), "reason": dec.reason, "reasons": [dec.reason],
            "detail": f"duplicate of {dec.kept_id} (similarity {dec.similarity})",
            "duplicate_of": dec.kept_id, "cluster": dec.cluster})))
    splits = _splits(accepted, split_fn or assign_split, validation_percent)
    place_texts(processed, {f"{TEXTS}/{doc_id}.txt": Path(accepted[doc_id].staged_path) for doc_id in splits})
    rejected.sort(key=lambda r: (r.id, r.reason))
    write_text_atomic(processed / REJECTIONS, jsonl_text(
        {k: v for k, v in json.loads(r.packed).items() if k not in ("minhash", "status", "staged_path")}
        for r in rejected))
    write_text_atomic(processed / DUPLICATES, json.dumps(clusters, indent=1, sort_keys=True))
    # the manifest is written last: its presence means the corpus is complete
    write_text_atomic(processed / MANIFEST, jsonl_text(_manifest_row(accepted[doc_id], doc_id, split)
                                                       for doc_id, split in splits.items()))
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
    return {"documents": len(splits), "rejected": len(rejected), "rejections_by_reason": reasons,
            "duplicate_clusters": len(clusters), "num_shards": num_shards}


# Every staged row is held until the dedup has compared them all, so what a row costs decides
# the merge's peak at scale: a row is kept as its JSON (its MinHash apart), ~0.7 KiB, where the
# parsed row was ~4 KiB and its MinHash as Python ints ~5 KiB more; the dedup's fields apart.
def _pack(row: dict[str, Any]) -> bytes:
    return json.dumps(row, ensure_ascii=False, sort_keys=True).encode("utf-8")


@dataclass
class _Accepted:
    packed: bytes                 # the staged row, MinHash left out
    staged_path: str
    key: dict[str, Any]           # what the dedup compares: id, norm_sha256, minhash (uint64), chars, repairs

    def row(self) -> dict[str, Any]:
        return json.loads(self.packed)


@dataclass
class _Rejected:
    id: str
    reason: str
    packed: bytes


def _read_staged(processed: Path, num_shards: int,
                 require_done: bool) -> tuple[dict[str, _Accepted], list[_Rejected]]:
    """(accepted rows by id, rejected rows) of every shard; a missing shard names its command."""
    accepted: dict[str, _Accepted] = {}
    rejected: list[_Rejected] = []
    for d in list_shards(processed, num_shards):
        if not d.exists() or (require_done and not (d / DONE_FILE).exists()):
            k = int(d.name.split("-")[1])
            raise ShardError(f"shard {k} of {num_shards} is missing or unfinished ({d}); "
                             f"run the collection with --shard {k} --num_shards {num_shards} first")
        staged = []  # (id, retryable, accepted, packed row, dedup key), in the order staged
        for row in read_jsonl(d / STAGED_FILE):
            sig = row.pop("minhash", None)
            key = {k: row.get(k) for k in ("id", "norm_sha256", "chars", "repairs")}
            key["minhash"] = None if sig is None else np.asarray(sig, dtype=np.uint64)
            staged.append((row["id"], retryable(row), row.get("status") == "accepted", _pack(row), key))
        last = {doc_id: i for i, (doc_id, *_) in enumerate(staged)}
        for i, (doc_id, retry, ok, packed, key) in enumerate(staged):
            if retry and last[doc_id] != i:
                continue  # tried again later in this shard: the newer row decides
            if not ok:
                rejected.append(_Rejected(doc_id, str(json.loads(packed).get("reason")), packed))
            elif doc_id in accepted:
                rejected.append(_Rejected(doc_id, "duplicate_id", _pack({
                    **_reject_view(json.loads(packed)), "reason": "duplicate_id",
                    "detail": "another document already has this id"})))
            else:
                accepted[doc_id] = _Accepted(packed, str(d / TEXTS / f"{doc_id}.txt"), key)
    return accepted, rejected


def _splits(accepted: dict[str, _Accepted], split_fn: Callable[[str, float], str],
            validation_percent: float) -> dict[str, str]:
    """Each kept document's split, by id (the order of the manifest)."""
    lean = [{"id": doc_id, "split": split_fn(doc_id, validation_percent)} for doc_id in sorted(accepted)]
    ensure_both_splits(lean, validation_percent)
    return {r["id"]: r["split"] for r in lean}


def _manifest_row(staged: _Accepted, doc_id: str, split: str) -> dict[str, Any]:
    """The manifest row of a kept document: its staged row, its split and its path under ``texts/``."""
    out = {k: v for k, v in staged.row().items() if k not in _STAGING_KEYS}
    out.pop("reason", None)
    out["split"] = split
    out["path"] = f"{TEXTS}/{doc_id}.txt"
    return out


def _reject_view(row: dict[str, Any]) -> dict[str, Any]:
    """A rejection record for a row that had been accepted before dedup."""
    keys = ("id", "source", "source_kind", "title", "author", "year", "year_rule", "date_evidence", "url",
            "london", "repairs", "preview", "chars", "reason", "reasons", "detail", "duplicate_of", "cluster")
    return {k: row[k] for k in keys if k in row}
