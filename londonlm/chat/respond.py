"""Chat requests and replies, for the server, the playground and the command line: checks a
list of messages, sets the era's system line, fits the history to the context, generates one
answer that stops at ``<|end|>``. Message text is always plain text (never control tokens).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from ..core import CHAT_INFO, GREEDY_BELOW, GenerationSettings, LondonLMError, model_run_info, record_field
from ..generation import padding_ids
from .dataset import system_line
from .extract import PLACE
from .template import CHAT_TOKENS, ChatIds, encode_chat

ROLES = ("system", "user", "assistant")
YEAR_RANGE = (1674, 1913)          # the Old Bailey Proceedings' span: the eras a user may ask for
DEFAULT_YEAR = 1800                # the era of a request that names none


class ChatRequestError(LondonLMError, ValueError):
    """A chat request that cannot be answered as given (bad roles, order, sizes or year)."""


class ChatModelDamaged(LondonLMError, ValueError):
    """A model folder whose chat files (chat_info.json, tokenizer.json) cannot be read."""


def _json_object(path: Path) -> dict:
    """A model folder's JSON file that must hold an object; one that does not (emptied,
    truncated, edited) is ChatModelDamaged naming it, not a traceback in every caller."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        why = f"not JSON ({e})"
    else:
        if isinstance(data, dict):
            return data
        why = f"a JSON {type(data).__name__}, not an object"
    raise ChatModelDamaged(f"{path} is damaged ({why}): restore the model folder, or fine-tune again "
                           f"with `python 07_finetuning/finetune_chat.py`")


_SAMPLING = GenerationSettings()  # the project's one set of sampling defaults


@dataclass(frozen=True)
class ChatSettings:
    max_new_tokens: int = 60
    temperature: float = _SAMPLING.temperature
    top_p: float = _SAMPLING.top_p
    # Answers are short and echo the question's words by design ("Did you see him?" - "I saw
    # him"): no top-k cut and no repetition penalty, which would push answers off the question.
    top_k: int = 0
    repetition_penalty: float = 1.0
    do_sample: bool = True
    seed: int | None = None


@dataclass
class ChatReply:
    text: str
    finish_reason: str             # "stop" (the model ended its turn) or "length"
    prompt_tokens: int
    new_tokens: int
    left_out: int = 0              # earlier messages the prompt left out: the context had no room


def validate_messages(messages, *, max_messages: int = 64, max_chars: int = 4000) -> list[dict]:
    """``messages`` as clean ``{"role", "content"}`` dicts, or ChatRequestError saying what is
    wrong: an optional system message first, then user and assistant turns alternating,
    starting and ending with a user turn; no empty or oversized text."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ChatRequestError("messages must be a non-empty list of {role, content} objects")
    if len(messages) > max_messages:
        raise ChatRequestError(f"too many messages ({len(messages)}; at most {max_messages})")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ChatRequestError(f"message {i}: role must be one of {', '.join(ROLES)}")
        content = m.get("content")
        if not isinstance(content, str) or not content.strip():
            raise ChatRequestError(f"message {i}: content must be non-empty text")
        if len(content) > max_chars:
            raise ChatRequestError(f"message {i}: content is {len(content):,} characters (at most {max_chars:,})")
        if m["role"] == "system" and i != 0:
            raise ChatRequestError(f"message {i}: a system message may only come first")
        out.append({"role": m["role"], "content": content})
    turns = [m["role"] for m in out if m["role"] != "system"]
    if not turns or turns[-1] != "user":
        raise ChatRequestError("the last message must be the user's question")
    for i, role in enumerate(turns):
        if role != ("user" if i % 2 == 0 else "assistant"):
            raise ChatRequestError("user and assistant messages must alternate, starting with the user")
    return out


def with_era(messages: Sequence[dict], year: int | None, place: str = PLACE, cutoff: int | None = None) -> list[dict]:
    """The messages with the system line for ``year`` (replacing any system message). Without
    a year, a given system message is kept, else the default year's line is used (1800, or a
    time-locked model's ``cutoff`` when that is earlier: :func:`check_year`)."""
    rest = [m for m in messages if m["role"] != "system"]
    if year is None:
        return list(messages) if len(rest) < len(messages) else [
            {"role": "system", "content": system_line(min(DEFAULT_YEAR, cutoff or DEFAULT_YEAR), place)}, *rest]
    return [{"role": "system", "content": system_line(check_year(year, cutoff), place)}, *rest]


