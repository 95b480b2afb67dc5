"""The files of the JSONL repair stage (``02_data_collection/repair_ocr.py``): no two of them one
file, outputs written through links and into devices and pipes as they are, and temporary files
that do not outlive their run.

- Two of the named files that are one (``./x``, a symbolic or a hard link: the resolved paths or
  the inodes compared) are refused in one line before anything is written: a report over the
  input or the output would replace it.
- An output is written through a symbolic link to its target (the link stays a link), whole or
  not at all (a temporary file beside the target, renamed over it). A character device or a
  pipe (``/dev/stdout``, a FIFO) is written as it is, streamed: renaming a file over it would
  replace the device node (as root, ``/dev/stdout`` itself). A folder, a block device or a
  socket is refused. A path to an open descriptor (``/dev/stdout``, ``/dev/fd/1``) is a stream
  too, appended to, whatever it leads to (``>> log``: the log kept).
- The temporary file of a run is locked while it is written; one that nobody holds (its run was
  killed with ``kill -9``) is removed by the next run writing the same output.
- An output is held by one run at a time (:func:`output_lock`: an ``flock`` on ``.NAME.lock``
  beside its target, removed at the end): a second run into it is refused in one line.
"""
from __future__ import annotations

import fcntl
import os
import re
import stat
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Iterator, Mapping

from ...core import atomic_writer, flock_holder, is_fd_link, naming, nearest_existing, refuse_file_in_an_artifact
from ..manifest import CorpusError


class FileClash(CorpusError):
    """Two of a command's files are one, or an output is no file that can be written."""


def _identity(path: str) -> tuple[str, tuple[int, int] | None, int | None]:
    """(resolved path, (device, inode) or None, mode or None) of ``path``."""
    real = os.path.realpath(path)
    try:
        st = os.stat(path)
    except OSError:
        return real, None, None
    return real, (st.st_dev, st.st_ino), st.st_mode


def _streamed(mode: int | None) -> bool:
    return mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode))


