"""Samples for the model card, read from the evaluation stage's ``samples.jsonl``."""
from __future__ import annotations

import json

from ...core import utf8_problem

# keys the evaluation (and older tools) have used for the generated text, in preference order
TEXT_KEYS = ("generated", "generated_text", "generation", "completion", "continuation", "output",
             "text", "sample")


def read_samples(path, limit: int = 5) -> list[dict]:
    """Samples from an evaluation ``samples.jsonl`` whatever its exact keys: the prompt
    from ``prompt`` and the text from the first of the usual generation keys. A damaged line
    (bytes that are not UTF-8, bad or too deeply nested JSON) is left out, as is a row without text."""
    out = []
    # undecodable bytes as surrogate escapes, so that one damaged line costs that line alone
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            if not line.strip() or utf8_problem(line):
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if not isinstance(row, dict):
                continue
            text = next((row[k] for k in TEXT_KEYS if isinstance(row.get(k), str)), None)
            if text is None:
                continue
            settings = row.get("settings") or (f"{row['mode']} decoding, evaluation stage"
                                               if isinstance(row.get("mode"), str) else None)
            if isinstance(settings, dict):
                settings = ", ".join(f"{k}={v}" for k, v in settings.items())
            out.append({"prompt": row.get("prompt", ""), "text": text,
                        "settings": settings if isinstance(settings, str) else ""})
            if len(out) >= limit:
                break
    return out
