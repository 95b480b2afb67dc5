"""A lock file that names its live holder, and a worker that ends with its parent."""
from __future__ import annotations

import os
import subprocess

import pytest

from londonlm.core.processes import ORPHAN_EXIT, die_with_parent, hold, holder_pid


def test_a_lock_file_names_its_live_holder_only(tmp_path):
    lock = tmp_path / "out" / ".lock"
    mine = hold(lock)
    assert mine is not None and holder_pid(lock) == os.getpid()
    assert hold(lock) is None and hold(lock, shared=True) is None
    mine.release()
    assert lock.read_text() == "" and holder_pid(lock) is None
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock.write_text(f"{gone.pid}\n")  # what a holder killed with -9 leaves: it names no one
    assert holder_pid(lock) is None
    with hold(lock, shared=True) as a, hold(lock, shared=True) as b:
        assert a is not None and b is not None and hold(lock) is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_worker_whose_parent_is_already_gone_ends_at_once():
    pid = os.fork()
    if pid == 0:  # the worker: told of a parent it no longer has
        die_with_parent(os.getppid() + 1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == ORPHAN_EXIT
