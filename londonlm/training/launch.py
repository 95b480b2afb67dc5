"""torchrun, with a one-line ending when the job is preempted.

``launch_training.sh`` runs ``python -m londonlm.training.launch --run_dir DIR --resume_hint CMD --
<torchrun arguments>``. torchrun itself does all the work (rendezvous, one process per rank,
signal forwarding, the shutdown grace before SIGKILL); this wrapper only turns the agent's
``SignalException`` traceback, raised after every rank has received the signal and saved its
checkpoint, into one line that names the checkpoint and the command that resumes it; and,
when OMP_NUM_THREADS is unset, shares this node's usable cores among its ranks (torchrun
would give each rank one thread).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from ..core import RunLayout, StageParser


def stop_message(run_dir: Path, sig: int, resume_hint: str) -> str:
    """The line printed when torchrun was stopped by ``sig``."""
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
    ck = RunLayout(Path(run_dir)).latest_valid_checkpoint(warn=lambda *_: None)
    if ck is None:
        return f"training stopped by {name}; no valid checkpoint in {run_dir} yet"
    return f"training stopped by {name}; checkpoint saved in {ck}; resume with: {resume_hint}"


def threads_per_rank(torchrun_args: list[str], environ=os.environ) -> str | None:
    """OMP_NUM_THREADS for the ranks when the user set none: this node's usable cores shared
    among its ranks. torchrun would otherwise set 1 for every rank, leaving CPU ranks on a
    many-core node one core each."""
    if environ.get("OMP_NUM_THREADS"):
        return None
    nproc = 1
    for i, a in enumerate(torchrun_args):
        if a.startswith("--nproc_per_node=") or a.startswith("--nproc-per-node="):
            nproc = a.split("=", 1)[1]
        elif a in ("--nproc_per_node", "--nproc-per-node") and i + 1 < len(torchrun_args):
            nproc = torchrun_args[i + 1]
    try:
        nproc = max(1, int(nproc))
    except ValueError:  # "gpu", "auto": leave it to torchrun
        return None
    from ..core import usable_cores

    return str(max(1, usable_cores() // nproc))


def main(argv: list[str] | None = None) -> int:
    p = StageParser(prog="python -m londonlm.training.launch",
                    description="torchrun with a one-line message on preemption")
    p.add_argument("--run_dir", required=True, help="the run folder (for the checkpoint message)")
    p.add_argument("--resume_hint", default="the same command",
                   help="the command that resumes the run")
    p.add_argument("torchrun_args", nargs=argparse.REMAINDER,
                   help="everything after -- goes to torchrun unchanged")
    a = p.parse_args(argv)
    rest = a.torchrun_args[1:] if a.torchrun_args[:1] == ["--"] else a.torchrun_args
    threads = threads_per_rank(rest)
    if threads:
        os.environ["OMP_NUM_THREADS"] = threads
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun

    try:
        torchrun(rest)
    except SignalException as e:
        print(stop_message(Path(a.run_dir), int(e.sigval), a.resume_hint), file=sys.stderr)
        return 128 + int(e.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
