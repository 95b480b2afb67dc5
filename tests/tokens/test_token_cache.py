import json
import multiprocessing as mp
import shutil

import numpy as np
import pytest

from conftest import vouch_for_corpus
from londonlm.tokens.cache import CacheError, ensure_cache, load_offsets, load_tokens


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
    vouch_for_corpus(proc)  # (as a collection writes it: a build refuses a corpus it did not finish)
    with pytest.raises(CacheError, match="corpus mismatch"):
        ensure_cache(cache, tok_dir, proc, 32, True, mode="require", progress=False, log=q)
    ensure_cache(cache, tok_dir, proc, 32, True, progress=False, log=q)
    # tokenizer changed
    tj = tok_dir / "tokenizer.json"
    (tok_dir / "sidecar.json").unlink()  # (a stage-made folder edited so is refused before: round 21)
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

    from londonlm.tokens import split_exact

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
    import londonlm.tokens.cache as tc

    root = fresh_copy(micro_root, tmp_path)
    tok_dir, proc = paths(root)
    ensure_cache(tmp_path / "a", tok_dir, proc, 64, era_tokens=True, progress=False, log=lambda *_: None)
    real = tc._encode_stream
    monkeypatch.setattr(tc, "_encode_stream", lambda t, d, e: real(t, d, e, batch_chars=700, piece_chars=300))
    ensure_cache(tmp_path / "b", tok_dir, proc, 64, era_tokens=True, progress=False, log=lambda *_: None)
    for split in ("train", "validation"):
        assert np.array_equal(load_tokens(tmp_path / "a", split), load_tokens(tmp_path / "b", split))
        assert np.array_equal(load_offsets(tmp_path / "a", split), load_offsets(tmp_path / "b", split))


# --------------------------------------------------------------------------- damage detection
# A cache several MiB long (the micro corpus's training documents repeated), so that the load
# check samples only part of it (16 blocks of 64 KiB) and the 1 MiB chunk checksums are real.

@pytest.fixture(scope="module")
def big_cache(micro_root, tmp_path_factory):
    from transformers import AutoTokenizer

    from londonlm.core.artifacts import sha256_file
    from londonlm.corpus import read_manifest
    from londonlm.tokens.cache import build_cache

    tok_dir, proc = paths(micro_root)
    rows = read_manifest(proc)
    train = [r for r in rows if r["split"] == "train"]
    many = [dict(r, id=f"{r['id']}#{i}") for i in range(200) for r in train]
    many += [r for r in rows if r["split"] == "validation"]
    cache = tmp_path_factory.mktemp("big") / "cache"
    build_cache(cache, AutoTokenizer.from_pretrained(str(tok_dir)),
                sha256_file(tok_dir / "tokenizer.json"), proc, many,
                sha256_file(proc / "manifest.jsonl"), 64, era_tokens=True, progress=False)
    assert (cache / "train.bin").stat().st_size > 4 << 20
    return cache


