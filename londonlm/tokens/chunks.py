"""Chunk checksums of the token cache, and the reader that verifies them as training reads.

A split's ``.bin`` is cut into ``CHUNK_BYTES`` chunks whose CRC-32s are listed in the cache's
metadata. Start-up checks stay O(1) (sizes, sampled hash: see ``token_cache``); this module
makes sure every byte is still checked before it reaches the model, at the cost of one extra
pass over the data spread over the first epoch.
"""
from __future__ import annotations

import operator
import os
import zlib
from pathlib import Path

import numpy as np

from ..core import LondonLMError

PRETOKENIZE_CMD = "python 04_training/train_model_slm.py --no_pretokenized"
# 1 MiB: an even number of bytes (whole tokens), 512 blocks of 1,024 tokens, ~1.4 ms of
# zlib.crc32; a 10 GB cache lists 10,000 checksums in its metadata.
CHUNK_BYTES = 1 << 20


class CacheError(LondonLMError, RuntimeError):
    """The cache is absent, incompatible or damaged; the message says why."""


class ChunkSums:
    """CRC-32 of every ``CHUNK_BYTES`` chunk of a byte stream written in pieces of any size."""

    def __init__(self, chunk_bytes: int = CHUNK_BYTES):
        self.chunk_bytes = chunk_bytes
        self.sums: list[int] = []
        self._crc = self._filled = 0

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view):
            take = min(len(view), self.chunk_bytes - self._filled)
            self._crc = zlib.crc32(view[:take], self._crc)
            self._filled += take
            view = view[take:]
            if self._filled == self.chunk_bytes:
                self.sums.append(self._crc)
                self._crc = self._filled = 0

    def finish(self) -> list[int]:
        if self._filled:
            self.sums.append(self._crc)
            self._crc = self._filled = 0
        return self.sums


