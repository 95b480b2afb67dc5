#!/usr/bin/env python3
"""How long each stage script takes to answer ``--help``: its start-up before any work, what a
refused flag waits for too. This tree and a reference commit's, side by side in one run: the
reference checked out in a temporary git worktree, both run by this Python, the runs interleaved
(reference, this tree, then the next script), the median of ``--runs`` each.

    python benchmarks/startup.py --reference e0109c6 --runs 5

Each script puts its own tree's root first on ``sys.path``, so each imports its own ``londonlm``
(checked before timing).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import cpu_description  # noqa: E402  (names the CPU family/model)

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = "[01][0-9]_*/*.py"


def die(message: str):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


@contextmanager
def worktree(rev: str):
    """``rev`` checked out in a temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp) / "reference"
        r = subprocess.run(["git", "worktree", "add", "--detach", "-q", str(where), rev], cwd=REPO,
                           capture_output=True, text=True)
        if r.returncode:
            die(f"--reference {rev}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'git worktree failed'}")
        try:
            yield where
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=REPO, check=False)


def own_package(tree: Path) -> None:
    """Refuse to time a tree whose scripts would import another tree's ``londonlm``."""
    code = f"import sys; sys.path.insert(0, {str(tree)!r}); import londonlm; print(londonlm.__file__)"
    where = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        die(f"{tree} imports londonlm from {where}")


def help_seconds(script: Path, scratch: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, str(script), "--help"], cwd=scratch, capture_output=True, text=True,
                       env={**os.environ, "LONDONLM_ROOT": str(scratch)})
    seconds = time.perf_counter() - t
    if r.returncode:
        die(f"{script} --help exited {r.returncode}: {r.stderr[-300:]}")
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", default="HEAD~1", help="the commit to race (default HEAD~1)")
    ap.add_argument("--runs", type=int, default=5, help="runs of each script in each tree (median)")
    ap.add_argument("--scripts", default=SCRIPTS, help=f"which scripts, a glob from the root (default {SCRIPTS})")
    a = ap.parse_args()
    times: dict[str, dict[str, list[float]]] = {}
    with worktree(a.reference) as ref, tempfile.TemporaryDirectory() as scratch:
        trees = {"reference": ref, "this tree": REPO}
        for tree in trees.values():
            own_package(tree)
        names = sorted(str(p.relative_to(REPO)) for p in REPO.glob(a.scripts) if (ref / p.relative_to(REPO)).exists())
        if not names:
            die(f"no script matches {a.scripts!r} in both trees")
        for run in range(a.runs):
            for name in names:
                for label, tree in trees.items():
                    times.setdefault(name, {}).setdefault(label, []).append(help_seconds(tree / name, Path(scratch)))
            print(f"run {run + 1} of {a.runs} done", file=sys.stderr, flush=True)
    print(f"`python benchmarks/startup.py --reference {a.reference} --runs {a.runs}` ({date.today()}; "
          f"{cpu_description()}); seconds to answer --help, median of {a.runs}:\n")
    print("| script | reference | this tree | ratio |\n|---|---|---|---|")
    for name, t in sorted(times.items(), key=lambda kv: -statistics.median(kv[1]["reference"])):
        ref_s, ours_s = statistics.median(t["reference"]), statistics.median(t["this tree"])
        print(f"| {name} | {ref_s:.2f} | {ours_s:.2f} | {ref_s / ours_s:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
