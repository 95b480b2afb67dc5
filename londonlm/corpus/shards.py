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
import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..core import ScratchTables, atomic_writer, read_json_object, write_text_atomic
from .dedup import THRESHOLD, DupDecision, find_duplicates
from .manifest import (DUPLICATES, MANIFEST, REJECTIONS, TEXTS, CorpusError, assign_split, place_texts,
                       prune_texts, read_jsonl, split_to_move)

SHARDS_DIR = "shards"
PLAN_FILE = "plan.json"
STAGED_FILE = "staged.jsonl"
DONE_FILE = "done.json"
MERGE_FILE = "merge.sqlite"
DEDUP_FILE = "dedup.sqlite"   # the merge's scratch files, beside the shards; gone when it ends
# rejections that a later run may undo (the file arrives, the source answers): a resumed run
# tries these documents again, and the merge keeps only their newest staged row
RETRYABLE = frozenset({"not_downloaded", "source_error", "unreadable"})
# keys that exist for merging only and stay out of the final manifest
_STAGING_KEYS = ("minhash", "status", "staged_path", "preview")


class ShardError(CorpusError):
    """A merge was asked for while a shard is missing or unfinished; the message names the fix."""


class NoDocuments(ShardError):
    """Every staged document was rejected: nothing to replace the corpus with. ``reasons``:
    rejections by reason; ``rejections``: the first rejection rows."""

    def __init__(self, processed: Path, reasons: dict[str, int], rejections: list[dict[str, Any]]):
        super().__init__(f"no usable documents: every input was empty, unreadable or rejected "
                         f"({reasons or 'no input'}); nothing was replaced in {processed}; each document's "
                         f"rejection is in {processed / SHARDS_DIR}/*/{STAGED_FILE}")
        self.reasons, self.rejections = reasons, rejections


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


def staged_problem(row: dict[str, Any], shard_folder: Path) -> str | None:
    """What makes a staged row unusable to the merge, or None. The collection writes neither
    (the text first, then its row), but a hand edit or a damaged disk ended the merge in a
    traceback: a row with no id (KeyError), a lone surrogate (UnicodeEncodeError), a kept
    document's text gone (FileNotFoundError); an id that is a path would be written outside
    ``texts/``."""
    doc_id = row.get("id")
    if type(doc_id) is not str or not doc_id or doc_id in (".", "..") or "/" in doc_id or "\x00" in doc_id:
        return f"a row whose id {doc_id!r} is no document id"
    try:
        _pack(row)
    except UnicodeEncodeError as e:
        return f"row {doc_id!r} holds a lone surrogate ({e.object[e.start]!r}), which is no text"
    if row.get("status") == "accepted" and not (shard_folder / TEXTS / f"{doc_id}.txt").is_file():
        return f"the staged text of {doc_id!r} ({shard_folder / TEXTS / f'{doc_id}.txt'}) is gone"
    return None


def prepare_shard(processed_dir: str | Path, shard: int, num_shards: int, plan: str, fresh: bool = False) -> str:
    """Make shard ``shard`` ready for a run with inputs+settings hash ``plan``: its staged work
    is kept (the run resumes) only when it was staged under the same plan; otherwise, or with
    ``fresh``, it is removed. Returns "resumed", "new" or why it was reset."""
    d = shard_dir(processed_dir, shard, num_shards)
    marker = d / PLAN_FILE
    old = read_json_object(marker).get("plan")  # (a damaged or foreign plan resets the shard)
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
                 require_done: bool = True, require_documents: bool = False,
                 before_writing: Callable[[], None] | None = None) -> dict[str, Any]:
    """Combine the shard outputs into ``manifest.jsonl`` + ``texts/`` + ``rejections.jsonl``.

    ``require_documents``: a merge that would keep no document raises :class:`NoDocuments`
    before anything is written, so the corpus already there stays whole. ``before_writing`` is
    called once the merge is decided, before the first output is replaced.

    Every staged row passes through a SQLite file beside the shards (``shards/merge.sqlite``,
    removed when the merge ends), so the merge holds a batch of rows, never the corpus: the
    dedup compares every document with every other, and held in memory their rows made the
    merge's peak grow by a few KiB a document."""
    processed = Path(processed_dir)
    with _MergeStore(processed / SHARDS_DIR / MERGE_FILE) as store:
        for k, d in enumerate(list_shards(processed, num_shards)):
            if not d.exists() or (require_done and not (d / DONE_FILE).exists()):
                raise ShardError(f"shard {k} of {num_shards} is missing or unfinished ({d}); "
                                 f"run the collection with --shard {k} --num_shards {num_shards} first")
            store.add_shard(k, d / STAGED_FILE)
        store.resolve()
        decisions, clusters = find_duplicates(store.dedup_keys(), threshold=threshold,
                                             scratch=store.path.with_name(DEDUP_FILE))
        for dec in decisions:
            store.reject_duplicate(dec)
        store.assign_splits(split_fn or assign_split, validation_percent)
        if require_documents and not store.count_kept():
            raise NoDocuments(processed, store.reasons(), list(itertools.islice(store.rejections(), 20)))
        if before_writing is not None:
            before_writing()
        # the old corpus's texts that are no longer kept go last, once the new manifest is in place:
        # a merge stopped before (a full disk, a kill) leaves the old manifest's texts all there
        place_texts(processed, store.texts(processed, num_shards), kept=store.keeps_text, prune=False)
        with atomic_writer(processed / REJECTIONS) as f:
            for row in store.rejections():
                f.write(json.dumps({k: v for k, v in row.items() if k not in ("minhash", "status", "staged_path")},
                                   ensure_ascii=False, sort_keys=True) + "\n")
        write_text_atomic(processed / DUPLICATES, json.dumps(clusters, indent=1, sort_keys=True))
        # the manifest is written last: its presence means the corpus is complete
        with atomic_writer(processed / MANIFEST) as f:
            for doc_id, split, packed in store.kept():
                f.write(json.dumps(_manifest_row(json.loads(packed), doc_id, split), ensure_ascii=False,
                                   sort_keys=True) + "\n")
        prune_texts(processed, store.keeps_text)
        reasons = store.reasons()
        return {"documents": store.count_kept(), "rejected": sum(reasons.values()), "rejections_by_reason": reasons,
                "duplicate_clusters": len(clusters), "num_shards": num_shards}


