"""A row over ``--max_row_mb``, passed through unrepaired without being held whole: read and
parsed to be written back, a 155 MB line took 848 MB (a 1 GB line, several GB), for a row that
is not repaired at all. Now the line is read in pieces of ``CHUNK`` bytes twice: once as it is
met, to know whether it is one JSON object (:func:`scan_line`, a checker that keeps only its
containers' kinds, no values), and once as its turn to be written comes (:func:`copy_row`, from
the input file again). It comes out as the whole-row pass-through wrote it: an object as it
came plus ``"ocr_repair_error": "too_large"`` (one that already says why an earlier run passed it
through kept as it is), anything else as ``{"line": N, "raw": "..."}``; bytes that are not UTF-8
read as cp1252, where they were reported.
"""
from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import IO, Any, Callable

CHUNK = 1 << 20
_KEY_BYTES = 256       # a top-level key longer than this is no key the report asks about
_ID_BYTES = 4096       # nor an id longer than this (the report's id is then None)

_WS = re.compile(rb"[ \t\r\n]*")
_BODY = rb'[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*'
_STRING_BODY = re.compile(_BODY)
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERAL = re.compile(rb"true|false|null")
# runs of plain members matched at once (a row of a million numbers is not a million steps):
# numbers small enough that json reads them as the row's parse did (no inf, no 4,300-digit int),
# each followed by what ends it, seen before the buffer's end (a number cut there is not taken)
_SCALAR = rb'(?:"' + _BODY + rb'"|-?(?:0|[1-9][0-9]{0,199})(?:\.[0-9]+)?(?:[eE][+-]?[0-9]{1,2})?|true|false|null)'
_END = rb"(?=[ \t\r\n]*[,\]}])"
_ARRAY_RUN = re.compile(rb"(?:[ \t\r\n]*,[ \t\r\n]*" + _SCALAR + _END + rb")*")
_OBJECT_RUN = re.compile(rb'(?:[ \t\r\n]*,[ \t\r\n]*"' + _BODY + rb'"[ \t\r\n]*:[ \t\r\n]*' + _SCALAR + _END + rb")*")


@dataclass(frozen=True)
class LargeRow:
    """Where a too-large row is in the input and what it is; what goes to a worker instead of it."""
    path: str
    line: int
    start: int             # its first byte's offset in the input
    size: int              # its bytes before the line end (trailing CRs left out)
    close: int | None      # an object: the offset (in the line) of its closing brace, else None
    empty: bool            # an object without members
    marked: bool           # an object whose error key already says why (a string)
    id: Any
    version: tuple[int, int] | None  # the input's (size, time of change) as it was scanned

    def __len__(self) -> int:  # (what it weighs in a worker's batch: nothing)
        return 0


class _Reader:
    """The line's bytes, a buffer of at most two pieces at a time; ``base``: the buffer's offset."""

    def __init__(self, first: bytes, read: Callable[[], bytes]):
        self.buf, self.i, self.read, self.done, self.base, self.size = b"", 0, read, False, 0, 0
        self._feed(first)

    def _feed(self, chunk: bytes) -> None:
        if chunk.endswith(b"\n"):
            chunk, self.done = chunk[:-1], True
        kept = chunk.rstrip(b"\r")
        if kept:
            self.size = self.base + len(self.buf) + len(kept)
        self.base += self.i
        self.buf, self.i = self.buf[self.i:] + chunk, 0

    def more(self) -> bool:
        """Read the next piece; False at the line's end."""
        if self.done:
            return False
        chunk = self.read()
        if not chunk:
            self.done = True
            return False
        self._feed(chunk)
        return True

    def peek(self) -> bytes:
        """The next byte that is no white space (b"" at the line's end), the cursor on it."""
        while True:
            self.i = _WS.match(self.buf, self.i).end()
            if self.i < len(self.buf) or not self.more():
                return self.buf[self.i:self.i + 1]

    def token(self, pattern: re.Pattern) -> bytes | None:
        """A whole token of ``pattern`` at the cursor (read on while it may go on), else None."""
        while True:
            m = pattern.match(self.buf, self.i)
            # (read on near the buffer's end: "3e" there may be the start of "3e5")
            if (m is None or len(self.buf) - m.end() < 64) and len(self.buf) - self.i < CHUNK and self.more():
                continue
            if m is None or not m.group():
                return None
            self.i = m.end()
            return m.group()

    def string(self, keep: int) -> bytes | None:
        """A string's body (when at most ``keep`` bytes, else None), the cursor past it; ValueError
        where it is no string."""
        self.i += 1  # the opening quote
        kept: bytes | None = b""
        while True:
            end = _STRING_BODY.match(self.buf, self.i).end()
            if kept is not None:
                kept = kept + self.buf[self.i:end] if len(kept) + end - self.i <= keep else None
            self.i = end
            if self.buf[end:end + 1] == b'"':
                self.i += 1
                return kept
            if len(self.buf) - end >= 6 or not self.more():  # (a cut escape is at most 5 bytes)
                raise ValueError("no string")

    def run(self, pattern: re.Pattern) -> None:
        """Past the plain members ``pattern`` matches at once (none cut by the buffer's end)."""
        limit = len(self.buf) if self.done else max(self.i, len(self.buf) - 64 * 1024)
        self.i = pattern.match(self.buf, self.i, limit).end()


