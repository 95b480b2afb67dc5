"""Deduplication: exact (hash of the normalised full text) and near-duplicate (MinHash LSH
over word 5-gram shingles, ``datasketch``). Duplicates are grouped into clusters and the best
copy of each cluster is kept: the longest text (the most complete edition), then the one with
the fewest repairs, then the smallest id (so the choice is deterministic across shards).

Signatures are computed per document in the worker processes (``signature``), stored with the
staged rows, and clustered once all documents are known (``find_duplicates``, over a SQLite file
so the merge's memory does not grow with the corpus), which is what lets shards run apart and
merge to the same result.
"""
from __future__ import annotations

import hashlib
import re
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..core import ScratchTables

NUM_PERM = 128
SHINGLE = 5
THRESHOLD = 0.8
_NORM = re.compile(r"[^\w]+")


def normalised_hash(text: str) -> str:
    """sha256 of the text lower-cased with punctuation and whitespace runs collapsed, so copies
    that differ only in line wrapping, quotes or case collide."""
    return hash_words(norm_words(text))


def norm_words(text: str) -> list[str]:
    """Lower-cased word tokens (punctuation dropped): the common input of both hashes."""
    return _NORM.sub(" ", text.lower()).split()


def hash_words(words: list[str]) -> str:
    return hashlib.sha256(" ".join(words).encode("utf-8")).hexdigest()


