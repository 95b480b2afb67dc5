"""One base class for errors a user can fix, and the wrapper every script runs its main in.

A :class:`LondonLMError` carries a message written for the person at the terminal (what is
wrong, and the command or flag that mends it). Stage scripts do not catch their own tuples of
exception classes: they call :func:`run_main`, which prints ``error: <message>`` and exits 2
for any ``LondonLMError``, and lets every other exception (a bug) raise with its traceback.

The machine's own refusals are user errors too, whichever stage meets them: a file or folder
the user may not read or write, a file where a folder should be (or the reverse), a read-only
or full disk (:data:`USER_OS_ERRNOS`). No stage catches them; :func:`os_error_message` words
them once, naming the path, its owner and mode, and what to do.
"""
from __future__ import annotations

import errno
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

USER_ERROR_EXIT = 2      # argparse's own code for bad usage; the same for every user error
INTERRUPTED_EXIT = 130   # the shell's code for a process ended by Ctrl-C


class LondonLMError(Exception):
    """An error in what the user gave or asked for: bad input, a missing artifact, a refused
    action. The message alone must tell them what to do; scripts print it without a traceback."""


class UsageError(LondonLMError, ValueError):
    """A bad command-line value or option combination."""


# OSError numbers that say something about the user's files or disk, never about the code: the
# user mends them (chmod/chown, another --root or --out_dir, free space); any other OSError
# (a bad file descriptor, a broken pipe, ...) may be a bug and keeps its traceback.
# EEXIST: a file where a folder is to be made (mkdir(exist_ok=True) raises it for a file);
# EFBIG: a file past what its file system holds (FAT32: 4 GiB, a GGUF export to a USB stick)
# or past the shell's `ulimit -f`: a full disk for that one file, as much the user's to mend
USER_OS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                            errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_WRITE_ELSEWHERE = ("write somewhere else: a project root you own (--root or LONDONLM_ROOT), "
                    "or --out_dir where the script has it")


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no passwd entry (containers): the number is all there is
        return f"uid {uid}"


