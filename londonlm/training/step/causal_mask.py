"""Causal attention without a materialised mask when a compiled model trains on packed
sequences, so that SDPA can pick its flash kernel.

Training batches here are full windows of the token stream: no padding, no attention mask, no
cache. transformers then gives SDPA no mask and ``is_causal=True``, which lets it use the
flash (or cuDNN) kernel. Under ``torch.compile`` with torch < 2.14 it does not: its check
``is_torchdynamo_exporting()`` reads True inside every dynamo trace (fixed in pytorch#176499),
so it builds a ``batch x T x T`` boolean mask, and SDPA, given a mask, falls back to the
memory-efficient or math kernel. On the first GPU run (H200, GPT-2 Small, batch 16 x 1024,
BENCHMARKS.md) a flash-only compiled step refused to run for that reason.

``skip_causal_mask_for_full_windows`` registers, for the "sdpa" implementation, a mask function
that returns no mask where transformers would outside a trace too (no padding mask, queries
and keys the same positions from 0, no sliding window, nothing added to the causal rule) and
defers to transformers' own ``sdpa_mask`` in every other case (padding in chat fine-tuning, generation
with a cache). The decision reads Python values only (``None``, ints), which dynamo guards, so
a compiled graph is never reused for a batch that needs a mask. It is not for
``torch.export`` with dynamic shapes, where pytorch#108108 applies; nothing here exports.
"""
from __future__ import annotations

from transformers.masking_utils import AttentionMaskInterface, causal_mask_function, sdpa_mask


def _full_window_causal_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0,
                             mask_function=causal_mask_function, attention_mask=None, local_size=None,
                             allow_is_causal_skip=True, **kwargs):
    """``sdpa_mask``, except that a plain causal window returns None under a trace too."""
    full_window = (allow_is_causal_skip and attention_mask is None and local_size is None
                   and mask_function is causal_mask_function and type(q_offset) is int
                   and type(kv_offset) is int and q_offset == kv_offset == 0 and q_length == kv_length)
    if full_window:
        return None
    return sdpa_mask(batch_size, q_length, kv_length, q_offset=q_offset, kv_offset=kv_offset,
                     mask_function=mask_function, attention_mask=attention_mask, local_size=local_size,
                     allow_is_causal_skip=allow_is_causal_skip, **kwargs)


def skip_causal_mask_for_full_windows() -> None:
    """Register the mask function above for "sdpa" (process-wide; calling again is a no-op)."""
    AttentionMaskInterface.register("sdpa", _full_window_causal_mask)
