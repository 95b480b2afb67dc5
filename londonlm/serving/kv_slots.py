"""The batch's KV cache in buffers of fixed capacity: a decode step writes its one new column
in place, a joining row is copied into a free row, a leaving row's place is taken by the last
row; nothing is re-concatenated per step (:mod:`.batching` schedules the rows)."""
from __future__ import annotations

import inspect

import torch

from .sampler import BatchSampler


def cache_argument(model) -> str:
    """The ``forward`` keyword that takes a KV cache: ``cache`` since transformers renamed it
    (passing the old ``past_key_values`` there prints a deprecation warning on every run),
    ``past_key_values`` in the releases before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class SlotLayer:
    """One layer's keys and values in the slots' buffers, as transformers' cache layers present
    them (registered as a ``CacheLayerMixin`` when first used, transformers being imported late):
    ``update`` writes a step's columns in place at the window's end and returns the window."""

    is_sliding = is_compileable = is_croppable = False
    supports_early_init = True

    def __init__(self, slots: "KVSlots", keys: torch.Tensor, values: torch.Tensor):
        self.slots, self.kbuf, self.vbuf = slots, keys, values
        self.is_initialized = True

    def lazy_initialization(self, key_states, value_states) -> None:  # the buffers exist already
        return None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n, start, end = len(self.slots.rows), self.slots.start, self.slots.end
        stop = end + key_states.shape[-2]
        self.kbuf[:n, :, end:stop] = key_states
        self.vbuf[:n, :, end:stop] = value_states
        return self.kbuf[:n, :, start:stop], self.vbuf[:n, :, start:stop]

    def get_seq_length(self) -> int:
        return self.slots.end - self.slots.start

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return self.slots.columns


class KVSlots:
    """The active rows' KV cache, seen-token table and first cached column, row-aligned.

    Buffers hold ``capacity`` rows x ``columns`` columns (the context length); rows 0..n-1 are the
    active ones, in the order of ``rows``. The model attends over columns ``start..end-1``. Each
    row's cache (its history less the token it feeds next) is right-aligned at ``end``, from its
    column ``first``: the columns before are masked, and zeroed when they come into the window, so
    stale numbers never meet a mask. The window moves back to column 0 only when its end reaches
    the last column (rarely: a row is never longer than the context)."""

    def __init__(self, max_rows: int, columns: int):
        self.max_rows, self.columns = max_rows, columns
        self.rows: list = []  # batching's rows, each with its own ``.sampling``
        self.start = self.end = self.capacity = 0
        self.cache = self.first = self.seen = self.cols = None
        self.sampler: BatchSampler | None = None

    def buffers(self) -> list[torch.Tensor]:
        return [t for layer in self.cache.layers for t in (layer.kbuf, layer.vbuf)]

    def _allocate(self, rows: int, like, seen: torch.Tensor) -> None:
        """Buffers for ``rows`` rows shaped after ``like`` (a prefill's cache), the window copied over."""
        from transformers import DynamicCache
        from transformers.cache_utils import CacheLayerMixin

        CacheLayerMixin.register(SlotLayer)
        n, old = len(self.rows), (self.buffers() if self.cache is not None else None)
        cache = DynamicCache()
        cache.layers = [SlotLayer(self, *(t.new_zeros(rows, t.shape[1], self.columns, t.shape[3])
                                           for t in (layer.keys, layer.values))) for layer in like.layers]
        first, table = torch.zeros(rows, dtype=torch.long, device=seen.device), seen.new_zeros(rows, seen.shape[1])
        if old is not None:
            for new, buf in zip([t for layer in cache.layers for t in (layer.kbuf, layer.vbuf)], old):
                new[:n, :, self.start:self.end] = buf[:n, :, self.start:self.end]
            first[:n], table[:n] = self.first[:n], self.seen[:n]
        self.cache, self.first, self.seen, self.capacity = cache, first, table, rows
        self.cols = torch.arange(self.columns, device=seen.device)

    def _move(self, shift: int) -> None:
        """Move the window ``shift`` columns (right to make room, left back to column 0)."""
        n, a, b = len(self.rows), self.start, self.end
        for buf in self.buffers():
            buf[:n, :, a + shift:b + shift] = buf[:n, :, a:b].clone()
        self.first[:n] += shift
        self.start, self.end = a + shift, b + shift

    def add(self, rows: list, prefill, src: torch.Tensor, lengths: list[int], seen: torch.Tensor) -> None:
        """Take ``rows``: row i's cache is row ``src[i]`` of the ``prefill`` cache (left-padded to
        its width, padding zeroed), its prompt ``lengths[i]`` tokens."""
        n, k, width = len(self.rows), len(rows), prefill.get_seq_length()
        if self.capacity < n + k:
            self._allocate(min(self.max_rows, max(n + k, 2 * self.capacity)), prefill, seen)
        if self.end < width:
            self._move(width - self.end)
        end = self.end
        first = end - torch.tensor(lengths, device=src.device)
        start = min(self.start, end - max(lengths)) if n else end - max(lengths)
        for layer, new in zip(self.cache.layers, prefill.layers):
            for buf, block in ((layer.kbuf, new.keys), (layer.vbuf, new.values)):
                buf[n:n + k, :, start:end - width] = 0
                buf[n:n + k, :, end - width:end] = block.index_select(0, src)
                if n and start < self.start:  # columns the old rows never had come into the window
                    buf[:n, :, start:self.start] = 0
        self.first[n:n + k], self.seen[n:n + k] = first, seen
        self.start, self.rows, self.sampler = start, self.rows + rows, None

    def keep(self, keep: list[int]) -> None:
        """Keep only rows ``keep`` (indices): the last rows kept fill the places of those leaving."""
        kept, m = set(keep), len(keep)
        holes = [i for i in range(m) if i not in kept]
        movers = [i for i in range(m, len(self.rows)) if i in kept]
        rows = list(self.rows)
        if holes:
            to, fro = (torch.tensor(x, device=self.first.device) for x in (holes, movers))
            for buf in self.buffers():
                buf[to, :, self.start:self.end] = buf[fro, :, self.start:self.end]
            self.first[to], self.seen[to] = self.first[fro], self.seen[fro]
            for h, mv in zip(holes, movers):
                rows[h] = rows[mv]
        self.rows, self.sampler = rows[:m], None
        if not self.rows:
            self.start = self.end = 0
        else:  # the window loses the columns no row left needs
            self.start = self.end - max(len(r.history) - 1 for r in self.rows)

    def step_inputs(self, cache_kw: str) -> dict:
        """The model's inputs for one decode step (the window moved back first if it is full), the
        cache passed as ``cache_kw`` (:func:`cache_argument`)."""
        if self.end == self.columns:
            self._move(-self.start)
        n, device = len(self.rows), self.first.device
        first = self.first[:n, None]
        return dict(input_ids=torch.tensor([[r.history[-1]] for r in self.rows], device=device),
                    attention_mask=(self.cols[None, self.start:self.end + 1] >= first).long(),
                    position_ids=self.end - first, use_cache=True, **{cache_kw: self.cache})

    def batch_sampler(self, device: str) -> BatchSampler:
        if self.sampler is None:
            self.sampler = BatchSampler([r.sampling for r in self.rows], device)
        return self.sampler
