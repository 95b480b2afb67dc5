"""A language model whose log-probabilities are known by hand, for the scorers' tests: one
token per character, logits that depend only on the current token."""
from __future__ import annotations

from types import SimpleNamespace

import torch

ALPHABET = "abcde "


class CharTokenizer:
    """One token per character of ALPHABET (ids 1..6); id 0 is the EOT/BOS/pad token."""
    bos_token_id = eos_token_id = pad_token_id = 0

    def __call__(self, text, add_special_tokens=False, verbose=True):
        return {"input_ids": char_ids(text)}


def char_ids(text: str) -> list[int]:
    return [ALPHABET.index(c) + 1 for c in text]


class BigramLM(torch.nn.Module):
    """Logits depend only on the current token: log P(next | prev) = log_softmax(table[prev]).
    Context beyond one token is irrelevant, so any correct sliding window gives the same
    total as a hand computation over consecutive pairs."""

    def __init__(self, n_positions: int, vocab: int = 7, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=g) * 2)
        self.config = SimpleNamespace(n_positions=n_positions, vocab_size=vocab)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])

    def logp(self, prev: int, nxt: int) -> float:
        """log P(nxt | prev)."""
        return float(torch.log_softmax(self.table.detach()[prev], -1)[nxt])

    def lp(self, ids: list[int]) -> float:
        """log P of ``ids[1:]`` given the token before each."""
        return sum(self.logp(a, b) for a, b in zip(ids, ids[1:]))
