"""A loopback HTTP server for download tests: Gutenberg-style files, an Archive.org-style
advanced-search API with item metadata and ``*_djvu.txt`` files, and injectable faults.

Faults are per path and consumed one request at a time, e.g. ``server.faults['/x'] =
['500', '429', 'reset', 'slow', 'truncate']``: each request to /x pops the next fault;
when the list is empty the file is served normally (with Range support).
"""
from __future__ import annotations

import json
import math
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class LoopbackServer:
    """A threaded HTTP server on a free 127.0.0.1 port handing every request (of ``methods``) to
    ``self._handle(handler)``; ``with server:`` serves, leaving the block shuts it down."""

    methods: tuple[str, ...] = ("GET",)

    def _listen(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # keep test output quiet
                pass

        for method in self.methods:
            setattr(Handler, f"do_{method}", lambda h: server._handle(h))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeServer(LoopbackServer):
    def __init__(self, slow_seconds: float = 2.0, retry_after: int = 1):
        self.files: dict[str, bytes] = {}
        self.json: dict[str, object] = {}
        self.faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.archive_items: list[dict[str, object]] = []
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.range_support = True
        self._lock = threading.Lock()
        self._listen()

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    # --- request handling ----------------------------------------------------------------
    def _next_fault(self, path: str) -> str | None:
        with self._lock:
            q = self.faults.get(path)
            return q.pop(0) if q else None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        path = parts.path
        with self._lock:
            self.requests.append((path, dict(h.headers)))
        fault = self._next_fault(path)
        if fault == "500":
            return self._send(h, 500, b"boom")
        if fault == "503":
            return self._send(h, 503, b"busy")
        if fault == "429":
            return self._send(h, 429, b"slow down", {"Retry-After": str(self.retry_after)})
        if fault == "slow":
            time.sleep(self.slow_seconds)
        if path == "/advancedsearch.php":
            return self._search(h, parse_qs(parts.query))
        if path in self.json:
            return self._send(h, 200, json.dumps(self.json[path]).encode(), {"Content-Type": "application/json"})
        if path not in self.files:
            return self._send(h, 404, b"not found")
        body = self.files[path]
        start = 0
        status = 200
        headers = {"Content-Type": "text/plain; charset=utf-8", "Accept-Ranges": "bytes"}
        rng = h.headers.get("Range")
        if rng and self.range_support and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(body):
                return self._send(h, 416, b"", {"Content-Range": f"bytes */{len(body)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        payload = body[start:]
        if fault == "reset":
            # send headers and half the body, then reset the connection (RST, not FIN)
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload[: len(payload) // 2])
            h.wfile.flush()
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
            h.close_connection = True
            return
        if fault == "truncate":
            # promise the full length, send less, close: the client must not accept it
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(payload)))
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(payload[: len(payload) // 3])
            h.wfile.flush()
            h.close_connection = True
            return
        self._send(h, status, payload, headers)

    def _send(self, h, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _search(self, h, qs: dict[str, list[str]]) -> None:
        rows = int(qs.get("rows", ["50"])[0])
        page = int(qs.get("page", ["1"])[0])
        docs = self.archive_items[(page - 1) * rows: page * rows]
        body = {"responseHeader": {"status": 0, "params": {"q": qs.get("q", [""])[0]}},
                "response": {"numFound": len(self.archive_items), "start": (page - 1) * rows, "docs": docs}}
        self._send(h, 200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    # --- content helpers -----------------------------------------------------------------
    def add_archive_item(self, identifier: str, text: str, title: str, year: int, creator: str = "Anon") -> None:
        hit = {"identifier": identifier, "title": title, "creator": creator, "date": f"{year}-01-01T00:00:00Z",
               "year": year}
        self.archive_items.append(hit)
        fname = f"{identifier}_djvu.txt"
        self.json[f"/metadata/{identifier}"] = {
            "metadata": {**hit, "mediatype": "texts", "subject": ["London (England)"],
                         "licenseurl": "http://creativecommons.org/publicdomain/mark/1.0/"},
            "files": [{"name": f"{identifier}.pdf"}, {"name": fname}],
        }
        self.files[f"/download/{identifier}/{fname}"] = text.encode("utf-8")

    def pages(self, rows: int) -> int:
        return math.ceil(len(self.archive_items) / rows)
