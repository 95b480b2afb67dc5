"""The suite's own processes (``-n auto`` in pyproject.toml): one per CPU the run may use, at most
four, none besides pytest's own on a single CPU."""
from __future__ import annotations

import os

import conftest
import pytest


@pytest.mark.parametrize("cpus, workers", [(1, 0), (2, 2), (3, 3), (4, 4), (64, 4)])
def test_auto_workers_follow_the_cpus_this_run_may_use(monkeypatch, cpus, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert conftest.pytest_xdist_auto_num_workers(None) == workers


def test_the_default_options_spread_the_suite(pytestconfig):
    assert "-n auto" in " ".join(pytestconfig.getini("addopts"))
