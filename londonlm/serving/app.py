"""FastAPI app: ``POST /v1/generate`` (JSON, or SSE with ``"stream": true``),
``POST /v1/generate/stream`` (SSE), the OpenAI-compatible ``/v1/models``, ``/v1/completions``
and ``/v1/chat/completions`` (:mod:`.openai_api`), ``GET /health``, ``GET /`` (playground).

Every generation goes through one :class:`~londonlm.serving.batching.BatchEngine`: concurrent
requests share forward passes. Every error (native, OpenAI, 404/405, 500, a file route's bad
``Range``: :class:`.httpio.ShapedErrors`; a request line or header h11 cannot read 400, a head over
64 KB 431, one that stops arriving 408: the protocol's, :func:`.httpio.uvicorn_options`) is OpenAI's JSON
``{"error": {"message": "<one line>", "type", "param", "code"}}``: malformed
JSON, JSON nested past 32 levels or a lone surrogate in any string 400 (every endpoint checks the
body at one boundary, :func:`.httpio.read_json_object`), a body that stops arriving 408, oversize
body 413 (refused from its Content-Length before any of it is read; a chunked body is read only up
to the cap), invalid/unknown fields 422, busy 503 with Retry-After. Each
request has one wall-clock limit covering its queue wait and its generation: a request still
queued at the limit gets 503, a generation still running stops and returns the text so far with
``finish_reason: "time_limit"``; a client that hangs up, streamed or not, stops its generation and
frees its slot (or its queue place) at once (:func:`.httpio.unless_disconnected`). A compressed
body (``Content-Encoding``) is 415, never decoded. No CORS middleware: only same-origin pages may call it.
Prompt text is plain text (``<|endoftext|>`` typed in a prompt is not a control token), and
``/health`` names the model (``run/final`` or a Hub id), never a filesystem path.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core import Layout, RunLayout
from ..generation import (REQUEST_FIELDS, GenerationError, GenerationSettings, LoadedModel, load_model,
                          normalize_era)
from .httpio import (ApiError, HeadLimit, SecurityHeaders, ShapedErrors, SlotStreamingResponse, error_body,
                     error_json, read_json_object, sse, unless_disconnected)
from .openai_api import add_openai_routes, openai_error
from .schemas import error_message, request_model
from .service import ServerLimits, Service

STATIC = Path(__file__).with_name("static")
__all__ = ["ServerLimits", "create_app"]


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """Every error the server answers, native or not, in OpenAI's shape: one client parser."""
    return openai_error(ApiError(status, message, headers=headers))


class _Native:
    """``/v1/generate``: request parsing, JSON and SSE answers."""

    def __init__(self, service: Service):
        self.service, self.lm, self.limits = service, service.lm, service.limits
        self.Req = request_model(self.limits.max_prompt_chars, self.limits.max_new_tokens_limit,
                                 self.limits.max_samples)

    async def handle(self, request: Request, force_stream: bool = False):
        deadline = time.monotonic() + self.limits.request_timeout_s  # queue wait + generation
        try:
            req, settings = self._parse(await read_json_object(request, self.service.max_body))
            job = self.service.text_job(req.prompt, settings, deadline)
            slot = await unless_disconnected(request, self.service.admit(deadline))
        except ApiError as e:
            return _error(e.status, e.message, e.headers)
        if force_stream or req.stream:
            return SlotStreamingResponse(self._events(job, settings), slot.release, deadline)
        try:
            samples = await unless_disconnected(request, self.service.samples([job]))
        except ApiError as e:
            return _error(e.status, e.message)
        finally:
            slot.release()
        return {"model": self.lm.model_id, "prompt": req.prompt, "settings": asdict(settings),
                "samples": [s.to_dict() for s in samples], "text": samples[0].text}

    def _parse(self, raw: dict):
        """The validated request and its settings (ApiError 422 when invalid)."""
        try:
            req = self.Req.model_validate(raw)
        except ValidationError as e:
            raise ApiError(422, error_message(e.errors())) from None
        try:
            settings = self.lm.defaults.updated(**{k: getattr(req, k) for k in REQUEST_FIELDS})
            settings.max_new_tokens = min(settings.max_new_tokens, self.limits.max_new_tokens_limit)
            if req.era:
                settings.era = normalize_era(req.era, self.lm.eras, self.lm.era_width)
        except GenerationError as e:
            raise ApiError(422, str(e)) from None
        return req, settings

    async def _events(self, job, settings: GenerationSettings):
        try:
            yield sse("start", {"model": self.lm.model_id, "settings": asdict(settings)})
            async for kind, i, payload in self.service.events([job]):
                if kind == "text":
                    yield sse(None, {"sample": i, "text": payload})
                else:
                    yield sse("sample", {"sample": i, **payload.to_dict()})
            yield sse("done", {})
        except ApiError as e:  # headers are already sent: report in-band, never hang
            yield sse("error", {"error": error_body(e)})


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return _error(422, error_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # a bug: its kind alone for the client (the text of an exception may name the server's
        # files); Starlette raises it on after this answer, and the server logs its traceback
        return _error(500, f"internal error ({type(exc).__name__}); the server's log has the details")


def create_app(model: str | Path | None = None, *, lm: LoadedModel | None = None,
               layout: Layout | None = None, run: str | RunLayout | None = None,
               device: str = "auto", dtype: str = "auto", max_concurrency: int | None = None,
               max_queue: int | None = None, request_timeout_s: float = 60.0, max_prompt_chars: int = 4000,
               max_new_tokens_limit: int = 512, max_samples: int = 4,
               kv_cache_mb: float | str = "auto") -> FastAPI:
    """Build the app around one model: an already loaded ``lm``, or ``model`` (a folder, or a
    spec resolved with ``layout``/``run``) loaded with :func:`load_model` on ``device`` in
    ``dtype``. ``max_concurrency`` and ``max_queue`` default to what ``kv_cache_mb`` of KV cache
    allows (``auto``: measured once the model is loaded; see ServerLimits)."""
    limits = ServerLimits(max_concurrency, max_queue, request_timeout_s, max_prompt_chars,
                          max_new_tokens_limit, max_samples, kv_cache_mb).validate()
    if lm is None:
        lm = load_model(model, layout=layout, run=run, device=device, dtype=dtype)
    service = Service(lm, limits.resolved(lm))
    native = _Native(service)
    app = FastAPI(title="londonlm", docs_url=None, redoc_url=None)
    app.state.lm, app.state.limits, app.state.service = lm, service.limits, service
    _add_error_handlers(app)

    @app.post("/v1/generate")
    async def generate_endpoint(request: Request):
        return await native.handle(request)

    @app.post("/v1/generate/stream")
    async def generate_stream_endpoint(request: Request):
        return await native.handle(request, force_stream=True)

    @app.api_route("/health", methods=["GET", "HEAD"])  # HEAD: what uptime checks send
    async def health():
        return service.health()

    @app.get("/", include_in_schema=False)
    async def playground():
        return FileResponse(STATIC / "playground.html", media_type="text/html")

    add_openai_routes(app, service)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(ShapedErrors, render=error_json)
    app.add_middleware(HeadLimit)  # (inside SecurityHeaders: its 431 gets them too)
    app.add_middleware(SecurityHeaders)
    return app
