"""A loopback HTTP server that answers with any shape of response a hostile or broken server
might send, one scripted answer per request, for the download fuzz net
(``test_download_fuzz.py``).

Each answer is a :class:`Reply`: a status, headers (a Retry-After, a Location, a
Content-Range, validators, a Content-Encoding), a body, and how the bytes go out: with a true,
short, long, huge or no Content-Length, chunked, cut at a byte, ended by a reset. The server
writes the status line and headers itself, so nothing is corrected on the way. Each path has a
queue of replies; once it is empty the path is served honestly (with Range, If-Range and an
ETag), or not at all (404) for a path the test did not give. ``sent`` records, per path, the
decoded bodies the server presented as a whole file (a 200 or 203 whose length it stated
truly or closed after), so a test can tell what the client could rightly have taken.
"""
from __future__ import annotations

import gzip
import socket
import struct
import threading
import zlib
from dataclasses import dataclass, field

from fakeservers import LoopbackServer

REASONS = {200: "OK", 206: "Partial Content", 416: "Range Not Satisfiable"}
ENCODING_NAMES = {"deflate_bad": "deflate", "br": "br"}


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: str = "true"        # true | none | short | long | huge | chunked
    encoding: str = "identity"  # identity | gzip | gzip_cut | gzip_flipped | deflate_bad | br (gzip's bytes, so named)
    cut: int | None = None      # send only this many bytes of the (encoded) body
    reset: bool = False         # end with a TCP reset instead of a close (after what was sent)
    piece_of: bytes | None = None  # a 206 of these bytes from the asked start: the rest, or ``piece`` bytes
    piece: int | None = None

    def wire_body(self) -> bytes:
        """The body's bytes as encoded on the wire."""
        if self.encoding == "identity":
            return self.body
        z = gzip.compress(self.body)
        if self.encoding == "gzip_cut":
            return z[: max(1, len(z) // 2)]
        if self.encoding == "gzip_flipped":
            mid = len(z) // 2
            return z[:mid] + bytes([z[mid] ^ 0xFF]) + z[mid + 1:]
        if self.encoding == "deflate_bad":
            return b"\x00not deflate" + zlib.compress(self.body)[5:]
        return z

    def presented_whole(self) -> bytes | None:
        """The body this reply presents as the whole file, or None when it does not."""
        if self.status not in (200, 203) or self.encoding not in ("identity", "gzip"):
            return None
        wire = self.wire_body()
        sent = wire if self.cut is None else wire[: self.cut]
        if self.length in ("true", "chunked") and len(sent) < len(wire):
            return None
        if self.length in ("long", "huge"):
            return None
        if self.length == "short":
            sent = sent[: max(0, len(wire) - 1)]
        if self.encoding == "gzip":
            try:
                return gzip.decompress(sent)
            except (OSError, EOFError):
                return None
        return sent


class HostileServer(LoopbackServer):
    """``files``: the honest bytes of each path; ``queue[path]``: the replies to send first
    (``'*'`` for any path)."""

    def __init__(self, files: dict[str, bytes] | None = None):
        self.files = dict(files or {})
        self.queue: dict[str, list[Reply]] = {}
        self.sent: dict[str, list[bytes]] = {}
        self.count = 0
        self._lock = threading.Lock()
        self._listen()
        self.httpd.handle_error = lambda request, address: None  # (a client that hung up: no report)
        # a short poll: leaving the ``with`` block waits one poll (0.5 s by default, per example)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    def _next(self, path: str) -> Reply | None:
        with self._lock:
            self.count += 1
            for key in (path, "*"):
                if self.queue.get(key):
                    return self.queue[key].pop(0)
        return None

    def _handle(self, h) -> None:
        path = h.path.split("?", 1)[0]
        reply = self._next(path) or self._honest(h, path)
        reply = _fill_range(reply, h)
        whole = reply.presented_whole()
        if whole is not None:
            with self._lock:
                self.sent.setdefault(path, []).append(whole)
        _write(h, reply)

    def _honest(self, h, path: str) -> Reply:
        if path not in self.files:
            return Reply(404, b"not found")
        body, etag = self.files[path], '"honest"'
        rng, if_range = h.headers.get("Range"), h.headers.get("If-Range")
        headers = {"ETag": etag, "Accept-Ranges": "bytes"}
        if rng and rng.startswith("bytes=") and (not if_range or if_range == etag):
            start = int(rng[6:].split("-")[0])
            if start >= len(body):
                return Reply(416, b"", {**headers, "Content-Range": f"bytes */{len(body)}"})
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            return Reply(206, body[start:], headers)
        return Reply(200, body, headers)


def _fill_range(reply: Reply, h) -> Reply:
    """A scripted 206 of ``piece_of`` from the start the client asked for, its Content-Range
    true: the rest of the file, or only ``piece`` bytes of it."""
    if reply.piece_of is None:
        return reply
    rng = h.headers.get("Range") or ""
    try:
        start = int(rng[6:].split("-")[0]) if rng.startswith("bytes=") else 0
    except ValueError:
        start = 0
    whole = reply.piece_of
    end = len(whole) if reply.piece is None else min(len(whole), start + reply.piece)
    headers = {**reply.headers, "Content-Range": f"bytes {start}-{max(start, end) - 1}/{len(whole)}"}
    return Reply(206, whole[start:end], headers, reply.length, reply.encoding, reply.cut, reply.reset)


def _write(h, reply: Reply) -> None:
    wire = reply.wire_body()
    sent = wire if reply.cut is None else wire[: reply.cut]
    lines = [f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in reply.headers.items()]
    if reply.encoding != "identity":
        lines.append(f"Content-Encoding: {ENCODING_NAMES.get(reply.encoding, 'gzip')}")
    declared = {"true": len(wire), "short": max(0, len(wire) - 1), "long": len(wire) + 7,
                "huge": 10 ** 15}.get(reply.length)
    close = reply.length in ("none", "long", "huge") or reply.cut is not None or reply.reset
    if declared is not None:
        lines.append(f"Content-Length: {declared}")
    if reply.length == "chunked":
        lines.append("Transfer-Encoding: chunked")
        sent = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in _chunks(sent)) + \
            (b"0\r\n\r\n" if reply.cut is None else b"")
    if reply.length == "short" and not close:
        sent = sent[:declared]  # the rest would be read as the next answer's head
    if close:
        lines.append("Connection: close")
    try:
        h.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + sent)
        h.wfile.flush()
    except OSError:
        pass
    if reply.reset:
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.connection.close()
    if close:
        h.close_connection = True


def _chunks(data: bytes, n: int = 4096):
    for i in range(0, len(data), n):
        yield data[i:i + n]
