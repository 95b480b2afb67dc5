"""Held-out language-modelling metrics: loss, perplexity and bits per byte.

Conventions (identical to ``../shared/bench/bpb.py`` so the numbers agree with it):

- each document is tokenized on its own, without special tokens;
- a window of ``context_length`` tokens slides over the document with ``stride``
  (default half the window); every token is scored exactly once, by the first window
  that reaches it, so after the first window each scored token has at least
  ``context_length - stride`` tokens of context;
- without ``prepend_tokens`` the first token of a document has no context and is not
  scored; with them (e.g. ``[eot_id]`` or ``[eot_id, era_id]``) every document token is
  scored and the prepended tokens are context only;
- ``bytes`` counts the UTF-8 bytes of every document that had at least one scored token
  (the bench counts the whole text too), so ``bits_per_byte = NLL_nats / (ln 2 * bytes)``.

Only per-token losses leave the forward pass: logits are reduced batch by batch and never
kept, so memory does not grow with the evaluation set.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from ...generation import encode_text

LN2 = math.log(2)


def model_context_length(model) -> int:
    cfg = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    raise ValueError("cannot tell the model's context length; pass context_length explicitly")


def document_windows(n_tokens: int, context_length: int, stride: int,
                     first_scored: int = 1) -> list[tuple[int, int, int]]:
    """(begin, end, score_from) triples covering tokens ``first_scored..n_tokens-1`` once.

    Mirrors bench/bpb.py's loop: windows start at multiples of ``stride``; a window that
    adds no new token is skipped; the loop stops at the window that reaches the end."""
    if context_length < 2:
        raise ValueError("context_length must be at least 2")
    if stride < 1 or stride >= context_length:
        # a window's first token has no context inside it, so stride == context_length
        # would leave tokens unscorable
        raise ValueError(f"stride must be in 1..{context_length - 1} (context_length - 1), "
                         f"got {stride}")
    out, prev_end = [], max(1, first_scored)
    for begin in range(0, n_tokens, stride):
        end = min(begin + context_length, n_tokens)
        if end <= prev_end:
            continue
        out.append((begin, end, prev_end))
        prev_end = end
        if end == n_tokens:
            break
    return out


def _truncate_text(text: str, n_tokens: int, keep_tokens: int) -> str:
    """Cut ``text`` to roughly ``keep_tokens`` tokens at a whitespace boundary, so the
    byte count of the kept text stays exact (we re-tokenize what we keep)."""
    if keep_tokens >= n_tokens:
        return text
    cut = max(1, int(len(text) * keep_tokens / max(1, n_tokens)))
    space = text.rfind(" ", 0, cut)
    return text[: space if space > cut // 2 else cut]


def _pad_id(tokenizer) -> int:
    # any id works for the right padding (never attended to by real positions, never scored);
    # an ordinary id rather than pad_token_id avoids transformers' missing-mask warning
    for attr in ("eos_token_id", "bos_token_id", "pad_token_id"):
        v = getattr(tokenizer, attr, None)
        if v is not None:
            return int(v)
    return 0


def score_windows(model, batch: list[list[int]], score_starts: list[int], pad_id: int,
                  device: str | torch.device = "cpu") -> list[tuple[float, int]]:
    """Sum of NLL (nats) and count of scored targets for each window in ``batch``.

    ``score_starts[i]`` is the first position *within window i* whose token is scored
    (always >= 1: position 0 has no context inside the window)."""
    width = max(len(w) for w in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    lens = torch.tensor([len(w) for w in batch], device=device).unsqueeze(1)
    for i, w in enumerate(batch):
        ids[i, : len(w)] = torch.tensor(w, dtype=torch.long)
    ids = ids.to(device)
    # no attention mask: with right padding a causal model's real positions never see the
    # pads that follow them, and the mask path is markedly slower on CPU
    logits = model(input_ids=ids).logits[:, :-1]
    targets = ids[:, 1:]
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                          reduction="none").view(targets.shape)
    del logits
    pos = torch.arange(1, width, device=ids.device).unsqueeze(0)  # position of each target
    starts = torch.tensor(score_starts, device=ids.device).unsqueeze(1)
    keep = (pos >= starts) & (pos < lens)
    sums = (nll * keep).sum(1).tolist()
    counts = keep.sum(1).tolist()
    return [(float(s), int(c)) for s, c in zip(sums, counts)]


class _Windows:
    """The scoring windows of ``texts`` in order, as ``(doc index, window ids, score_from)``,
    under the ``max_eval_tokens`` cap; records each planned document's bytes and whether the
    cap left anything out (``truncated``)."""

    def __init__(self, tokenizer, texts, prepend_tokens, max_eval_tokens, ctx: int, stride: int):
        self.tokenizer, self.texts, self.prepend = tokenizer, texts, prepend_tokens
        self.cap, self.ctx, self.stride = max_eval_tokens, ctx, stride
        self.doc_bytes: dict[int, int] = {}
        self.planned, self.truncated = 0, False
        self.read: list[str] = []  # each document reached, as far as it was scored (the last one cut)

    def _encode(self, text: str) -> list[int]:
        return encode_text(self.tokenizer, text)  # special-token strings stay plain text

    def _capped_document(self, text: str, pre: list[int]) -> tuple[str, list[int], bool]:
        """(text, ids, cut): the document, cut at a word boundary when the cap falls inside it."""
        if self.cap is None:
            return text, self._encode(text), False
        # don't tokenize a whole book to keep a few thousand tokens: English text runs
        # ~4 characters per token, so 32 per token leaves a wide margin
        limit = (self.cap - self.planned + 1) * 32
        if len(text) > limit:
            text, self.truncated = text[:limit], True
        doc_ids = self._encode(text)
        left = self.cap - self.planned
        if len(doc_ids) - (0 if pre else 1) <= left:
            return text, doc_ids, False
        text = _truncate_text(text, len(doc_ids), left + (0 if pre else 1))
        self.truncated = True
        return text, self._encode(text), True

    def __iter__(self) -> Iterator[tuple[int, list[int], int]]:
        for d, text in enumerate(self.texts):
            if self.cap is not None and self.planned >= self.cap:
                self.truncated = True  # documents left unscored
                return
            pre = list(self.prepend[d]) if self.prepend is not None else []
            text, doc_ids, cut = self._capped_document(text, pre)
            self.read.append(text)
            ids = pre + doc_ids
            first = len(pre) if pre else 1
            if len(doc_ids) == 0 or len(ids) <= first:
                continue  # nothing to score (the bench skips documents under 2 tokens)
            self.doc_bytes[d] = len(text.encode("utf-8"))
            self.planned += len(ids) - first
            for begin, end, score_from in document_windows(len(ids), self.ctx, self.stride, first):
                yield d, ids[begin:end], score_from - begin
            if cut:
                return  # the cap fell inside this document: no slivers of the next one


def _batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def evaluate_lm(model, tokenizer, texts: Sequence[str], *, context_length: int | None = None,
                stride: int | None = None, batch_size: int = 8, device: str = "cpu",
                prepend_tokens: list[list[int]] | None = None, max_eval_tokens: int | None = None,
                return_per_document: bool = False, return_texts: bool = False) -> dict:
    """Loss (nats/token), perplexity and bits per byte of ``model`` on whole documents.

    ``prepend_tokens[i]`` (optional) is context put before document i (e.g. the EOT id and
    an era token); those tokens are never scored. ``max_eval_tokens`` caps the scored
    tokens: documents are taken in order and the last one is cut at a word boundary, so
    the bytes still describe exactly the text that was scored. Returns keys ``loss``,
    ``perplexity``, ``bits_per_byte``, ``tokens``, ``bytes``, ``documents``,
    ``context_length``, ``stride``, ``truncated`` (and ``per_document`` on request; ``texts``,
    the documents as far as the cap let them be scored, on request: another model, of another
    tokenizer, scores the same bytes from them with no cap, where a cap in its own tokens
    would cover more or less of the text)."""
    ctx_max = model_context_length(model)
    ctx = min(context_length or ctx_max, ctx_max)
    stride = stride or max(1, ctx // 2)
    if prepend_tokens is not None and len(prepend_tokens) != len(texts):
        raise ValueError("prepend_tokens must have one entry per text")
    pad = _pad_id(tokenizer)
    was_training = getattr(model, "training", False)
    model.eval()
    model.to(device)
    plan = _Windows(tokenizer, texts, prepend_tokens, max_eval_tokens, ctx, stride)
    per_doc: dict[int, list[float]] = {}
    with torch.inference_mode():
        for batch in _batches(plan, batch_size):
            res = score_windows(model, [b[1] for b in batch], [b[2] for b in batch], pad, device)
            for (d, _, _), (s, c) in zip(batch, res):
                acc = per_doc.setdefault(d, [0.0, 0])
                acc[0] += s
                acc[1] += c
    if was_training:
        model.train()
    out = _summary(per_doc, plan.doc_bytes)
    out.update(context_length=ctx, stride=stride, prepended=prepend_tokens is not None,
               max_eval_tokens=max_eval_tokens, truncated=plan.truncated)
    if return_texts:
        out["texts"] = plan.read
    if return_per_document:
        out["per_document"] = [
            {"index": d, "nll": v[0], "tokens": int(v[1]), "bytes": plan.doc_bytes[d]}
            for d, v in sorted(per_doc.items())]
    return out


def _summary(per_doc: dict[int, list[float]], doc_bytes: dict[int, int]) -> dict:
    nll = sum(v[0] for v in per_doc.values())
    ntok = sum(int(v[1]) for v in per_doc.values())
    nbytes = sum(doc_bytes.values())
    loss = nll / ntok if ntok else float("nan")
    return {
        "loss": loss,
        "perplexity": math.exp(loss) if ntok and loss < 700 else float("inf") if ntok else float("nan"),
        "bits_per_byte": nll / (LN2 * nbytes) if nbytes else float("nan"),
        "tokens": ntok,
        "bytes": nbytes,
        "documents": len(per_doc),
        "bytes_per_token": nbytes / ntok if ntok else float("nan"),
    }
