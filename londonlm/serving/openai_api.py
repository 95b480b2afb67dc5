"""OpenAI-compatible endpoints, so the ``openai`` client (``base_url=http://127.0.0.1:8000/v1``)
and tools built on it work unmodified: ``GET /v1/models``, ``POST /v1/completions`` and, for chat
models, ``POST /v1/chat/completions``; ``stream: true`` answers in OpenAI's chunk format ending
with ``data: [DONE]``; ``usage``, ``stop``, ``n`` and ``seed`` work (sample i of each prompt draws
with ``seed + i``: a prompt's text is the same alone, in a list of prompts or batched with other
requests); errors are ``{"error": {"message", "type", "param", "code"}}``.

Sampling settings a request leaves out are the model's own defaults (as on ``/v1/generate``), not
OpenAI's; for chat, the chat answers' defaults where the model's config sets none
(:func:`chat_defaults`). Completion prompts are encoded as ``/v1/generate`` encodes them
(``<|endoftext|>`` first), or given as token ids (one list or a list of lists), taken exactly.
Either kind is never cut (the echo, the scores and ``usage`` describe the prompt sent): one that
does not fit the model's context, leaving room for a new token unless ``max_tokens`` is 0, is a 400
``context_length_exceeded`` naming its token count, as OpenAI answers; ``max_tokens`` is cut to the
room left. ``logprobs: k`` (0-5) reports each completion token's log-probability and, in
``top_logprobs``, its ``k`` likeliest alternatives and the token itself (up to k + 1, as OpenAI
reports them); with ``echo`` the prompt's tokens too, and ``max_tokens: 0`` scores the prompt alone:
what lm-evaluation-harness's ``local-completions`` model scores log-likelihood tasks with.
Scoring, like generation, ends at the request's time limit: a request whose choices are not all
scored by then is a 503 ``timeout`` (a choice's logprobs are never left out).
``tokens[i]`` is token i's part of the choice's ``text`` and ``text_offset[i]`` where it starts there (``""`` for a token the text does not show, such as the ``<|endoftext|>`` before a text
prompt). Chat messages go through the tokenizer's chat template (``apply_chat_template(...,
sanitize_control_tokens=True)``): only the template writes role tokens; a message's text is always
text. A chat answer ends at any control token the template writes (the end of its turn) or the
model's end-of-sequence tokens.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ..generation import (GenerationError, GenerationSettings, Sample, encode_prompt, fit_pieces,
                          normalize_era, score_tokens, text_pieces)
from .batching import Job
from .httpio import ApiError, SlotStreamingResponse, error_body, read_json_object, sse, unless_disconnected
from .schemas import error_message, openai_models
from .service import Service, seeds_for

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "time_limit": "length", "cancelled": "length"}
MAX_PROMPTS = 16  # prompts in one /v1/completions request


def openai_error(e: ApiError) -> JSONResponse:
    return JSONResponse({"error": error_body(e)}, status_code=e.status, headers=e.headers)


def chat_stop_ids(lm) -> frozenset[int]:
    """Where a chat answer ends: the model's end-of-sequence ids (its generation config's too) and
    every control token the chat template writes (a new role marker also ends the turn)."""
    tok = lm.tokenizer
    eos = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    ids = {tok.eos_token_id, *(eos if isinstance(eos, list) else [eos])}
    template = tok.chat_template if isinstance(getattr(tok, "chat_template", None), str) else ""
    ids |= {i for i, t in tok.added_tokens_decoder.items() if t.special and t.content in template}
    return frozenset(i for i in ids if i is not None)


def chat_defaults(lm) -> GenerationSettings:
    """The sampling a chat request leaves unset: what the model's generation_config sets, else
    the chat answers' own defaults (:class:`~londonlm.chat.ChatSettings`: no top-k cut, no
    repetition penalty, which push short answers off the question's words), as ``--chat``, the
    REPL and the chat evaluation answer; not the pre-training defaults a chat model's config
    (written by fine-tuning with no sampling values) would otherwise fall back on."""
    from ..chat import ChatSettings

    gen = getattr(lm.model, "generation_config", None)
    explicit = gen.to_diff_dict() if hasattr(gen, "to_diff_dict") else {}
    chat = ChatSettings()
    return replace(lm.defaults, **{k: getattr(chat, k) for k in ("top_k", "repetition_penalty")
                                   if explicit.get(k) is None})


def _chat_cutoff(lm) -> int | None:
    from ..chat import chat_cutoff

    return chat_cutoff(lm.path)


class _OpenAI:
    def __init__(self, service: Service):
        self.service, self.lm, self.limits = service, service.lm, service.limits
        self.Completion, self.Chat = openai_models(self.limits.max_new_tokens_limit, self.limits.max_samples)
        self.is_chat = bool(getattr(self.lm.tokenizer, "chat_template", None))
        self.chat_stops = chat_stop_ids(self.lm) if self.is_chat else frozenset()
        self.chat_defaults = chat_defaults(self.lm) if self.is_chat else None
        self.chat_cutoff = _chat_cutoff(self.lm) if self.is_chat else None  # a time-locked model's last era

    def model_card(self) -> dict:
        return {"id": self.lm.model_id, "object": "model", "created": 0, "owned_by": "londonlm"}

    # ------------------------------------------------------------------ requests

    async def _request(self, request: Request, schema):
        """The validated request, for the model this server serves."""
        try:
            req = schema.model_validate(await read_json_object(request, self.service.max_body))
        except ValidationError as e:
            loc = e.errors()[0].get("loc", ())
            message = error_message(e.errors())
            if any(err.get("loc") == ("model",) and err.get("type") == "missing" for err in e.errors()):
                message += f" (this server serves '{self.lm.model_id}': GET /v1/models)"
            raise ApiError(400, message, param=".".join(map(str, loc)) or None) from None
        if req.model != self.lm.model_id:
            raise ApiError(404, f"the model '{req.model}' does not exist; this server serves "
                                f"'{self.lm.model_id}' (GET /v1/models)", param="model", code="model_not_found")
        unsupported = (("presence_penalty", 0), ("frequency_penalty", 0), ("logit_bias", None),
                       ("top_logprobs", None), ("suffix", None)) + ((("logprobs", None),) if schema is self.Chat else ())
        for field, off in unsupported:
            value = getattr(req, field, None)
            if value not in (None, off, False, {}):
                raise ApiError(400, f"{field} is not supported by this server (use repetition_penalty)"
                               if "penalty" in field else f"{field} is not supported by this server", param=field)
        if req.stream_options is not None and not req.stream:  # OpenAI's 400 too: usage comes in the answer
            raise ApiError(400, "stream_options is only allowed when stream is true (a non-streamed answer always "
                                "has usage)", param="stream_options")
        if schema is self.Completion and req.stream and (req.logprobs is not None or req.max_tokens == 0):
            raise ApiError(400, "logprobs and max_tokens 0 are answered without streaming: leave stream unset",
                           param="stream")
        return req

    def _settings(self, req, max_tokens: int | None, defaults: GenerationSettings | None = None) -> GenerationSettings:
        try:
            s = (defaults or self.lm.defaults).updated(
                max_new_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                repetition_penalty=req.repetition_penalty, no_repeat_ngram_size=req.no_repeat_ngram_size,
                num_samples=req.n, seed=req.seed)
        except GenerationError as e:
            raise ApiError(400, str(e)) from None
        return replace(s, max_new_tokens=min(s.max_new_tokens, self.limits.max_new_tokens_limit))

    @staticmethod
    def _stop(req) -> tuple[str, ...]:
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        if len(stop) > 4 or not all(stop):
            raise ApiError(400, "stop must be up to 4 non-empty strings", param="stop")
        return stop

    def _prompts(self, req, era: str | None) -> list[tuple[str, list[int], bool]]:
        """The request's prompts as ``(text, ids, as_ids)``: a string or strings, encoded as
        /v1/generate encodes text (the text echoed is the one sent: the ``<|endoftext|>`` and era
        tokens put before it are not in it), or token ids, one list or a list of lists, taken as
        they are (echoed as they decode, control tokens shown)."""
        p = req.prompt
        items = [p] if isinstance(p, str) or (p and all(isinstance(x, int) for x in p)) else list(p)
        if not items or len(items) > MAX_PROMPTS:
            raise ApiError(400, f"prompt must be a string, a list of token ids, or a list of 1 to {MAX_PROMPTS} "
                                f"of either", param="prompt")
        tok, vocab = self.lm.tokenizer, len(self.lm.tokenizer)
        out = []
        for item in items:
            if isinstance(item, str):
                if len(item) > self.limits.max_prompt_chars:
                    raise ApiError(400, f"a prompt is longer than {self.limits.max_prompt_chars} characters",
                                   param="prompt")
                out.append((item, encode_prompt(tok, item, era), False))
                continue
            if not item:
                raise ApiError(400, "a token-id prompt holds at least one id", param="prompt")
            if not all(0 <= t < vocab for t in item):
                raise ApiError(400, f"token ids are 0 to {vocab - 1} for this model", param="prompt")
            out.append((tok.decode(item, clean_up_tokenization_spaces=False), list(item), True))
        return out

    def _check_fits(self, ids: list[int], score_only: bool) -> None:
        """A prompt is never cut (text or ids alike): its echo, scores and usage must be the
        prompt sent. Scoring needs it within the context, generating one position more."""
        context = self.lm.context_length
        if len(ids) < context or (score_only and len(ids) == context):
            return
        room = (f"is longer than the model's context ({context} tokens)" if score_only else
                f"leaves no room for new tokens in the model's context ({context}); send max_tokens 0 to score it")
        raise ApiError(400, f"a prompt of {len(ids)} tokens {room}: send a shorter prompt (prompts are never cut)",
                       param="prompt", code="context_length_exceeded")

    def _completion_jobs(self, req, deadline: float) -> tuple[list[Job], list[tuple[str, bool]]]:
        if req.best_of not in (None, req.n or 1):
            raise ApiError(400, "best_of is not supported (leave it unset or equal to n)", param="best_of")
        score_only = req.max_tokens == 0  # echo + logprobs of the prompt alone, nothing generated
        settings = self._settings(req, None if score_only else req.max_tokens)
        try:
            settings.era = normalize_era(req.era, self.lm.eras, self.lm.era_width)
        except GenerationError as e:
            raise ApiError(400, str(e), param="era") from None
        if score_only:
            settings = replace(settings, max_new_tokens=0)
        prompts, stop = self._prompts(req, settings.era), self._stop(req)
        if settings.era is not None and any(as_ids for _, _, as_ids in prompts):
            # (was taken and dropped without a word: ids are never changed, so nothing put it first)
            era_id = self.lm.tokenizer.convert_tokens_to_ids(settings.era)
            raise ApiError(400, f"era conditions a text prompt; token ids are taken as they are: put the era's "
                                f"id ({settings.era} is {era_id}) in them instead", param="era")
        for _, ids, _ in prompts:
            self._check_fits(ids, score_only)
        # every prompt's samples draw seed, seed + 1, ...: a prompt gives the text it gives when
        # sent alone, however a client (lm-evaluation-harness sends seed 1234) batches its prompts
        jobs = [self.service.ids_job(ids, settings, deadline, stop=stop) for _, ids, _ in prompts]
        return jobs, [(text, as_ids) for text, _, as_ids in prompts]

    def _chat_job(self, req, deadline: float) -> Job:
        if not self.is_chat:
            raise ApiError(400, f"'{self.lm.model_id}' is not a chat model (its tokenizer has no chat template); "
                                f"use /v1/completions", param="model", code="model_not_chat")
        from ..chat import ChatRequestError, check_year, validate_messages, with_era

        try:
            if req.year is not None:
                check_year(req.year, self.chat_cutoff)
        except ChatRequestError as e:
            raise ApiError(400, str(e), param="year") from None
        try:
            messages = with_era(validate_messages([m.plain() for m in req.messages],
                                                  max_chars=self.limits.max_prompt_chars), req.year,
                                cutoff=self.chat_cutoff)
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
        settings = self._settings(req, req.max_completion_tokens or req.max_tokens, self.chat_defaults)
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
            slot = await unless_disconnected(request, self.service.admit(deadline))
        except ApiError as e:
            return openai_error(e)
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
                "model": self.lm.model_id}
        echo = [p for p, _ in prompts for _ in range(jobs[0].settings.num_samples)] if prompts and req.echo else None
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return SlotStreamingResponse(self._chunks(jobs, head, chat, echo, usage), slot.release, deadline)
        try:
            samples, scores = await unless_disconnected(request, self._answer(jobs, prompts, req, chat))
        except ApiError as e:
            return openai_error(e)
        finally:
            slot.release()
        choices = [_choice(chat, i, (echo[i] if echo else "") + s.text, FINISH[s.finish_reason],
                           scores[i] if scores else None)
                   for i, s in enumerate(samples)]
        return {**head, "object": "chat.completion" if chat else "text_completion", "choices": choices,
                "usage": _usage(jobs, samples), "system_fingerprint": None}

    async def _answer(self, jobs: list[Job], prompts, req, chat: bool) -> tuple[list[Sample], list[dict] | None]:
        samples = await self._samples(jobs)
        scores = None if chat or req.logprobs is None else await self._logprobs(jobs, prompts, samples, req)
        return samples, scores

    async def _samples(self, jobs: list[Job]) -> list[Sample]:
        """The jobs' samples; a job with nothing to generate (max_tokens 0) answers at once."""
        if all(j.settings.max_new_tokens == 0 for j in jobs):
            return [Sample(text="", prompt_tokens=len(j.prompt_ids), new_tokens=0, finish_reason="length",
                           seed=seed, seconds=0.0) for j in jobs for seed in j.seeds]
        return await self.service.samples(jobs)

    async def _logprobs(self, jobs: list[Job], prompts: list[tuple[str, bool]], samples: list[Sample],
                        req) -> list[dict]:
        """Each choice's ``logprobs``: every token of prompt and completion (``echo``) or of the
        completion alone, each scored given all the tokens before it, with the ``req.logprobs``
        likeliest alternatives. The model is read-only here, so scoring runs beside the engine.

        ``tokens[i]`` is token i's part of the choice's ``text`` and ``text[text_offset[i]:]``
        starts with it (:func:`text_pieces`): a token the text does not show (the
        ``<|endoftext|>`` and era tokens before a text prompt, the end-of-sequence token, tokens
        past a stop string) is ``""`` where it would be; a token ending inside a character is
        ``""``, the one completing it carries it."""
        tok = self.lm.tokenizer
        out = []
        for ids, (_, as_ids), sample in zip([j.prompt_ids for j in jobs for _ in j.seeds],
                                            [p for p, j in zip(prompts, jobs) for _ in j.seeds], samples):
            self._within_time_limit(jobs[0].deadline, len(out), len(samples))
            scores = await asyncio.to_thread(score_tokens, self.lm, [*ids, *sample.token_ids], req.logprobs)
            new = fit_pieces(text_pieces(tok, list(sample.token_ids), skip_special_tokens=True), sample.text)
            if req.echo:
                scores = scores.in_text(text_pieces(tok, ids, skip_special_tokens=not as_ids) + new)
            else:
                scores = scores.after(len(ids)).in_text(new)
            out.append(scores.to_dict())
        return out

    def _within_time_limit(self, deadline: float | None, scored: int, choices: int) -> None:
        """Scoring is bounded by the request's time limit, as generation is: 4,096 choices' scores
        ran on past it (a 20 s limit answered in 34 s) holding the request's slot. A choice's
        logprobs cannot be left out (clients read every one), so the request is refused."""
        if deadline is not None and time.monotonic() >= deadline:
            raise ApiError(503, f"the request's time limit ({self.limits.request_timeout_s:g}s) passed with "
                                f"{scored} of {choices} choices' logprobs scored: ask for fewer choices or "
                                f"tokens, or none of their logprobs", code="timeout")

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


def _choice(chat: bool, i: int, text: str, finish: str, logprobs: dict | None = None) -> dict:
    if chat:
        return {"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                "finish_reason": finish}
    return {"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish}


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
