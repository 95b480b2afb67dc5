"""torchrun, with a one-line ending when the job is preempted.

``launch_training.sh`` runs ``python -m londonlm.launch --run_dir DIR --resume_hint CMD --
<torchrun arguments>``. torchrun itself does all the work (rendezvous, one process per rank,
signal forwarding, the shutdown grace before SIGKILL); this wrapper only turns the agent's
``SignalException`` traceback, raised after every rank has received the signal and saved its
checkpoint, into one line that names the checkpoint and the command that resumes it.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from .layout import RunLayout


def stop_message(run_dir: Path, sig: int, resume_hint: str) -> str:
    """The line printed when torchrun was stopped by ``sig``."""
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
    ck = RunLayout(Path(run_dir)).latest_valid_checkpoint(warn=lambda *_: None)
    if ck is None:
        return f"training stopped by {name}; no valid checkpoint in {run_dir} yet"
    return f"training stopped by {name}; checkpoint saved in {ck}; resume with: {resume_hint}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m londonlm.launch",
                                description="torchrun with a one-line message on preemption")
    p.add_argument("--run_dir", required=True, help="the run folder (for the checkpoint message)")
    p.add_argument("--resume_hint", default="the same command",
                   help="the command that resumes the run")
    p.add_argument("torchrun_args", nargs=argparse.REMAINDER,
                   help="everything after -- goes to torchrun unchanged")
    a = p.parse_args(argv)
    rest = a.torchrun_args[1:] if a.torchrun_args[:1] == ["--"] else a.torchrun_args
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
