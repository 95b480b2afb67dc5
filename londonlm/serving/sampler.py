"""Choosing the next token for every row of a batch, each row with its own settings.

The arithmetic is Hugging Face ``generate()``'s, row by row, so a request decoded in a batch
picks the tokens it would pick alone: the repetition penalty (``RepetitionPenaltyLogitsProcessor``:
seen tokens' logits divided, or multiplied when negative), ``no_repeat_ngram_size``, then, for
sampling rows only, temperature, top-k and top-p (the ``*LogitsWarper`` classes, in that order),
softmax and ``torch.multinomial`` with the row's own seeded ``torch.Generator`` (``generate()``
seeds the global one with the same seed: the same draws). Greedy rows take the argmax of the
penalised logits, as ``generate()`` does with ``do_sample=False``.

Two shortcuts make a step cheaper (a full sort per row was its largest cost) with the same numbers:
top-p sorts only the top-k survivors (every other score is already -inf, so the sorted row is
those survivors after a run of -inf: the same values, the same softmax and cumulative sum), and
the draw is ``torch.multinomial``'s own single-sample method done for all sampling rows at once.
``torch.multinomial(p, 1)`` (without replacement, its default) is, on every device, ATen's
``multinomial_out`` (aten/src/ATen/native/Distributions.cpp; the CPU and CUDA dispatch share that
one native function): ``q = empty_like(p).exponential_(1, gen)``, then ``argmax(p / q)``. So the
``q`` rows are drawn row by row from each row's own generator, exactly as multinomial draws them,
and one division and one argmax serve the whole batch; on a GPU that also spares multinomial's
per-row validity checks, each a host sync. Where survivors tie (a sort orders ties arbitrarily) or
top-k is off, top-p sorts the whole row as before.

A step reads its tokens back to the host once: greedy and sampled rows' choices are gathered
into one tensor before the single ``.tolist()`` (the short top-p's tie check is the one other
read, and only in steps with top-k and top-p rows).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..generation import GenerationSettings


@dataclass
class RowSampling:
    """One row's sampling knobs and random stream."""
    settings: GenerationSettings
    generator: torch.Generator | None  # None for greedy rows


