"""The suite's ``-n`` workers share the CPUs: each one's torch, and each script a test starts,
gets its share of threads, not every core (two workers of two threads each on 2 cores ran the
training tests ~30% slower than of one thread each)."""
from __future__ import annotations

import os

import pytest

import conftest
from londonlm.core import hardware


@pytest.mark.parametrize("cores, workers, threads", [(2, "2", "1"), (4, "4", "1"), (8, "4", "2"), (3, "2", "1"),
                                                     (1, "2", "1")])
def test_a_worker_gets_its_share_of_the_cores(monkeypatch, cores, workers, threads):
    monkeypatch.setattr(hardware, "usable_cores", lambda: cores)
    assert conftest._threads_per_worker({"PYTEST_XDIST_WORKER_COUNT": workers}) == threads


def test_outside_a_worker_or_when_the_user_chose_nothing_is_set():
    assert conftest._threads_per_worker({}) is None
    assert conftest._threads_per_worker({"PYTEST_XDIST_WORKER_COUNT": "2", "OMP_NUM_THREADS": "3"}) is None


@pytest.mark.skipif(conftest._threads is None, reason="not a -n worker, or OMP_NUM_THREADS was set by the user")
def test_this_workers_torch_uses_its_share():
    import torch

    share = max(1, hardware.usable_cores() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    assert os.environ["OMP_NUM_THREADS"] == str(share)
    assert torch.get_num_threads() == share    # set before torch loaded, so its pool obeys it
