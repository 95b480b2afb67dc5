"""OpenAI-compatible endpoints, so the ``openai`` client (``base_url=http://127.0.0.1:8000/v1``)
and tools built on it work unmodified: ``GET /v1/models``, ``POST /v1/completions`` and, for chat
models, ``POST /v1/chat/completions``; ``stream: true`` answers in OpenAI's chunk format ending
with ``data: [DONE]``; ``usage``, ``stop``, ``n`` and ``seed`` work; errors are
``{"error": {"message", "type", "param", "code"}}``.

Sampling settings a request leaves out are the model's own defaults (as on ``/v1/generate``), not
OpenAI's. Completion prompts are encoded as ``/v1/generate`` encodes them. Chat messages go through
the tokenizer's chat template (``apply_chat_template(..., sanitize_control_tokens=True)``): only
the template writes role tokens; a message's text is always text. A chat answer ends at any
control token the template writes (the end of its turn) or the model's end-of-sequence tokens.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import replace

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ..generation import GenerationError, GenerationSettings, normalize_era
from .batching import Job
from .httpio import ApiError, SlotStreamingResponse, read_json_object, sse
from .schemas import error_message, openai_models
from .service import Service, seeds_for

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "time_limit": "length", "cancelled": "length"}
MAX_PROMPTS = 16  # prompts in one /v1/completions request


def openai_error(e: ApiError) -> JSONResponse:
    body = {"message": e.message, "type": "invalid_request_error" if e.status < 500 else "server_error",
            "param": e.param, "code": e.code}
    return JSONResponse({"error": body}, status_code=e.status, headers=e.headers)


def chat_stop_ids(lm) -> frozenset[int]:
    """Where a chat answer ends: the model's end-of-sequence ids (its generation config's too) and
    every control token the chat template writes (a new role marker also ends the turn)."""
    tok = lm.tokenizer
    eos = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    ids = {tok.eos_token_id, *(eos if isinstance(eos, list) else [eos])}
    template = tok.chat_template if isinstance(getattr(tok, "chat_template", None), str) else ""
    ids |= {i for i, t in tok.added_tokens_decoder.items() if t.special and t.content in template}
    return frozenset(i for i in ids if i is not None)


class _OpenAI:
    def __init__(self, service: Service):
        self.service, self.lm, self.limits = service, service.lm, service.limits
        self.Completion, self.Chat = openai_models(self.limits.max_new_tokens_limit, self.limits.max_samples)
        self.is_chat = bool(getattr(self.lm.tokenizer, "chat_template", None))
        self.chat_stops = chat_stop_ids(self.lm) if self.is_chat else frozenset()

    def model_card(self) -> dict:
        return {"id": self.lm.model_id, "object": "model", "created": 0, "owned_by": "londonlm"}

    # ------------------------------------------------------------------ requests

    async def _request(self, request: Request, schema):
        """The validated request, for the model this server serves."""
        try:
            req = schema.model_validate(await read_json_object(request, self.service.max_body))
        except ValidationError as e:
            loc = e.errors()[0].get("loc", ())
            raise ApiError(400, error_message(e.errors()), param=".".join(map(str, loc)) or None) from None
        if req.model != self.lm.model_id:
            raise ApiError(404, f"the model '{req.model}' does not exist; this server serves "
                                f"'{self.lm.model_id}' (GET /v1/models)", param="model", code="model_not_found")
        for field, off in (("presence_penalty", 0), ("frequency_penalty", 0), ("logprobs", None),
                           ("logit_bias", None), ("top_logprobs", None), ("suffix", None)):
            value = getattr(req, field, None)
            if value not in (None, off, False, {}):
                raise ApiError(400, f"{field} is not supported by this server (use repetition_penalty)"
                               if "penalty" in field else f"{field} is not supported by this server", param=field)
        return req

    def _settings(self, req, max_tokens: int | None) -> GenerationSettings:
        try:
            s = self.lm.defaults.updated(max_new_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
                                         top_k=req.top_k, repetition_penalty=req.repetition_penalty,
                                         no_repeat_ngram_size=req.no_repeat_ngram_size, num_samples=req.n,
                                         seed=req.seed)
        except GenerationError as e:
            raise ApiError(400, str(e)) from None
        return replace(s, max_new_tokens=min(s.max_new_tokens, self.limits.max_new_tokens_limit))

    @staticmethod
    def _stop(req) -> tuple[str, ...]:
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        if len(stop) > 4 or not all(stop):
            raise ApiError(400, "stop must be up to 4 non-empty strings", param="stop")
        return stop

    def _completion_jobs(self, req, deadline: float) -> tuple[list[Job], list[str]]:
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        if not prompts or len(prompts) > MAX_PROMPTS:
            raise ApiError(400, f"prompt must be a string or a list of 1 to {MAX_PROMPTS} strings", param="prompt")
        if any(len(p) > self.limits.max_prompt_chars for p in prompts):
            raise ApiError(400, f"a prompt is longer than {self.limits.max_prompt_chars} characters", param="prompt")
        if req.best_of not in (None, req.n or 1):
            raise ApiError(400, "best_of is not supported (leave it unset or equal to n)", param="best_of")
        settings = self._settings(req, req.max_tokens)
        try:
            settings.era = normalize_era(req.era, self.lm.eras)
        except GenerationError as e:
            raise ApiError(400, str(e), param="era") from None
        n, stop = settings.num_samples, self._stop(req)
        return [self.service.text_job(p, settings, deadline, seed_offset=k * n, stop=stop)
                for k, p in enumerate(prompts)], prompts

    def _chat_job(self, req, deadline: float) -> Job:
        if not self.is_chat:
            raise ApiError(400, f"'{self.lm.model_id}' is not a chat model (its tokenizer has no chat template); "
                                f"use /v1/completions", param="model", code="model_not_chat")
        from ..chat import ChatRequestError, validate_messages, with_era

        try:
            messages = with_era(validate_messages([m.plain() for m in req.messages],
                                                  max_chars=self.limits.max_prompt_chars), req.year)
        except (ChatRequestError, ValueError) as e:
            raise ApiError(400, str(e), param="messages") from None
        if (req.response_format or {}).get("type", "text") != "text":
            raise ApiError(400, "response_format must be text", param="response_format")
        try:
            ids = list(self.lm.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, sanitize_control_tokens=True)["input_ids"])
        except Exception as e:  # the template refused the conversation
            raise ApiError(400, f"the chat template cannot render these messages: {e}", param="messages") from None
        room = self.lm.context_length - len(ids)
        if room < 1:
            raise ApiError(400, f"the messages are {len(ids)} tokens: the model's context is {self.lm.context_length}; "
                                f"send a shorter conversation", param="messages", code="context_length_exceeded")
        settings = self._settings(req, req.max_completion_tokens or req.max_tokens)
        settings = replace(settings, max_new_tokens=min(settings.max_new_tokens, room))
        return Job(ids, settings, seeds_for(settings.seed, settings.num_samples), self.chat_stops,
                   self._stop(req), deadline)

    # ------------------------------------------------------------------ answers

    async def answer(self, request: Request, chat: bool):
        deadline = time.monotonic() + self.limits.request_timeout_s
        try:
            req = await self._request(request, self.Chat if chat else self.Completion)
            if chat:
                jobs, prompts = [self._chat_job(req, deadline)], None
            else:
                jobs, prompts = self._completion_jobs(req, deadline)
            slot = await self.service.admit(deadline)
        except ApiError as e:
            return openai_error(e)
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
                "model": self.lm.model_id}
        echo = [p for p in prompts for _ in range(jobs[0].settings.num_samples)] if prompts and req.echo else None
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return SlotStreamingResponse(self._chunks(jobs, head, chat, echo, usage), slot.release)
        try:
            samples = await self.service.samples(jobs)
        except ApiError as e:
            return openai_error(e)
        finally:
            slot.release()
        choices = [_choice(chat, i, (echo[i] if echo else "") + s.text, FINISH[s.finish_reason])
                   for i, s in enumerate(samples)]
        return {**head, "object": "chat.completion" if chat else "text_completion", "choices": choices,
                "usage": _usage(jobs, samples), "system_fingerprint": None}

    async def _chunks(self, jobs: list[Job], head: dict, chat: bool, echo: list[str] | None, with_usage: bool):
        head = {**head, "object": "chat.completion.chunk" if chat else "text_completion", "system_fingerprint": None}
        n = sum(len(j.seeds) for j in jobs)
        try:
            for i in range(n):  # a first chunk per choice: the role (chat) or the echoed prompt
                if chat or echo:
                    yield sse(None, {**head, "choices": [_delta(chat, i, "", None, first=True, echo=echo)]})
            samples = {}
            async for kind, i, payload in self.service.events(jobs):
                if kind == "text":
                    yield sse(None, {**head, "choices": [_delta(chat, i, payload, None)]})
                else:
                    samples[i] = payload
                    yield sse(None, {**head, "choices": [_delta(chat, i, "", FINISH[payload.finish_reason])]})
            if with_usage:
                yield sse(None, {**head, "choices": [], "usage": _usage(jobs, [samples[i] for i in sorted(samples)])})
            yield sse(None, "[DONE]")
        except ApiError as e:  # headers are already sent: the error goes in-band, as OpenAI sends it
            yield sse(None, {"error": {"message": e.message, "type": "server_error", "param": None, "code": None}})


def _choice(chat: bool, i: int, text: str, finish: str) -> dict:
    if chat:
        return {"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                "finish_reason": finish}
    return {"index": i, "text": text, "logprobs": None, "finish_reason": finish}


def _delta(chat: bool, i: int, text: str, finish: str | None, first: bool = False, echo=None) -> dict:
    if chat:
        delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {"index": i, "text": echo[i] if first else text, "logprobs": None, "finish_reason": finish}


def _usage(jobs: list[Job], samples) -> dict:
    prompt = sum(len(j.prompt_ids) for j in jobs)
    completion = sum(s.new_tokens for s in samples)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def add_openai_routes(app: FastAPI, service: Service) -> None:
    api = _OpenAI(service)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [api.model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        if model_id != service.lm.model_id:
            return openai_error(ApiError(404, f"the model '{model_id}' does not exist", param="model",
                                         code="model_not_found"))
        return api.model_card()

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await api.answer(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await api.answer(request, chat=True)
