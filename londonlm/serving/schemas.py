"""Request schemas for /v1/generate and the OpenAI-compatible endpoints, built per server so
their ranges follow the server's limits.

Unknown fields are refused (``extra="forbid"``) so a typo such as ``temprature`` is reported
instead of silently ignored; ``strict`` stops "0.7"-as-string coercion; NaN/inf are refused.
"""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..core import MIN_REPETITION_PENALTY
from ..generation import MAX_TOP


def request_model(max_prompt_chars: int, max_new_tokens_limit: int, max_samples: int) -> type[BaseModel]:
    class _Base(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

    fields = {
        "prompt": (str, Field(max_length=max_prompt_chars,
                              description="text to continue (may be empty)")),
        "max_new_tokens": (Optional[int], Field(None, ge=1, le=max_new_tokens_limit)),
        "temperature": (Optional[float], Field(None, ge=0, le=5, allow_inf_nan=False,
                                               description="0 = greedy (so is any below 1e-5)")),
        "top_p": (Optional[float], Field(None, gt=0, le=1, allow_inf_nan=False)),
        "top_k": (Optional[int], Field(None, ge=0, le=1000, description="0 = off")),
        "repetition_penalty": (Optional[float], Field(None, ge=MIN_REPETITION_PENALTY, le=10, allow_inf_nan=False)),
        "no_repeat_ngram_size": (Optional[int], Field(None, ge=0, le=32)),
        "num_samples": (Optional[int], Field(None, ge=1, le=max_samples)),
        "seed": (Optional[int], Field(None, ge=0, lt=2**32)),
        "era": (Optional[str], Field(None, max_length=16, description='e.g. "1650s"')),
        "stream": (bool, Field(False, description="answer with server-sent events")),
    }
    return create_model("GenerateRequest", __base__=_Base, **fields)


def error_message(errors: list[dict]) -> str:
    """One readable line from pydantic's error list."""
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        if e.get("type") == "extra_forbidden":
            parts.append(f"unknown field '{loc}'")
        else:
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- OpenAI-compatible

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: Optional[bool] = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """A message as clients send it. Fields beyond role/content/name are tolerated only when empty
    (SDK objects passed back carry ``tool_calls: null`` and the like)."""
    model_config = ConfigDict(extra="allow", strict=True)
    role: str
    content: Union[str, list[TextPart], None] = None
    name: Optional[str] = None

    def plain(self) -> dict:
        extra = [k for k, v in (self.model_extra or {}).items() if v not in (None, [], {}, "")]
        if extra:
            raise ValueError(f"message field '{extra[0]}' is not supported (text messages only)")
        content = self.content if not isinstance(self.content, list) else "".join(p.text for p in self.content)
        return {"role": self.role, "content": content}


# OpenAI fields accepted and ignored: they change nothing in how a local model answers
_IGNORED = {"user": (Optional[str], None), "metadata": (Optional[dict], None), "store": (Optional[bool], None),
            "service_tier": (Optional[str], None)}


def openai_models(max_new_tokens_limit: int, max_samples: int) -> tuple[type, type]:
    """(CompletionRequest, ChatRequest) with ranges that follow the server's limits. Besides
    OpenAI's fields they take londonlm's ``top_k``, ``repetition_penalty``,
    ``no_repeat_ngram_size`` (and ``era`` / ``year``): the openai client sends them in ``extra_body``."""
    tokens = (Optional[int], Field(None, ge=1, le=max_new_tokens_limit))
    common = {
        "model": (str, Field(max_length=200)),
        "max_tokens": tokens,
        "temperature": (Optional[float], Field(None, ge=0, le=5, allow_inf_nan=False)),
        "top_p": (Optional[float], Field(None, gt=0, le=1, allow_inf_nan=False)),
        "n": (Optional[int], Field(None, ge=1, le=max_samples)),
        "stream": (Optional[bool], False),
        "stream_options": (Optional[StreamOptions], None),
        "stop": (Union[str, list[str], None], Field(None)),
        "seed": (Optional[int], Field(None, ge=0, lt=2**32)),
        "presence_penalty": (Optional[float], Field(None, allow_inf_nan=False)),
        "frequency_penalty": (Optional[float], Field(None, allow_inf_nan=False)),
        "logit_bias": (Optional[dict], None),
        "top_k": (Optional[int], Field(None, ge=0, le=1000)),
        "repetition_penalty": (Optional[float], Field(None, ge=MIN_REPETITION_PENALTY, le=10, allow_inf_nan=False)),
        "no_repeat_ngram_size": (Optional[int], Field(None, ge=0, le=32)),
        **_IGNORED,
    }
    completion = create_model(
        "CompletionRequest", __base__=_Strict, **{k: v for k, v in common.items() if k != "max_tokens"},
        prompt=(Union[str, list[str], list[int], list[list[int]]], Field(...)),
        max_tokens=(Optional[int], Field(None, ge=0, le=max_new_tokens_limit)),  # 0: score the prompt (echo)
        echo=(Optional[bool], False), logprobs=(Optional[int], Field(None, ge=0, le=MAX_TOP)),
        best_of=(Optional[int], None),
        suffix=(Optional[str], None), era=(Optional[str], Field(None, max_length=16)))
    chat = create_model(
        "ChatRequest", __base__=_Strict, **common,
        messages=(list[ChatMessage], Field(..., max_length=64)),
        max_completion_tokens=tokens, logprobs=(Optional[bool], None), top_logprobs=(Optional[int], None),
        response_format=(Optional[dict], None), year=(Optional[int], None))
    return completion, chat
