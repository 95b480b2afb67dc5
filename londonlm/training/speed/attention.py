"""SDPA's kernel order while a job trains (``--sdpa_order``).

PyTorch's scaled-dot-product attention tries its kernels in a fixed order; torch 2.13's is
FlashAttention, the memory-efficient kernel, math, then cuDNN's fused attention last, so a
training step (causal, no mask: flash can always serve it) never reaches cuDNN's kernels.
Those are reported 1.7-2.3x faster than flash for training shapes on Hopper cards (H100, H200)
and slower on others (transformers#48163); attention is ~15% of GPT-2 Small's FLOPs at 1024
tokens. ``cudnn`` puts cuDNN's kernel first and keeps the rest after it, so a shape or card it
cannot serve falls back as before. It is not the default until measured on a GPU here (the GPU
acceptance's throughput step and the race measure it); on a CPU it changes nothing.

The order is set around the whole ``Trainer.train`` call: torch.compile bakes the kernel it
finds into the graph when it traces, evaluation runs inside it too. Serving turns cuDNN's
attention off altogether (:func:`londonlm.generation.model.load_model`): a new batch shape there
costs a cuDNN plan build, where training has one shape.
"""
from __future__ import annotations

import contextlib

SDPA_ORDERS = {
    "flash": None,  # torch's own order
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