def same_as_stdout(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` is this process's standard output (messages then go to stderr)."""
    if path is None:
        return False
    try:
        a, b = os.stat(path), os.fstat(1)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def refuse_same_files(named: Mapping[str, str | os.PathLike | None]) -> None:
    """One line when two of ``named`` (flag -> path; None: not given) are the same file. A device
    or a pipe named twice is let be (``/dev/null`` for two outputs): nothing is renamed over it,
    so nothing is lost."""
    seen: list[tuple[str, str, str, tuple[int, int] | None]] = []
    for flag, path in named.items():
        if path is None:
            continue
        real, ident, mode = _identity(os.fspath(path))
        if _streamed(mode):
            continue
        for other_flag, other_path, other_real, other_ident in seen:
            if real == other_real or (ident is not None and ident == other_ident):
                what = "the input" if other_flag == "--input" else f"the same file as {other_flag}"
                raise FileClash(f"{flag} {os.fspath(path)} is {what} ({other_path}): name another file; "
                                f"nothing was written")
        seen.append((flag, os.fspath(path), real, ident))


def check_output(flag: str, path: str | os.PathLike) -> None:
    """One line for an output that is no file: a folder, a block device, a socket, a name
    ending in a slash (a folder meant), or one under a file (``input.jsonl/x``: found only
    when the finished work was to be written); and for a file, one in another artifact's
    folder (:func:`~londonlm.core.layout.refuse_file_in_an_artifact`)."""
    name = os.fspath(path)
    real, _, mode = _identity(name)
    if mode is None:
        if name.endswith(os.sep):
            raise FileClash(f"{flag} {name} names a folder (it ends in {os.sep}): name a file to write")
        parent = nearest_existing(Path(os.path.abspath(name)).parent)
        if os.path.exists(parent) and not os.path.isdir(parent):
            raise FileClash(f"{flag} {name}: {parent} is a file, not a folder; name a file in a folder")
        _refuse_in_an_artifact(flag, name, real)
        return
    if _streamed(mode):
        return
    if stat.S_ISREG(mode):
        _refuse_in_an_artifact(flag, name, real)
        return
    kind = "a folder" if stat.S_ISDIR(mode) else "a block device" if stat.S_ISBLK(mode) else \
        "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
    raise FileClash(f"{flag} {os.fspath(path)} is {kind}: name a file to write")


def _refuse_in_an_artifact(flag: str, name: str, real: str) -> None:
    """:func:`refuse_file_in_an_artifact` for the name and for the file it leads to: an output is
    written through a symbolic link to its target, so a link elsewhere to a model's config.json
    replaced the model's config (the link's own folder is no artifact's), exit 0."""
    refuse_file_in_an_artifact(flag, name)
    if real != os.path.abspath(name):
        refuse_file_in_an_artifact(flag, real)


def regular_target(flag: str, path: str | os.PathLike) -> str:
    """Where a file written whole (a saved lexicon) goes: the target of a link; one line for a
    device, a pipe, a folder (a gzip file is no stream to show)."""
    _, _, mode = _identity(os.fspath(path))
    if _streamed(mode) or is_fd_link(path):
        raise FileClash(f"{flag} {os.fspath(path)} is a device, a pipe or an open descriptor: name a file to write")
    check_output(flag, path)
    return os.path.realpath(path)


def _temp_names(target: Path) -> re.Pattern:
    # the temporary files core.atomic_writer makes beside a file: ".NAME.<8 hex>.tmp"
    return re.compile(re.escape(f".{target.name}.") + r"[0-9a-f]{8}\.tmp")


def remove_stale_temps(path: str | os.PathLike, keep: tuple[str | os.PathLike, ...] = ()) -> list[Path]:
    """Remove the temporary files beside ``path``'s target that no run holds (a run holds its
    own locked while it writes: a killed run's lock went with it); the removed ones. Those that
    are one of ``keep`` (the run's inputs: a killed run's rows given as the input to salvage them
    were deleted before they were read) stay."""
    target = Path(os.path.realpath(path))
    pattern, removed = _temp_names(target), []
    kept = {ident for _, ident, _ in map(_identity, map(os.fspath, keep)) if ident is not None}
    try:
        names = os.listdir(target.parent)
    except OSError:
        return removed
    for name in names:
        if not pattern.fullmatch(name):
            continue
        p = target.parent / name
        if _identity(os.fspath(p))[1] in kept:
            continue
        try:
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live run's
        finally:
            os.close(fd)  # (closing drops a lock taken)
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def remove_earlier(path: str | os.PathLike) -> None:
    """Remove the file ``path`` leads to (a link's target; a device or a pipe is let be): an
    earlier run's report, once the new one is whole, so that it never stays beside an output
    it does not describe."""
    if not (_streamed(_identity(os.fspath(path))[2]) or is_fd_link(path)):
        with naming(path):
            Path(os.path.realpath(path)).unlink(missing_ok=True)


# Two runs into one output (or one's output the other's report) each wrote theirs whole, but the
# last report renamed could be the other run's, beside this one's rows. A lock beside the output's
# target, not on its folder: other outputs in the same folder stay free. Held per process by the
# target's resolved path, so a script may hold its outputs from its start and the writer again
_HELD: dict[str, int] = {}


@contextmanager
def output_lock(flag: str, path: str | os.PathLike | None) -> Iterator[None]:
    """Hold ``path``'s output for this process for the block (a device, a pipe or None: nothing
    to hold); another run holding it is one line, and nothing is written."""
    if path is None or _streamed(_identity(os.fspath(path))[2]) or is_fd_link(path):
        yield
        return
    target = Path(os.path.realpath(path))
    if str(target) in _HELD:
        yield
        return
    lock = target.with_name(f".{target.name}.lock")
    with naming(path):  # (a folder it may not write in: one line naming the output)
        lock.parent.mkdir(parents=True, exist_ok=True)  # (as the output's writer makes it)
        fd = _lock_file(lock)
    if fd is None:
        raise FileClash(f"{flag} {os.fspath(path)} is being written by another run ({flock_holder(lock)}, "
                        f"holding {lock.name}): wait for it to end or name another file; nothing was written")
    _HELD[str(target)] = fd
    try:
        yield
    finally:
        del _HELD[str(target)]
        lock.unlink(missing_ok=True)  # (while held: a run that opened it meanwhile sees it gone)
        os.close(fd)


def _lock_file(lock: Path) -> int | None:
    """A descriptor of ``lock`` with an exclusive ``flock``, the file still at that name (one
    unlinked by its holder's end is tried again); None when another process holds it."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def output_locks(named: Mapping[str, str | os.PathLike | None]) -> Iterator[None]:
    """:func:`output_lock` on each of ``named`` (flag -> path; None: not given)."""
    with ExitStack() as stack:
        for flag, path in named.items():
            stack.enter_context(output_lock(flag, path))
        yield


@contextmanager
def output_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """``path`` opened for writing as this module says: through a link, whole or not at all
    (held: :func:`output_lock`); a device or a pipe written as it is."""
    _, _, st_mode = _identity(os.fspath(path))
    if _streamed(st_mode) or is_fd_link(path):  # appended to: a descriptor may be a file opened with >>
        with naming(path), open(path, mode.replace("w", "a"), **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        return
    check_output("output", path)
    with output_lock("output", path), atomic_writer(os.path.realpath(path), mode) as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # (a new file: nobody else holds it)
        yield f
