"""FastAPI app: ``POST /v1/generate`` (JSON, or SSE with ``"stream": true``),
``POST /v1/generate/stream`` (SSE), ``GET /health``, ``GET /`` (playground).

Errors are JSON ``{"error": "<one line>"}``: malformed JSON 400, oversize body 413,
invalid/unknown fields 422, busy 503 with Retry-After. Generation runs in worker threads
under :class:`~londonlm.serving.admission.Admission`; each request has one wall-clock
limit covering its queue wait and its generation: a request still queued at the limit gets
503, a generation still running stops and returns the text so far with
``finish_reason: "time_limit"``. No CORS middleware: only same-origin pages may call it.
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

from ..generation import (GenerationError, GenerationSettings, LoadedModel, TextStream, generate,
                          load_model, normalize_era)
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
            raise ValueError(f"invalid server limits {self}: all must be positive (max_queue >= 0)")
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


def create_app(model_path: str | Path | None = None, *, lm: LoadedModel | None = None,
               device: str = "auto", run_dir: str | Path | None = None,
               runs_root: str | Path | None = None, max_concurrency: int = 1, max_queue: int = 8,
               request_timeout_s: float = 60.0, max_prompt_chars: int = 4000,
               max_new_tokens_limit: int = 512, max_samples: int = 4) -> FastAPI:
    """Build the app around one model (a spec for :func:`load_model`, or an already loaded ``lm``)."""
    limits = ServerLimits(max_concurrency, max_queue, request_timeout_s, max_prompt_chars,
                          max_new_tokens_limit, max_samples).validate()
    if lm is None:
        lm = load_model(str(model_path) if model_path is not None else None, run_dir=run_dir,
                        runs_root=runs_root, device=device)
    Req = request_model(limits.max_prompt_chars, limits.max_new_tokens_limit, limits.max_samples)
    max_body = 16_384 + 4 * limits.max_prompt_chars  # UTF-8 worst case plus the other fields
    app = FastAPI(title="londonlm", docs_url=None, redoc_url=None)
    app.state.lm, app.state.limits = lm, limits
    admission: Admission | None = None  # created on first use, inside the server's event loop

    def get_admission() -> Admission:
        nonlocal admission
        if admission is None:
            admission = Admission(limits.max_concurrency, limits.max_queue)
        return admission

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return _error(422, error_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    async def parse(request: Request):
        """The validated request and its settings, or an error response."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype and ctype != "application/json":
            return _error(415, f"send JSON with Content-Type: application/json, not {ctype}")
        body = await request.body()
        if len(body) > max_body:
            return _error(413, f"request body too large ({len(body)} bytes; limit {max_body})")
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            return _error(400, f"malformed JSON: {e}")
        if not isinstance(raw, dict):
            return _error(400, 'the body must be a JSON object such as {"prompt": "London"}')
        try:
            req = Req.model_validate(raw)
        except ValidationError as e:
            return _error(422, error_message(e.errors()))
        try:
            settings = lm.defaults.updated(**{k: getattr(req, k) for k in (
                "max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty",
                "no_repeat_ngram_size", "num_samples", "seed")})
            settings.max_new_tokens = min(settings.max_new_tokens, limits.max_new_tokens_limit)
            if req.era:
                settings.era = normalize_era(req.era, lm.eras)
        except GenerationError as e:
            return _error(422, str(e))
        return req, settings

    async def admit(deadline: float):
        try:
            return await get_admission().acquire(deadline - time.monotonic())
        except Busy as e:
            return _error(503, str(e), {"Retry-After": str(e.retry_after_s)})

    async def run_json(prompt: str, settings: GenerationSettings, deadline: float):
        slot = await admit(deadline)
        if isinstance(slot, JSONResponse):
            return slot
        cancel = threading.Event()
        try:
            samples = await run_in_threadpool(generate, lm, prompt, settings, cancel=cancel,
                                              deadline=deadline)
        except GenerationError as e:
            return _error(422, str(e))
        finally:
            cancel.set()
            slot.release()
        return {"model": lm.model_id, "prompt": prompt, "settings": asdict(settings),
                "samples": [s.to_dict() for s in samples], "text": samples[0].text}

    async def run_stream(prompt: str, settings: GenerationSettings, deadline: float):
        slot = await admit(deadline)
        if isinstance(slot, JSONResponse):
            return slot
        cancel = threading.Event()

        async def events():
            try:
                yield _sse("start", {"model": lm.model_id, "settings": asdict(settings)})
                for i in range(settings.num_samples):
                    ts = TextStream(lm, prompt, settings, sample_index=i, cancel=cancel,
                                    deadline=deadline, poll_timeout_s=limits.request_timeout_s + 30)
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

        def release():
            cancel.set()
            slot.release()

        return _SlotStreamingResponse(events(), release, media_type="text/event-stream",
                                      headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/generate")
    async def generate_endpoint(request: Request):
        deadline = time.monotonic() + limits.request_timeout_s  # queue wait + generation
        parsed = await parse(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        req, settings = parsed
        if req.stream:
            return await run_stream(req.prompt, settings, deadline)
        return await run_json(req.prompt, settings, deadline)

    @app.post("/v1/generate/stream")
    async def generate_stream_endpoint(request: Request):
        deadline = time.monotonic() + limits.request_timeout_s
        parsed = await parse(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        req, settings = parsed
        return await run_stream(req.prompt, settings, deadline)

    @app.get("/health")
    async def health():
        return {"status": "ok", **lm.info(), "eras": [e.strip("<|>") for e in lm.eras],
                "limits": asdict(limits), "queue": get_admission().stats()}

    @app.get("/", include_in_schema=False)
    async def playground():
        return FileResponse(STATIC / "playground.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    app.add_middleware(_SecurityHeaders)
    return app
