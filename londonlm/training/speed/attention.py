"""SDPA's kernel order while a job trains (``--sdpa_order``).

PyTorch's scaled-dot-product attention tries its kernels in an order of its own, and that order
depends on the card: FlashAttention, the memory-efficient kernel, math, then cuDNN's fused
attention last on most cards, but cuDNN's first on Hopper and Blackwell data-centre cards (H100,
H200, B200: compute capability 9.0/10.0) where the cuDNN it loads is newer than 9.15 (torch's
``check_prefer_cudnn_attention``; ``TORCH_CUDNN_SDPA_DEPRIORITIZED=1`` turns that off). So on the
H200 of 2026-11-30 (torch 2.11, cuDNN 9.19) torch's own order already ran cuDNN's kernels, at
~27% of GPT-2 Small's step (BENCHMARKS.md, the throughput block's profile), and FlashAttention
was never measured there. The orders:

- ``torch``: torch's own, whatever the card and cuDNN make of it (the default: it is what an
  unmeasured choice should be);
- ``flash``: FlashAttention first, then the memory-efficient kernel, cuDNN's and math;
- ``cudnn``: cuDNN's fused attention first, the rest after it.

A shape or card the first cannot serve falls back to the next, as torch's own order does. The
log names the kernel that runs. On a CPU only flash and math exist.

The order is set around the whole ``Trainer.train`` call: torch.compile bakes the kernel it
finds into the graph when it traces, evaluation runs inside it too. Serving turns cuDNN's
attention off altogether (:func:`londonlm.generation.model.load_model`): a new batch shape there
costs a cuDNN plan build, where training has one shape.
"""
from __future__ import annotations

import contextlib

SDPA_ORDERS = {
    "torch": None,  # torch's own order (cuDNN's first on Hopper/Blackwell with cuDNN > 9.15)
    "flash": ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"),
    "cudnn": ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH"),
}


def sdpa_order(order: str):
    """A context in which SDPA tries its kernels in ``order``'s sequence (:data:`SDPA_ORDERS`)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = SDPA_ORDERS[order]
    if names is None:
        return contextlib.nullcontext()
    return sdpa_kernel([getattr(SDPBackend, n) for n in names], set_priority=True)


def sdpa_kernel_for(n_head: int, head_dim: int, context: int, device: str, dtype=None, dropout: float = 0.0) -> str:
    """The kernel SDPA picks, in the current order, for a training attention of this shape:
    causal, no mask, gradients wanted, the model's attention dropout (so a log says what runs,
    not what was asked)."""
    import torch
    from torch.nn.attention import SDPBackend

    q = torch.empty(1, n_head, context, head_dim, device=device, dtype=dtype or torch.bfloat16,
                    requires_grad=True)
    return SDPBackend(torch._fused_sdp_choice(q, q, q, dropout_p=dropout, is_causal=True)).name.lower()
