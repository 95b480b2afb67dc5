"""Deduplication: exact (hash of the normalised full text) and near-duplicate (MinHash LSH
over word 5-gram shingles, ``datasketch``). Duplicates are grouped into clusters and the best
copy of each cluster is kept: the longest text (the most complete edition), then the one with
the fewest repairs, then the smallest id (so the choice is deterministic across shards).

Signatures are computed per document in the worker processes (``signature``), stored with the
staged rows, and clustered once all documents are known (``find_duplicates``), which is what
lets shards run apart and merge to the same result.
"""
from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

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
    return (-int(row.get("chars", 0)), len(row.get("repairs", []) or []), str(row["id"]))


class BandIndex:
    """MinHash LSH by banding, with the bands ``datasketch.MinHashLSH`` chooses for this
    threshold (9 bands of 13 values at 0.8 and 128 permutations): a document is a candidate
    for another when one band matches exactly. It holds a 64-bit hash of each band where
    datasketch holds the band's bytes in a set per bucket (~1.5 KiB a document, not ~3.7
    KiB: the merge holds every document at once). Candidates are confirmed by their Jaccard
    estimate, so a hash collision costs one comparison, never a wrong match."""

    def __init__(self, threshold: float = THRESHOLD, num_perm: int = NUM_PERM):
        from datasketch import MinHashLSH

        self.ranges = list(MinHashLSH(threshold=threshold, num_perm=num_perm).hashranges)
        self.tables: list[dict[int, str | list[str]]] = [{} for _ in self.ranges]

    def add(self, doc_id: str, sig: Sequence[int]) -> set[str]:
        """The documents added before that share a band with ``sig``; then ``doc_id`` is added.
        A bucket is its one document's id until a second arrives (most never do)."""
        sig = np.asarray(sig, dtype=np.uint64)
        found: set[str] = set()
        for (a, b), table in zip(self.ranges, self.tables):
            key = hash(sig[a:b].tobytes())
            bucket = table.get(key)
            if bucket is None:
                table[key] = doc_id
            elif isinstance(bucket, str):
                found.add(bucket)
                table[key] = [bucket, doc_id]
            else:
                found.update(bucket)
                bucket.append(doc_id)
        return found


def find_duplicates(rows: Iterable[dict[str, Any]], threshold: float = THRESHOLD,
                    num_perm: int = NUM_PERM) -> tuple[list[DupDecision], list[dict[str, Any]]]:
    """Rows need ``id``, ``norm_sha256``, ``minhash`` (ints: a list or a uint64 array), ``chars``.

    Returns (decisions for every dropped document, cluster reports)."""
    rows = sorted(rows, key=lambda r: str(r["id"]))
    by_id = {r["id"]: r for r in rows}
    parent = {r["id"]: r["id"] for r in rows}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    exact_of: dict[str, str] = {}
    for r in rows:
        h = r["norm_sha256"]
        if h in exact_of:
            union(exact_of[h], r["id"])
        else:
            exact_of[h] = r["id"]
    index = BandIndex(threshold, num_perm)
    sigs = {}
    for rid in exact_of.values():
        sig = by_id[rid].get("minhash")
        if sig is None or not len(sig):
            continue
        for other in sorted(index.add(rid, sig)):
            if jaccard(sig, sigs[other]) >= threshold:  # LSH gives candidates; confirm them
                union(other, rid)
        sigs[rid] = sig
    clusters: dict[str, list[str]] = {}
    for r in rows:
        clusters.setdefault(find(r["id"]), []).append(r["id"])
    decisions: list[DupDecision] = []
    reports: list[dict[str, Any]] = []
    n = 0
    for members in sorted(clusters.values()):
        if len(members) < 2:
            continue
        n += 1
        best = min((by_id[m] for m in members), key=_best_key)
        for m in sorted(members):
            if m == best["id"]:
                continue
            exact = by_id[m]["norm_sha256"] == best["norm_sha256"]
            a, b = by_id[m].get("minhash"), best.get("minhash")
            sim = 1.0 if exact else jaccard(a, b) if a is not None and len(a) and b is not None and len(b) else 0.0
            decisions.append(DupDecision(m, best["id"], "duplicate_exact" if exact else "near_duplicate", n,
                                         round(sim, 4)))
        reports.append({"cluster": n, "kept": best["id"], "members": sorted(members)})
    return decisions, reports