def nearest_existing(path: Path) -> Path:
    """``path``, or the nearest folder above it that is there (a link counts, leading anywhere)."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _owner(path: Path) -> str:
    try:
        st = path.lstat()
    except OSError:
        return f"{path} cannot be examined"
    return f"{path} is owned by {_user_name(st.st_uid)}, {stat.filemode(st.st_mode)}"


def _permission_message(path: Path) -> str:
    """Which access failed, guessed from the path's state (the exception does not say), and
    who owns what, so the user knows what to change or whom to ask."""
    you = f"you are {_user_name(os.geteuid())}"
    if not os.path.lexists(path):
        folder = nearest_existing(path.parent)
        if not os.access(folder, os.X_OK):  # a folder on the way that may not be entered
            return (f"cannot reach {path}: permission denied ({_owner(folder)}; {you}); make "
                    f"that folder accessible for you (chmod, chown) or run as its owner")
        return (f"cannot create {path}: permission denied ({_owner(folder)}; {you}); make that "
                f"folder writable for you (chmod, chown), or {_WRITE_ELSEWHERE}")
    if not os.access(path, os.R_OK):
        return (f"cannot read {path}: permission denied ({_owner(path)}; {you}); make it "
                f"readable for you (chmod, chown) or run as its owner")
    # artifacts are replaced through a temporary file beside them, which needs the folder
    # writable (the file's own mode does not matter then): the folder is named first
    blame = next((p for p, mode in ((path.parent, os.W_OK | os.X_OK), (path, os.W_OK))
                  if not os.access(p, mode)), None)
    if blame is not None:
        return (f"cannot write {path}: permission denied ({_owner(blame)}; {you}); make "
                f"{'it' if blame == path else 'that folder'} writable for you (chmod, chown), "
                f"or {_WRITE_ELSEWHERE}")
    # os.access allows all (root, or rules it cannot see: ACLs, read-only bind mounts)
    return (f"cannot use {path}: permission denied ({_owner(path)}; {you}); check who may read "
            f"and write it (ls -l, chmod, chown), or {_WRITE_ELSEWHERE}")


def os_error_message(exc: BaseException) -> str | None:
    """One line for an OSError the user can mend (:data:`USER_OS_ERRNOS`), naming the path;
    None for any other exception, which is left to raise with its traceback."""
    if not isinstance(exc, OSError) or exc.errno not in USER_OS_ERRNOS:
        return None
    name = exc.filename if exc.filename is not None else exc.filename2
    if not isinstance(name, (str, bytes, os.PathLike)):  # absent, or a file descriptor number
        name = None
    reason = exc.strerror or os.strerror(exc.errno)
    if name is None:  # e.g. a write() that found the disk full: no path to name
        return f"{reason.lower()} (errno {errno.errorcode.get(exc.errno, exc.errno)}); free space or {_WRITE_ELSEWHERE}"
    path = Path(os.fsdecode(name))
    if exc.errno in (errno.EACCES, errno.EPERM):
        return _permission_message(path)
    if exc.errno == errno.ENOTDIR:
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        what = f"{blocker} is a file, not a folder" if blocker else "a part of it is not a folder"
        return f"cannot use {path}: {what}; move that file aside or choose another path"
    if exc.errno == errno.EISDIR:
        return f"cannot use {path}: it is a folder where a file is expected; move it aside or choose another path"
    if exc.errno == errno.EEXIST:
        what = "a file where a folder is expected" if path.exists() and not path.is_dir() else "already there"
        return f"cannot make {path}: {what}; move it aside or choose another path"
    if exc.errno == errno.EFBIG:  # no space to free: the file itself is too large there
        return (f"cannot write {path}: file too large for its file system (FAT32 holds at most 4 GiB a "
                f"file; `ulimit -f` may cap it too); {_WRITE_ELSEWHERE}")
    if exc.errno == errno.EROFS:
        return f"cannot write {path}: the file system is read-only; {_WRITE_ELSEWHERE}"
    return (f"cannot write {path}: {reason.lower()}; free space there (df -h {nearest_existing(path)}) "
            f"or {_WRITE_ELSEWHERE}")


def user_error_message(exc: BaseException) -> str | None:
    """The one line a user-facing exception gives (a :class:`LondonLMError`'s text, or an
    OSError the user can mend: :func:`os_error_message`); None for a bug, left to raise. For
    loops over runs where one failing must not stop the others (a grid, a family)."""
    return str(exc) if isinstance(exc, LondonLMError) else os_error_message(exc)


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code for a user-facing exception, or None for one that is a bug."""
    if isinstance(exc, LondonLMError) or os_error_message(exc) is not None:
        return USER_ERROR_EXIT
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED_EXIT
    return None


def _stdout_gone() -> bool:
    """Whether standard output is the pipe that broke (its reader gone: POLLERR on a pipe's
    writing end), whatever else the program was writing to."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no file number (captured), or no poll here
        return False


# What str.splitlines (and a terminal, a log reader) breaks a line at, besides the newline a
# message may hold on purpose: in a value the user typed (`--root '~\x85'`) it would turn one
# error line into two; shown escaped instead
_LINE_BREAKS = {ord(c): f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
                for c in "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def error_line(message: object) -> str:
    """``error: message``, whatever line separators a user's value in it held escaped."""
    return f"error: {str(message).translate(_LINE_BREAKS)}"


def run_main(main: Callable[[Sequence[str]], int | None],
             argv: Sequence[str] | None = None) -> NoReturn:
    """Run a script's ``main(argv)`` and exit with its code; a :class:`LondonLMError`, or an
    OSError the user can mend (:func:`os_error_message`), becomes one ``error: ...`` line on
    stderr and exit code 2, Ctrl-C exits 130 quietly. Known third-party noise is kept off the
    console (:mod:`.console`)."""
    from .console import quiet_known_noise

    quiet_known_noise()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = main(args)
    except (LondonLMError, KeyboardInterrupt) as e:
        if isinstance(e, LondonLMError):
            print(error_line(e), file=sys.stderr)
        sys.exit(exit_code_for(e))
    except BrokenPipeError:
        if not _stdout_gone():
            raise
        # the reader of standard output went away (`--list | head`): stop quietly, as a shell
        # tool ended by SIGPIPE does (its exit code), without a traceback or a second error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + signal.SIGPIPE)
    except OSError as e:
        message = os_error_message(e)
        if message is None:
            raise
        print(error_line(message), file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    sys.exit(int(code or 0))
