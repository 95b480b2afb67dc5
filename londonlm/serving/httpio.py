"""HTTP plumbing shared by the native and the OpenAI-compatible APIs: capped body reading,
server-sent events, a streaming response that frees its admission slot however it ends, and the
security headers. Problems are raised as :class:`ApiError`; each API renders it in its shape."""
from __future__ import annotations

import json

from fastapi import Request
from fastapi.responses import StreamingResponse

from ..core import LondonLMError

# The playground loads only its own files: nothing from a CDN can run on the page.
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ApiError(LondonLMError):
    """A request refused with ``status`` (a client's error, or the server busy or failing);
    ``param`` names the offending field when known."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


async def _read_capped(request: Request, cap: int) -> bytes | None:
    """The body, or None once it passes ``cap`` bytes (the rest is never read)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request: Request, max_body: int) -> dict:
    """The body as a JSON object. Refused: a non-JSON content type (415); a body over
    ``max_body`` bytes (413), from its Content-Length before any of it is read, or as soon as a
    chunked body passes the cap; malformed JSON or a non-object (400)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype != "application/json":
        raise ApiError(415, f"send JSON with Content-Type: application/json, not {ctype}")
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
    if not isinstance(raw, dict):
        raise ApiError(400, 'the body must be a JSON object such as {"prompt": "London"}')
    return raw


def sse(event: str | None, data) -> str:
    """One server-sent event (``data`` as JSON unless it is already a string)."""
    head = f"event: {event}\n" if event else ""
    body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"{head}data: {body}\n\n"


class SlotStreamingResponse(StreamingResponse):
    """Calls ``release`` however the response ends (done, error, client gone)."""

    def __init__(self, content, release, **kwargs):
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS, **kwargs)
        self._release = release

    async def __call__(self, scope, receive, send):
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
