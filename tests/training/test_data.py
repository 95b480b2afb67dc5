"""The training stream's memory: the block order of an epoch is the one it always was, held as
one compact permutation and handed out in slices, never as a list of the whole epoch; and what
a run is told about how often its steps read the data over."""
from __future__ import annotations

import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

from londonlm.training.data import (Position, RepetitionNote, StreamSampler, epoch_permutation,
                                    stream_blocks)


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


# --------------------------------------------------------------------------- how often the data is read over

def _note(start: int = 0, samples_per_step: int = 32, n_blocks: int = 4767, budgeted: bool = False):
    lines = []
    return RepetitionNote(Position(start, 0, samples_per_step), n_blocks, budgeted, log=lines.append), lines


def test_a_run_that_reads_its_data_over_many_times_is_told_it_may_overfit():
    note, lines = _note()
    note.on_train_begin(None, SimpleNamespace(max_steps=3001), None)  # the H200 race's slm run
    assert note.passes == pytest.approx(3001 * 32 / 4767)
    assert len(lines) == 1 and "20.1 times over" in lines[0] and "may overfit" in lines[0]
    assert "(--num_train_epochs 4: 596 steps)" in lines[0]  # 4 x 4,767 blocks at 32 a step


def test_a_few_passes_are_stated_without_a_warning_and_said_once():
    note, lines = _note()
    note.on_train_begin(None, SimpleNamespace(max_steps=300), None)
    note.note(5000)
    assert len(lines) == 1 and "2.0 times over" in lines[0] and "overfit" not in lines[0]


def test_a_budgeted_run_is_told_when_its_fitter_has_measured_the_pace():
    note, lines = _note(start=4767 * 3, budgeted=True)  # resumed after 3 passes
    note.on_train_begin(None, SimpleNamespace(max_steps=10_000_000), None)  # the budget's cap
    assert lines == []
    note.note(500)  # what BudgetFitCallback measured: 3 passes read, 500 * 32 blocks to go
    assert "6.4 times over" in lines[0] and "may overfit" in lines[0]
    assert "(--num_train_epochs 4: 149 steps)" in lines[0]  # the 4th pass's 4,767 blocks from where it stands