def scan_line(first: bytes, read: Callable[[], bytes], error_key: str) -> tuple[int, int | None, bool, bool, Any] | None:
    """(size, closing brace, empty, marked, id) of the line that starts with ``first`` and goes on
    with ``read()``'s pieces (to and with its ``\\n``, or b"" at the file's end); closing brace
    None where the line is not one JSON object (as the row's ``json.loads`` would read it). None
    for a line of white space only: skipped as any blank line is, however long."""
    r = _Reader(first, read)
    if not r.peek():
        return None
    try:
        close, empty, marked, id_ = _object(r, error_key.encode())
        if r.peek():
            raise ValueError("more after the row")
    except (ValueError, RecursionError):
        close, empty, marked, id_ = None, False, False, None
    while r.more():  # (the rest of a line that is no object)
        r.i = len(r.buf)
    return r.size, close, empty, marked, id_


def _open(r: _Reader, stack: list[bytes]) -> str:
    """A container opened at the cursor; what comes next (an empty one closed at once: "after")."""
    closer = b"}" if r.buf[r.i:r.i + 1] == b"{" else b"]"
    r.i += 1
    if r.peek() == closer:
        r.i += 1
        return "after"
    stack.append(closer)
    return "key" if closer == b"}" else "value"


def _object(r: _Reader, error_key: bytes) -> tuple[int, bool, bool, Any]:
    """The top-level object's closing brace (its offset), whether it is empty, marked, its id."""
    if r.peek() != b"{":
        raise ValueError("not an object")
    stack: list[bytes] = []
    members, marked, id_ = 0, False, None
    expect = _open(r, stack)
    while stack:
        if expect == "after":
            if len(stack) > 1:  # (the top level's members are read one by one: their keys are asked about)
                r.run(_OBJECT_RUN if stack[-1] == b"}" else _ARRAY_RUN)
            c = r.peek()
            if c == b",":
                r.i += 1
                expect = "key" if stack[-1] == b"}" else "value"
            elif c and c == stack[-1]:
                stack.pop()
                r.i += 1
            else:
                raise ValueError("no comma")
            continue
        key = None
        if expect == "key":
            if r.peek() != b'"':
                raise ValueError("no key")
            key = r.string(_KEY_BYTES)
            if r.peek() != b":":
                raise ValueError("no colon")
            r.i += 1
        top, c = len(stack) == 1 and key is not None, r.peek()
        members += top
        marked |= top and key == error_key and c == b'"'
        if c in (b"{", b"[") and c:
            expect = _open(r, stack)
            continue
        start = r.base + r.i
        _scalar(r, c)
        expect = "after"
        if top and key == b"id":
            id_ = _small(r, start)
    return r.base + r.i - 1, members == 0, marked, id_


def _scalar(r: _Reader, c: bytes) -> None:
    """A string, number or literal at the cursor, read past; ValueError where there is none."""
    if c == b'"':
        r.string(0)
        return
    number = bool(c) and c in b"-0123456789"
    token = r.token(_NUMBER if number else _LITERAL)
    if token is None:
        raise ValueError("no value")
    if number:  # as the row's parse reads it: no inf (1e999), no int past Python's digit limit
        value = json.loads(token)
        if isinstance(value, float) and value - value != 0:
            raise ValueError("not a finite number")


def _small(r: _Reader, start: int) -> Any:
    """The value just read from ``start``, when it is still in the buffer and short; else None."""
    begin = start - r.base
    if begin < 0 or r.i - begin > _ID_BYTES:
        return None
    try:
        return json.loads(r.buf[begin:r.i])
    except ValueError:
        return None


def copy_row(row: LargeRow, out: IO[str], error_key: str, decode_errors: str, bad: list[int]) -> list[int]:
    """Write ``row`` to ``out`` as the whole-row pass-through wrote it (no line end), reading it
    again from its input a piece at a time; the offsets of its bytes that were not UTF-8 (read by
    the ``decode_errors`` handler, which puts them in ``bad``)."""
    mark = json.dumps({error_key: "too_large"}, ensure_ascii=False)[1:-1]
    is_object = row.close is not None
    if not is_object:
        out.write(f'{{"line": {row.line}, "raw": "')
    decoder = codecs.getincrementaldecoder("utf-8")(errors=decode_errors)
    found: list[int] = []
    end = row.size if not is_object or row.marked else row.close
    with open(row.path, "rb") as f:
        f.seek(row.start)
        done = 0
        while done < end:
            piece = f.read(min(CHUNK, end - done))
            if not piece:
                raise EOFError(f"{row.path} ends before its line {row.line} does")
            bad.clear()
            base = done - len(decoder.getstate()[0])
            text = decoder.decode(piece, final=done + len(piece) >= end)
            found.extend(base + b for b in bad)
            done += len(piece)
            if is_object and not row.empty:
                out.write(text)
            elif not is_object:
                out.write(json.dumps(text, ensure_ascii=False)[1:-1])
    if not is_object:
        out.write(f'", {mark}}}')
    elif row.empty:
        out.write(f"{{{mark}}}")
    elif not row.marked:
        out.write(f", {mark}}}")
    return found