def _pack(row: dict[str, Any]) -> bytes:
    return json.dumps(row, ensure_ascii=False, sort_keys=True).encode("utf-8")


class _MergeStore(ScratchTables):
    """The staged rows of every shard in one SQLite table, in the order staged (``seq``), and
    what the merge decides of them: ``kept`` (each id's first accepted row, and its split) and
    ``rej`` (every rejection, in the order it was made, which breaks ties when sorted)."""

    SCHEMA = ("CREATE TABLE staged (seq INTEGER PRIMARY KEY, shard INTEGER, id TEXT, retry INTEGER, ok INTEGER,"
              " reason TEXT, norm TEXT, chars INTEGER, nrepairs INTEGER, sig BLOB, packed BLOB);"
              "CREATE TABLE kept (id TEXT PRIMARY KEY, seq INTEGER, split TEXT);"
              "CREATE TABLE rej (n INTEGER PRIMARY KEY, id TEXT, reason TEXT, packed BLOB);")

    def add_shard(self, shard: int, staged: Path) -> None:
        batch: list[tuple] = []
        for row in read_jsonl(staged):
            sig = row.pop("minhash", None)
            problem = staged_problem(row, staged.parent)
            if problem:
                raise ShardError(f"{staged}: {problem} (damaged since it was staged); stage shard {shard} again: "
                                 f"rerun its collection with --overwrite")
            batch.append((shard, str(row["id"]), retryable(row), row.get("status") == "accepted",
                          str(row.get("reason")), row.get("norm_sha256"), int(row.get("chars") or 0),
                          len(row.get("repairs") or []),
                          None if sig is None else np.asarray(sig, dtype=np.uint64).tobytes(), _pack(row)))
            if len(batch) >= self.BATCH:
                self._insert(batch)
                batch = []
        self._insert(batch)

    def _insert(self, batch: list[tuple]) -> None:
        self.db.executemany("INSERT INTO staged (shard, id, retry, ok, reason, norm, chars, nrepairs, sig, packed)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)

    def resolve(self) -> None:
        """Each id's first accepted row is kept; a later accepted row of the same id is a
        ``duplicate_id``; a retryable rejection tried again later in its shard gives way to the
        newer row; every other rejection stands."""
        self.db.execute("CREATE INDEX staged_id ON staged (id, shard, seq)")
        self.db.execute("INSERT INTO kept (id, seq) SELECT id, min(seq) FROM staged WHERE ok GROUP BY id")
        rows = self.db.execute(
            "SELECT s.id, s.ok, s.reason, s.packed FROM staged s WHERE (s.ok AND s.seq NOT IN (SELECT seq FROM kept))"
            " OR (NOT s.ok AND NOT (s.retry AND EXISTS (SELECT 1 FROM staged t WHERE t.shard = s.shard"
            " AND t.id = s.id AND t.seq > s.seq))) ORDER BY s.seq")
        for batch in iter(lambda: rows.fetchmany(self.BATCH), []):
            self.db.executemany("INSERT INTO rej (id, reason, packed) VALUES (?, ?, ?)", [
                (doc_id, "duplicate_id", _pack({**_reject_view(json.loads(packed)), "reason": "duplicate_id",
                                                "detail": "another document already has this id"}))
                if ok else (doc_id, reason, packed) for doc_id, ok, reason, packed in batch])

    def dedup_keys(self) -> Iterator[dict[str, Any]]:
        """What the dedup compares of each kept row."""
        rows = self.db.execute("SELECT s.id, s.norm, s.chars, s.nrepairs, s.sig FROM kept k JOIN staged s"
                               " ON s.seq = k.seq ORDER BY k.id")
        for doc_id, norm, chars, nrepairs, sig in iter(rows.fetchone, None):
            yield {"id": doc_id, "norm_sha256": norm, "chars": chars, "nrepairs": nrepairs,
                   "minhash": None if sig is None else np.frombuffer(sig, dtype=np.uint64)}

    def reject_duplicate(self, dec: DupDecision) -> None:
        (packed,), = self.db.execute("SELECT s.packed FROM kept k JOIN staged s ON s.seq = k.seq WHERE k.id = ?",
                                     (dec.id,))
        self.db.execute("DELETE FROM kept WHERE id = ?", (dec.id,))
        self.db.execute("INSERT INTO rej (id, reason, packed) VALUES (?, ?, ?)", (dec.id, dec.reason, _pack({
            **_reject_view(json.loads(packed)), "reason": dec.reason, "reasons": [dec.reason],
            "detail": f"duplicate of {dec.kept_id} (similarity {dec.similarity})",
            "duplicate_of": dec.kept_id, "cluster": dec.cluster})))

    def assign_splits(self, split_fn: Callable[[str, float], str], validation_percent: float) -> None:
        """Each kept document's split by its id; then, with few documents, the one move that
        gives both splits (``manifest.split_to_move``)."""
        ids = self.db.execute("SELECT id FROM kept ORDER BY id")
        for batch in iter(lambda: ids.fetchmany(self.BATCH), []):
            self.db.executemany("UPDATE kept SET split = ? WHERE id = ?",
                                [(split_fn(doc_id, validation_percent), doc_id) for doc_id, in batch])
        move = split_to_move(iter(self.db.execute("SELECT id, split FROM kept ORDER BY id").fetchone, None),
                             validation_percent)
        if move is not None:
            self.db.execute("UPDATE kept SET split = ? WHERE id = ?", (move[1], move[0]))

    def texts(self, processed: Path, num_shards: int) -> Iterator[tuple[str, Path]]:
        """(manifest path, staged text) of each kept document."""
        rows = self.db.execute("SELECT k.id, s.shard FROM kept k JOIN staged s ON s.seq = k.seq ORDER BY k.id")
        for doc_id, shard in iter(rows.fetchone, None):
            yield f"{TEXTS}/{doc_id}.txt", shard_dir(processed, shard, num_shards) / TEXTS / f"{doc_id}.txt"

    def keeps_text(self, rel: str) -> bool:
        """Whether ``texts/<id>.txt`` is a kept document's text."""
        prefix, suffix = f"{TEXTS}/", ".txt"
        if not (rel.startswith(prefix) and rel.endswith(suffix)):
            return False
        doc_id = rel[len(prefix):-len(suffix)]
        return self.db.execute("SELECT 1 FROM kept WHERE id = ?", (doc_id,)).fetchone() is not None

    def rejections(self) -> Iterator[dict[str, Any]]:
        """Every rejection by id and reason (ties in the order they were made)."""
        rows = self.db.execute("SELECT packed FROM rej ORDER BY id, reason, n")
        for packed, in iter(rows.fetchone, None):
            yield json.loads(packed)

    def kept(self) -> Iterator[tuple[str, str, bytes]]:
        """(id, split, staged row) of each kept document, by id: the manifest's order."""
        return iter(self.db.execute("SELECT k.id, k.split, s.packed FROM kept k JOIN staged s ON s.seq = k.seq"
                                    " ORDER BY k.id").fetchone, None)

    def reasons(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT reason, count(*) FROM rej GROUP BY reason ORDER BY reason"))

    def count_kept(self) -> int:
        return self.db.execute("SELECT count(*) FROM kept").fetchone()[0]


def _manifest_row(row: dict[str, Any], doc_id: str, split: str) -> dict[str, Any]:
    """The manifest row of a kept document: its staged row, its split and its path under ``texts/``."""
    out = {k: v for k, v in row.items() if k not in _STAGING_KEYS}
    out.pop("reason", None)
    out["split"] = split
    out["path"] = f"{TEXTS}/{doc_id}.txt"
    return out


def _reject_view(row: dict[str, Any]) -> dict[str, Any]:
    """A rejection record for a row that had been accepted before dedup."""
    keys = ("id", "source", "source_kind", "title", "author", "year", "year_rule", "date_evidence", "url",
            "london", "repairs", "preview", "chars", "reason", "reasons", "detail", "duplicate_of", "cluster")
    return {k: row[k] for k in keys if k in row}
