"""Dynamic batching: concurrent requests share the model's forward passes.

One worker thread owns the model. Each step it admits waiting sequences while rows are free
and prefills their prompts together (one forward pass, prompts left-padded, once per job for all
its samples, within a per-step prompt-token budget so running streams never stall long), then
decodes every active row together: one forward pass over the batch's KV cache, each row with its
own position ids and mask. The cache lives in buffers of fixed capacity (:class:`.kv_slots.KVSlots`): a
decode step writes its one new column in place, a joining row is copied into a free row, a
leaving row's place is taken by the last row; nothing is re-concatenated per step. Rows choose
tokens with their own settings and seeded generator (:mod:`.sampler`, batched), release text as
it is safe to (:mod:`.textout`), and leave the batch when they end: end-of-sequence token, stop
string, token limit, deadline or cancel (client gone).

Why not transformers' continuous batching (``generate_batch`` / ``ContinuousBatchingManager``,
5.23)? It runs on CPU with GPT-2, but drops the repetition penalty (every londonlm model's
default), has no per-request seed and no stop strings; this scheduler has all three and picks
the tokens ``generate()`` picks. Greedy and seeded outputs equal :func:`londonlm.generation.generate`'s.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..generation import GenerationSettings, LoadedModel, Sample
from .kv_slots import KVSlots, cache_argument
from .sampler import BatchSampler, RowSampling
from .textout import TextTracker, decoder_of

_log = logging.getLogger("uvicorn.error")  # the server's own log (uvicorn's handlers and level)

MAX_AUTO_BATCH = 64            # beyond this a CPU gains little and every stream slows
PREFILL_TOKENS_PER_STEP = 1024  # prompt tokens prefilled between two decode steps (at least one job)
# the automatic KV budget on CPU, as it always was: there compute, not memory, bounds the batch
CPU_KV_CACHE_MB = 1024.0
# The automatic KV budget on a GPU: this share of the memory free once the weights are in. The
# rest is for what a step allocates beside the cache (a prefill's activations and attention, the
# logits and the sampler's [rows, vocab] tables), the allocator's slack, and other processes.
CUDA_FREE_FRACTION = 0.5


def kv_bytes_per_row(lm: LoadedModel) -> int:
    """KV-cache bytes one sequence holds at the model's full context length."""
    cfg = lm.model.config
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    width = getattr(cfg, "hidden_size", None) or cfg.n_embd
    itemsize = next(lm.model.parameters()).element_size()
    return 2 * layers * lm.context_length * width * itemsize


def rows_for_memory(lm: LoadedModel, kv_cache_mb: float) -> int:
    """Rows (sequences decoded together) whose KV cache fits ``kv_cache_mb``, at most MAX_AUTO_BATCH."""
    return max(1, min(MAX_AUTO_BATCH, full_context_rows(lm, kv_cache_mb)))


