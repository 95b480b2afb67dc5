"""A lock file that names its live holder, a worker that ends with its parent, and a command
run to a log whose whole session is stopped at its time limit."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from londonlm.core.processes import ORPHAN_EXIT, die_with_parent, hold, holder_pid, run_to_log


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


def test_a_command_run_to_a_log_gives_its_exit_code(tmp_path):
    log = tmp_path / "logs" / "a.log"
    assert run_to_log([sys.executable, "-c", "print('hi'); raise SystemExit(3)"], log, 60, prompt="$ ") == 3
    lines = log.read_text().splitlines()
    assert lines[0].startswith("$ ") and sys.executable in lines[0] and lines[1] == "hi"


def test_past_its_limit_the_whole_session_is_stopped(tmp_path):
    # a parent that ignores SIGTERM and a child it started: both go (the child by the group's
    # SIGTERM, the parent by SIGKILL after the grace period), and None says it timed out
    pid_file = tmp_path / "child.pid"
    code = (f"import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pid_file)!r}, 'w').write(str(c.pid)); print('started', flush=True); time.sleep(60)")
    t0 = time.monotonic()
    assert run_to_log([sys.executable, "-c", code], tmp_path / "b.log", 2, grace=1) is None
    assert time.monotonic() - t0 < 30
    child = int(pid_file.read_text())
    for _ in range(50):
        if _gone(child):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the child {child} outlived the session")
    assert "started" in (tmp_path / "b.log").read_text()


def _gone(pid: int) -> bool:
    """Ended: no such process, or a zombie that an init which never reaps would keep listed."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return True
