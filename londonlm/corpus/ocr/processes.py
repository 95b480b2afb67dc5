"""The processes of the JSONL repair stage: no more workers than the machine has CPUs, workers
that die with their parent, a pool stopped at once when the run ends early, and SIGTERM an
error like any other (so the output's temporary file goes with the run).

``--workers 10000`` started 1,237 processes and finished nothing in 200 s; ``kill -9`` of the
command left its workers running (their parent PID 1, busy a minute later), and SIGTERM left a
temporary file beside the output.

SIGTERM (and Ctrl-C, as KeyboardInterrupt) is raised where the main thread stands, except while
it deals with a pool (starting its workers, handing it work, waiting on it): there an exception
can land between two halves of the pool's own bookkeeping (a worker forked, not yet in the pool's
list: never killed, and the run, its error line printed, hung at exit joining it; one SIGTERM in
~45 under load). There the signal is noted (:func:`stops_deferred`) and raised at the next point
the pool is whole, within ``POLL_SECONDS``.
"""
from __future__ import annotations

import gc
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from ...core import die_with_parent as end_with_parent
from ..manifest import CorpusError


class Terminated(CorpusError):
    """The run was sent SIGTERM; nothing was written."""


class WorkerDied(CorpusError):
    """A worker process of the pool died while the run needed it: killed from outside (the
    system's out-of-memory killer, ``kill -9`` of one worker). The pool says only that it is
    broken (``BrokenProcessPool``, a traceback); the run ends as after any error, the pool
    stopped, what it was writing removed."""


TERMINATED = "terminated (SIGTERM): nothing written, the temporary output removed"
WORKER_DIED = ("a repair worker process died (killed from outside it: the system's out-of-memory killer, or "
               "kill -9): nothing written, the temporary output removed; run again (with fewer --workers if "
               "memory ran short)")
POLL_SECONDS = 0.2  # (how soon a stop noted while waiting on a pool ends the run)


class _Stop:
    """Where a stop (SIGTERM, Ctrl-C) under :func:`sigterm_as_error` stands: ``deferring`` (blocks
    of :func:`stops_deferred` open) and ``pending`` (the exception of one that came meanwhile)."""
    deferring = 0
    pending: BaseException | None = None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: taskset, a batch system's binding)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def bounded_workers(requested: int) -> int:
    """``requested`` worker processes, at most one per usable CPU: more only wait their turn, each
    holding its own copy of the lexicon (thousands never finish starting)."""
    return max(1, min(requested, usable_cpus()))


def die_with_parent(parent: int) -> None:
    """In a worker: be killed when ``parent`` dies, however it dies (:func:`londonlm.core.die_with_parent`);
    leave SIGTERM and Ctrl-C to the parent, which stops the pool itself."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (a fork's copy of the parent's handler is not ours)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with_parent(parent)


def start_worker(parent: int) -> None:
    """A worker's start: :func:`die_with_parent`, and what it shares with the parent (the lexicon's
    and the walk's tables, forked) put out of the cyclic collector's reach (``gc.freeze``): each
    full collection walked them all again, and wrote to the pages the fork shares until written."""
    die_with_parent(parent)
    gc.freeze()


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop ``pool`` now: nothing more started, its workers killed (a row may take minutes:
    waiting for it would keep a stopped run alive)."""
    pool.shutdown(wait=False, cancel_futures=True)
    processes = list((getattr(pool, "_processes", None) or {}).values())  # (the executor's own list)
    for p in processes:
        if p.is_alive():
            p.kill()
    for p in processes:
        p.join(5)
    # the pool's own thread closes its wake-up pipe once it sees the workers gone; an exit before
    # that races it (the interpreter's exit hook wrote to the pipe as it closed: a traceback after
    # the run's one error line, seen under load once two pools ran in one command)
    thread = getattr(pool, "_executor_manager_thread", None)
    if thread is not None:
        thread.join(5)


def batches(items: Iterable[Any], size: int, measure: Callable[[Any], int]) -> Iterator[list[Any]]:
    """Consecutive items, as many as make ``size`` by ``measure`` (one at least): what a worker is
    handed at a time."""
    batch: list[Any] = []
    held = 0
    for item in items:
        batch.append(item)
        held += measure(item)
        if held >= size:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


