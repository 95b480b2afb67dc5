"""The chat format: role markers as special tokens, a Jinja chat template that stock tools
read (``tokenizer.apply_chat_template``, ``pipeline("text-generation")`` with a list of
messages), and the one encoder the library trains and generates with.

A conversation is::

    <|endoftext|><|system|>Old Bailey, London, 1818.<|end|><|user|>Where do you live?<|end|>
    <|assistant|>In Fleet-street.<|end|>...

``<|endoftext|>`` opens it as it opens every document of the pre-training stream; each turn
ends with ``<|end|>``, where generation stops. :func:`encode_chat` gives exactly the ids of
``apply_chat_template(...)`` for ordinary text, and also the labels (answer tokens and their
``<|end|>``; everything else -100). Message text is always encoded as plain text: a message
containing ``<|endoftext|>`` or ``<|user|>`` gets the characters, never the control token
(stock tools: ``apply_chat_template(..., sanitize_control_tokens=True)`` does the same).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..core import LondonLMError
from ..generation import encode_text
from ..tokens import EOT

SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
ROLE_TOKENS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
CHAT_TOKENS = (SYSTEM, USER, ASSISTANT, END)
IGNORE = -100
# What a new row starts as (the model has never seen the token): the embedding of text that
# plays the same part in the Proceedings, so the first steps start from a sensible place.
INIT_FROM = {END: EOT, USER: "Q.", ASSISTANT: "A.", SYSTEM: None}  # None: mean of all real rows


class ChatFormatError(LondonLMError, ValueError):
    """A tokenizer or model that lacks the chat format, or a conversation it cannot encode."""


def chat_template(bos: str = EOT) -> str:
    """The Jinja template. Every control token is a literal of the template (none comes from a
    variable), which is what ``sanitize_control_tokens=True`` needs to tell them from text;
    ``{% generation %}`` marks the answer tokens for ``return_assistant_tokens_mask``."""
    return (
        "{%- for message in messages -%}"
        "{%- if loop.first %}{{ '" + bos + "' }}{% endif -%}"
        "{%- if message['role'] == 'system' -%}{{ '" + SYSTEM + "' + message['content'] + '" + END + "' }}"
        "{%- elif message['role'] == 'user' -%}{{ '" + USER + "' + message['content'] + '" + END + "' }}"
        "{%- elif message['role'] == 'assistant' -%}{{ '" + ASSISTANT + "' }}"
        "{%- generation -%}{{ message['content'] + '" + END + "' }}{%- endgeneration -%}"
        "{%- else -%}{{ raise_exception('unknown role ' + message['role'] + "
        "'; use system, user or assistant') }}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '" + ASSISTANT + "' }}{%- endif -%}"
    )


def add_chat_tokens(tokenizer) -> list[str]:
    """Add the role markers as special tokens and set the chat template; returns the tokens
    that were new (none when the tokenizer already has them)."""
    vocab = tokenizer.get_vocab()
    new = [t for t in CHAT_TOKENS if t not in vocab]
    if new:
        try:  # transformers 5
            tokenizer.add_special_tokens({"extra_special_tokens": new}, replace_extra_special_tokens=False)
        except (TypeError, ValueError, KeyError):  # transformers 4
            tokenizer.add_special_tokens({"additional_special_tokens": new},
                                         replace_additional_special_tokens=False)
    tokenizer.chat_template = chat_template(tokenizer.bos_token or EOT)
    return new


@dataclass
class ChatIds:
    eot: int
    roles: dict[str, int]
    end: int

    @classmethod
    def of(cls, tokenizer) -> "ChatIds":
        vocab = tokenizer.get_vocab()
        missing = [t for t in (EOT, *CHAT_TOKENS) if t not in vocab]
        if missing:
            raise ChatFormatError(f"the tokenizer has no {', '.join(missing)} token(s): it is not a chat "
                                  f"tokenizer; fine-tune one with `python 07_finetuning/finetune_chat.py`")
        return cls(vocab[EOT], {r: vocab[t] for r, t in ROLE_TOKENS.items()}, vocab[END])


@dataclass
class ChatEncoding:
    """Token ids of a conversation; ``labels`` are the ids where the model learns (answers and
    their ``<|end|>``), -100 elsewhere; ``answer_mask`` marks answer text only (no ``<|end|>``)."""
    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    answer_mask: list[bool] = field(default_factory=list)

    def extend(self, ids: Sequence[int], learn: bool = False, answer: bool = False) -> None:
        self.input_ids.extend(ids)
        self.labels.extend(ids if learn else [IGNORE] * len(ids))
        self.answer_mask.extend([answer] * len(ids))

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_message(tokenizer, ids: ChatIds, message: dict) -> ChatEncoding:
    """``<|role|>text<|end|>`` of one message (text as plain text, never control tokens)."""
    out = ChatEncoding()
    role = message.get("role")
    if role not in ids.roles:
        raise ChatFormatError(f"unknown role {role!r}; use system, user or assistant")
    out.extend([ids.roles[role]])
    assistant = role == "assistant"
    out.extend(encode_text(tokenizer, str(message.get("content", ""))), learn=assistant, answer=assistant)
    out.extend([ids.end], learn=assistant)
    return out


def encode_chat(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = False,
                ids: ChatIds | None = None) -> ChatEncoding:
    """The ids ``apply_chat_template`` gives for ``messages``, with answer-only labels."""
    ids = ids or ChatIds.of(tokenizer)
    out = ChatEncoding()
    out.extend([ids.eot])
    for m in messages:
        enc = encode_message(tokenizer, ids, m)
        out.input_ids += enc.input_ids
        out.labels += enc.labels
        out.answer_mask += enc.answer_mask
    if add_generation_prompt:
        out.extend([ids.roles["assistant"]])
    return out


def message_windows(tokenizer, messages: Sequence[dict], max_len: int, ids: ChatIds | None = None,
                    measure: Callable[[list[dict]], int] | None = None) -> tuple[list[list[dict]], int]:
    """A conversation cut at exchange boundaries into pieces that fit ``max_len`` tokens, each
    opening with the system line (the era is never lost). Returns (pieces as message lists,
    exchanges dropped because one alone, with the system line, is longer than ``max_len``).
    ``measure`` gives a piece's length (default: its chat encoding's)."""
    ids = ids or ChatIds.of(tokenizer)
    measure = measure or (lambda msgs: len(encode_chat(tokenizer, msgs, ids=ids)))
    system = [m for m in messages[:1] if m.get("role") == "system"]
    exchanges: list[list[dict]] = []
    for m in messages[len(system):]:
        if m.get("role") == "user" or not exchanges:
            exchanges.append([])
        exchanges[-1].append(m)
    pieces: list[list[dict]] = []
    dropped = 0
    for ex in exchanges:
        if pieces and measure(pieces[-1] + ex) <= max_len:
            pieces[-1].extend(ex)
        elif measure(system + ex) <= max_len:
            pieces.append(system + ex)
        else:
            dropped += 1
    return pieces, dropped


def windows(tokenizer, messages: Sequence[dict], max_len: int,
            ids: ChatIds | None = None) -> tuple[list[ChatEncoding], int]:
    """:func:`message_windows`, encoded."""
    ids = ids or ChatIds.of(tokenizer)
    pieces, dropped = message_windows(tokenizer, messages, max_len, ids=ids)
    return [encode_chat(tokenizer, p, ids=ids) for p in pieces], dropped


def prepare_model_for_chat(model, tokenizer, new: Sequence[str] | None = None) -> dict:
    """Give the model rows for the tokenizer's new tokens and start them sensibly (see
    INIT_FROM); set generation to stop at ``<|end|>``. ``new``: the chat tokens just added
    (:func:`add_chat_tokens`; None: all four). A chat model tuned again keeps its learned rows:
    they were set back to "Q."/"A."/``<|endoftext|>``, its turn-taking lost without a word.
    Returns {token: id} of the rows set."""
    import torch

    ids = ChatIds.of(tokenizer)
    emb = model.get_input_embeddings()
    n_real = len(tokenizer)
    if n_real > emb.weight.shape[0]:  # the tokenizer's size: training pads it (--pad_vocab), saving does not
        model.resize_token_embeddings(n_real, mean_resizing=False)
    weight = model.get_input_embeddings().weight
    base_rows = min(*ids.roles.values(), ids.end)  # rows below the first chat token: the base vocabulary
    out = {}
    with torch.no_grad():
        mean = weight[:base_rows].mean(0)
        for token, source in INIT_FROM.items():
            if new is not None and token not in new:
                continue
            tid = tokenizer.convert_tokens_to_ids(token)
            if source is None:
                weight[tid] = mean
            else:
                src = [ids.eot] if source == EOT else encode_text(tokenizer, source)
                weight[tid] = weight[src].mean(0)
            out[token] = tid
        head = model.get_output_embeddings()
        if head is not None and head.weight.data_ptr() != weight.data_ptr():  # untied head
            for tid in out.values():
                head.weight[tid] = weight[tid]
    gen = model.generation_config
    gen.eos_token_id = [ids.end, ids.eot]
    gen.pad_token_id = tokenizer.pad_token_id
    gen.bos_token_id = ids.eot
    return out
