"""FastAPI app: ``POST /v1/generate`` (JSON, or SSE with ``"stream": true``),
``POST /v1/generate/stream`` (SSE), ``GET /health``, ``GET /`` (playground).

Errors are JSON ``{"error": "<one line>"}``: malformed JSON 400, oversize body 413 (refused
from its Content-Length before any of it is read; a chunked body is read only up to the cap),
invalid/unknown fields 422, busy 503 with Retry-After. Generation runs in worker threads
under :class:`~londonlm.serving.admission.Admission`; each request has one wall-clock
limit covering its queue wait and its generation: a request still queued at the limit gets
503, a generation still running stops and returns the text so far with
``finish_reason: "time_limit"``. No CORS middleware: only same-origin pages may call it.
Prompt text is plain text (``<|endoftext|>`` typed in a prompt is not a control token), and
``/health`` names the model (``run/final`` or a Hub id), never a filesystem path.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UsageError
from ..generation import (REQUEST_FIELDS, GenerationError, GenerationSettings, LoadedModel,
                          TextStream, generate, load_model, normalize_era)
from ..layout import Layout, RunLayout
from .admission import Admission, Busy
from .schemas import error_message, request_model

STATIC = Path(__file__).with_name("static")
# The playground loads only its own files: nothing from a CDN can run on the page.
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@dataclass
class ServerLimits:
    max_concurrency: int = 1
    max_queue: int = 8
    request_timeout_s: float = 60.0
    max_prompt_chars: int = 4000
    max_new_tokens_limit: int = 512
    max_samples: int = 4

    def validate(self) -> "ServerLimits":
        if self.max_concurrency < 1 or self.max_queue < 0 or self.request_timeout_s <= 0 \
                or self.max_prompt_chars < 1 or self.max_new_tokens_limit < 1 or self.max_samples < 1:
            raise UsageError(f"invalid server limits {self}: all must be positive (max_queue >= 0)")
        return self


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _sse(event: str | None, data: dict) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


class _SlotStreamingResponse(StreamingResponse):
    """Releases the concurrency slot however the response ends (done, error, disconnect)."""

    def __init__(self, content, release, **kwargs):
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


class _SecurityHeaders:
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


async def _read_capped(request: Request, cap: int) -> bytes | None:
    """The body, or None once it passes ``cap`` bytes (the rest is never read)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class _Service:
    """One model behind the API: request parsing, admission, JSON and SSE generation."""

    def __init__(self, lm: LoadedModel, limits: ServerLimits):
        self.lm, self.limits = lm, limits
        self.Req = request_model(limits.max_prompt_chars, limits.max_new_tokens_limit, limits.max_samples)
        self.max_body = 16_384 + 4 * limits.max_prompt_chars  # UTF-8 worst case plus the other fields
        self._admission: Admission | None = None

    @property
    def admission(self) -> Admission:
        if self._admission is None:  # created on first use, inside the server's event loop
            self._admission = Admission(self.limits.max_concurrency, self.limits.max_queue)
        return self._admission

    def health(self) -> dict:
        lm = self.lm
        return {"status": "ok", **lm.info(), "eras": [e.strip("<|>") for e in lm.eras],
                "limits": asdict(self.limits), "queue": self.admission.stats()}

    async def handle(self, request: Request, force_stream: bool = False):
        deadline = time.monotonic() + self.limits.request_timeout_s  # queue wait + generation
        parsed = await self._parse(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        req, settings = parsed
        if force_stream or req.stream:
            return await self._run_stream(req.prompt, settings, deadline)
        return await self._run_json(req.prompt, settings, deadline)

    async def _body(self, request: Request):
        """The raw body, or an error response (wrong type, or too large: refused from its
        Content-Length before reading, or as soon as a chunked body passes the cap)."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype and ctype != "application/json":
            return _error(415, f"send JSON with Content-Type: application/json, not {ctype}")
        declared = request.headers.get("content-length", "")  # the server checked its form
        if declared.isdigit() and int(declared) > self.max_body:
            return _error(413, f"request body too large ({declared} bytes; limit {self.max_body})")
        body = await _read_capped(request, self.max_body)
        if body is None:
            return _error(413, f"request body too large (over the limit of {self.max_body} bytes)")
        return body

    async def _parse(self, request: Request):
        """The validated request and its settings, or an error response."""
        body = await self._body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            return _error(400, f"malformed JSON: {e}")
        if not isinstance(raw, dict):
            return _error(400, 'the body must be a JSON object such as {"prompt": "London"}')
        try:
            req = self.Req.model_validate(raw)
        except ValidationError as e:
            return _error(422, error_message(e.errors()))
        try:
            settings = self.lm.defaults.updated(**{k: getattr(req, k) for k in REQUEST_FIELDS})
            settings.max_new_tokens = min(settings.max_new_tokens, self.limits.max_new_tokens_limit)
            if req.era:
                settings.era = normalize_era(req.era, self.lm.eras)
        except GenerationError as e:
            return _error(422, str(e))
        return req, settings

    async def _admit(self, deadline: float):
        try:
            return await self.admission.acquire(deadline - time.monotonic())
        except Busy as e:
            return _error(503, str(e), {"Retry-After": str(e.retry_after_s)})

    async def _run_json(self, prompt: str, settings: GenerationSettings, deadline: float):
        slot = await self._admit(deadline)
        if isinstance(slot, JSONResponse):
            return slot
        cancel = threading.Event()
        try:
            samples = await run_in_threadpool(generate, self.lm, prompt, settings, cancel=cancel,
                                              deadline=deadline)
        except GenerationError as e:
            return _error(422, str(e))
        finally:
            cancel.set()
            slot.release()
        return {"model": self.lm.model_id, "prompt": prompt, "settings": asdict(settings),
                "samples": [s.to_dict() for s in samples], "text": samples[0].text}

    async def _run_stream(self, prompt: str, settings: GenerationSettings, deadline: float):
        slot = await self._admit(deadline)
        if isinstance(slot, JSONResponse):
            return slot
        cancel = threading.Event()

        def release():
            cancel.set()
            slot.release()

        return _SlotStreamingResponse(self._events(prompt, settings, deadline, cancel), release,
                                      media_type="text/event-stream",
                                      headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _events(self, prompt, settings, deadline, cancel: threading.Event):
        lm = self.lm
        try:
            yield _sse("start", {"model": lm.model_id, "settings": asdict(settings)})
            for i in range(settings.num_samples):
                ts = TextStream(lm, prompt, settings, sample_index=i, cancel=cancel, deadline=deadline,
                                poll_timeout_s=self.limits.request_timeout_s + 30)
                async for chunk in iterate_in_threadpool(iter(ts)):
                    yield _sse(None, {"sample": i, "text": chunk})
                yield _sse("sample", {"sample": i, **ts.sample.to_dict()})
                if ts.sample.finish_reason in ("time_limit", "cancelled"):
                    break
            yield _sse("done", {})
        except GenerationError as e:
            yield _sse("error", {"error": str(e)})
        except Exception as e:  # headers are already sent: report in-band, never hang
            yield _sse("error", {"error": f"internal error: {type(e).__name__}: {e}"})
        finally:
            cancel.set()  # client gone or finished: stop any running generate()


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return _error(422, error_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")


def create_app(model: str | Path | None = None, *, lm: LoadedModel | None = None,
               layout: Layout | None = None, run: str | RunLayout | None = None,
               device: str = "auto", max_concurrency: int = 1, max_queue: int = 8,
               request_timeout_s: float = 60.0, max_prompt_chars: int = 4000,
               max_new_tokens_limit: int = 512, max_samples: int = 4) -> FastAPI:
    """Build the app around one model: an already loaded ``lm``, or ``model`` (a folder, or a
    spec resolved with ``layout``/``run``) loaded with :func:`load_model`."""
    limits = ServerLimits(max_concurrency, max_queue, request_timeout_s, max_prompt_chars,
                          max_new_tokens_limit, max_samples).validate()
    if lm is None:
        lm = load_model(model, layout=layout, run=run, device=device)
    service = _Service(lm, limits)
    app = FastAPI(title="londonlm", docs_url=None, redoc_url=None)
    app.state.lm, app.state.limits = lm, limits
    _add_error_handlers(app)

    @app.post("/v1/generate")
    async def generate_endpoint(request: Request):
        return await service.handle(request)

    @app.post("/v1/generate/stream")
    async def generate_stream_endpoint(request: Request):
        return await service.handle(request, force_stream=True)

    @app.get("/health")
    async def health():
        return service.health()

    @app.get("/", include_in_schema=False)
    async def playground():
        return FileResponse(STATIC / "playground.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(_SecurityHeaders)
    return app