def check_year(year, cutoff: int | None = None) -> int:
    """``year`` when it is an era a chat may be asked for (``YEAR_RANGE``, to a time-locked
    model's ``cutoff``: :func:`chat_cutoff`), else ChatRequestError: the one rule for the server,
    the REPL's /year, --year and the chat evaluation's --years. A model locked to 1750 was asked
    to answer "as of 1900" (its default era, 1800, past its cutoff too): an era it was never
    tuned on, of text its lock promises it never read."""
    last = YEAR_RANGE[1] if cutoff is None else min(YEAR_RANGE[1], cutoff)
    if isinstance(year, bool) or not isinstance(year, int) or not YEAR_RANGE[0] <= year <= last:
        locked = f"; the model is time-locked to {cutoff}" if last != YEAR_RANGE[1] else ""
        raise ChatRequestError(f"year must be a whole year from {YEAR_RANGE[0]} to {last} "
                               f"(the Old Bailey Proceedings{locked}), got {year!r}")
    return year


def chat_cutoff(model_dir: str | Path) -> int | None:
    """A time-locked chat model's cutoff year (chat_info.json's ``cutoff_year``, else the
    ``corpus_time`` its chat run recorded), None for a model without one or not in a folder."""
    if not Path(model_dir).is_dir():
        return None
    cutoff = read_chat_info(model_dir).get("cutoff_year")
    if cutoff is None:
        cutoff = (record_field(model_run_info(model_dir), "corpus_time", kind=dict) or {}).get("cutoff_year")
    return cutoff if isinstance(cutoff, int) and not isinstance(cutoff, bool) else None


