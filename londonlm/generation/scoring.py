"""Per-token log-probabilities of a token sequence under a loaded model: what the server's
OpenAI-compatible ``logprobs`` and ``echo`` report, and what evaluation tools that talk to a
served model (lm-evaluation-harness's ``local-completions``) score log-likelihoods with."""
from __future__ import annotations

from dataclasses import dataclass

from .model import LoadedModel

MAX_TOP = 5  # alternatives per position, OpenAI's limit


@dataclass
class TokenScores:
    """One entry per token, in OpenAI's completions ``logprobs`` layout."""

    tokens: list[str]                          # each token's text
    token_logprobs: list[float | None]         # log P(token | the tokens before); None for the first
    top_logprobs: list[dict[str, float] | None]  # the ``top`` likeliest tokens there; None for the first
    text_offset: list[int]                     # where each token's text starts in the joined text

    def after(self, n: int) -> "TokenScores":
        """The entries from position ``n`` on (a completion's, without its prompt's)."""
        return TokenScores(self.tokens[n:], self.token_logprobs[n:], self.top_logprobs[n:],
                           self.text_offset[n:])

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "token_logprobs": self.token_logprobs,
                "top_logprobs": self.top_logprobs, "text_offset": self.text_offset}


def score_tokens(lm: LoadedModel, ids: list[int], top: int = 1) -> TokenScores:
    """Log-probabilities (natural log, float32 softmax over the full vocabulary, no sampling
    transforms) of ``ids[1:]`` each given the ids before it, in one forward pass. ``ids`` must
    fit the model's context."""
    import torch

    if not 0 < len(ids) <= lm.context_length:
        raise ValueError(f"{len(ids)} tokens: score 1 to {lm.context_length}")
    top = max(0, min(int(top), MAX_TOP))
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([ids], device=lm.device)).logits[0, :-1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        chosen = logprobs.gather(1, torch.tensor(ids[1:], device=logprobs.device)[:, None])[:, 0].tolist()
        best = logprobs.topk(top, dim=-1) if top else None
    texts = [lm.tokenizer.decode([t], clean_up_tokenization_spaces=False) for t in ids]
    tops: list[dict[str, float] | None] = [None]
    for pos in range(len(ids) - 1):
        alternatives: dict[str, float] = {}
        if best is not None:
            for value, token in zip(best.values[pos].tolist(), best.indices[pos].tolist()):
                key = lm.tokenizer.decode([token], clean_up_tokenization_spaces=False)
                alternatives[key] = max(value, alternatives.get(key, float("-inf")))
        tops.append(alternatives)
    offsets, at = [], 0
    for text in texts:
        offsets.append(at)
        at += len(text)
    return TokenScores(texts, [None, *chosen], tops, offsets)