class CheckedTokens:
    """The uint16 token stream of one split, memory-mapped, that checks what it hands out.

    Slicing (what the packed-block dataset does) first verifies the CRC-32 of every 1 MiB
    chunk the slice touches that has not been verified yet in this process, and raises
    :class:`CacheError` naming the file, the chunk and the fix on a mismatch, before the
    tokens can reach the model. Each chunk is hashed once, so a full epoch costs one extra
    pass over the file (~1.4 ms per MiB: 23 ms for a 17 MiB train.bin, see
    BENCHMARKS.md) and later reads cost nothing.

    Slices and checks read the file with ``pread``, not through a memory map: every page a
    map touches stays in the process's resident memory, so over an epoch of random blocks a
    mapped cache became resident whole (~24 MiB more each tiny-preset step, a 10 GB corpus's
    5 GB cache by the epoch's end). Read, only the block in hand is. Pickles without its
    open file (DataLoader workers reopen it)."""

    dtype = np.dtype(np.uint16)

    def __init__(self, path: Path, tokens: int, chunk_crc32: list[int], chunk_bytes: int,
                 vocab_size: int | None = None):
        self.path, self.n_tokens, self.vocab_size = Path(path), int(tokens), vocab_size
        self.chunk_crc32, self.chunk_bytes = list(chunk_crc32), int(chunk_bytes)
        if self.chunk_bytes <= 0 or self.chunk_bytes % 2:  # chunks of whole tokens, or none at all
            raise CacheError(f"{self.path}: metadata gives chunks of {self.chunk_bytes} bytes; rebuild it: "
                             f"{PRETOKENIZE_CMD}")
        size = self.path.stat().st_size
        if size != self.n_tokens * 2:
            raise CacheError(f"{self.path} is {size} bytes, metadata says {self.n_tokens * 2} "
                             f"(truncated or appended to); rebuild it: {PRETOKENIZE_CMD}")
        if len(self.chunk_crc32) != -(-size // self.chunk_bytes):
            raise CacheError(f"{self.path}: metadata lists {len(self.chunk_crc32)} chunk "
                             f"checksums for {size} bytes; rebuild it: {PRETOKENIZE_CMD}")
        self._ok = [False] * len(self.chunk_crc32)  # a list: indexing it is cheaper than numpy's
        self._map: np.ndarray | None = None
        self._file = None
        self._pid = 0

    def __len__(self) -> int:
        return self.n_tokens

    @property
    def verified(self) -> np.ndarray:
        """Which chunks have been verified in this process."""
        return np.asarray(self._ok, dtype=bool)

    @property
    def tokens(self) -> np.ndarray:
        """The mapped file as a plain ndarray view: slicing an np.memmap builds a new memmap
        object each time, which made the bare memmap's block read slower (8 us) than this
        checked one (6 us)."""
        if self._map is None:
            self._map = (np.memmap(self.path, dtype=np.uint16, mode="r").view(np.ndarray)
                         if self.n_tokens else np.zeros(0, dtype=np.uint16))
        return self._map

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None, "_file": None, "_pid": 0}

    def _fd(self) -> int:
        """This process's descriptor of the file (a forked DataLoader worker opens its own)."""
        if self._pid != os.getpid():
            self._file, self._pid = open(self.path, "rb", buffering=0), os.getpid()
        return self._file.fileno()

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` read from the file, unchecked (read-only)."""
        data = os.pread(self._fd(), 2 * (stop - start), 2 * start)
        if len(data) != 2 * (stop - start):
            raise CacheError(f"{self.path} ended early (wanted tokens {start:,}-{stop:,}); rebuild it: "
                             f"{PRETOKENIZE_CMD}")
        return np.frombuffer(data, dtype=np.uint16)

    def __getitem__(self, key):
        if type(key) is slice and key.step is None and key.stop is not None \
                and 0 <= (key.start or 0) < min(key.stop, self.n_tokens):
            # the packed-block dataset's read, tokens[a:b]: one or two chunks, checked once
            start, stop = key.start or 0, min(key.stop, self.n_tokens)
            lo, hi = 2 * start // self.chunk_bytes, (2 * stop - 1) // self.chunk_bytes
            if not (self._ok[lo] and self._ok[hi]):
                self.verify_bytes(2 * start, 2 * stop)
            return self.read(start, stop)
        if isinstance(key, slice):
            span = range(*key.indices(self.n_tokens))
        else:
            i = operator.index(key)
            span = range(i + self.n_tokens if i < 0 else i, (i + self.n_tokens if i < 0 else i) + 1)
        if len(span):
            lo, hi = min(span[0], span[-1]), max(span[0], span[-1]) + 1
            self.verify_bytes(lo * 2, min(hi, self.n_tokens) * 2)
        return self.tokens[key]

    def __array__(self, dtype=None, copy=None):
        self.verify_all()
        return np.asarray(self.tokens, dtype=dtype)

    def verify_bytes(self, lo: int, hi: int) -> None:
        """Check every not yet verified chunk overlapping bytes [lo, hi)."""
        for i in range(lo // self.chunk_bytes, (hi - 1) // self.chunk_bytes + 1):
            if not self._ok[i]:
                self._verify_chunk(i)

    def verify_all(self) -> None:
        if self.n_tokens:
            self.verify_bytes(0, self.n_tokens * 2)

    def _verify_chunk(self, i: int) -> None:
        lo = i * self.chunk_bytes
        data = os.pread(self._fd(), min(self.chunk_bytes, 2 * self.n_tokens - lo), lo)
        if zlib.crc32(data) != self.chunk_crc32[i]:
            raise CacheError(
                f"token cache damaged: {self.path} chunk {i} (bytes {lo:,}-{lo + len(data):,}) "
                f"does not match its checksum in metadata.json; its tokens were not trained on. "
                f"Rebuild the cache: {PRETOKENIZE_CMD}")
        # a checksum vouches for the bytes, not for what they mean: ids past the vocabulary index
        # no embedding (an IndexError, or a device assert on a GPU) or one never trained (padding)
        top = int(np.frombuffer(data, dtype=np.uint16).max()) if self.vocab_size and data else -1
        if self.vocab_size and top >= self.vocab_size:
            raise CacheError(f"token cache holds ids of another vocabulary: {self.path} chunk {i} has token id "
                             f"{top:,}, past the {self.vocab_size:,} tokens of the tokenizer it was built with; its "
                             f"tokens were not trained on. Rebuild the cache: {PRETOKENIZE_CMD}")
        self._ok[i] = True

