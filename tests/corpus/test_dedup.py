"""Exact and MinHash near-duplicate detection; the best copy is kept."""
from __future__ import annotations

import random

from londonlm.corpus.dedup import find_duplicates, jaccard, normalised_hash, signature


def _text(seed: int, n: int = 3000) -> str:
    rng = random.Random(seed)
    words = "the of and a to in London was his that it with for as watch street by Thames bridge fire".split()
    return " ".join(rng.choice(words) + str(rng.randint(0, 50)) for _ in range(n))


def _row(i: str, text: str) -> dict:
    return {"id": i, "norm_sha256": normalised_hash(text), "minhash": signature(text), "chars": len(text)}


def test_normalised_hash_ignores_case_spacing_punctuation():
    assert normalised_hash("It was, the best\nof Times!") == normalised_hash("it was the   best of times")


def test_signature_deterministic_and_similarity():
    a = _text(1)
    assert signature(a) == signature(a)
    edited = a.replace("London1 ", "Londres1 ", 3)
    assert jaccard(signature(a), signature(edited)) > 0.8
    assert jaccard(signature(a), signature(_text(2))) < 0.2


def test_clusters_and_best_copy():
    a, b = _text(1), _text(2)
    rows = [_row("a_short", a[:-20]), _row("a_long", a), _row("a_exact", a), _row("b", b),
            _row("a_upper", a.upper())]
    decisions, clusters = find_duplicates(rows)
    dropped = {d.id: d for d in decisions}
    assert set(dropped) == {"a_short", "a_exact", "a_upper"} or set(dropped) == {"a_short", "a_long", "a_upper"}
    kept = clusters[0]["kept"]
    assert kept in ("a_long", "a_exact") and "b" not in dropped
    assert dropped["a_upper"].reason == "duplicate_exact"
    assert dropped["a_short"].reason == "near_duplicate" and dropped["a_short"].kept_id == kept
    assert len(clusters) == 1 and sorted(clusters[0]["members"]) == ["a_exact", "a_long", "a_short", "a_upper"]


def test_the_band_index_finds_what_datasketch_finds(tmp_path):
    """The merge's own LSH index (each band's bytes in a SQLite table) gives exactly the
    candidates datasketch's MinHashLSH gives, near-duplicates and all."""
    import numpy as np
    from datasketch import MinHash, MinHashLSH

    from londonlm.corpus.dedup import DedupStore

    rng = random.Random(3)
    words = [f"w{i}" for i in range(400)]
    docs = []
    for i in range(120):
        base = [rng.choice(words) for _ in range(300)]
        docs.append((f"d{i:03d}", base))
        if i % 4 == 0:  # a near copy: a few words changed
            near = list(base)
            for j in rng.sample(range(300), 2):
                near[j] = rng.choice(words)
            docs.append((f"d{i:03d}n", near))
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    expected = set()
    with DedupStore(tmp_path / "d.sqlite", 0.8, 128) as store:
        for doc_id, text in docs:
            sig = signature(text)
            mh = MinHash(num_perm=128, hashvalues=np.asarray(sig, dtype=np.uint64), scheme="legacy")
            expected |= {tuple(sorted((doc_id, other))) for other in lsh.query(mh)}
            lsh.insert(doc_id, mh)
            store.add([{"id": doc_id, "norm_sha256": doc_id, "minhash": sig, "chars": len(text)}])
        store.index()
        assert set(store.candidates()) == expected
    assert len(expected) >= 25  # the near copies were found (30 planted)
    assert not (tmp_path / "d.sqlite").exists()  # the store's file goes with it


def test_the_dedup_leaves_no_files_behind(tmp_path):
    a = _text(1)
    (tmp_path / "d.sqlite").write_bytes(b"what a killed merge left")
    decisions, _ = find_duplicates([_row("x", a), _row("y", a)], scratch=tmp_path / "d.sqlite")
    assert [d.id for d in decisions] == ["y"] and list(tmp_path.iterdir()) == []