_HELD: Any = None  # (in a worker of forked_map: what it shares with its parent)


def _hold(shared: Any, parent: int) -> None:
    global _HELD
    start_worker(parent)
    _HELD = shared  # (forked: the parent's object itself, its tables shared, not pickled)


def _call(fn: Callable[[Any, Any], Any], chunk: Any) -> Any:
    return fn(_HELD, chunk)


def forked_map(fn: Callable[[Any, Any], Any], shared: Any, chunks: Iterable[Any], workers: int) -> list[Any]:
    """``fn(shared, chunk)`` of each chunk, in the chunks' order, on ``workers`` forked processes
    (one per CPU at most) that hold ``shared`` as the parent had it (a repairer with its lexicon:
    forked, not pickled); ``fn`` a module's function. The pool is stopped at once if the run ends
    early (SIGTERM too: :func:`sigterm_as_error`)."""
    pool = ProcessPoolExecutor(bounded_workers(workers), initializer=_hold, initargs=(shared, os.getpid()))
    with sigterm_as_error():
        try:
            futures = [submit(pool, _call, fn, chunk) for chunk in chunks]
            out = [result_of(f) for f in futures]
        except BaseException:  # (SIGTERM, Ctrl-C, a worker's error)
            stop_pool(pool)
            raise
    pool.shutdown()
    return out


@contextmanager
def sigterm_as_error() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread while the block runs, and Ctrl-C
    KeyboardInterrupt as always (at once, or where :func:`stops_deferred` holds them, at its next
    check), so what the block was writing is cleaned up as after any error (one line, exit 2; Ctrl-C
    130); a second SIGTERM during that clean-up is ignored. Elsewhere than in the main thread:
    nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(error: BaseException) -> None:
        if _Stop.deferring:
            _Stop.pending = _Stop.pending or error
        else:
            raise error

    def terminated(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop(Terminated(TERMINATED))

    def interrupted(signum, frame):
        stop(KeyboardInterrupt())

    before = {signal.SIGTERM: signal.signal(signal.SIGTERM, terminated)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # (not one ignored: nohup, `&`)
        before[signal.SIGINT] = signal.signal(signal.SIGINT, interrupted)
    _Stop.pending = None
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        _Stop.pending = None


def raise_if_stopped() -> None:
    """The exception of a stop noted under :func:`stops_deferred`, if one came."""
    error, _Stop.pending = _Stop.pending, None
    if error is not None:
        raise error


@contextmanager
def stops_deferred() -> Iterator[None]:
    """While the block runs, a stop is only noted (see the module's doc): raised by
    :func:`raise_if_stopped` or as the block ends. For the main thread's dealings with a pool,
    whose locks and lists its other threads share. Elsewhere than in the main thread (where no
    signal handler runs): nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _Stop.deferring += 1
    try:
        yield
    finally:
        _Stop.deferring -= 1
    raise_if_stopped()


def submit(pool: ProcessPoolExecutor, fn: Callable[..., Any], *args: Any,
           when_done: Callable[[Future], None] | None = None) -> Future:
    """``pool.submit(fn, *args)``, with ``when_done`` its done callback, with stops deferred (the
    first submission forks the workers; the callback of a future already done runs here, under
    the future's lock); a pool broken by a worker that died: :class:`WorkerDied`."""
    with stops_deferred():
        try:
            future = pool.submit(fn, *args)
        except BrokenProcessPool:  # (a worker died since the last result was waited for)
            raise WorkerDied(WORKER_DIED) from None
        if when_done is not None:
            future.add_done_callback(when_done)
    return future


def result_of(future: Future, died: str = WORKER_DIED) -> Any:
    """``future.result()``, waited for with stops deferred and checked every ``POLL_SECONDS``; a
    worker that died meanwhile (its pool broken) is :class:`WorkerDied` saying ``died``."""
    with stops_deferred():
        while not wait([future], POLL_SECONDS, return_when=FIRST_COMPLETED).done:
            raise_if_stopped()
    try:
        return future.result()
    except BrokenProcessPool:
        raise WorkerDied(died) from None
