"""Request schema for /v1/generate, built per server so its ranges follow the server's limits.

Unknown fields are refused (``extra="forbid"``) so a typo such as ``temprature`` is reported
instead of silently ignored; ``strict`` stops "0.7"-as-string coercion; NaN/inf are refused.
"""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, create_model


def request_model(max_prompt_chars: int, max_new_tokens_limit: int, max_samples: int) -> type[BaseModel]:
    class _Base(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

    fields = {
        "prompt": (str, Field(max_length=max_prompt_chars,
                              description="text to continue (may be empty)")),
        "max_new_tokens": (Optional[int], Field(None, ge=1, le=max_new_tokens_limit)),
        "temperature": (Optional[float], Field(None, ge=0, le=5, allow_inf_nan=False,
                                               description="0 = greedy")),
        "top_p": (Optional[float], Field(None, gt=0, le=1, allow_inf_nan=False)),
        "top_k": (Optional[int], Field(None, ge=0, le=1000, description="0 = off")),
        "repetition_penalty": (Optional[float], Field(None, gt=0, le=10, allow_inf_nan=False)),
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
