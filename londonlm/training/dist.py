"""One training process among many: its place in a torchrun job, the small collectives that make
every run-level decision the same on every rank, the log that prints once per job, and the
error every training set-up problem raises.

A decision one rank takes alone (stop now: its own clock, its own signal handler) while the
others go on is a hang: they wait in the next gradient all-reduce for a rank that has left.
So each rank proposes and :func:`agree` combines the proposals with one all-reduce (MAX) of a
few integers. It runs on a gloo group of its own: on an NCCL job the integers still travel
between host processes, and agreeing never forces a GPU synchronisation. Gloo picks its network
interface from the host name; where that is the wrong one, GLOO_SOCKET_IFNAME names the right
one (:data:`INTERFACE_HINT`, in the error).

Outside torchrun (or before the process group exists) every function here is a no-op.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta

from ..core import LondonLMError

# How long a rank waits for rank 0 to build what all of them need (the token cache): far
# beyond the process group's usual timeout, as a large corpus takes a while to encode.
WAIT_FOR_RANK0 = timedelta(days=2)

_groups: dict[str, object] = {}

# What every failed rendezvous says: on clusters with several network interfaces the processes of
# a job can pick different ones (torchrun's store, the gloo group the ranks agree on, NCCL's
# bootstrap), and then never meet
INTERFACE_HINT = ("on nodes with several network interfaces (InfiniBand clusters), set GLOO_SOCKET_IFNAME "
                  "and NCCL_SOCKET_IFNAME to the one the nodes reach each other on (e.g. ib0 or eth0; "
                  "`ip -br addr` lists them)")


class TrainingError(LondonLMError, RuntimeError):
    """A training set-up problem the user can fix; the message says how."""


def _launch_number(name: str, default: int, environ=os.environ) -> int:
    """A whole number torchrun sets for each process it starts (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``): one left in a shell as junk was an ``int()`` traceback at the first log line."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise TrainingError(f"${name} is {raw!r}, not a whole number: torchrun sets it for each process it "
                            f"starts; unset it to train in one process, or launch with torchrun") from None


def rank() -> int:
    """This process's global rank. ``RANK`` must lie in [0, ``WORLD_SIZE``): a stale ``RANK=1``
    outside torchrun (which the Trainer, reading ``LOCAL_RANK``, runs as a single process) made
    every rank-0 duty skipped here, the run lock among them, without a word; now one line."""
    r, n = _launch_number("RANK", 0), world_size()
    if not 0 <= r < n:
        raise TrainingError(f"$RANK is {r} but $WORLD_SIZE is {n}{'' if 'WORLD_SIZE' in os.environ else ' (unset)'}: "
                            f"a rank lies in 0..WORLD_SIZE-1; unset RANK to train in one process, or launch "
                            f"with torchrun, which sets both")
    return r


def world_size() -> int:
    n = _launch_number("WORLD_SIZE", 1)
    if n < 1:
        raise TrainingError(f"$WORLD_SIZE is {n}: a job has at least one process; unset it to train in one "
                            f"process, or launch with torchrun")
    _check_local_rank(_launch_number("LOCAL_RANK", -1), n)
    return n


def _check_local_rank(local: int, n: int) -> None:
    """``LOCAL_RANK`` (read by the Trainer: junk there was its own int() error) as torchrun sets
    it: beside ``WORLD_SIZE``, below it. One left in a shell alone made the Trainer start a
    process group that waits for peers: accelerate's "MASTER_ADDR expected" line, which names
    neither variable. -1 is the Trainer's own "not distributed"."""
    if local == -1:
        return
    if not os.environ.get("WORLD_SIZE", "").strip():
        raise TrainingError(f"$LOCAL_RANK is {local} but $WORLD_SIZE is unset: torchrun sets both for each "
                            f"process it starts; unset LOCAL_RANK to train in one process, or launch with torchrun")
    if not 0 <= local < n:
        raise TrainingError(f"$LOCAL_RANK is {local} but $WORLD_SIZE is {n}: a rank lies in 0..WORLD_SIZE-1; "
                            f"unset LOCAL_RANK to train in one process, or launch with torchrun, which sets both")


def is_main_process() -> bool:
    """Rank 0 of a torchrun job (or the only process)."""
    return rank() == 0


def log(msg: str) -> None:
    """Print once per job, not once per rank."""
    if is_main_process():
        print(msg, flush=True)


def _dist():
    """``torch.distributed`` when this process is one of several in an initialised group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def _group(name: str, timeout: timedelta | None = None):
    """A gloo group, created on first use. Creating a group is itself collective: every
    rank reaches the first use of ``name`` at the same point of the run."""
    dist = _dist()
    if name not in _groups:
        kw = {"timeout": timeout} if timeout else {}
        try:
            _groups[name] = dist.new_group(backend="gloo", **kw)
        except (RuntimeError, dist.DistError) as e:  # gloo could not connect the ranks
            first = " ".join(str(e).split())[:300]
            raise LondonLMError(f"the ranks could not open the gloo group they agree on ({first}): "
                                f"{INTERFACE_HINT}") from None
    return _groups[name]


def agree(values: list[int], group: str = "control") -> list[int]:
    """Element-wise maximum of ``values`` over all ranks (``values`` itself when alone)."""
    dist = _dist()
    if dist is None:
        return list(values)
    import torch

    t = torch.tensor([int(v) for v in values], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_group(group))
    return t.tolist()


def barrier() -> None:
    """Every rank reaches this point before any goes on."""
    agree([0])


@contextmanager
def rank0_first(what: str):
    """Rank 0 runs the body; the others wait for it (however long it takes), then run it
    themselves and find rank 0's result. If rank 0 fails, they stop with an error instead
    of waiting for ever or redoing the work."""
    dist = _dist()
    if dist is None:
        yield
        return
    _group("wait", WAIT_FOR_RANK0)
    if rank() == 0:
        failed = 1
        try:
            yield
            failed = 0
        finally:
            agree([failed], "wait")
    else:
        if agree([0], "wait")[0]:
            raise LondonLMError(f"rank 0 failed while {what}; its error is above")
        yield


def same_on_all_ranks(value: int, what: str) -> None:
    """Refuse to go on when ranks see different values of ``value`` (e.g. the checkpoint to
    resume: nodes that do not share the run folder)."""
    lo, hi = agree([-value, value])
    if -lo != hi:
        raise LondonLMError(f"ranks disagree on {what} ({-lo} on one, {hi} on another): every "
                            f"node must see the same run folder (a shared filesystem)")