def full_context_rows(lm: LoadedModel, kv_cache_mb: float) -> int:
    """Sequences at the model's full context whose KV cache fits ``kv_cache_mb`` (no cap)."""
    return int(kv_cache_mb * 2**20 // kv_bytes_per_row(lm))


def auto_kv_cache_mb(device: str, free_bytes: int | None) -> float:
    """The KV budget ``--kv_cache_mb auto`` means on ``device``: on a GPU, CUDA_FREE_FRACTION of
    ``free_bytes`` (its free memory, measured after the model is loaded); on CPU, CPU_KV_CACHE_MB."""
    if not device.startswith("cuda") or free_bytes is None:
        return CPU_KV_CACHE_MB
    return CUDA_FREE_FRACTION * free_bytes / 2**20



@dataclass
class Job:
    """One request: ``len(seeds)`` samples continuing ``prompt_ids``. ``emit`` is called from the
    worker thread with ``("text", i, piece)`` (only if ``stream``), ``("done", i, Sample)`` or
    ``("error", i, message)``."""
    prompt_ids: list[int]
    settings: GenerationSettings          # validated; ``max_new_tokens`` already fits the context
    seeds: list[int]
    eos_ids: frozenset[int]
    stop: tuple[str, ...] = ()
    deadline: float | None = None
    truncated: bool = False
    emit: Callable[[tuple], None] = lambda event: None
    cancel: threading.Event = field(default_factory=threading.Event)
    stream: bool = True


class _Row:
    """One sequence (a sample of a job) and its progress."""

    def __init__(self, job: Job, index: int, decode, device: str):
        self.job, self.index, self.seed = job, index, job.seeds[index]
        gen = None
        if job.settings.sampling:  # seeded as generate() seeds the device's global generator
            gen = torch.Generator(device=device).manual_seed(self.seed)
        self.sampling = RowSampling(job.settings, gen)
        self.history = list(job.prompt_ids)
        self.text = TextTracker(decode, job.stop)
        self.started = time.monotonic()

    @property
    def new_tokens(self) -> int:
        return len(self.history) - len(self.job.prompt_ids)

    def push(self, token: int) -> str | None:
        """Take the chosen token; send the text it releases; return why the row ends, if it does."""
        self.history.append(token)
        self.text.add(token)
        job = self.job
        reason = ("cancelled" if job.cancel.is_set() else
                  "time_limit" if job.deadline is not None and time.monotonic() > job.deadline else
                  "eos" if token in job.eos_ids else
                  "stop" if self.text.stopped else
                  "length" if self.new_tokens >= job.settings.max_new_tokens else None)
        if reason:
            self.text.finish()
            if reason in ("eos", "length") and self.text.stopped:
                # a stop string only the text taken in at the end completes (its last character
                # was still arriving): the text is cut there, so the row ended at a stop string
                reason = "stop"
        if job.stream:
            piece = self.text.release()
            if piece:
                _emit(job, ("text", self.index, piece))
        return reason

    def sample(self, reason: str) -> Sample:
        return Sample(text=self.text.text, prompt_tokens=len(self.job.prompt_ids), new_tokens=self.new_tokens,
                      finish_reason=reason, seed=self.seed, seconds=round(time.monotonic() - self.started, 4),
                      truncated_prompt=self.job.truncated,
                      token_ids=tuple(self.history[len(self.job.prompt_ids):]))


class BatchEngine:
    """The worker that owns ``lm``'s model. :meth:`submit` is thread-safe; the worker starts on
    the first submit. ``max_batch`` rows decode together (1 = one sequence at a time)."""

    def __init__(self, lm: LoadedModel, max_batch: int, prefill_tokens: int = PREFILL_TOKENS_PER_STEP):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.lm, self.max_batch, self.prefill_tokens = lm, max_batch, prefill_tokens
        self._cache_kw = cache_argument(lm.model)  # once: every forward pass passes the cache
        self._decode_text = decoder_of(lm.tokenizer)
        self._tokens = len(lm.tokenizer)  # ids past it are the vocabulary's padding (generation.padding_ids)
        self._pending: deque[tuple[Job, int]] = deque()
        self._cond = threading.Condition()
        self._batch = KVSlots(max_batch, lm.context_length)
        self._thread: threading.Thread | None = None
        self._closed = False
        self.steps = self.tokens = self.peak_rows = self.finished = 0

    # ------------------------------------------------------------------ public

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._pending.extend((job, i) for i in range(len(job.seeds)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="londonlm-batch", daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(30)

    def stats(self) -> dict:
        return {"max_batch": self.max_batch, "rows": len(self._batch.rows), "pending_rows": len(self._pending),
                "peak_rows": self.peak_rows, "steps": self.steps, "tokens": self.tokens,
                "sequences_finished": self.finished}

    # ------------------------------------------------------------------ worker

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._pending and not self._batch.rows:
                    self._cond.wait()
                if self._closed:  # nobody will finish what is left: say so
                    self._fail([r.job for r in self._batch.rows] + [j for j, _ in self._pending],
                               ShuttingDown("the server is shutting down"))
                    return
                admitted = self._take()
            try:
                with torch.inference_mode():
                    self._start(admitted)
                    if self._batch.rows:
                        self._decode()
            except Exception as e:  # a failed step fails its rows, never the worker
                self._fail([r.job for r in self._batch.rows], e)
                self._batch.keep([])

    def _take(self) -> list[tuple[Job, int]]:
        """Sequences to start this step: free rows, within the prompt-token budget (prompts are
        prefilled together, padded to the longest)."""
        taken, jobs, longest = [], set(), 0
        while self._pending and len(self._batch.rows) + len(taken) < self.max_batch:
            job, i = self._pending[0]
            if id(job) not in jobs:
                wider = max(longest, len(job.prompt_ids))
                if taken and wider * (len(jobs) + 1) > self.prefill_tokens:
                    break
                jobs.add(id(job))
                longest = wider
            self._pending.popleft()
            taken.append((job, i))
        return taken

    def _start(self, admitted: list[tuple[Job, int]]) -> None:
        by_job: dict[int, tuple[Job, list[int]]] = {}
        for job, i in admitted:
            by_job.setdefault(id(job), (job, []))[1].append(i)
        ready = []
        for job, indices in by_job.values():
            late = job.deadline is not None and time.monotonic() > job.deadline
            if job.cancel.is_set() or late:  # gone, or out of time, before its turn came
                for i in indices:
                    row = _Row(job, i, self._decode_text, self.lm.device)
                    self._done(row, "cancelled" if job.cancel.is_set() else "time_limit")
            else:
                ready.append((job, indices))
        if ready:
            try:
                self._prefill(ready)
            except Exception as e:
                self._fail([job for job, _ in ready], e)

    def _prefill(self, jobs: list[tuple[Job, list[int]]]) -> None:
        """One forward pass over the jobs' prompts (left-padded); each sample takes its first token
        and, unless that ends it, a row of the batch."""
        from transformers import DynamicCache

        model, device = self.lm.model, self.lm.device
        lengths = [len(job.prompt_ids) for job, _ in jobs]
        width = max(lengths)
        ids = torch.tensor([[0] * (width - len(job.prompt_ids)) + job.prompt_ids for job, _ in jobs], device=device)
        pad = width - torch.tensor(lengths, device=device)[:, None]
        columns = torch.arange(width, device=device)[None]
        mask = columns >= pad
        cache = DynamicCache(config=model.config)
        out = model(input_ids=ids, attention_mask=mask.long(), position_ids=(columns - pad).clamp(min=0),
                    use_cache=True, logits_to_keep=1, **{self._cache_kw: cache})
        if width > min(lengths):  # padding's keys and values never enter the batch
            for layer in cache.layers:
                layer.keys = layer.keys.masked_fill(~mask[:, None, :, None], 0)
                layer.values = layer.values.masked_fill(~mask[:, None, :, None], 0)
        rows, src = [], []
        for j, (job, indices) in enumerate(jobs):
            rows += [_Row(job, i, self._decode_text, device) for i in indices]
            src += [j] * len(indices)
        src = torch.tensor(src, device=device)
        logits = self._of_tokens(out.logits[:, -1].to(dtype=torch.float32).index_select(0, src))
        seen = torch.zeros(len(rows), logits.shape[-1], dtype=torch.bool, device=device)
        for n, row in enumerate(rows):
            seen[n, row.job.prompt_ids] = True
        tokens = BatchSampler([r.sampling for r in rows], device).choose(logits, seen, [r.history for r in rows])
        seen[torch.arange(len(rows)), tokens] = True
        self.tokens += len(rows)
        live = []
        for n, (row, token) in enumerate(zip(rows, tokens)):
            reason = row.push(token)
            if reason:
                self._done(row, reason)
            else:
                live.append(n)
        if live:
            self._batch.add([rows[n] for n in live], cache, src[live],
                            [len(rows[n].job.prompt_ids) for n in live], seen[live])
            self.peak_rows = max(self.peak_rows, len(self._batch.rows))

    def _of_tokens(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` with the padding ids' at -inf: never chosen, greedy or sampled (as
        ``generate()``'s ``suppress_tokens`` does, before every other processor)."""
        if self._tokens < logits.shape[-1]:
            logits[:, self._tokens:] = -float("inf")
        return logits

    def _decode(self) -> None:
        b, device = self._batch, self.lm.device
        out = self.lm.model(**b.step_inputs(self._cache_kw))
        b.end += 1
        logits = self._of_tokens(out.logits[:, -1].to(dtype=torch.float32))
        tokens = b.batch_sampler(device).choose(logits, b.seen[:len(b.rows)], [r.history for r in b.rows])
        b.seen[torch.arange(len(b.rows)), tokens] = True
        self.steps += 1
        self.tokens += len(tokens)
        ended = [(row, row.push(token)) for row, token in zip(b.rows, tokens)]
        if any(reason for _, reason in ended):
            b.keep([n for n, (_, reason) in enumerate(ended) if not reason])
            for row, reason in ended:  # after the batch lost them, so stats agree with the events
                if reason:
                    self._done(row, reason)

    def _done(self, row: _Row, reason: str) -> None:
        self.finished += 1
        _emit(row.job, ("done", row.index, row.sample(reason)))

    def _fail(self, jobs: list[Job], error: Exception) -> None:
        """End ``jobs`` with an error. A failed step is the server's to read (its traceback in the
        server's log) and the client's only by its kind: its text may name the server's files."""
        if isinstance(error, ShuttingDown):
            said = str(error)
        else:
            _log.error("a generation step failed (%d request(s) ended)", len(jobs), exc_info=error)
            said = f"internal error ({type(error).__name__}); the server's log has the details"
        for job in {id(j): j for j in jobs}.values():
            job.cancel.set()
            _emit(job, ("error", -1, said))


class ShuttingDown(RuntimeError):
    """The server stops with requests unfinished: nobody will finish them."""


def _emit(job: Job, event: tuple) -> None:
    try:
        job.emit(event)
    except Exception:  # the listener is gone (its event loop closed): nothing to tell
        pass
