"""torchrun, with a one-line ending when the job is preempted.

``launch_training.sh`` runs ``python -m londonlm.training.launch --run_dir DIR --resume_hint CMD --
<torchrun arguments>``. torchrun itself does all the work (rendezvous, one process per rank,
signal forwarding, the shutdown grace before SIGKILL); this wrapper only turns the agent's
``SignalException`` traceback, raised after every rank has received the signal and saved its
checkpoint, into one line that names the checkpoint and the command that resumes it; and,
when OMP_NUM_THREADS is unset, shares this node's usable cores among its ranks (torchrun
would give each rank one thread). Before any rank starts, a machine that shows GPUs this
torch cannot use is refused with one line (N ranks would otherwise train on the CPU with gloo);
nodes that never meet, and a rank that fails, end in one ``error:`` line too, not torchrun's
traceback.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from ..core import GpuUnusable, RunLayout, StageParser, require_usable_gpus, usable_cores
from .dist import INTERFACE_HINT


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
    return str(max(1, usable_cores() // nproc))


def cpu_on_purpose(args: list[str]) -> bool:
    """The training flags ask for the CPU (``--use_cpu true``, ``--use_cpu=1``...)."""
    for i, a in enumerate(args):
        value = a.split("=", 1)[1] if a.startswith("--use_cpu=") else (
            args[i + 1] if a == "--use_cpu" and i + 1 < len(args) else None)
        if value is not None and value.lower() in ("true", "1", "yes", "y", "t"):
            return True
    return False


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
    if not cpu_on_purpose(rest):
        try:
            require_usable_gpus()
        except GpuUnusable as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    threads = threads_per_rank(rest)
    if threads:
        os.environ["OMP_NUM_THREADS"] = threads
    from torch.distributed import DistError
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(rest)
    except SignalException as e:
        print(stop_message(Path(a.run_dir), int(e.sigval), a.resume_hint), file=sys.stderr)
        return 128 + int(e.sigval)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        print(f"error: training failed on rank {rank} (exit code {failure.exitcode}); that rank's "
              f"own error is above", file=sys.stderr)
        return 2 if failure.exitcode == 2 else 1
    except (RendezvousError, DistError) as e:
        print(f"error: {rendezvous_failure(e, rest)}", file=sys.stderr)
        return 2
    return 0


def rendezvous_failure(error: BaseException, torchrun_args: list[str]) -> str:
    """One line: why the nodes did not meet, where they were to meet, what to check."""
    where = {k: v for k, v in (a[2:].split("=", 1) for a in torchrun_args
                               if a.startswith(("--master_addr=", "--master_port=", "--nnodes=")))}
    first = (" ".join(str(error).split()) or type(error).__name__)[:300]
    return (f"the training processes could not meet ({type(error).__name__}: {first}). Check that every "
            f"node runs the launcher with the same NNODES ({where.get('nnodes', '1')}) and reaches "
            f"MASTER_ADDR:MASTER_PORT ({where.get('master_addr', '?')}:{where.get('master_port', '?')}), "
            f"and {INTERFACE_HINT}")


if __name__ == "__main__":
    sys.exit(main())
