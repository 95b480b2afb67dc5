"""Choosing the next token for every row of a batch, each row with its own settings.

The arithmetic is Hugging Face ``generate()``'s, row by row, so a request decoded in a batch
picks the tokens it would pick alone: the repetition penalty (``RepetitionPenaltyLogitsProcessor``:
seen tokens' logits divided, or multiplied when negative), ``no_repeat_ngram_size``, then, for
sampling rows only, temperature, top-k and top-p (the ``*LogitsWarper`` classes, in that order),
softmax and ``torch.multinomial`` with the row's own seeded ``torch.Generator`` (``generate()``
seeds the global one with the same seed: the same draws). Greedy rows take the argmax of the
penalised logits, as ``generate()`` does with ``do_sample=False``.
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
        self.sampling = [x.sampling for x in s]
        self.penalty = torch.tensor([[x.repetition_penalty] for x in s], **col)
        # greedy rows never see the warpers; 1.0 keeps their (unused) arithmetic finite
        self.temperature = torch.tensor([[x.temperature if x.sampling else 1.0] for x in s], **col)
        self.top_k = torch.tensor([x.top_k if x.sampling else 0 for x in s], dtype=torch.long, device=device)
        self.one_minus_top_p = torch.tensor([[1 - x.top_p if x.sampling else 0.0] for x in s], **col)
        self.use_top_p = torch.tensor([[x.sampling and x.top_p < 1.0] for x in s], device=device)
        self.ngram = [x.no_repeat_ngram_size for x in s]

    def choose(self, logits: torch.Tensor, seen: torch.Tensor, histories: list[list[int]]) -> list[int]:
        """Next token of each row: ``logits`` [rows, vocab] float32, ``seen`` [rows, vocab] bool
        (prompt and generated tokens), ``histories`` the rows' token ids (for n-gram blocking)."""
        penalised = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
        scores = torch.where(seen, penalised, logits)
        if any(self.ngram):
            scores = self._block_ngrams(scores, histories)
        chosen = scores.argmax(dim=-1).tolist()
        if any(self.sampling):
            probs = self._warp(scores).softmax(dim=-1)
            for i, row in enumerate(self.rows):
                if self.sampling[i]:
                    chosen[i] = int(torch.multinomial(probs[i:i + 1], 1, generator=row.generator))
        return chosen

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
        k = self.top_k.clamp(max=scores.shape[-1])
        if bool((k > 0).any()):
            top = torch.topk(scores, int(k.max()), dim=-1).values
            kth = top.gather(1, (k - 1).clamp(min=0)[:, None])
            scores = scores.masked_fill((scores < kth) & (k > 0)[:, None], -float("inf"))
        if bool(self.use_top_p.any()):
            sorted_scores, order = torch.sort(scores, descending=False)
            remove = sorted_scores.softmax(dim=-1).cumsum(dim=-1) <= self.one_minus_top_p
            remove[..., -1:] = False  # keep at least one token
            remove = remove.scatter(1, order, remove) & self.use_top_p
            scores = scores.masked_fill(remove, -float("inf"))
        return scores
