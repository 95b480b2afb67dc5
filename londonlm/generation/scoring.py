"""Per-token log-probabilities of a token sequence under a loaded model: what the server's
OpenAI-compatible ``logprobs`` and ``echo`` report, and what evaluation tools that talk to a
served model (lm-evaluation-harness's ``local-completions``) score log-likelihoods with."""
from __future__ import annotations

from dataclasses import dataclass

from .model import LoadedModel

MAX_TOP = 5  # alternatives per position, OpenAI's limit


REPLACEMENT = "\ufffd"  # what decoding gives for the bytes of a character not yet complete


@dataclass
class TokenScores:
    """One entry per token, in OpenAI's completions ``logprobs`` layout."""

    tokens: list[str]                          # each token's part of the text (see text_pieces)
    token_logprobs: list[float | None]         # log P(token | the tokens before); None for the first
    top_logprobs: list[dict[str, float] | None]  # the ``top`` likeliest tokens there; None for the first
    text_offset: list[int]                     # where each token's part starts in the text

    def after(self, n: int) -> "TokenScores":
        """The entries from position ``n`` on (a completion's, without its prompt's)."""
        return TokenScores(self.tokens[n:], self.token_logprobs[n:], self.top_logprobs[n:],
                           self.text_offset[n:])

    def in_text(self, pieces: list[str]) -> "TokenScores":
        """The same scores with ``pieces`` (one per token, joined: the text they are reported
        against) as the tokens, each offset where its piece starts."""
        if len(pieces) != len(self.tokens):
            raise ValueError(f"{len(pieces)} pieces for {len(self.tokens)} tokens")
        return TokenScores(list(pieces), self.token_logprobs, self.top_logprobs, _offsets(pieces))

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "token_logprobs": self.token_logprobs,
                "top_logprobs": self.top_logprobs, "text_offset": self.text_offset}


def _offsets(pieces: list[str]) -> list[int]:
    out, at = [], 0
    for piece in pieces:
        out.append(at)
        at += len(piece)
    return out


def text_pieces(tokenizer, ids: list[int], *, skip_special_tokens: bool) -> list[str]:
    """Each token's part of ``tokenizer.decode(ids, skip_special_tokens=...)``: joined, they are
    that text exactly, so ``text[offset:]`` starts with each token's piece (OpenAI's meaning of
    ``text_offset``, which lm-evaluation-harness reads).

    A control token the text does not show (``skip_special_tokens``) adds ``""``. A byte-level
    token that ends inside a multibyte character (``"é"`` is two bytes, which BPE may split) adds
    the characters it completes and none of the one it starts: the token that completes that
    character carries all of it. Text is decoded from the first token not yet fully shown (the
    incremental detokenizers' window), so each token costs one short decode."""
    pieces, start, shown = [], 0, ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[start:i + 1], skip_special_tokens=skip_special_tokens,
                                clean_up_tokenization_spaces=False)
        whole = not text.endswith(REPLACEMENT) or i == len(ids) - 1  # the end shows what is left as is
        done = text if whole else text.rstrip(REPLACEMENT)
        pieces.append(done[len(shown):])
        start, shown = (i + 1, "") if whole else (start, done)
    return pieces


def fit_pieces(pieces: list[str], text: str) -> list[str]:
    """``pieces`` cut to ``text``, which they begin (a completion cut at a stop string, whose
    last tokens go past it): a token past the text's end adds ``""``."""
    out, at = [], 0
    for piece in pieces:
        out.append(text[at:at + len(piece)])
        at += len(out[-1])
    return out


def score_tokens(lm: LoadedModel, ids: list[int], top: int = 1) -> TokenScores:
    """Log-probabilities (natural log, float32 softmax over the full vocabulary, no sampling
    transforms) of ``ids[1:]`` each given the ids before it, in one forward pass. ``ids`` must
    fit the model's context. The tokens are reported against ``decode(ids)`` with control
    tokens shown (:func:`text_pieces`); :meth:`TokenScores.in_text` places them in another text."""
    import torch

    if not 0 < len(ids) <= lm.context_length:
        raise ValueError(f"{len(ids)} tokens: score 1 to {lm.context_length}")
    top = max(0, min(int(top), MAX_TOP))
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([ids], device=lm.device)).logits[0, :-1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        chosen = logprobs.gather(1, torch.tensor(ids[1:], device=logprobs.device)[:, None])[:, 0].tolist()
        best = logprobs.topk(top, dim=-1) if top else None
    tops: list[dict[str, float] | None] = [None]
    for pos in range(len(ids) - 1):
        alternatives: dict[str, float] = {}
        if best is not None:
            for value, token in zip(best.values[pos].tolist(), best.indices[pos].tolist()):
                key = lm.tokenizer.decode([token], clean_up_tokenization_spaces=False)
                alternatives[key] = max(value, alternatives.get(key, float("-inf")))
        tops.append(alternatives)
    pieces = text_pieces(lm.tokenizer, ids, skip_special_tokens=False)
    return TokenScores(pieces, [None, *chosen], tops, _offsets(pieces))
