"""HTTP plumbing shared by the native and the OpenAI-compatible APIs: request headers bounded in
time (:func:`uvicorn_options`), body reading bounded in size, time and nesting, with every string
checked to be text; server-sent events, a streaming response that frees its admission slot however
it ends, and the security headers. Problems are raised as :class:`ApiError`; each API renders it
in its shape."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from http import HTTPStatus
from typing import Awaitable, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse

from ..core import LondonLMError

# The playground loads only its own files: nothing from a CDN can run on the page.
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# A client sends its whole body (at most ~32 KB) in well under a second; one that stops sending
# would hold its connection and a coroutine for as long as it likes (uvicorn has no body timeout).
# No byte for BODY_IDLE_S, or BODY_TOTAL_S in all (a byte a second is never idle), answers 408.
BODY_IDLE_S = 5.0
BODY_TOTAL_S = 30.0
# uvicorn has no timeout for a request's line and headers either: 1,000 sockets that sent
# "GET /health HTTP/1.1\r\nHost: x\r\n" and nothing more held 1,000 connections (and file
# descriptors) for as long as they liked. A request's head is a few hundred bytes, one packet:
# it gets HEADER_TIMEOUT_S from the connection's opening (or the end of the previous response's
# keep-alive wait), however it trickles in.
HEADER_TIMEOUT_S = 10.0
# Nor for a client that stops reading what it is sent: a stream of 64 x 512 tokens to a socket that
# read nothing (and never hung up) still held its admission slot 50 s past its 10 s request limit
# (its sends waited for a full socket to drain, without end), so as many such clients as
# --max_concurrency would have every later request refused as busy; closing such a connection
# gently keeps it (and its buffered bytes) until the client reads.
# A connection whose sent bytes stay stuck in full buffers (uvicorn paused writing) for
# SEND_STALL_S is aborted: its request sees the client gone, its slot is freed.
SEND_STALL_S = 30.0
# Nor for one that reads its stream slowly yet never stops for SEND_STALL_S (48 KB every 29 s): it
# held its admission slot for as long as the trickle lasted, long after its generation had ended at
# the request's time limit (a 3 s limit held 9 s by a 64 KB/s reader), so as many such clients as
# --max_concurrency had every later request refused as busy, the engine idle. A stream names its
# request's time limit in its scope (DEADLINE_KEY); its bytes still stuck in full buffers
# SEND_STALL_S past that limit are dropped with the connection, which frees the slot.
DEADLINE_KEY = "londonlm.deadline"
# uvicorn's h11 refused a request's line and headers only while they were still incomplete past 16 KB,
# so the limit hung on how the bytes were cut into reads: a 100 KB Cookie sent in one write passed on
# loopback (read at once, up to 256 KB a read) while 17 KB trickled over a network was refused, in
# uvicorn's plain text, or not at all (a reset) when the client was still sending. One limit,
# however the bytes arrive: past MAX_HEAD_BYTES a 431 in the error shape. nginx takes 32 KB of
# headers, Node 16 KB; 64 KB leaves room for a browser's cookies from every other app on localhost.
MAX_HEAD_BYTES = 64 * 1024
# After refusing a request h11 could not read, its unread rest is read and dropped for up to
# DRAIN_S before the close: closing with bytes unread sends a reset, which can destroy the
# answer before a client still sending its head reads it.
DRAIN_S = 2.0
# The deepest request any endpoint takes is 5 levels (body > messages > message > content > part);
# 32 leaves room for nested metadata, far below the ~1,000 levels at which json.loads and pydantic,
# which recurse once per level, would raise RecursionError.
MAX_JSON_DEPTH = 32
# A UTF-16 surrogate is never a character by itself: JSON's \ud800 escape without its pair decodes
# to one, which no tokenizer, encoder or JSON response can take (UTF-8 cannot encode it).
_SURROGATE = re.compile("[\ud800-\udfff]")
# uvicorn's own log for the connection-level events it reports (its handlers, its level)
_server_log = logging.getLogger("uvicorn.error")
T = TypeVar("T")


class ApiError(LondonLMError):
    """A request refused with ``status`` (a client's error, or the server busy or failing);
    ``param`` names the offending field when known."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_body(e: ApiError) -> dict:
    """The ``error`` object of OpenAI's error shape, which every error the server answers takes."""
    return {"message": e.message, "type": "invalid_request_error" if e.status < 500 else "server_error",
            "param": e.param, "code": e.code}


def error_json(status: int, message: str) -> bytes:
    """The whole error shape's bytes: for errors answered below the routes' handlers."""
    return json.dumps({"error": error_body(ApiError(status, message))}).encode()


def _raw_error(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 error response in the error shape, for the protocol to write itself (after
    a request it could not read, h11 can no longer write one), closing the connection."""
    body = error_json(status, message)
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


async def _read_capped(request: Request, cap: int) -> bytes | None:
    """The body, or None once it passes ``cap`` bytes (the rest is never read). Refused: a body
    that stalls (408, and the connection closes: its unread rest would otherwise be taken for
    the next request). A client that hangs up mid-body is one line in the server log, not a
    ClientDisconnect traceback; the error raised for it goes nowhere."""
    chunks, size, give_up = [], 0, time.monotonic() + BODY_TOTAL_S
    while True:
        try:
            message = await asyncio.wait_for(request.receive(),
                                             max(0.0, min(BODY_IDLE_S, give_up - time.monotonic())))
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body stopped arriving ({size} bytes received; the limits are "
                                f"{BODY_IDLE_S:g}s without a byte, {BODY_TOTAL_S:g}s in all)",
                           headers={"Connection": "close"}) from None
        if message["type"] == "http.disconnect":
            _server_log.info("client closed the connection mid-body (%d bytes received): %s %s",
                             size, request.method, request.url.path)
            raise ApiError(400, "the client closed the connection before the whole body arrived")
        size += len(message.get("body", b""))
        if size > cap:
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def read_json_object(request: Request, max_body: int) -> dict:
    """The body as a JSON object: the one boundary every request's text passes. Refused: a
    non-JSON content type or a compressed body (415); a body over ``max_body`` bytes (413), from its Content-Length
    before any of it is read, or as soon as a chunked body passes the cap; a body that stops
    arriving (408); malformed JSON, a non-object, nesting past MAX_JSON_DEPTH or a string (a key
    too) holding a lone surrogate (400, naming the field)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype != "application/json":
        raise ApiError(415, f"send JSON with Content-Type: application/json, not {ctype}")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):  # never decoded: a gzip body read as "malformed JSON: 0x8b"
        raise ApiError(415, f"send the JSON uncompressed: Content-Encoding {encoding} is not accepted")
    declared = request.headers.get("content-length", "")  # the server checked its form
    if declared.isdigit() and int(declared) > max_body:
        raise ApiError(413, f"request body too large ({declared} bytes; limit {max_body})")
    body = await _read_capped(request, max_body)
    if body is None:
        raise ApiError(413, f"request body too large (over the limit of {max_body} bytes)")
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"malformed JSON: {e}") from None
    except RecursionError:  # the parser's own guard, a long way past MAX_JSON_DEPTH
        raise _too_deep() from None
    if not isinstance(raw, dict):
        raise ApiError(400, 'the body must be a JSON object such as {"prompt": "London"}')
    _check_tree(raw)
    return raw


