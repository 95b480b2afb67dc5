"""benchmarks/startup.py: --help timed in this tree and a reference commit's, side by side."""
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "startup.py"
needs_git = pytest.mark.skipif(not shutil.which("git") or not (REPO / ".git").exists(), reason="not a git checkout")


@needs_git
def test_both_trees_timed_in_one_run_and_the_worktree_removed():
    before = subprocess.run(["git", "worktree", "list"], cwd=REPO, capture_output=True, text=True).stdout
    r = subprocess.run([sys.executable, str(SCRIPT), "--reference", "HEAD", "--runs", "2",
                        "--scripts", "10_scripts/run_grid.py"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith("| 10_scripts/run_grid.py |"))
    ref_s, ours_s, ratio = (cell.strip() for cell in row.split("|")[2:5])
    assert float(ref_s) > 0 and float(ours_s) > 0 and ratio.endswith("x")
    assert "median of 2" in r.stdout and "CPUs, python" in r.stdout  # the machine named beside the figures
    assert subprocess.run(["git", "worktree", "list"], cwd=REPO, capture_output=True, text=True).stdout == before


@needs_git
@pytest.mark.parametrize("argv, says", [(["--reference", "HEAD", "--scripts", "nope/*.py"], "error: no script matches"),
                                        (["--reference", "no-such-commit"], "error: --reference no-such-commit: ")])
def test_a_bad_request_is_one_error_line(argv, says):
    r = subprocess.run([sys.executable, str(SCRIPT), "--runs", "1", *argv], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith(says) and len(r.stderr.strip().splitlines()) == 1, r.stderr