def chat_year(text: str) -> int:
    """An argparse type: a chat era by :func:`check_year`."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = text  # check_year refuses it by name
    try:
        return check_year(value)
    except ChatRequestError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def prompt_ids(tokenizer, messages: Sequence[dict], context: int, max_new_tokens: int) -> list[int]:
    """The prompt for the next answer, dropping the oldest exchanges (never the system line
    nor the question) until prompt + answer fit the context."""
    return fit_prompt(tokenizer, messages, context, max_new_tokens)[0]


def fit_prompt(tokenizer, messages: Sequence[dict], context: int, max_new_tokens: int) -> tuple[list[int], int]:
    """:func:`prompt_ids`, and how many of the earlier messages it left out (the answer says
    so, ``ChatReply.left_out``: a conversation that outgrew the context lost its start unseen)."""
    ids = ChatIds.of(tokenizer)
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = list(messages[len(system):])
    budget = context - max_new_tokens
    while True:
        enc = encode_chat(tokenizer, [*system, *turns], add_generation_prompt=True, ids=ids)
        if len(enc) <= budget or len(turns) <= 1:
            break
        turns = turns[2:]  # the oldest question and its answer
    if len(enc) > budget:
        raise ChatRequestError(f"the question is {len(enc)} tokens; with {max_new_tokens} new tokens it "
                               f"does not fit the model's context of {context}: shorten it or ask for fewer tokens")
    return enc.input_ids, len(messages) - len(system) - len(turns)


def turn_ends(ids: ChatIds) -> list[int]:
    """The tokens an answer ends at: ``<|end|>``, ``<|endoftext|>``, and every role marker. A
    model that writes ``<|user|>`` has begun the next turn itself: what follows is a question it
    made up, which was shown as the answer's text (the marker itself hidden). The server's chat
    answers end at the same tokens (``openai_api.chat_stop_ids``)."""
    return [ids.end, ids.eot, *ids.roles.values()]


def _generation(model, tokenizer, messages: Sequence[dict], settings: ChatSettings):
    """(prompt ids, ``generate()`` keyword arguments, chat ids, messages left out) for one answer."""
    import torch

    ids = ChatIds.of(tokenizer)
    context = model.config.n_positions
    if settings.max_new_tokens < 1 or settings.max_new_tokens >= context:
        raise ChatRequestError(f"max_new_tokens must be from 1 to {context - 1}")
    prompt, left_out = fit_prompt(tokenizer, messages, context, settings.max_new_tokens)
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    device = next(model.parameters()).device
    sample = settings.do_sample and settings.temperature >= GREEDY_BELOW  # below it, greedy: as 0
    kwargs = dict(input_ids=torch.tensor([prompt], device=device),
                  attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=device),
                  do_sample=sample, max_new_tokens=settings.max_new_tokens,
                  eos_token_id=turn_ends(ids), pad_token_id=tokenizer.pad_token_id,
                  repetition_penalty=settings.repetition_penalty,
                  suppress_tokens=padding_ids(model, tokenizer) or None)  # no token's: never chosen
    if sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    return prompt, kwargs, ids, left_out


def _finish(tokenizer, ids: ChatIds, prompt: list[int], new: list[int], left_out: int) -> ChatReply:
    stopped = bool(new) and new[-1] in turn_ends(ids)
    text = tokenizer.decode(new[:-1] if stopped else new, skip_special_tokens=True).strip()
    return ChatReply(text, "stop" if stopped else "length", len(prompt), len(new), left_out)


def generate_reply(model, tokenizer, messages: Sequence[dict], settings: ChatSettings = ChatSettings()) -> ChatReply:
    """One answer to ``messages`` (already validated, system line included)."""
    import torch

    prompt, kwargs, ids, left_out = _generation(model, tokenizer, messages, settings)
    with torch.inference_mode():
        out = model.generate(**kwargs)
    return _finish(tokenizer, ids, prompt, out[0, len(prompt):].tolist(), left_out)


class _Cancel:
    """Stopping criterion: stop at the next token once ``event`` is set (Ctrl-C, a client gone)."""

    def __init__(self, event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), device=input_ids.device, dtype=torch.bool)


class ReplyStream:
    """The answer's text as it is generated (``for chunk in stream``); ``.reply`` (a
    :class:`ChatReply`, its text the chunks joined and stripped) is set once exhausted.
    ``generate()`` runs in a thread feeding a ``TextIteratorStreamer``; ``close()`` (or leaving
    the loop early) stops it at the next token."""

    def __init__(self, model, tokenizer, messages: Sequence[dict], settings: ChatSettings = ChatSettings()):
        import threading

        from transformers import StoppingCriteriaList, TextIteratorStreamer

        self.tokenizer, self.reply, self._error, self._out = tokenizer, None, None, None
        self._prompt, kwargs, self._ids, self._left_out = _generation(model, tokenizer, messages, settings)
        self._cancel = threading.Event()
        self._streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                              timeout=600.0)
        kwargs.update(streamer=self._streamer, stopping_criteria=StoppingCriteriaList([_Cancel(self._cancel)]))
        self._thread = threading.Thread(target=self._run, args=(model, kwargs), daemon=True,
                                        name="londonlm-chat")
        self._thread.start()

    def _run(self, model, kwargs) -> None:
        import torch

        try:
            with torch.inference_mode():
                self._out = model.generate(**kwargs)[0, len(self._prompt):].tolist()
        except BaseException as e:  # handed to the reader instead of dying silently
            self._error = e
            self._streamer.end()

    def __iter__(self) -> Iterator[str]:
        started = False
        try:
            for chunk in self._streamer:
                if not started:  # the answer's leading space (after <|assistant|>) is not shown
                    chunk = chunk.lstrip()
                    started = bool(chunk)
                if chunk:
                    yield chunk
        finally:
            if self._out is None and self._error is None:
                self._cancel.set()
            self._thread.join()
        if self._error is not None:
            raise self._error
        self.reply = _finish(self.tokenizer, self._ids, self._prompt, self._out, self._left_out)

    def close(self) -> None:
        self._cancel.set()


def chat_reply(model, tokenizer, messages, *, year: int | None = None, place: str = PLACE,
               settings: ChatSettings = ChatSettings(), max_chars: int = 4000, cutoff: int | None = None) -> ChatReply:
    """Validate a request, set its era, and answer it: the one call for serving."""
    return generate_reply(model, tokenizer, with_era(validate_messages(messages, max_chars=max_chars),
                                                     year, place, cutoff), settings)


def chat_stream(model, tokenizer, messages, *, year: int | None = None, place: str = PLACE,
                settings: ChatSettings = ChatSettings(), max_chars: int = 4000,
                cutoff: int | None = None) -> ReplyStream:
    """:func:`chat_reply`, streamed: the request is checked before anything is generated."""
    return ReplyStream(model, tokenizer, with_era(validate_messages(messages, max_chars=max_chars),
                                                  year, place, cutoff), settings)


def is_chat_model(model_dir: str | Path) -> bool:
    """Whether a model folder holds a chat model (its tokenizer has the role tokens)."""
    return (Path(model_dir) / CHAT_INFO).exists() or has_chat_tokens(model_dir)


def has_chat_tokens(model_dir: str | Path) -> bool:
    """Whether a model folder's tokenizer.json holds the chat role tokens (False without one)."""
    tok = Path(model_dir) / "tokenizer.json"
    if not tok.exists():
        return False
    added = _json_object(tok).get("added_tokens")
    added = {t.get("content") for t in added if isinstance(t, dict)} if isinstance(added, list) else set()
    return all(t in added for t in CHAT_TOKENS)


def read_chat_info(model_dir: str | Path) -> dict:
    """chat_info.json of a chat model ({} when absent): place, years trained on, base model."""
    path = Path(model_dir) / CHAT_INFO
    if not path.exists():
        return {}
    info = _json_object(path)
    bad = next((k for k in ("place", "base_model", "dataset", "system_line")
                if info.get(k) is not None and not isinstance(info[k], str)), None)
    if bad:  # every reader takes these as text (a path, a name, a format string)
        raise ChatModelDamaged(f"{path} is damaged ({bad} is {info[bad]!r:.40}, not text): restore the model "
                               f"folder, or fine-tune again with `python 07_finetuning/finetune_chat.py`")
    return info


__all__ = ["ChatModelDamaged", "ChatReply", "ChatRequestError", "ChatSettings", "ReplyStream", "chat_cutoff", "chat_reply",
           "chat_stream",
           "generate_reply", "is_chat_model",
           "prompt_ids", "read_chat_info", "validate_messages", "with_era"]
