"""Training data over the token cache: packed, fixed-length blocks (no padding)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..tokens import load_checked_tokens


class PackedBlocks(Dataset):
    """Map-style dataset of non-overlapping ``block_size`` windows of the memmapped token
    stream (documents separated by <|endoftext|>). Indexing is one slice of the memmap:
    cheap, and any block can be fetched without reading the ones before it, so resuming
    never re-reads skipped data."""

    def __init__(self, tokens: np.ndarray, block_size: int, indices: np.ndarray | None = None):
        self.tokens = tokens
        self.block_size = block_size
        self.n_blocks = len(tokens) // block_size
        self.indices = indices

    @classmethod
    def from_cache(cls, cache_dir: Path, split: str, block_size: int) -> "PackedBlocks":
        return cls(load_checked_tokens(cache_dir, split), block_size)  # each chunk CRC-checked on first read

    def subset_evenly(self, n: int) -> "PackedBlocks":
        """At most ``n`` blocks spread evenly over the split (bounded evaluation cost)."""
        if n <= 0 or n >= self.n_blocks:
            return self
        idx = np.linspace(0, self.n_blocks - 1, n).round().astype(np.int64)
        return PackedBlocks(self.tokens, self.block_size, np.unique(idx))

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else self.n_blocks

    def __getitem__(self, i: int) -> dict:
        if self.indices is not None:
            i = int(self.indices[i])
        start = i * self.block_size
        x = torch.from_numpy(np.asarray(self.tokens[start:start + self.block_size], dtype=np.int64))
        return {"input_ids": x, "labels": x}