class BatchSampler:
    """Per-row parameters as tensors, rebuilt only when the batch's rows change."""

    def __init__(self, rows: list[RowSampling], device: str):
        s = [r.settings for r in rows]
        col = dict(dtype=torch.float32, device=device)
        self.rows = rows
        self.penalty = torch.tensor([[x.repetition_penalty] for x in s], **col)
        # greedy rows (temperature below GREEDY_BELOW, 0 included) never see the warpers; 1.0 keeps
        # their (unused) arithmetic finite
        self.temperature = torch.tensor([[x.temperature if x.sampling else 1.0] for x in s], **col)
        self.top_k = torch.tensor([x.top_k if x.sampling else 0 for x in s], dtype=torch.long, device=device)
        self.one_minus_top_p = torch.tensor([[1 - x.top_p if x.sampling else 0.0] for x in s], **col)
        self.use_top_p = torch.tensor([[x.sampling and x.top_p < 1.0] for x in s], device=device)
        self.no_top_k = self.top_k[:, None] == 0
        self.ngram = [x.no_repeat_ngram_size for x in s]
        self.k_max = max((x.top_k for x in s if x.sampling), default=0)
        self.any_top_p = any(x.sampling and x.top_p < 1.0 for x in s)
        # the short top-p needs every top-p row cut by top-k first
        self.top_p_within_top_k = all(x.top_k > 0 for x in s if x.sampling and x.top_p < 1.0)
        self.sampled = [i for i, x in enumerate(s) if x.sampling]
        self.sampled_idx = torch.tensor(self.sampled, dtype=torch.long, device=device)

    def choose(self, logits: torch.Tensor, seen: torch.Tensor, histories: list[list[int]]) -> list[int]:
        """Next token of each row: ``logits`` [rows, vocab] float32, ``seen`` [rows, vocab] bool
        (prompt and generated tokens), ``histories`` the rows' token ids (for n-gram blocking)."""
        penalised = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
        scores = torch.where(seen, penalised, logits)
        if any(self.ngram):
            scores = self._block_ngrams(scores, histories)
        if not self.sampled:
            return scores.argmax(dim=-1).tolist()
        drawn = self._draw(self._warp(scores).softmax(dim=-1))
        if len(self.sampled) == len(self.rows):
            return drawn.tolist()
        return scores.argmax(dim=-1).index_copy(0, self.sampled_idx, drawn).tolist()

    def _draw(self, probs: torch.Tensor) -> torch.Tensor:
        """One token per sampling row from ``probs`` [rows, vocab], each from its row's generator
        (``torch.multinomial(probs[i:i+1], 1, generator=...)``'s token: see the module docstring),
        left on the device."""
        if len(self.sampled) < len(self.rows):
            probs = probs.index_select(0, self.sampled_idx)
        q = torch.empty_like(probs)
        for j, i in enumerate(self.sampled):  # each row's Exp(1) draws, as multinomial makes them
            q[j].exponential_(1, generator=self.rows[i].generator)
        return (probs / q).argmax(dim=-1)

    def _block_ngrams(self, scores: torch.Tensor, histories: list[list[int]]) -> torch.Tensor:
        from transformers import NoRepeatNGramLogitsProcessor

        scores = scores.clone()
        for i, n in enumerate(self.ngram):
            if n:
                ids = torch.tensor([histories[i]], device=scores.device)
                scores[i:i + 1] = NoRepeatNGramLogitsProcessor(n)(ids, scores[i:i + 1])
        return scores

    def _warp(self, scores: torch.Tensor) -> torch.Tensor:
        """Temperature, then top-k, then top-p, each only on the rows that ask for it."""
        scores = scores / self.temperature
        if not self.k_max:
            return self._top_p(scores, None, None) if self.any_top_p else scores
        vocab = scores.shape[-1]
        top = torch.topk(scores, min(self.k_max + 1, vocab), dim=-1)  # one more: is the k-th score tied?
        kth = top.values.gather(1, (self.top_k.clamp(max=vocab) - 1).clamp(min=0)[:, None])
        kth = kth.masked_fill(self.no_top_k, -float("inf"))  # those rows cut nothing
        scores = scores.masked_fill(scores < kth, -float("inf"))
        return self._top_p(scores, top, kth) if self.any_top_p else scores

    def _top_p(self, scores: torch.Tensor, top, kth) -> torch.Tensor:
        """TopPLogitsWarper: ascending sort, softmax, cumulative sum, cut at 1 - top_p."""
        vocab, m = scores.shape[-1], self.k_max
        if top is not None and self.top_p_within_top_k and m < vocab:
            survivors = top.values[:, :m].masked_fill(top.values[:, :m] < kth, -float("inf"))
            spill = (top.values[:, m:m + 1] >= kth)[:, 0]  # the k-th score tied beyond the top m: more survive
            tied = ((survivors[:, 1:] == survivors[:, :-1]) & (survivors[:, 1:] > -float("inf"))).any(dim=-1)
            if bool((~(spill | tied) | ~self.use_top_p[:, 0]).all()):  # a sort orders ties arbitrarily
                ascending = torch.cat([survivors.new_full((len(survivors), vocab - m), -float("inf")),
                                       survivors.flip(-1)], dim=-1)
                drop = self._cut(ascending)[:, vocab - m:].flip(-1) & self.use_top_p
                return scores.scatter(1, top.indices[:, :m], survivors.masked_fill(drop, -float("inf")))
        ascending, order = torch.sort(scores, descending=False)
        drop = torch.zeros_like(scores, dtype=torch.bool).scatter(1, order, self._cut(ascending))
        return scores.masked_fill(drop & self.use_top_p, -float("inf"))

    def _cut(self, ascending: torch.Tensor) -> torch.Tensor:
        remove = ascending.softmax(dim=-1).cumsum(dim=-1) <= self.one_minus_top_p
        remove[..., -1:] = False  # keep at least one token
        return remove
