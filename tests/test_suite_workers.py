"""The suite's own processes (``-n auto`` in pyproject.toml): one per CPU the run may use, at most
four, none besides pytest's own on a single CPU or for the long or GPU tests (``-m slow``, ``-m gpu``)."""
from __future__ import annotations

import os

import conftest
import pytest


@pytest.mark.parametrize("cpus, workers", [(1, 0), (2, 2), (3, 3), (4, 4), (64, 4)])
def test_auto_workers_follow_the_cpus_this_run_may_use(monkeypatch, cpus, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert conftest.pytest_xdist_auto_num_workers(None) == workers


class _Config:
    def __init__(self, markexpr: str):
        self.markexpr = markexpr

    def getoption(self, name, default=None):
        return self.markexpr if name == "markexpr" else default


@pytest.mark.parametrize("markexpr, spread", [("not slow", True), ("", True), ("slow", False),
                                               ("slow and not gpu", False), ("gpu", False),
                                               ("not slow and not gpu", True)])
def test_the_long_tests_and_the_gpus_run_one_at_a_time(monkeypatch, markexpr, spread):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert conftest.pytest_xdist_auto_num_workers(_Config(markexpr)) == (2 if spread else 0)


def test_the_default_options_spread_the_suite(pytestconfig):
    assert "-n auto" in " ".join(pytestconfig.getini("addopts"))