_MAX32 = np.uint64(0xFFFFFFFF)


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    a = rng.randint(0, (1 << 63) - 1, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.randint(0, (1 << 63) - 1, size=num_perm, dtype=np.uint64)
    return a, b


def signature(text: str | list[str], num_perm: int = NUM_PERM, shingle: int = SHINGLE, seed: int = 1,
              chunk: int = 8192) -> list[int]:
    """MinHash signature of word ``shingle``-grams, vectorised with numpy (about 20x faster than
    hashing each shingle in Python). Deterministic across processes (crc32 of each word, not
    Python's salted ``hash``); shingles are processed in chunks so memory stays bounded."""
    words = norm_words(text) if isinstance(text, str) else text
    if not words:
        return [int(_MAX32)] * num_perm
    vocab = {w: zlib.crc32(w.encode("utf-8")) for w in set(words)}  # hash each distinct word once
    wh = np.fromiter(map(vocab.__getitem__, words), dtype=np.uint64, count=len(words))
    k = min(shingle, len(wh))
    n = len(wh) - k + 1
    # shingle hash: a polynomial over the k word hashes (uint64 wrap-around is fine for hashing)
    h = np.zeros(n, dtype=np.uint64)
    for j in range(k):
        h = h * np.uint64(1_000_003) + wh[j: j + n]
    h = (h ^ (h >> np.uint64(29))) & _MAX32
    a, b = _permutations(num_perm, seed)
    sig = np.full(num_perm, _MAX32, dtype=np.uint64)
    for start in range(0, n, chunk):
        hv = h[start: start + chunk]
        # multiply-shift hashing (a odd): no modulo, so 3-4x faster than (a*h+b) % prime
        phv = (np.outer(hv, a) + b) >> np.uint64(32)
        np.minimum(sig, phv.min(axis=0), out=sig)
    return [int(x) for x in sig]


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    return float(np.mean(np.asarray(a, dtype=np.uint64) == np.asarray(b, dtype=np.uint64)))


@dataclass
class DupDecision:
    id: str
    kept_id: str
    reason: str        # duplicate_exact | near_duplicate
    cluster: int
    similarity: float


def _best_key(row: dict[str, Any]) -> tuple:
    return (-int(row.get("chars", 0)), int(row.get("nrepairs", 0)), str(row["id"]))


def band_ranges(threshold: float = THRESHOLD, num_perm: int = NUM_PERM) -> list[tuple[int, int]]:
    """The LSH bands ``datasketch.MinHashLSH`` chooses for this threshold (9 bands of 13 values
    at 0.8 and 128 permutations): two documents are candidates when one band matches exactly."""
    from datasketch import MinHashLSH

    return [tuple(r) for r in MinHashLSH(threshold=threshold, num_perm=num_perm).hashranges]


class DedupStore(ScratchTables):
    """What the dedup compares, one row per document, in a SQLite file rather than in memory:
    the merge of a 10 GB corpus sees every document at once, and a few KiB each in memory (the
    MinHash alone is 1 KiB) made its peak grow with the corpus. Here it holds one batch of rows
    and the candidate pairs (documents that share a band: the duplicates and a few chance
    matches), whatever the corpus's size.

    Rows need ``id``, ``norm_sha256``, ``minhash`` (ints: a list or a uint64 array), ``chars``
    and optionally ``repairs`` (the list, or its length as ``nrepairs``)."""

    SCHEMA = ("CREATE TABLE doc (id TEXT PRIMARY KEY, norm TEXT NOT NULL, chars INTEGER, nrepairs INTEGER, sig BLOB);"
              "CREATE TABLE band (band INTEGER, key BLOB, id TEXT);")

    def __init__(self, path: str | Path, threshold: float = THRESHOLD, num_perm: int = NUM_PERM):
        super().__init__(path)
        self.threshold, self.ranges = threshold, band_ranges(threshold, num_perm)

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        batch: list[tuple] = []
        for r in rows:
            sig = r.get("minhash")
            sig = None if sig is None or not len(sig) else np.asarray(sig, dtype=np.uint64).tobytes()
            # a row without a hash groups with the others without one, as a dict keyed by it would
            nrepairs = r["nrepairs"] if "nrepairs" in r else len(r.get("repairs") or [])
            batch.append((str(r["id"]), str(r.get("norm_sha256")), int(r.get("chars") or 0), int(nrepairs), sig))
            if len(batch) >= self.BATCH:
                self.db.executemany("INSERT INTO doc VALUES (?, ?, ?, ?, ?)", batch)
                batch = []
        self.db.executemany("INSERT INTO doc VALUES (?, ?, ?, ?, ?)", batch)

    def index(self) -> None:
        """Once every row is added: the bands of each exact-duplicate group's first id (its
        copies follow it anyway)."""
        self.db.execute("CREATE INDEX doc_norm ON doc (norm, id)")
        firsts = self.db.execute("SELECT d.id, d.sig FROM doc d JOIN (SELECT norm, min(id) AS id FROM doc GROUP BY norm)"
                                 " f ON d.id = f.id WHERE d.sig IS NOT NULL")
        for rows in iter(lambda: firsts.fetchmany(self.BATCH), []):
            self.db.executemany("INSERT INTO band VALUES (?, ?, ?)",
                                [(k, sig[a * 8: b * 8], doc_id) for doc_id, sig in rows
                                 for k, (a, b) in enumerate(self.ranges)])
        self.db.execute("CREATE INDEX band_key ON band (band, key, id)")

    def pairs(self) -> Iterator[tuple[str, str]]:
        """Pairs of ids that are duplicates: the same normalised text, or a shared band whose
        documents' Jaccard estimate clears the threshold (LSH gives candidates; this confirms)."""
        yield from self.db.execute("SELECT f.id, d.id FROM doc d JOIN (SELECT norm, min(id) AS id FROM doc GROUP BY"
                                   " norm HAVING count(*) > 1) f ON d.norm = f.norm AND d.id != f.id")
        for a, b in self.candidates():
            if jaccard(self.signature(a), self.signature(b)) >= self.threshold:
                yield a, b

    def candidates(self) -> list[tuple[str, str]]:
        """Pairs (a < b) of documents that share a band: what ``MinHashLSH.query`` would give."""
        return self.db.execute("SELECT DISTINCT a.id, b.id FROM band a JOIN band b ON a.band = b.band"
                               " AND a.key = b.key AND a.id < b.id").fetchall()

    def signature(self, doc_id: str) -> np.ndarray | None:
        (sig,), = self.db.execute("SELECT sig FROM doc WHERE id = ?", (doc_id,))
        return None if sig is None else np.frombuffer(sig, dtype=np.uint64)

    def row(self, doc_id: str) -> dict[str, Any]:
        (norm, chars, nrepairs), = self.db.execute("SELECT norm, chars, nrepairs FROM doc WHERE id = ?", (doc_id,))
        return {"id": doc_id, "norm_sha256": norm, "chars": chars, "nrepairs": nrepairs}


def _clusters(pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The connected groups of ``pairs`` (each sorted, the groups in order): the union-find
    holds only the documents that have a duplicate."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = {}
    for x in parent:
        groups.setdefault(find(x), []).append(x)
    return sorted(sorted(g) for g in groups.values())


def find_duplicates(rows: Iterable[dict[str, Any]], threshold: float = THRESHOLD, num_perm: int = NUM_PERM,
                    scratch: str | Path | None = None) -> tuple[list[DupDecision], list[dict[str, Any]]]:
    """Rows need ``id``, ``norm_sha256``, ``minhash`` (ints: a list or a uint64 array), ``chars``;
    they are kept in the SQLite file ``scratch`` (one a killed run left is replaced; by default a
    file in the system's temporary folder), so memory holds the duplicates, not the corpus.

    Returns (decisions for every dropped document, cluster reports)."""
    if scratch is None:
        with tempfile.TemporaryDirectory(prefix="londonlm-dedup-") as tmp:
            return find_duplicates(rows, threshold, num_perm, Path(tmp) / "dedup.sqlite")
    with DedupStore(scratch, threshold, num_perm) as store:
        store.add(rows)
        store.index()
        decisions: list[DupDecision] = []
        reports: list[dict[str, Any]] = []
        for n, members in enumerate(_clusters(store.pairs()), 1):
            by_id = {m: store.row(m) for m in members}
            best = min(by_id.values(), key=_best_key)
            for m in members:
                if m != best["id"]:
                    decisions.append(_decision(store, by_id[m], best, n))
            reports.append({"cluster": n, "kept": best["id"], "members": members})
        return decisions, reports


def _decision(store: DedupStore, row: dict[str, Any], best: dict[str, Any], cluster: int) -> DupDecision:
    exact = row["norm_sha256"] == best["norm_sha256"]
    a, b = store.signature(row["id"]), store.signature(best["id"])
    sim = 1.0 if exact else jaccard(a, b) if a is not None and b is not None else 0.0
    return DupDecision(row["id"], best["id"], "duplicate_exact" if exact else "near_duplicate", cluster,
                       round(sim, 4))