def _too_deep() -> ApiError:
    return ApiError(400, f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep; no request needs that")


def _check_tree(raw: dict) -> None:
    """Walk the parsed body (without recursion): nesting past MAX_JSON_DEPTH or a string or key
    holding a lone surrogate is refused, naming the field as pydantic does (``messages.0.content``)."""
    stack = [(raw, (), 1)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        for key, item in (value.items() if isinstance(value, dict) else enumerate(value)):
            if isinstance(key, str) and _SURROGATE.search(key):
                _refuse_surrogate(path, "a key in ")
            if isinstance(item, str) and _SURROGATE.search(item):
                _refuse_surrogate((*path, key), "")
            if isinstance(item, (dict, list)):
                stack.append((item, (*path, key), depth + 1))


def _refuse_surrogate(path: tuple, what: str) -> None:
    field = ".".join(map(str, path))
    raise ApiError(400, f"{what}{field or 'the body'} holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape "
                        f"without its pair), which is not text: send text as UTF-8", param=field or None)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or ``work`` cancelled and ApiError(499) as soon as the client hangs up.
    A non-streamed answer is one send at its end, so nothing else notices a client gone: its
    generation ran on to its end or its time limit, holding its admission slot (or queue place)
    for nobody. (A streamed answer learns it from its own sends and Starlette's disconnect watch.)"""
    task, watch = asyncio.ensure_future(work), asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()  # the generation's jobs are cancelled as its event stream closes
        await asyncio.gather(task, return_exceptions=True)
        _server_log.info("client closed the connection before its answer: %s %s stopped",
                         request.method, request.url.path)
        raise ApiError(499, "the client closed the connection before its answer")
    finally:
        watch.cancel()
        task.cancel()


async def _client_gone(request: Request) -> None:
    """Returns once the ASGI server says the client disconnected. Called after the whole body is
    read: uvicorn's ``receive`` then waits until the connection is lost."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # an empty message (a server that answers at once): poll gently


def uvicorn_options(header_timeout_s: float = HEADER_TIMEOUT_S, send_stall_s: float | None = None) -> dict:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` that every londonlm server runs
    with: uvicorn's h11 protocol (pure Python, always installed with uvicorn) with a timeout on
    the request line and headers, which uvicorn has not (its ``timeout_keep_alive`` covers only
    the wait between two requests and stops at their first byte), and one on a client that stops
    reading (``send_stall_s``, default SEND_STALL_S); a request's line and headers up to
    MAX_HEAD_BYTES (h11's limit, checked again whole by :class:`HeadLimit`)."""
    return {"http": _header_timeout_protocol(header_timeout_s,
                                             SEND_STALL_S if send_stall_s is None else send_stall_s),
            "h11_max_incomplete_event_size": MAX_HEAD_BYTES}


def _cancelled(timer) -> None:
    """``timer`` (an event loop's handle, or None) cancelled: None, for the attribute holding it."""
    if timer is not None:
        timer.cancel()
    return None


class _SendStallLimit:
    """For an asyncio protocol of uvicorn's (``loop``, ``transport``): a connection whose writing
    stays paused (the transport's buffer full: its client reads nothing) for ``_send_stall_s``
    seconds is aborted. Its request then sees the client gone, and its slot is freed."""

    _send_stall_s = SEND_STALL_S
    _write_timer = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self._stall_wait(), self._write_too_slow)

    def _stall_wait(self) -> float:
        """How long writing may stay paused: ``_send_stall_s``, ending no later than ``_send_stall_s``
        past the time limit its stream's request named (DEADLINE_KEY), however often a trickle of
        reads resumed it before."""
        deadline = (getattr(self, "scope", None) or {}).get(DEADLINE_KEY)
        if deadline is None:
            return self._send_stall_s
        return max(0.0, min(self._send_stall_s, deadline + self._send_stall_s - time.monotonic()))

    def resume_writing(self) -> None:
        self._write_timer = _cancelled(self._write_timer)
        super().resume_writing()

    def connection_lost(self, exc) -> None:
        self._write_timer = _cancelled(self._write_timer)
        super().connection_lost(exc)

    def _write_too_slow(self) -> None:
        self._write_timer = None
        deadline = (getattr(self, "scope", None) or {}).get(DEADLINE_KEY)
        if deadline is not None and time.monotonic() >= deadline + self._send_stall_s:
            _server_log.info("client still reading its stream %gs past the request's time limit: connection "
                             "dropped", self._send_stall_s)
        else:
            _server_log.info("client read nothing of its answer for %gs: connection dropped", self._send_stall_s)
        self.transport.abort()  # close() would wait for the unread bytes to go out


class _ShapedRefusals:
    """For uvicorn's H11Protocol: a request h11 cannot read (a malformed request line or header, or
    a head still incomplete past the config's ``h11_max_incomplete_event_size``) is answered in the
    API's error shape (431 for the size), not uvicorn's plain-text 400; what the client is still
    sending is read and dropped for up to DRAIN_S before the close, so no reset destroys the answer."""

    _draining = False

    def send_400_response(self, msg: str) -> None:  # uvicorn's one answer to what h11 refuses
        if len(self.conn.trailing_data[0]) > self.config.h11_max_incomplete_event_size:
            status, message = 431, _head_too_large(self.config.h11_max_incomplete_event_size)
        else:
            status, message = 400, "not an HTTP/1.1 request this server can read (a malformed request line or header)"
        self._draining = True
        self.transport.write(_raw_error(status, message))
        self.transport.write_eof()  # the client sees the answer end, and closes: its EOF closes ours
        self.loop.call_later(DRAIN_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if not self._draining:  # (h11 has given up on this connection: its rest is dropped)
            super().data_received(data)

    def shutdown(self) -> None:
        if self._draining:  # answered outside h11, which would refuse to say it closes
            self.transport.close()
        else:
            super().shutdown()


def _head_too_large(limit: int) -> str:
    return (f"the request line and headers are over {limit} bytes; send less in the headers "
            f"(cookies, tokens) and the prompt in the JSON body")


class _HalfCloseAnswered:
    """For uvicorn's H11Protocol: a client that sent a whole request saying it sends nothing more
    (HTTP/1.0, or ``Connection: close``) and then shut its sending side (``shutdown(SHUT_WR)``, as
    ``nc -N``, socat and load balancers that close do) gets its answer: uvicorn closed on that EOF,
    so the request saw its client gone and nothing was sent. Any other client's EOF is still a
    hang-up that stops its generation at once (as nginx reads one): a FIN cannot tell a half-close
    from a close, and a keep-alive client's FIN is almost always a close."""

    def eof_received(self):
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete and not cycle.more_body
                and _said_it_would_close(self.scope)):
            return True  # the transport stays open to write the answer; closed after it (h11's MUST_CLOSE)
        return super().eof_received()


def _said_it_would_close(scope: dict) -> bool:
    """Whether the request said the connection ends with its answer: HTTP/1.0 without keep-alive,
    or ``Connection: close``."""
    tokens = {t.strip().lower() for name, value in scope["headers"] if name == b"connection"
              for t in value.split(b",")}
    return b"close" in tokens or (scope["http_version"] == "1.0" and b"keep-alive" not in tokens)


def _header_timeout_protocol(timeout_s: float, send_stall_s: float) -> type:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    response = _raw_error(408, f"the request line and headers did not arrive within {timeout_s:g} s")

    class HeaderTimeoutProtocol(_SendStallLimit, _ShapedRefusals, _HalfCloseAnswered, H11Protocol):
        """A connection whose next request has not been read up to the end of its headers
        (h11's client state IDLE) within ``timeout_s`` gets a 408 and is closed. Once the headers
        are in, the body's own limits (:func:`read_json_object`) and the request's take over.
        A connection whose writing stays paused (its client reads nothing) for ``send_stall_s`` is
        aborted (:class:`_SendStallLimit`). What h11 cannot read is refused in the error shape
        (:class:`_ShapedRefusals`); a half-close after a request that said so is answered
        (:class:`_HalfCloseAnswered`)."""

        _head_timer = None
        _send_stall_s = send_stall_s

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._watch_head()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch_head()

        def connection_lost(self, exc) -> None:
            self._head_timer = _cancelled(self._head_timer)
            super().connection_lost(exc)

        def _watch_head(self) -> None:
            if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
                self._head_timer = _cancelled(self._head_timer)
            elif self._head_timer is None:  # started by the first byte (or the opening), never reset
                self._head_timer = self.loop.call_later(timeout_s, self._head_too_slow)

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.write(response)
                self.transport.close()

    return HeaderTimeoutProtocol


class HeadLimit:
    """Pure ASGI middleware: a request whose line and headers are over ``limit`` bytes gets a 431 in
    the error shape. h11 refuses only a head still incomplete past the limit, so one read in
    whole (loopback reads up to 256 KB at once) passed, and the limit hung on the network."""

    def __init__(self, app, limit: int = MAX_HEAD_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and _head_bytes(scope) > self.limit:
            body = error_json(431, _head_too_large(self.limit))
            await send({"type": "http.response.start", "status": 431,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                    (b"content-length", str(len(body)).encode())]})
            return await send({"type": "http.response.body", "body": body})
        return await self.app(scope, receive, send)


def _head_bytes(scope: dict) -> int:
    """The request line and headers' size as sent (less any blanks around the values)."""
    target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 1
    return (len(scope["method"]) + target + 12
            + sum(len(name) + len(value) + 4 for name, value in scope["headers"]) + 2)


def sse(event: str | None, data) -> str:
    """One server-sent event (``data`` as JSON unless it is already a string)."""
    head = f"event: {event}\n" if event else ""
    body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"{head}data: {body}\n\n"


class SlotStreamingResponse(StreamingResponse):
    """Calls ``release`` however the response ends (done, error, client gone). ``deadline`` (the
    request's time limit, ``time.monotonic()``) bounds its delivery too: see DEADLINE_KEY."""

    def __init__(self, content, release, deadline: float | None = None, **kwargs):
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS, **kwargs)
        self._release, self._deadline = release, deadline

    async def __call__(self, scope, receive, send):
        if self._deadline is not None:  # (the protocol's own scope: uvicorn passes that dict down)
            scope[DEADLINE_KEY] = self._deadline
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


class SecurityHeaders:
    """Pure ASGI middleware (not BaseHTTPMiddleware, which would buffer/complicate SSE)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                         if k.lower().encode() not in present]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ShapedErrors:
    """Pure ASGI middleware: an error that Starlette itself answers in plain text (a file route's
    bad ``Range``: 400 "Malformed range header.", or 416 with an empty body) is rewritten as
    ``render(status, message)`` (JSON bytes), so every error a client sees has the API's one shape
    whichever layer refused it. Its other headers (``Content-Range``) are kept; a JSON error or
    any success passes through untouched and unbuffered."""

    def __init__(self, app, render):
        self.app, self.render = app, render

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict = {}

        async def reshape(message):
            if message["type"] == "http.response.start" and message["status"] >= 400 and not _is_json(message):
                held.update(start=message, body=b"")
                return
            if not held or message["type"] != "http.response.body":
                return await send(message)
            held["body"] += message.get("body", b"")
            if message.get("more_body", False):
                return
            await self._send_shaped(send, held["start"], held["body"])

        await self.app(scope, receive, reshape)

    async def _send_shaped(self, send, start: dict, text: bytes) -> None:
        from http import HTTPStatus

        status = start["status"]
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
        message = " ".join(text.decode("utf-8", "replace").split()) or phrase
        body = self.render(status, message)
        kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-type", b"content-length")]
        await send({**start, "headers": kept + [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _is_json(start: dict) -> bool:
    return any(k.lower() == b"content-type" and v.startswith(b"application/json") for k, v in start.get("headers", []))
