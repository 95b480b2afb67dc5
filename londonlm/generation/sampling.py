"""Sampling from a loaded model: whole samples (:func:`generate`) or text as it is produced
(:func:`stream` / :class:`TextStream`).

Sampling is reproducible: each sample ``i`` of a request reseeds torch with ``seed + i``
right before ``generate()``, so streamed and non-streamed runs with the same seed give the
same text. (torch's RNG is process-global: the guarantee holds when one generation runs at
a time, which is the server's default ``max_concurrency=1``.)
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator

from ..core import GenerationSettings, to_generation_config
from .model import LoadedModel, encode_prompt, normalize_era, padding_ids


@dataclass
class Sample:
    text: str
    prompt_tokens: int
    new_tokens: int
    finish_reason: str  # "eos", "length", "time_limit" or "cancelled"
    seed: int
    seconds: float
    truncated_prompt: bool = False
    # the new tokens' ids, for callers that score them (the server's ``logprobs``); not part
    # of the sample's JSON form
    token_ids: tuple[int, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("token_ids")
        return out


def fit_to_context(ids: list[int], max_new_tokens: int, context_length: int,
                   keep_prefix: int) -> tuple[list[int], int, bool]:
    """Trim a prompt from the left (keeping the EOT/era prefix) so prompt + new tokens fit the
    model's positions; returns (ids, max_new_tokens, truncated)."""
    room_for_prompt = max(context_length - max_new_tokens, context_length // 2)
    truncated = len(ids) > room_for_prompt
    if truncated:
        ids = ids[:keep_prefix] + ids[len(ids) - (room_for_prompt - keep_prefix):]
    return ids, max(1, min(max_new_tokens, context_length - len(ids))), truncated


class _StopWhen:
    """Stopping criterion: a cancel event (client gone) or a wall-clock deadline."""

    def __init__(self, cancel: threading.Event | None, deadline: float | None):
        self.cancel, self.deadline, self.reason = cancel, deadline, None

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.cancel is not None and self.cancel.is_set():
            self.reason = "cancelled"
        elif self.deadline is not None and time.monotonic() > self.deadline:
            self.reason = "time_limit"
        return torch.full((input_ids.shape[0],), self.reason is not None,
                          device=input_ids.device, dtype=torch.bool)


def _prepare(lm: LoadedModel, prompt: str, settings: GenerationSettings, allow_control_tokens: bool):
    settings.validate()
    era = normalize_era(settings.era, lm.eras, lm.era_width)
    ids = encode_prompt(lm.tokenizer, prompt, era, allow_control_tokens=allow_control_tokens)
    return fit_to_context(ids, settings.max_new_tokens, lm.context_length, 1 + (era is not None))


def _generate_kwargs(lm: LoadedModel, settings: GenerationSettings, max_new_tokens: int, stop):
    from transformers import StoppingCriteriaList

    tok = lm.tokenizer
    cfg = to_generation_config(
        settings, max_new_tokens=max_new_tokens, use_cache=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        suppress_tokens=padding_ids(lm.model, lm.tokenizer) or None)  # (as the server's batches: BatchEngine)
    return dict(generation_config=cfg, stopping_criteria=StoppingCriteriaList([stop]))


def sample_seed(settings: GenerationSettings, i: int) -> int:
    """The seed sample ``i`` of a request draws with: the request's seed + i, else a random one."""
    base = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31)
    return (base + i) % 2**32


def _finish(lm, out_ids, prompt_len, stop, seed, started, truncated) -> Sample:
    new = out_ids[prompt_len:]
    if stop.reason:
        reason = stop.reason
    elif new and new[-1] == lm.tokenizer.eos_token_id:
        reason = "eos"
    else:
        reason = "length"
    text = lm.tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return Sample(text=text, prompt_tokens=prompt_len, new_tokens=len(new), finish_reason=reason,
                  seed=seed, seconds=round(time.monotonic() - started, 4), truncated_prompt=truncated,
                  token_ids=tuple(new))


def generate(lm: LoadedModel, prompt: str, settings: GenerationSettings | None = None, *,
             allow_control_tokens: bool = False, cancel: threading.Event | None = None,
             deadline: float | None = None) -> list[Sample]:
    """``settings.num_samples`` continuations of ``prompt`` (text after the prompt only);
    ``settings`` defaults to the model's own defaults (``lm.defaults``)."""
    import torch

    settings = settings if settings is not None else lm.defaults
    ids, max_new, truncated = _prepare(lm, prompt, settings, allow_control_tokens)
    samples = []
    for i in range(settings.num_samples):
        seed = sample_seed(settings, i)
        stop = _StopWhen(cancel, deadline)
        started = time.monotonic()
        with torch.inference_mode():
            torch.manual_seed(seed)
            inp = torch.tensor([ids], device=lm.device)
            out = lm.model.generate(inp, attention_mask=torch.ones_like(inp),
                                    **_generate_kwargs(lm, settings, max_new, stop))
        samples.append(_finish(lm, out[0].tolist(), len(ids), stop, seed, started, truncated))
        if stop.reason:
            break
    return samples


class TextStream:
    """Iterate text chunks as one sample is generated; ``.sample`` is set once exhausted.

    generate() runs in a background thread feeding a ``TextIteratorStreamer``; closing the
    stream early (``close()``) sets the cancel event so the thread stops at the next token."""

    def __init__(self, lm: LoadedModel, prompt: str, settings: GenerationSettings | None = None, *,
                 sample_index: int = 0, allow_control_tokens: bool = False,
                 cancel: threading.Event | None = None, deadline: float | None = None,
                 poll_timeout_s: float = 600.0):
        from transformers import TextIteratorStreamer

        settings = settings if settings is not None else lm.defaults
        self.lm, self.sample = lm, None
        self.cancel = cancel or threading.Event()
        self._ids, max_new, self._truncated = _prepare(lm, prompt, settings, allow_control_tokens)
        self._seed = sample_seed(settings, sample_index)
        self._stop = _StopWhen(self.cancel, deadline)
        self._streamer = TextIteratorStreamer(lm.tokenizer, skip_prompt=True, timeout=poll_timeout_s,
                                              skip_special_tokens=True,
                                              clean_up_tokenization_spaces=False)
        self._out, self._error = None, None
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="londonlm-generate", daemon=True,
                                        args=(_generate_kwargs(lm, settings, max_new, self._stop),))
        self._thread.start()

    def _run(self, kwargs) -> None:
        import torch

        try:
            with torch.inference_mode():
                torch.manual_seed(self._seed)
                inp = torch.tensor([self._ids], device=self.lm.device)
                self._out = self.lm.model.generate(inp, attention_mask=torch.ones_like(inp),
                                                   streamer=self._streamer, **kwargs)[0].tolist()
        except BaseException as e:  # surfaced to the consumer instead of dying silently
            self._error = e
            self._streamer.end()

    def __iter__(self) -> Iterator[str]:
        try:
            for chunk in self._streamer:
                if chunk:
                    yield chunk
        finally:
            if self._out is None and self._error is None:
                self.cancel.set()
            self._thread.join()
        if self._error is not None:
            raise self._error
        self.sample = _finish(self.lm, self._out, len(self._ids), self._stop, self._seed,
                              self._started, self._truncated)

    def close(self) -> None:
        self.cancel.set()


def stream(lm: LoadedModel, prompt: str, settings: GenerationSettings | None = None,
           **kwargs) -> Iterator[str]:
    """Text chunks of sample 0 as they are generated (see :class:`TextStream`)."""
    return iter(TextStream(lm, prompt, settings, **kwargs))
