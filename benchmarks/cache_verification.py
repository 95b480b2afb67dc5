#!/usr/bin/env python3
"""What checking every byte of the token cache costs: the per-chunk CRC-32s at build time, and
one training epoch's block reads through the checked reader vs the bare memory map.

    python benchmarks/cache_verification.py --work /tmp/londonlm_tok_bench

Uses the processed shared corpus and the project tokenizer that
``benchmarks/tokenizer_quality.py --work WORK`` leaves under WORK (run that first); builds the
token cache there once (context 1024, era tokens on). An epoch = every 1,024-token block read
once in a shuffled order, page cache warm; medians of ``--runs`` alternated runs, each checked
run with a fresh reader (nothing verified yet).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np



def epoch(tokens, order: np.ndarray, block: int) -> float:
    t0 = time.perf_counter()
    for i in order:
        np.asarray(tokens[i * block:(i + 1) * block], dtype=np.int64)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/londonlm_tok_bench")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--block", type=int, default=1024)
    a = p.parse_args(argv)
    import config
    from londonlm.tokens.cache import ensure_cache, load_checked_tokens, load_tokens
    from londonlm.tokens.chunks import ChunkSums

    work = Path(a.work)
    cache = work / "cache"
    t0 = time.perf_counter()
    meta = ensure_cache(cache, work / "ours", config.get_layout(work / "root").processed_dir, a.block,
                        True, progress=False, log=lambda *_: None)
    build_s = time.perf_counter() - t0
    data = (cache / "train.bin").read_bytes()
    sums_s = []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        s = ChunkSums()
        for i in range(0, len(data), 1 << 16):  # as the builder feeds it: a document at a time
            s.update(data[i:i + (1 << 16)])
        s.finish()
        sums_s.append(time.perf_counter() - t0)
    bare = load_tokens(cache, "train")
    order = np.random.default_rng(0).permutation(len(bare) // a.block)
    t_bare, t_checked, t_open = [], [], []
    for _ in range(a.runs):
        t_bare.append(epoch(bare, order, a.block))
        t0 = time.perf_counter()
        checked = load_checked_tokens(cache, "train")
        t_open.append(time.perf_counter() - t0)
        t_checked.append(epoch(checked, order, a.block))
        assert checked.verified.all()
    med = statistics.median
    mb = len(data) / 2**20
    print(f"train.bin {mb:.1f} MiB ({len(data) // 2:,} tokens, {len(meta['splits']['train']['chunk_crc32'])} "
          f"chunks); cache build {build_s:.1f} s")
    print(f"chunk CRC-32s at build: {med(sums_s) * 1e3:.1f} ms ({mb / med(sums_s):.0f} MiB/s)")
    print(f"open checked reader: {med(t_open) * 1e3:.2f} ms")
    print(f"epoch of {len(order):,} blocks: bare memmap {med(t_bare) * 1e3:.1f} ms, checked "
          f"{med(t_checked) * 1e3:.1f} ms (+{(med(t_checked) - med(t_bare)) * 1e3:.1f} ms, "
          f"{(med(t_checked) - med(t_bare)) * 1e6 / len(order):.1f} us/block); runs "
          f"{', '.join(f'{x * 1e3:.0f}' for x in t_checked)} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
