"""Command lines that refuse nonsense in one line, before any work. The argument types every
stage script uses (numbers with their ranges, paths that must exist) are written here once,
and :class:`StageParser` turns every parse error into ``error: <flag>: <why>`` and exit code
2: no usage dump, no traceback, and no abbreviations (``--model`` is never taken for
``--model_name``)."""
from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Callable

from .errors import UsageError


class OneLineErrors:
    """Mixin for an ``argparse`` parser (also ``HfArgumentParser``): one ``error:`` line, exit 2."""

    def error(self, message: str):  # argparse calls this for every parse error
        m = re.match(r"argument (\S+?)(?:/\S+)?: (.*)", message, re.S)
        text = f"{m.group(1)}: {m.group(2)}" if m else message
        self.exit(2, f"error: {' '.join(text.split())}\n")


class StageParser(OneLineErrors, argparse.ArgumentParser):
    """The parser of every stage script."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def _number(kind: type, text: str):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    # (an int is finite: one of 309 digits or more has no float, and math.isfinite raised OverflowError)
    if kind is not int and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def number_in(low: float | None = None, high: float | None = None, *, kind: type = int,
              above: bool = False, below: bool = False) -> Callable[[str], float]:
    """An argparse type: a ``kind`` number from ``low`` (excluded with ``above``) to ``high``
    (excluded with ``below``)."""
    def convert(text: str):
        value = _number(kind, text)
        if low is not None and (value <= low if above else value < low):
            raise argparse.ArgumentTypeError(f"must be {'more than' if above else 'at least'} {low} (got {text})")
        if high is not None and (value >= high if below else value > high):
            raise argparse.ArgumentTypeError(f"must be {'less than' if below else 'at most'} {high} (got {text})")
        if kind is int and not -2**63 <= value < 2**63:  # no count, size or seed means more than 64 bits
            raise argparse.ArgumentTypeError(f"must be at most {2**63 - 1} (got {text[:24]}...)")
        return value

    convert.__name__ = f"{kind.__name__}_in_range"
    return convert


positive_int = number_in(1)
non_negative_int = number_in(0)
positive_float = number_in(0, kind=float, above=True)
non_negative_float = number_in(0, kind=float)
fraction = number_in(0, 1, kind=float)
port = number_in(1, 65535)
percent = number_in(0, 100, kind=float, above=True, below=True)
# byte-level BPE: the 256 bytes, the special and era tokens, then merges; at most what a uint16 token cache holds
vocabulary = number_in(300, 65535)
_YEAR = number_in(1000, 2100)


def year(text: str) -> int:
    """A calendar year from 1000 to 2100 (a cutoff year): wider would be a typo, not a date of
    a text this project reads."""
    return _YEAR(text)


def utf8_problem(value: str) -> str | None:
    """Why ``value`` is not text (``not valid UTF-8 (byte 0xff at character 4)``), or None.

    Python decodes what it cannot read as UTF-8 (argv, a stdin or a file opened with
    ``errors="surrogateescape"``) into lone surrogates, one per undecodable byte, and a JSON
    ``"\\ud800"`` escape makes one too; a str holding one cannot be encoded, so a tokenizer, a
    JSON writer or a socket fails on it far from where it came in. Every boundary where text
    enters (argument types, the REPLs' lines, JSONL files) asks this one question."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(value[e.start])
        what = (f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF  # surrogateescape's form of a byte
                else f"lone surrogate U+{code:04X}")
        return f"not valid UTF-8 ({what} at character {e.start + 1})"
    return None


def free_text(value: str) -> str:
    """An argparse type for free text (a prompt, a commit message): refused when it is not
    valid UTF-8 (see :func:`utf8_problem`), so no later stage sees what it cannot encode."""
    problem = utf8_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def user_path(text) -> Path:
    """A path a user typed, ``~`` expanded; a ``~someone`` this machine does not know, or a NUL
    character (no file system's path holds one: ``resolve()`` raised ValueError deep inside),
    is a UsageError."""
    if "\x00" in os.fspath(text):
        raise UsageError(f"{os.fspath(text)!r}: a path cannot hold a NUL character")
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise UsageError(f"cannot expand {str(text)!r}: no such user") from None


def _path(text: str) -> Path:
    try:
        return user_path(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# For inputs a user brings (a source folder, a probe file). A stage's own outputs are checked
# by the stage that reads them, whose message names the command that makes them.
def existing_file(text: str) -> str:
    if not _path(text).is_file():
        raise argparse.ArgumentTypeError(f"no file at {text}")
    return text


def existing_dir(text: str) -> str:
    if not text.strip():  # Path("") is the current folder: an empty value was a mistake, not "here"
        raise argparse.ArgumentTypeError("give a folder (got an empty value)")
    if not _path(text).is_dir():
        raise argparse.ArgumentTypeError(f"no folder at {text}")
    return text


def writable_dir(text: str) -> str:
    """An output folder: one that can be written in, or made under the nearest folder above it
    that can; never an existing file."""
    if not text.strip():  # Path("") is the current folder: an empty value was a mistake, not "here"
        raise argparse.ArgumentTypeError("give a folder (got an empty value)")
    path = _path(text).absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise argparse.ArgumentTypeError(f"{probe} is a file, not a folder" if probe == path
                                         else f"cannot make a folder under the file {probe}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {probe}")
    return text


def writable_file(text: str) -> str:
    """An output file (a report written whole): a name that is no folder, device or other
    special file, in a folder that can be written in or made. Checked at parsing, so a bad
    one costs no work (found when the finished work was to be written, it was lost or, for
    ``/dev/null``, the atomic rename would have replaced the device)."""
    if not text.strip():  # an empty value would skip the report without a word
        raise argparse.ArgumentTypeError("give a file name (got an empty value)")
    path = _path(text).absolute()
    if text.endswith(os.sep) or path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder: name a file to write")
    if path.exists() and not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a regular file: name a file to write")
    writable_dir(str(path.parent))
    return text


def check_ranges(values: dict, rules: dict[str, Callable[[str], object]]) -> None:
    """Check already-parsed ``values`` by the same rules (``number_in`` types, applied to the
    value's text): for parsers that convert values themselves (``HfArgumentParser``). Raises
    UsageError ``--<flag>: <why>``."""
    for name, rule in rules.items():
        if name in values and values[name] is not None:
            try:
                rule(str(values[name]))
            except argparse.ArgumentTypeError as e:
                raise UsageError(f"--{name}: {e}") from None
