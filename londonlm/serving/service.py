"""One model behind the HTTP APIs: the server's limits, admission in front of the batching
engine, prompts turned into engine jobs, and the engine's events brought to the event loop.

Admission (:mod:`.admission`) lets ``max_concurrency`` requests into the engine and ``max_queue``
more wait; beyond that a request gets 503 + Retry-After at once. By default both follow from
memory: ``max_concurrency`` is the number of sequences whose KV cache fits ``kv_cache_mb`` (at
most 64), the queue four times that (at least 64): waiting costs only the request's text.
``kv_cache_mb`` itself defaults to ``auto``: half the GPU memory free once the model is loaded,
1024 MB on CPU (:func:`.batching.auto_kv_cache_mb`).
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass, replace
from typing import AsyncIterator

from ..core import UsageError, free_memory_bytes
from ..generation import GenerationSettings, LoadedModel, Sample, encode_prompt, fit_to_context
from .admission import Admission, Busy, Slot
from .batching import (CUDA_FREE_FRACTION, BatchEngine, Job, auto_kv_cache_mb, full_context_rows,
                       rows_for_memory)
from .httpio import ApiError

STALL_GRACE_S = 60.0  # past a request's deadline, how long to wait for its engine before giving up
# The most each per-request limit may be set to. Past these a value is a typo that turns one
# request into a denial of service: --max_samples 10**12 let one request with n 10**8 build
# 10**8 seeds (GBs) and never answer; --max_prompt_chars 10**21 crashed the schema builder and
# would lift the body cap (4 bytes a character) off the server.
LIMIT_CAPS = {"max_prompt_chars": 1_000_000, "max_new_tokens_limit": 1_000_000, "max_samples": 256}


@dataclass
class ServerLimits:
    max_concurrency: int | None = None  # requests generating together; None: as many as kv_cache_mb holds
    max_queue: int | None = None        # requests waiting; None: 4 x max_concurrency, at least 64
    request_timeout_s: float = 60.0     # one limit for queue wait + generation
    max_prompt_chars: int = 4000
    max_new_tokens_limit: int = 512
    max_samples: int = 4
    kv_cache_mb: float | str = "auto"   # memory the batch's KV cache may use (MB), or "auto"

    def validate(self) -> "ServerLimits":
        sizes = [self.request_timeout_s, self.max_prompt_chars, self.max_new_tokens_limit,
                 self.max_samples] + ([] if self.kv_cache_mb == "auto" else [self.kv_cache_mb])
        if not all(isinstance(x, (int, float)) for x in sizes):
            raise UsageError(f"invalid server limits {self}: kv_cache_mb is a number or 'auto'")
        if (self.max_concurrency is not None and self.max_concurrency < 1) or \
                (self.max_queue is not None and self.max_queue < 0) or min(sizes) <= 0:
            raise UsageError(f"invalid server limits {self}: all must be positive (max_queue >= 0)")
        for name, cap in LIMIT_CAPS.items():
            if getattr(self, name) > cap:
                raise UsageError(f"invalid server limits: {name} must be at most {cap:,} (got {getattr(self, name)}); "
                                 f"no request needs more")
        return self

    def resolved(self, lm: LoadedModel) -> "ServerLimits":
        """The limits with the automatic ones worked out for ``lm`` (already loaded: an ``auto``
        KV budget on a GPU is a share of the memory its weights left free)."""
        mb = self.kv_cache_mb
        if mb == "auto":
            mb = auto_kv_cache_mb(lm.device, free_memory_bytes(lm.device))
        batch = self.max_concurrency or rows_for_memory(lm, mb)
        queue = self.max_queue if self.max_queue is not None else max(64, 4 * batch)
        return replace(self, max_concurrency=batch, max_queue=queue, kv_cache_mb=mb).validate()

    def describe_budget(self, lm: LoadedModel, asked: float | str) -> str:
        """One line for the log: the KV budget (resolved), what it holds, the batch it allows."""
        how = "--kv_cache_mb"
        if asked == "auto":
            how = (f"auto: {CUDA_FREE_FRACTION:.0%} of the GPU memory free after loading"
                   if lm.device.startswith("cuda") else "auto: the CPU default")
        return (f"KV cache budget {self.kv_cache_mb:,.0f} MB ({how}): holds "
                f"{full_context_rows(lm, self.kv_cache_mb)} full-context ({lm.context_length}-token) rows; "
                f"batch of up to {self.max_concurrency}")


def seeds_for(seed: int | None, n: int) -> list[int]:
    """Seeds of samples ``0 .. n-1``: ``seed + i``, as generate() numbers them."""
    base = seed if seed is not None else random.SystemRandom().randrange(2**31)
    return [(base + i) % 2**32 for i in range(n)]


class Service:
    def __init__(self, lm: LoadedModel, limits: ServerLimits):
        self.lm, self.limits = lm, limits
        self.engine = BatchEngine(lm, limits.max_concurrency)
        self.max_body = 16_384 + 4 * limits.max_prompt_chars  # UTF-8 worst case plus the other fields
        self.eos_ids = frozenset({lm.tokenizer.eos_token_id})
        self._admission: Admission | None = None

    @property
    def admission(self) -> Admission:
        if self._admission is None:  # created on first use, inside the server's event loop
            self._admission = Admission(self.limits.max_concurrency, self.limits.max_queue)
        return self._admission

    def health(self) -> dict:
        lm = self.lm
        return {"status": "ok", **lm.info(), "eras": [e.strip("<|>") for e in lm.eras],
                "chat": bool(getattr(lm.tokenizer, "chat_template", None)),
                "limits": asdict(self.limits), "queue": self.admission.stats(), "batch": self.engine.stats()}

    async def admit(self, deadline: float) -> Slot:
        try:
            return await self.admission.acquire(deadline - time.monotonic())
        except Busy as e:
            raise ApiError(503, str(e), code="server_busy", headers={"Retry-After": str(e.retry_after_s)}) from None

    def text_job(self, prompt: str, settings: GenerationSettings, deadline: float, *,
                 stop: tuple[str, ...] = ()) -> Job:
        """``settings.num_samples`` continuations of ``prompt``, encoded as generate() encodes it
        (``[EOT] + [era] + text``, the text never control tokens; trimmed on the left to fit)."""
        ids = encode_prompt(self.lm.tokenizer, prompt, settings.era)
        ids, max_new, truncated = fit_to_context(ids, settings.max_new_tokens, self.lm.context_length,
                                                 1 + (settings.era is not None))
        return Job(ids, replace(settings, max_new_tokens=max_new),
                   seeds_for(settings.seed, settings.num_samples), self.eos_ids, stop, deadline, truncated)

    def ids_job(self, ids: list[int], settings: GenerationSettings, deadline: float, *,
                stop: tuple[str, ...] = ()) -> Job:
        """``settings.num_samples`` continuations of a prompt given as token ids, taken as they
        are (an evaluation tool scores exactly these): never trimmed, so they must leave room
        for the new tokens, which are cut to the context."""
        max_new = min(settings.max_new_tokens, self.lm.context_length - len(ids))
        return Job(list(ids), replace(settings, max_new_tokens=max_new),
                   seeds_for(settings.seed, settings.num_samples), self.eos_ids, stop, deadline)

    async def events(self, jobs: list[Job], text: bool = True) -> AsyncIterator[tuple[str, int, object]]:
        """The jobs' events as ``(kind, choice, payload)``: ``("text", i, piece)`` (unless ``text``
        is False: no thread hand-over per token when only the end is wanted) and ``("done", i,
        Sample)``, choices numbered across the jobs in order. A failure in the engine raises
        ApiError(500). Leaving early (client gone) cancels the jobs' remaining work."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        offset = 0
        for job in jobs:
            job.stream = text
            job.emit = (lambda event, base=offset:
                        loop.call_soon_threadsafe(queue.put_nowait, (event[0], base + event[1], event[2])))
            offset += len(job.seeds)
        remaining = offset
        try:
            for job in jobs:
                self.engine.submit(job)
            while remaining:
                kind, choice, payload = await asyncio.wait_for(queue.get(), self._patience(jobs))
                if kind == "error":
                    raise ApiError(500, payload)
                remaining -= kind == "done"
                yield kind, choice, payload
        except asyncio.TimeoutError:  # rows end at their deadline: silence past it means a stuck engine
            raise ApiError(500, "generation stalled: no progress long after the request's time limit") from None
        finally:
            for job in jobs:
                job.cancel.set()

    @staticmethod
    def _patience(jobs: list[Job]) -> float:
        deadlines = [j.deadline for j in jobs if j.deadline is not None]
        return max(0.0, max(deadlines) - time.monotonic()) + STALL_GRACE_S if deadlines else None

    async def samples(self, jobs: list[Job]) -> list[Sample]:
        """Every choice's finished Sample, in choice order."""
        done = {}
        async for kind, choice, payload in self.events(jobs, text=False):
            if kind == "done":
                done[choice] = payload
        return [done[i] for i in sorted(done)]
