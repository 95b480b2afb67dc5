"""The training stream's memory: the block order of an epoch is the one it always was, held as
one compact permutation and handed out in slices, never as a list of the whole epoch."""
from __future__ import annotations

import tracemalloc

import numpy as np

from londonlm.training.data import StreamSampler, epoch_permutation, stream_blocks


def test_the_block_order_is_numpys_permutation_as_before():
    for n, seed, epoch in ((10, 3, 0), (1000, 42, 2), (70_001, 7, 1)):
        assert np.array_equal(epoch_permutation(n, seed, epoch),
                              np.random.default_rng([seed, epoch]).permutation(n))
    s = StreamSampler(70_001, 5, 69_000, 64)  # a resumed run near an epoch's end: it wraps
    got = list(s)
    assert got == stream_blocks(70_001, 5, 69_000, 69_000 + len(s)).tolist()
    assert got[:1001] == np.random.default_rng([5, 0]).permutation(70_001)[69_000:].tolist()


def test_a_pass_holds_one_compact_permutation_not_the_epoch_as_a_list():
    n = 2_000_000  # a 10 GB corpus at the tiny preset's 128-token blocks holds ~14 M
    s = StreamSampler(n, 1, 0, 32)
    tracemalloc.start()
    it = iter(s)
    first = [next(it) for _ in range(1000)]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert first == epoch_permutation(n, 1, 0)[:1000].tolist()
    # uint32: 4 bytes a block, and one slice as a list; the epoch as a list was ~36 bytes a block
    assert peak < 4 * n + (8 << 20), peak
