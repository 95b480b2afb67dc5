"""One base class for errors a user can fix, and the wrapper every script runs its main in.

A :class:`LondonLMError` carries a message written for the person at the terminal (what is
wrong, and the command or flag that mends it). Stage scripts do not catch their own tuples of
exception classes: they call :func:`run_main`, which prints ``error: <message>`` and exits 2
for any ``LondonLMError``, and lets every other exception (a bug) raise with its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, NoReturn, Sequence

USER_ERROR_EXIT = 2      # argparse's own code for bad usage; the same for every user error
INTERRUPTED_EXIT = 130   # the shell's code for a process ended by Ctrl-C


class LondonLMError(Exception):
    """An error in what the user gave or asked for: bad input, a missing artifact, a refused
    action. The message alone must tell them what to do; scripts print it without a traceback."""


class UsageError(LondonLMError, ValueError):
    """A bad command-line value or option combination."""


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code for a user-facing exception, or None for one that is a bug."""
    if isinstance(exc, LondonLMError):
        return USER_ERROR_EXIT
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED_EXIT
    return None


def run_main(main: Callable[[Sequence[str]], int | None],
             argv: Sequence[str] | None = None) -> NoReturn:
    """Run a script's ``main(argv)`` and exit with its code; a :class:`LondonLMError` becomes
    one ``error: ...`` line on stderr and exit code 2, Ctrl-C exits 130 quietly. Known
    third-party noise is kept off the console (:mod:`.console`)."""
    from .console import quiet_known_noise

    quiet_known_noise()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = main(args)
    except (LondonLMError, KeyboardInterrupt) as e:
        if isinstance(e, LondonLMError):
            print(f"error: {e}", file=sys.stderr)
        sys.exit(exit_code_for(e))
    sys.exit(int(code or 0))
