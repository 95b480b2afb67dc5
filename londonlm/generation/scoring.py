"""Per-token log-probabilities of a token sequence under a loaded model: what the server's
OpenAI-compatible ``logprobs`` and ``echo`` report, and what evaluation tools that talk to a
served model (lm-evaluation-harness's ``local-completions``) score log-likelihoods with; and the
summed log-probability of continuations after their contexts, batched
(:func:`continuation_logprobs`, :class:`ContinuationScorer`: the OCR repair's judge)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core import WEIGHT_FILES, GenerationError, weight_files, weights_sha256
from .model import LoadedModel, encode_prompt, encode_text, load_model

MAX_TOP = 5  # alternatives per position, OpenAI's limit


REPLACEMENT = "\ufffd"  # what decoding gives for the bytes of a character not yet complete


@dataclass
class TokenScores:
    """One entry per token, in OpenAI's completions ``logprobs`` layout."""

    tokens: list[str]                          # each token's part of the text (see text_pieces)
    token_logprobs: list[float | None]         # log P(token | the tokens before); None for the first
    # the ``top`` likeliest tokens there and the chosen one; None for the first
    top_logprobs: list[dict[str, float] | None]
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
        # OpenAI always reports the chosen token beside the ``top`` likeliest (up to top + 1
        # entries, one for ``logprobs: 0``): a client reads it there even when sampling picked a rarer one
        pairs = [(chosen[pos], ids[pos + 1])]
        if best is not None:
            pairs += zip(best.values[pos].tolist(), best.indices[pos].tolist())
        alternatives: dict[str, float] = {}
        for value, token in pairs:
            key = lm.tokenizer.decode([token], clean_up_tokenization_spaces=False)
            alternatives[key] = max(value, alternatives.get(key, float("-inf")))
        tops.append(alternatives)
    pieces = text_pieces(lm.tokenizer, ids, skip_special_tokens=False)
    return TokenScores(pieces, [None, *chosen], tops, _offsets(pieces))


# ---------------------------------------------------------------- continuations
def continuation_logprobs(lm: LoadedModel, pairs: list[tuple[list[int], list[int]]],
                          batch_size: int = 32) -> list[float]:
    """Per ``(context ids, continuation ids)`` pair: the sum of log P(continuation token | the
    context and the continuation's tokens before it), natural log, float32 softmax. Pairs go
    through in batches of ``batch_size``, right-padded (a causal model's real tokens never see
    the padding after them), sorted by length so a batch pads little; a context too long for
    the model keeps its last tokens. A continuation must be 1 to ``context_length - 1`` tokens
    and a context at least one (a bos)."""
    import torch

    room = lm.context_length
    for ctx, cont in pairs:
        if not ctx or not 0 < len(cont) < room:
            raise ValueError(f"a context of {len(ctx)} and a continuation of {len(cont)} tokens: need at least 1 "
                             f"and 1 to {room - 1}")
    rows = [(ctx[-(room - len(cont)):], cont) for ctx, cont in pairs]
    order = sorted(range(len(rows)), key=lambda k: len(rows[k][0]) + len(rows[k][1]))
    out = [0.0] * len(rows)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            batch = order[b:b + batch_size]
            for k, value in zip(batch, _batch_logprobs(lm, [rows[k] for k in batch], pad)):
                out[k] = value
    return out


def _batch_logprobs(lm: LoadedModel, rows: list[tuple[list[int], list[int]]], pad: int) -> list[float]:
    """``continuation_logprobs`` of one batch (under ``inference_mode``)."""
    import torch

    width = max(len(c) + len(x) for c, x in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    target = torch.zeros((len(rows), width), dtype=torch.bool)  # the positions whose next token is scored
    for r, (ctx, cont) in enumerate(rows):
        seq = ctx + cont
        ids[r, :len(seq)] = torch.tensor(seq)
        mask[r, :len(seq)] = 1
        target[r, len(ctx) - 1:len(seq) - 1] = True
    logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits[:, :-1]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(2, ids[:, 1:].to(logprobs.device)[..., None])[..., 0]
    return (chosen * target[:, :-1].to(chosen.device)).sum(dim=1).tolist()


class ContinuationScorer:
    """Text continuations scored by a model folder (``final/``, any ``save_pretrained`` one):
    ``scorer([(context, continuation), ...])`` -> the log-probability of each continuation
    after its context (``continuation_logprobs``), the context read as a document's text after
    its ``<|endoftext|>``. The model loads on first use in each process and is not pickled: a
    pool's worker that receives the scorer loads its own copy once, on ``threads`` torch threads
    (None: torch's choice; 1 for one worker per CPU, which would otherwise fight over them)."""

    def __init__(self, model_dir: str, batch_size: int = 32, threads: int | None = None):
        self.model_dir, self.batch_size, self.threads = str(model_dir), batch_size, threads
        self._lm: LoadedModel | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_lm": None}

    def load(self) -> LoadedModel:
        """The model, loaded now if not yet. A folder that holds none, or one it cannot load:
        ``GenerationError`` in one line (transformers' reasons run to several)."""
        if self._lm is None:
            import torch

            folder = Path(self.model_dir)
            if folder.is_dir() and not weight_files(folder):
                raise GenerationError(f"{self.model_dir} holds no model: no {' or '.join(WEIGHT_FILES)}; pass a "
                                      f"save_pretrained folder with its tokenizer (a run's final/)")
            if self.threads:
                torch.set_num_threads(self.threads)
            try:
                self._lm = load_model(self.model_dir, device="cpu", dtype="float32")
            except GenerationError as e:
                raise GenerationError(" ".join(str(e).split())) from None
        return self._lm

    def identity(self) -> dict:
        """What names the model for a report: its folder's ``run/final`` name and a hash of its weights."""
        lm = self.load()
        sha = weights_sha256(lm.path) if Path(lm.path).is_dir() else None  # (every shard of a sharded set)
        return {"model": lm.model_id, "sha256": sha[:16] if sha else None}

    def __call__(self, items: list[tuple[str, str]]) -> list[float]:
        lm = self.load()
        pairs = [(encode_prompt(lm.tokenizer, ctx), encode_text(lm.tokenizer, cont)) for ctx, cont in items]
        return continuation_logprobs(lm, pairs, self.batch_size)