def damaged_copy(big_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(big_cache, cache)
    return cache, np.fromfile(cache / "train.bin", dtype=np.uint16)


def unsampled_pages(size: int, n: int, seed: int) -> list[int]:
    """N random 4 KiB-aligned offsets in the middle of the file that the load check's 16
    sampled 64 KiB blocks do not cover (so only the chunk checksums can see them)."""
    import random

    from londonlm.tokens.cache import _BLOCK, _SAMPLE_BLOCKS

    sampled = [(size - _BLOCK) * i // (_SAMPLE_BLOCKS - 1) for i in range(_SAMPLE_BLOCKS)]
    rng = random.Random(seed)
    out: list[int] = []
    while len(out) < n:
        off = rng.randrange(size // 4, 3 * size // 4) // 4096 * 4096
        if all(off + 4096 <= s or off >= s + _BLOCK for s in sampled):
            out.append(off)
    return sorted(out)


def epoch_until_error(tokens, clean: np.ndarray, block: int = 64, seed: int = 0):
    """Read every block in a shuffled order, as a training epoch does; each block handed out
    must be the clean one. Returns (blocks read, the CacheError or None)."""
    order = np.random.default_rng(seed).permutation(len(clean) // block)
    for n, i in enumerate(order):
        try:
            got = np.asarray(tokens[i * block:(i + 1) * block])
        except CacheError as e:
            return n, e
        assert np.array_equal(got, clean[i * block:(i + 1) * block]), f"damaged block {i} handed out"
    return len(order), None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zeroed_pages_never_reach_training(big_cache, micro_root, tmp_path, seed):
    """Two random 4 KiB pages zeroed in the middle: invisible to the O(1) load check, caught
    by the chunk checksums the first time a block is read from their chunk."""
    from londonlm.tokens.cache import load_checked_tokens

    cache, clean = damaged_copy(big_cache, tmp_path)
    data = bytearray((cache / "train.bin").read_bytes())
    pages = unsampled_pages(len(data), 2, seed)
    for off in pages:
        data[off:off + 4096] = bytes(4096)
    assert data != clean.tobytes()
    (cache / "train.bin").write_bytes(bytes(data))
    tok_dir, proc = paths(micro_root)
    ensure_cache(cache, tok_dir, proc, 64, True, mode="require", progress=False, log=lambda *_: None)
    read, err = epoch_until_error(load_checked_tokens(cache, "train"), clean)
    assert err is not None, "the damaged pages were trained on"
    msg = str(err)
    assert "train.bin" in msg and any(f"chunk {off >> 20} " in msg for off in pages)
    assert "--no_pretokenized" in msg
    assert read < len(clean) // 64


def test_clean_cache_reads_every_block_and_verifies_each_chunk_once(big_cache):
    from londonlm.tokens.cache import load_checked_tokens

    clean = np.fromfile(big_cache / "train.bin", dtype=np.uint16)
    tokens = load_checked_tokens(big_cache, "train")
    assert len(tokens) == len(clean) and not tokens.verified.any()
    read, err = epoch_until_error(tokens, clean)
    assert err is None and read == len(clean) // 64
    assert tokens.verified[:len(clean) // 64 * 64 * 2 >> 20].all()
    assert np.array_equal(np.asarray(tokens), clean) and tokens.verified.all()


@pytest.mark.parametrize("change", ["truncated", "appended"])
def test_truncated_or_appended_cache_is_refused_before_reading(big_cache, micro_root, tmp_path, change):
    from londonlm.tokens.cache import load_checked_tokens

    cache, clean = damaged_copy(big_cache, tmp_path)
    data = clean.tobytes()
    data = data[:-4096] if change == "truncated" else data + bytes(4096)
    (cache / "train.bin").write_bytes(data)
    tok_dir, proc = paths(micro_root)
    with pytest.raises(CacheError, match="truncated"):
        ensure_cache(cache, tok_dir, proc, 64, True, mode="require", progress=False, log=lambda *_: None)
    with pytest.raises(CacheError, match=r"train\.bin.*(truncated or appended).*--no_pretokenized"):
        load_checked_tokens(cache, "train")


def test_damage_stops_a_dataloader_with_workers(big_cache, tmp_path):
    """Under a DataLoader with worker processes (training's default) the error reaches the
    main process as a CacheError before the damaged batch does."""
    import torch

    from londonlm.training.data import PackedBlocks
    from londonlm.tokens.cache import load_checked_tokens

    cache, clean = damaged_copy(big_cache, tmp_path)
    data = bytearray(clean.tobytes())
    off = unsampled_pages(len(data), 1, 5)[0]
    data[off:off + 4096] = bytes(4096)
    (cache / "train.bin").write_bytes(bytes(data))
    ds = PackedBlocks(load_checked_tokens(cache, "train"), 64)
    loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, num_workers=2)
    with pytest.raises(CacheError, match="chunk"):
        for batch in loader:
            rows = batch["input_ids"].numpy().astype(np.uint16)
            assert not (rows == 0).all(axis=1).any(), "a zeroed block reached a batch"


def test_old_format_cache_is_rebuilt_as_stale(micro_root, tmp_path):
    root = fresh_copy(micro_root, tmp_path)
    tok_dir, proc = paths(root)
    cache = tmp_path / "cache"
    ensure_cache(cache, tok_dir, proc, 64, True, progress=False, log=lambda *_: None)
    meta = json.loads((cache / "metadata.json").read_text())
    for info in meta["splits"].values():
        del info["chunk_crc32"], info["chunk_bytes"]
    meta["format_version"] = 3
    (cache / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="format version 3"):
        ensure_cache(cache, tok_dir, proc, 64, True, mode="require", progress=False, log=lambda *_: None)
    logs: list[str] = []
    meta = ensure_cache(cache, tok_dir, proc, 64, True, progress=False, log=logs.append)
    assert any("format version 3" in m for m in logs) and meta["splits"]["train"]["chunk_crc32"]


# --------------------------------------------------------------------------- text stays text

QUOTING = ("He wrote, quoting the printer, <|endoftext|> and <|1650s|> and <|pad|> "
           "and <|1700s|>, which are but marks upon the page.\n")


def test_special_token_strings_in_text_stay_text(micro_root, tmp_path):
    """A document quoting <|endoftext|> or an era token gets no document boundary and no
    era from its text: only the era id before it and the EOT after it are control tokens."""
    from transformers import AutoTokenizer

    from londonlm.corpus import read_manifest

    root = fresh_copy(micro_root, tmp_path)
    tok_dir, proc = paths(root)
    first = next(r for r in read_manifest(proc) if r["split"] == "train")
    doc = proc / first["path"]
    doc.write_text(QUOTING + doc.read_text(encoding="utf-8") + QUOTING, encoding="utf-8")
    vouch_for_corpus(proc)
    cache = tmp_path / "cache"
    meta = ensure_cache(cache, tok_dir, proc, 64, True, progress=False, log=lambda *_: None)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    specials = {tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens}
    assert len(specials) >= 3  # <|endoftext|>, <|pad|>, era tokens
    toks, offs = load_tokens(cache, "train"), load_offsets(cache, "train")
    ids = toks[offs[0]:offs[1]].tolist()
    assert ids[0] == tok.convert_tokens_to_ids("<|1700s|>") and ids[-1] == tok.eos_token_id
    assert not specials & set(ids[1:-1]), "text became a control token"
    assert tok.decode(ids[1:-1]) == doc.read_text(encoding="utf-8")
    eots = int((np.asarray(toks) == tok.eos_token_id).sum())
    assert eots == meta["splits"]["train"]["documents"]  # one boundary per document, no more


# --------------------------------------------------------------------------- a stopped build
def test_a_stopped_build_resumes_at_its_last_checkpoint(micro_root, tmp_path, monkeypatch):
    """Killed mid-split, the next build keeps what the last checkpoint vouched for, encodes
    only the rest, and ends with the cache an uninterrupted build makes."""
    import londonlm.tokens.cache as tc

    root = fresh_copy(micro_root, tmp_path)
    tok_dir, proc = paths(root)
    whole = ensure_cache(tmp_path / "whole", tok_dir, proc, 64, True, progress=False, log=lambda *_: None)
    n_train = whole["splits"]["train"]["documents"]
    assert n_train >= 4
    monkeypatch.setattr(tc, "CHECKPOINT_BYTES", 1)  # a checkpoint after every document
    encoded: list[int] = []
    real_write = tc._SplitWriter.write

    def write_then_die(self, ids):
        real_write(self, ids)
        encoded.append(len(ids))
        if len(encoded) == 3:
            self.f.write(b"\x01\x02")  # a torn write after the checkpoint: must be cut away
            raise KeyboardInterrupt

    monkeypatch.setattr(tc._SplitWriter, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        ensure_cache(tmp_path / "c", tok_dir, proc, 64, True, progress=False, log=lambda *_: None)
    assert not (tmp_path / "c" / "metadata.json").exists() and (tmp_path / "c" / "train.progress.json").exists()
    monkeypatch.setattr(tc._SplitWriter, "write", lambda self, ids: (encoded.append(len(ids)), real_write(self, ids)))
    logs: list[str] = []
    meta = ensure_cache(tmp_path / "c", tok_dir, proc, 64, True, progress=False, log=logs.append)
    assert any("resuming at document 3" in m for m in logs), logs
    assert len(encoded) == n_train + whole["splits"]["validation"]["documents"]  # nothing encoded twice
    assert meta["splits"] == whole["splits"]
    for split in ("train", "validation"):
        assert np.array_equal(load_tokens(tmp_path / "c", split), load_tokens(tmp_path / "whole", split))
        assert np.array_equal(load_offsets(tmp_path / "c", split), load_offsets(tmp_path / "whole", split))
    assert not list((tmp_path / "c").glob("*.progress.json")) and not list((tmp_path / "c").glob("*.tmp"))


def test_a_stopped_build_for_another_tokenizer_starts_over(micro_root, tmp_path, monkeypatch):
    import londonlm.tokens.cache as tc

    root = fresh_copy(micro_root, tmp_path)
    tok_dir, proc = paths(root)
    monkeypatch.setattr(tc, "CHECKPOINT_BYTES", 1)
    real_write = tc._SplitWriter.write
    calls: list[int] = []

    def die_at_two(self, ids):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_write(self, ids)

    monkeypatch.setattr(tc._SplitWriter, "write", die_at_two)
    with pytest.raises(KeyboardInterrupt):
        ensure_cache(tmp_path / "c", tok_dir, proc, 64, True, progress=False, log=lambda *_: None)
    monkeypatch.setattr(tc._SplitWriter, "write", real_write)
    logs: list[str] = []
    ensure_cache(tmp_path / "c", tok_dir, proc, 128, True, progress=False, log=logs.append)  # other settings
    assert not any("resuming" in m for m in logs)
    fresh = ensure_cache(tmp_path / "d", tok_dir, proc, 128, True, progress=False, log=lambda *_: None)
    assert np.array_equal(load_tokens(tmp_path / "c", "train"), load_tokens(tmp_path / "d", "train"))
    assert fresh["splits"]["train"]["tokens"] == len(load_tokens(tmp_path / "c", "train"))


def test_reading_the_cache_keeps_no_mapped_pages_resident(tmp_path):
    """Blocks and chunk checks are read with pread: reading every block of a 32 MiB split
    leaves the process's resident memory where it was (a memory map kept every page it touched)."""
    from londonlm.tokens.chunks import CheckedTokens, ChunkSums

    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

    tokens = np.random.default_rng(0).integers(0, 4096, size=16 << 20, dtype=np.uint16)
    path = tmp_path / "train.bin"
    tokens.tofile(path)
    sums = ChunkSums()
    sums.update(tokens.tobytes())
    ct = CheckedTokens(path, len(tokens), sums.finish(), sums.chunk_bytes)
    del tokens
    before = rss_mib()
    total = 0
    for start in range(0, len(ct), 1 << 14):
        total += int(ct[start:start + 128][0])
    assert ct.verified.all() and ct._map is None
    assert rss_mib() - before < 8, "the split's pages stayed resident"
    assert np.array_equal(ct[5:9], np.fromfile(path, dtype=np.uint16)[5:9])


@pytest.mark.slow
def test_a_build_killed_by_sigkill_resumes(micro_root, tmp_path):
    """A real kill (SIGKILL, no cleanup) mid-build: the next build resumes from the last
    checkpoint and gives the cache an uninterrupted build gives."""
    import signal
    import subprocess
    import sys
    import time

    root = fresh_copy(micro_root, tmp_path)
    tok_dir, proc = paths(root)
    rows = [json.loads(x) for x in (proc / "manifest.jsonl").read_text().splitlines()]
    many = []
    for i in range(400):  # the micro corpus 400 times over: a build of a few seconds
        for r in rows:
            many.append({**r, "id": f"{r['id']}-{i}"})
    (proc / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in many))
    vouch_for_corpus(proc)
    build = ("import sys; import londonlm.tokens.cache as tc; tc.CHECKPOINT_BYTES = 1 << 14; "
             "from pathlib import Path; tc.ensure_cache(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), 64, "
             "True, progress=False)")
    p = subprocess.Popen([sys.executable, "-c", build, str(tmp_path / "c"), str(tok_dir), str(proc)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state = tmp_path / "c" / "train.progress.json"
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if state.exists() and json.loads(state.read_text() or "{}").get("docs", 0) > 200:
            break
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    logs: list[str] = []
    meta = ensure_cache(tmp_path / "c", tok_dir, proc, 64, True, progress=False, log=logs.append)
    assert any("resuming at document" in m for m in logs), logs
    whole = ensure_cache(tmp_path / "w", tok_dir, proc, 64, True, progress=False, log=lambda *_: None)
    assert meta["splits"] == whole["splits"]
    for split in ("train", "validation"):
        assert np.array_equal(load_tokens(tmp_path / "c", split), load_tokens(tmp_path / "w", split))
