import json
import multiprocessing as mp
import shutil

import numpy as np
import pytest

from londonlm.token_cache import CacheError, ensure_cache, load_offsets, load_tokens


def paths(root):
    return (root / "09_models" / "tokenizers" / "london_historical_bpe",
            root / "data" / "london_historical" / "processed")


def fresh_copy(micro_root, tmp_path):
    dst = tmp_path / "root"
    shutil.copytree(micro_root, dst)
    return dst


def test_build_contents_and_era_tokens(micro_root, tmp_path):
    from transformers import AutoTokenizer

    root = fresh_copy(micro_root, tmp_path)
    tok_dir, proc = paths(root)
    cache = tmp_path / "cache"
    meta = ensure_cache(cache, tok_dir, proc, 64, era_tokens=True, progress=False, log=lambda *_: None)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    toks, offs = load_tokens(cache, "train"), load_offsets(cache, "train")
    assert toks.dtype == np.uint16 and len(toks) == meta["splits"]["train"]["tokens"] == offs[-1]
    era = tok.convert_tokens_to_ids("<|1700s|>")
    rows = [json.loads(l) for l in (proc / "manifest.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    for r, start, end in zip(train_rows, offs[:-1], offs[1:]):
        doc = toks[start:end].tolist()
        assert doc[0] == era and doc[-1] == tok.eos_token_id  # [era] + text + <|endoftext|>
        text = (proc / r["path"]).read_text()
        assert tok.decode(doc[1:-1]) == text
    assert meta["era_tokens"] is True and meta["context_length"] == 64


def test_compatibility_matrix(micro_root, tmp_path):
    root = fresh_copy(micro_root, tmp_path)
    tok_dir, proc = paths(root)
    cache = tmp_path / "cache"
    logs = []
    q = logs.append
    ensure_cache(cache, tok_dir, proc, 64, True, progress=False, log=q)
    # compatible: auto and require reuse it
    logs.clear()
    ensure_cache(cache, tok_dir, proc, 64, True, mode="auto", progress=False, log=q)
    assert any("compatible cache found" in m for m in logs)
    ensure_cache(cache, tok_dir, proc, 64, True, mode="require", progress=False, log=q)
    # rebuild mode always rebuilds
    logs.clear()
    ensure_cache(cache, tok_dir, proc, 64, True, mode="rebuild", progress=False, log=q)
    assert any("--no_pretokenized" in m for m in logs)
    # context changed
    with pytest.raises(CacheError, match="max length mismatch"):
        ensure_cache(cache, tok_dir, proc, 32, True, mode="require", progress=False, log=q)
    logs.clear()
    ensure_cache(cache, tok_dir, proc, 32, True, mode="auto", progress=False, log=q)
    assert any("max length mismatch" in m for m in logs)
    # era flag changed
    with pytest.raises(CacheError, match="era token mismatch"):
        ensure_cache(cache, tok_dir, proc, 32, False, mode="require", progress=False, log=q)
    # corpus changed
    man = proc / "manifest.jsonl"
    man.write_text(man.read_text() + "\n")
    with pytest.raises(CacheError, match="corpus mismatch"):
        ensure_cache(cache, tok_dir, proc, 32, True, mode="require", progress=False, log=q)
    ensure_cache(cache, tok_dir, proc, 32, True, progress=False, log=q)
    # tokenizer changed
    tj = tok_dir / "tokenizer.json"
    tj.write_text(tj.read_text().replace('"model_max_length"', '"model_max_length"') + " ")
    with pytest.raises(CacheError, match="tokenizer mismatch"):
        ensure_cache(cache, tok_dir, proc, 32, True, mode="require", progress=False, log=q)
    ensure_cache(cache, tok_dir, proc, 32, True, progress=False, log=q)
    # truncated file
    b = cache / "train.bin"
    b.write_bytes(b.read_bytes()[:-2])
    with pytest.raises(CacheError, match="truncated"):
        ensure_cache(cache, tok_dir, proc, 32, True, mode="require", progress=False, log=q)
    logs.clear()
    ensure_cache(cache, tok_dir, proc, 32, True, progress=False, log=q)
    assert any("truncated" in m for m in logs)
    # corrupted in place (same size)
    data = bytearray(b.read_bytes())
    data[10] ^= 0xFF
    b.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="corrupted"):
        ensure_cache(cache, tok_dir, proc, 32, True, mode="require", progress=False, log=q)
    ensure_cache(cache, tok_dir, proc, 32, True, progress=False, log=q)
    # metadata missing
    (cache / "metadata.json").unlink()
    with pytest.raises(CacheError, match="metadata.json missing"):
        ensure_cache(cache, tok_dir, proc, 32, True, mode="require", progress=False, log=q)
    ensure_cache(cache, tok_dir, proc, 32, True, progress=False, log=q)
    assert (cache / "metadata.json").exists()


def _build(args):
    cache, tok_dir, proc = args
    meta = ensure_cache(cache, tok_dir, proc, 64, True, progress=False, log=lambda *_: None)
    return meta["splits"]["train"]["sha256"], meta["created"]


def test_two_process_build_race(micro_root, tmp_path):
    root = fresh_copy(micro_root, tmp_path)
    tok_dir, proc = paths(root)
    cache = tmp_path / "cache"
    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.map(_build, [(cache, tok_dir, proc)] * 2)
    assert results[0] == results[1]  # one built, the other waited and loaded the same cache
    assert not list(cache.glob("*.tmp*"))


def test_load_is_constant_time(micro_root, tmp_path):
    """A memory map: opening a split touches no data."""
    import time

    root = fresh_copy(micro_root, tmp_path)
    tok_dir, proc = paths(root)
    cache = tmp_path / "cache"
    ensure_cache(cache, tok_dir, proc, 64, True, progress=False, log=lambda *_: None)
    big = tmp_path / "big"
    shutil.copytree(cache, big)
    arr = np.tile(np.asarray(load_tokens(cache, "train")), 200)
    arr.tofile(big / "train.bin")
    t0 = time.perf_counter()
    m = load_tokens(big, "train")
    assert len(m) == len(arr) and time.perf_counter() - t0 < 0.05


def test_split_exact_pieces_encode_like_the_whole(micro_root):
    """Pieces cut by split_exact must tokenize exactly as the whole text: real prose (every
    micro-corpus document at several piece sizes) and random strings rich in awkward
    whitespace (NBSP, ideographic space, \\x1c, \\x85, U+2028, CR, tabs, runs)."""
    import random

    from tokenizers import Tokenizer

    from londonlm.token_cache import split_exact

    tok_dir, proc = paths(micro_root)
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))

    def check(text, size):
        pieces = split_exact(text, size)
        assert "".join(pieces) == text
        got = [i for e in tok.encode_batch(pieces, add_special_tokens=False) for i in e.ids]
        assert got == tok.encode(text, add_special_tokens=False).ids, (text[:80], size)
        return len(pieces)

    total = 0
    for f in sorted((proc / "texts").glob("*.txt")):
        for size in (200, 1000, 5000):
            total += check(f.read_text(encoding="utf-8"), size)
    assert total > 30  # the cuts really happened
    rng = random.Random(1)
    alphabet = list(" \n\t\r\u00a0\u3000\x1c\x85\u2028abcXYZ019'ſæé\u0301.,;:-—")
    for _ in range(1500):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        check(s, rng.randint(1, 40))


def test_small_encode_budgets_give_the_same_cache(micro_root, tmp_path, monkeypatch):
    """The character budget bounds memory; it must not change a single token."""
    import londonlm.token_cache as tc

    root = fresh_copy(micro_root, tmp_path)
    tok_dir, proc = paths(root)
    ensure_cache(tmp_path / "a", tok_dir, proc, 64, era_tokens=True, progress=False, log=lambda *_: None)
    real = tc._encode_stream
    monkeypatch.setattr(tc, "_encode_stream", lambda t, d, e: real(t, d, e, batch_chars=700, piece_chars=300))
    ensure_cache(tmp_path / "b", tok_dir, proc, 64, era_tokens=True, progress=False, log=lambda *_: None)
    for split in ("train", "validation"):
        assert np.array_equal(load_tokens(tmp_path / "a", split), load_tokens(tmp_path / "b", split))
        assert np.array_equal(load_offsets(tmp_path / "a", split), load_offsets(tmp_path / "b", split))
